"""Ensemble: several trained runs averaged into one ordinary run folder.

`ensemble_runs` reads each member's best.ckpt (without running code from it), checks that the members
predict the same labels and were trained on the same splits, and writes a run whose model is
`earmark.models.ensemble` (every member's network and calibrated temperature inside one checkpoint):
config.yaml, labels.json, splits/ (the members'), checkpoints/best.ckpt, ensemble.json (each member's run,
the sha256 of its best.ckpt and its weight), then the usual test evaluation (metrics.json, reports).
The run then predicts, evaluates, exports (one ONNX graph) and serves like any other.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from earmark.config import AugmentConfig, Config, FeaturesConfig, ModelConfig
from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.rundir import RunDir, new_output_dir
from earmark.workflows.train import RunResult


@dataclass(frozen=True)
class Member:
    """One run of an ensemble, as read from its folder and its best.ckpt."""

    run: RunDir
    config: Config
    labels: list[str]
    checkpoint: Path
    hparams: dict[str, Any]
    state_dict: dict[str, Any]

    @property
    def contract(self) -> InputContract:
        return InputContract.from_dict(self.hparams["contract"])

    def model_entry(self) -> dict[str, Any]:
        """What `earmark.models.ensemble` rebuilds the member from (its checkpoint's model entry)."""
        return {"model_name": self.hparams["model_name"], "model_params": dict(self.hparams["model_params"]),
                "contract": dict(self.hparams["contract"])}

    def record(self, weight: float) -> dict[str, Any]:
        """ensemble.json's row: where the member came from, which weights, how it scored alone."""
        from earmark.files import sha256_of

        metrics = json.loads(self.run.metrics_file.read_text()) if self.run.metrics_file.is_file() else {}
        return {"run": str(self.run.path), "checkpoint": str(self.checkpoint),
                "checkpoint_sha256": sha256_of(self.checkpoint), "weight": weight,
                "model": self.hparams["model_name"], "sample_rate_hz": self.contract.sample_rate_hz,
                "duration_s": self.contract.duration_s,
                "temperature": float(self.state_dict.get("temperature_", 1.0)),
                "test_accuracy": metrics.get("accuracy")}


def member_folder(run: str | Path) -> RunDir:
    """A member's run folder, checked to hold a config and a best checkpoint."""
    folder = RunDir(run)
    if not folder.is_run():
        raise EarmarkError(f"{run} is not a run directory (no config.yaml); give runs/<name> folders written by "
                           f"`earmark train`")
    if not folder.best_checkpoint.is_file():
        raise EarmarkError(f"{run} holds no checkpoints/best.ckpt; was its training interrupted?")
    return folder


def check_same_data(folders: Sequence[RunDir]) -> None:
    """Same labels in the same order and the same clips in the same splits (read before any checkpoint)."""
    from earmark.data.splits import load_splits

    if len(folders) < 2:
        raise EarmarkError(f"an ensemble needs at least 2 runs; got {len(folders)}")
    first = folders[0]
    for folder in folders[1:]:
        if folder.labels() != first.labels():
            raise EarmarkError(f"runs {first.path} and {folder.path} predict different labels ({first.labels()} "
                               f"vs {folder.labels()}); every member needs the same labels.json in the same order "
                               f"(train them on the same data)")

    def clips(folder: RunDir) -> set[tuple[str, str]]:
        table = load_splits(folder.splits)
        return set(zip(table["path"].astype(str), table["split"].astype(str)))

    reference = clips(first)
    for folder in folders[1:]:
        differs = reference ^ clips(folder)
        if differs:
            example = sorted(differs)[0]
            raise EarmarkError(f"run {folder.path} was trained on other splits than {first.path} "
                               f"({len(differs)} clip/split pairs differ, e.g. {example[0]} in {example[1]}); the "
                               f"ensemble's test score would include clips a member trained on. Train every member "
                               f"with the same data, split.* settings and seed (they then share splits/)")


def read_member(folder: RunDir) -> Member:
    """A member run: its config, labels and best.ckpt (tensors and plain values only: no code runs)."""
    from earmark.train.checkpoint_file import load_checkpoint_dict

    checkpoint = load_checkpoint_dict(folder.best_checkpoint)
    if checkpoint["hyper_parameters"].get("groups") is not None:
        raise EarmarkError(f"run {folder.path} is personalized (its model takes a group per clip); an ensemble "
                           f"member cannot be: ensemble runs without groups")
    return Member(folder, folder.load_config(), folder.labels(), folder.best_checkpoint,
                  dict(checkpoint["hyper_parameters"]), checkpoint["state_dict"])


def ensemble_config(members: Sequence[Member], weights: list[float]) -> Config:
    """The ensemble run's config.yaml: the first member's data and split settings, at the members' shared
    input (`earmark.models.ensemble.ensemble_input`), the members' model entries, no calibration of its own."""
    from earmark.models.ensemble import ENSEMBLE_MODEL, ensemble_input

    base = members[0].config
    shared = ensemble_input([member.contract for member in members])
    data = base.data.model_copy(update={key: shared[key] for key in ("sample_rate_hz", "duration_s")})
    model = ModelConfig(name=ENSEMBLE_MODEL, params={"members": [m.model_entry() for m in members],
                                                     "weights": weights})
    updates: dict[str, Any] = {
        "data": data, "model": model, "features": FeaturesConfig(kind="waveform", normalize=False),
        "augment": AugmentConfig(enabled=False),
        # the members are calibrated; averaging their probabilities is the ensemble's whole output
        "evaluation": base.evaluation.model_copy(update={"calibrate": False}),
        "name": None}  # named after its folder once that is made
    return Config.model_validate(base.model_copy(update=updates).model_dump())  # checked as a whole


def assemble(members: Sequence[Member], config: Config):
    """The ensemble as an AudioClassifier (what checkpoints hold), each member's weights loaded."""
    import torch

    from earmark.train.module import AudioClassifier
    from earmark.train.network import INFERENCE_PREFIXES

    contract = InputContract(sample_rate_hz=config.data.sample_rate_hz, duration_s=config.data.duration_s,
                             clip=config.data.clip, labels=tuple(members[0].labels),
                             features=config.features.model_dump(), chunk_hop_s=config.data.chunk_hop_s)
    module = AudioClassifier.create(contract, config.model, config.train, config.augment, config.seed)
    for member, target in zip(members, module.model.members):
        weights = {k: v for k, v in member.state_dict.items() if k.startswith(INFERENCE_PREFIXES)}
        weights["temperature_"] = member.state_dict.get("temperature_", torch.ones(()))
        try:
            target.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise EarmarkError(f"{member.checkpoint} is a damaged earmark checkpoint: "
                               f"{str(exc).splitlines()[0][:300]}") from None
    return module.eval()


def _new_run_dir(out: str | Path | None, config: Config) -> Path:
    if out is None:
        return new_output_dir(config)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EarmarkError(f"--out {out} already exists and is not an empty folder; choose another --out "
                           f"(an ensemble never writes over a run)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def ensemble_runs(runs: Sequence[str | Path], out: str | Path | None = None, *,
                  weights: Sequence[float] | None = None, evaluate_test: bool = True,
                  progress: bool = True) -> RunResult:
    """Average the calibrated probabilities of trained runs into a new run folder `out` (default:
    `<first member's runs_dir>/<source>-ensemble-<time>`), evaluated on the members' shared test split.

    weights: one per run (default equal), scaled to sum to 1. evaluate_test: False leaves the test split
    untouched (metrics.json then holds the members only; score the ensemble on validation with
    `validation_probabilities`). progress: the decoding bar. Refuses runs with other labels or other splits.
    """
    from earmark.data.prepared import decode_listed
    from earmark.data.splits import load_splits
    from earmark.models.ensemble import normalized_weights
    from earmark.train.checkpoints import save_module_checkpoint
    from earmark.workflows.evaluate import _evaluate_run, fit_on_validation, write_untested_metrics

    started = time.perf_counter()
    folders = [member_folder(run) for run in runs]
    check_same_data(folders)
    members = [read_member(folder) for folder in folders]
    weights = normalized_weights(weights, len(members))
    config = ensemble_config(members, weights)
    module = assemble(members, config)  # every check passed before a folder is made
    run_dir = _new_run_dir(out, config)
    config = config.model_copy(update={"runs_dir": run_dir.parent, "name": run_dir.name})
    run = RunDir(run_dir)
    record = {"members": [member.record(weight) for member, weight in zip(members, weights)]}
    run.config_file.write_text(config.to_yaml())
    run.write_labels(members[0].labels)
    shutil.copytree(members[0].run.splits, run.splits)
    save_module_checkpoint(module, run.best_checkpoint, ensemble=record)
    run.ensemble_file.write_text(json.dumps(record, indent=1) + "\n")
    items = load_splits(run.splits)
    items, cache = decode_listed(items[items["split"].isin(["val", "test"])], config.data, progress=progress)
    labels = members[0].labels
    # reject and binary thresholds on validation as configured; the temperature stays 1 (evaluation.calibrate)
    predictor = fit_on_validation(run_dir, items[items["split"] == "val"], cache.waves, labels, config.evaluation)
    extra = {"ensemble": record, "fit_seconds": round(time.perf_counter() - started, 3), "epochs": 0}
    if not evaluate_test:
        return RunResult(run_dir, write_untested_metrics(run_dir, extra), extra["fit_seconds"])
    metrics = _evaluate_run(run_dir, items[items["split"] == "test"], cache.waves, labels, config=config,
                            extra=extra, predictor=predictor)
    return RunResult(run_dir, metrics, extra["fit_seconds"])


def validation_probabilities(run_dir: str | Path, *, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated probabilities (N, C), true class ids (N,)) of a run's validation clips, predicted by its
    best.ckpt: how a caller scores an ensemble made with `evaluate_test=False` (works for any run)."""
    from earmark.data.labels import class_ids
    from earmark.data.prepared import decode_listed
    from earmark.data.splits import load_splits
    from earmark.evaluate.calibration import softmax
    from earmark.evaluate.predictions import predict_item_logits
    from earmark.predict.torch_predictor import Predictor

    run = RunDir(run_dir)
    config, labels = run.load_config(), run.labels()
    items = load_splits(run.splits)
    items = items[items["split"] == "val"]
    if not len(items):
        raise EarmarkError(f"{run_dir} has no validation split (splits/val.csv is empty); set split.val_fraction "
                           f"above 0 when training its members")
    items, cache = decode_listed(items, config.data, progress=progress)
    predictor = Predictor.from_run(run.path)
    logits, _ = predict_item_logits(predictor, items, cache.waves)
    return softmax(logits, float(predictor.module.temperature_)), class_ids(items["label"], labels)
