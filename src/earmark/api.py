"""The Python API; every CLI command is a thin call into one of these functions."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, config_changes, describe_changes, load_config, new_output_dir
from earmark.errors import EarmarkError


@dataclass
class RunResult:
    run_dir: Path | None  # None for an --overfit-batch check, which writes nothing
    metrics: dict[str, Any]  # empty in the processes of DDP ranks other than 0
    fit_seconds: float
    personalization: dict[str, Any] | None = None  # personalization.json of a model that takes groups


def _as_config(config: Config | str | Path | None, overrides: Sequence[str] = ()) -> Config:
    if isinstance(config, Config):
        return _override(config, overrides) if overrides else config
    return load_config(config, list(overrides))


def _override(config: Config, overrides: Sequence[str]) -> Config:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(config.to_yaml())
    try:
        return load_config(handle.name, list(overrides))
    finally:
        Path(handle.name).unlink(missing_ok=True)


def check_config(config: Config) -> None:
    """Everything that can be checked before decoding a single file."""
    from earmark.features import build_frontend
    from earmark.models.registry import check_model_config

    entry = check_model_config(config.model.name, config.model.params, config.features.kind)
    build_frontend(config.features, config.data.sample_rate_hz)
    if entry.needs_groups:
        from earmark.personalization import adaptation_config, settings_for
        from earmark.optim import check_schedule

        settings_for(config)
        check_schedule(adaptation_config(config).train)


def _uses_groups(config: Config) -> bool:
    from earmark.models.registry import MODELS

    return MODELS.entry(config.model.name).needs_groups


def prepare(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
            progress: bool = True):
    """Decode (once), cache and split the data; returns `PreparedData`."""
    from earmark.data.prepared import prepare_data

    config = _as_config(config, overrides)
    check_config(config)
    prepared = prepare_data(config, strict=strict, progress=progress)
    if _uses_groups(config):
        from earmark.personalization import check_group_column

        check_group_column(config, prepared.items)
    return prepared


def _is_launch_rank_zero() -> bool:
    """False in processes that a launcher (Lightning's DDP re-run, torchrun, SLURM) started for another
    rank: they train but never create or write the run directory (rank 0's checkpoints and logs hold all)."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                                                          "SLURM_PROCID"))


RESUME_MAY_CHANGE = ("train.max_epochs",)


def _resume_config(run: str | Path, config: Config | str | Path | None, overrides: Sequence[str]
                   ) -> tuple[Config, Path, Path]:
    """(config, run_dir, last checkpoint) for `--resume`; the run's own config unless one is given,
    and then it may differ from the run's config.yaml only in `RESUME_MAY_CHANGE`."""
    run_dir = Path(run)
    if not (run_dir / "config.yaml").is_file():
        raise EarmarkError(f"cannot resume {run_dir}: it is not a run directory (no config.yaml); "
                           f"give runs/<name> of an earlier `earmark train`")
    saved = load_config(run_dir / "config.yaml")
    if config is None:
        new = _override(saved, overrides) if overrides else saved
    else:
        new = _as_config(config, overrides)
    changes = config_changes(saved, new, RESUME_MAY_CHANGE)
    if changes:
        raise EarmarkError(f"cannot resume {run_dir}: the config differs from its config.yaml in "
                           f"{describe_changes(changes)}; only {', '.join(RESUME_MAY_CHANGE)} may change on resume "
                           f"(start a new run instead)")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise EarmarkError(f"cannot resume {run_dir}: there is no checkpoints/last.ckpt yet (a run writes it at the "
                           f"end of each epoch, or every train.checkpoint_every_n_steps steps); start it again")
    return new, run_dir, checkpoint


def train(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
          resume: str | Path | None = None, overfit_batch: bool = False, prepared=None,
          extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True) -> RunResult:
    """Prepare, train with Lightning, evaluate the best checkpoint on the test split, write the run directory.

    resume: a run directory; training continues from its checkpoints/last.ckpt (mid-epoch too) and ends
        as the uninterrupted run would have. `config`/`overrides` may then only change train.max_epochs.
    overfit_batch: train on one fixed batch without augmentation and report whether the loss reached
        near zero (metrics: first_loss, final_loss, passed, verdict); writes no run directory.

    A model that takes groups (model.name=personalized) trains in two phases, base then group
    embeddings (see `earmark.personalization`), and the run also holds personalization.json/.png;
    resumed after its phase 1 finished, it runs phase 2 again.

    prepared: data already decoded and split by the caller (`PreparedData`, e.g. one cross-validation
        fold from `earmark.crossval`); its split is used as is. extra_callbacks: more Lightning callbacks
        for the fit (e.g. `earmark.tuning`'s pruning callback). evaluate_test: False skips the test
        split's evaluation (a tuning trial): calibration is still fitted, metrics.json then holds only
        the training facts, and `evaluate` can score the run later.
    """
    from earmark.binary import check_positive_label
    from earmark.optim import check_schedule

    if resume is not None and overfit_batch:
        raise EarmarkError("--overfit-batch is a fresh one-batch check; it cannot be combined with --resume")
    checkpoint = None
    if resume is not None:
        config, run_dir, checkpoint = _resume_config(resume, config, overrides)
    else:
        config = _as_config(config, overrides)
    check_schedule(config.train)
    if prepared is None:
        prepared = prepare(config, strict=strict, progress=config.train.progress)  # checks the config first
    else:
        check_config(config)
    if not len(prepared.rows("train")):
        raise EarmarkError("the train split is empty; check split.* settings and the data's split/fold column")
    check_positive_label(prepared.labels, config.evaluation.positive_label)  # before training, not after
    if resume is not None:
        _check_same_data(run_dir, prepared)
    module, datamodule = _build_training(config, prepared, overfit_batch, fit_normalization=resume is None)
    if overfit_batch:
        return _overfit_one_batch(config, module, datamodule)
    primary = _is_launch_rank_zero()
    if resume is None:
        # other ranks never write; Lightning hands them rank 0's checkpoint folder
        run_dir = new_output_dir(config) if primary else config.runs_dir / "(set by rank 0)"
        if primary:
            (run_dir / "labels.json").write_text(json.dumps(prepared.labels, indent=1))
            shutil.copytree(prepared.split_dir, run_dir / "splits")
    if primary:
        (run_dir / "config.yaml").write_text(config.to_yaml())  # on resume: the possibly longer max_epochs
    return _fit_and_evaluate(config, prepared, module, datamodule, run_dir, checkpoint, extra_callbacks,
                             evaluate_test)


def _check_same_data(run_dir: Path, prepared) -> None:
    """A resume must see the clips and splits the run started with."""
    from earmark.data.splits import load_splits

    if json.loads((run_dir / "labels.json").read_text()) != list(prepared.labels):
        raise EarmarkError(f"cannot resume {run_dir}: the data's classes {prepared.labels} differ from the run's "
                           f"labels.json; the data changed since the run started (start a new run)")
    saved = load_splits(run_dir / "splits")
    keys = ["path", "split"] + (["segment"] if "segment" in saved and "segment" in prepared.items else [])

    def clips(table: pd.DataFrame) -> list[tuple]:
        return sorted(table[keys].astype(str).itertuples(index=False, name=None))

    if clips(saved) != clips(prepared.items):
        raise EarmarkError(f"cannot resume {run_dir}: the clips or their splits differ from the run's splits/ "
                           f"folder; the data changed since the run started (start a new run)")


def _build_training(config: Config, prepared, overfit: bool, fit_normalization: bool = True):
    """The LightningModule (normalisation fitted on the training split, unless a checkpoint will
    restore it) and the DataModule."""
    import lightning as L
    import torch

    from earmark.contract import InputContract
    from earmark.data.batches import AudioDataModule
    from earmark.losses import class_weights
    from earmark.training import AudioClassifier, monitor_metric

    labels = prepared.labels
    splits = ("train", "val", "test")
    groups, group_ids = None, None
    if _uses_groups(config):  # the training split's groups name the embeddings; batches carry their ids
        from earmark.personalization import check_group_column, settings_for, split_group_ids

        groups = check_group_column(config, prepared.items)
        group_ids = split_group_ids(prepared.items, settings_for(config).group_column, groups)
    weights = class_weights(config.train.class_weights, labels, prepared.targets("train"))
    datamodule = AudioDataModule(prepared.cache.waves, {s: prepared.rows(s) for s in splits},
                                 {s: prepared.targets(s) for s in splits}, batch_size=config.train.batch_size,
                                 seed=config.seed, memory_budget_gb=config.train.memory_budget_gb,
                                 num_workers=config.train.num_workers, sampler=config.train.sampler, labels=labels,
                                 overfit=overfit, groups=group_ids)
    train_cfg, augment = config.train, config.augment
    if overfit:  # the plain objective on clean clips: its minimum is 0
        train_cfg = train_cfg.model_copy(update={"label_smoothing": 0.0})
        augment = augment.model_copy(update={"enabled": False})
    L.seed_everything(config.seed, workers=True, verbose=False)
    contract = InputContract(sample_rate_hz=config.data.sample_rate_hz, duration_s=config.data.duration_s,
                             clip=config.data.clip, chunk_hop_s=config.data.chunk_hop_s, labels=tuple(labels),
                             features=config.features.model_dump())
    has_validation = len(prepared.rows("val")) > 0 and not overfit
    module = AudioClassifier(contract.to_dict(), config.model.name, dict(config.model.params), train_cfg.model_dump(),
                             augment.model_dump(), config.seed, weights, monitor_metric(config, has_validation),
                             groups=groups)
    if fit_normalization:
        waves, train_rows = prepared.cache.waves, prepared.rows("train")
        module.frontend.fit_normalization(torch.from_numpy(np.asarray(waves[train_rows[i:i + 256]]))
                                          for i in range(0, len(train_rows), 256))
    return module, datamodule


def _overfit_one_batch(config: Config, module, datamodule) -> RunResult:
    from earmark.training import LossHistory, build_trainer, overfit_verdict, quiet_fit

    history = LossHistory()
    trainer = build_trainer(config, None, has_validation=False, steps_per_epoch=1, overfit=True,
                            extra_callbacks=[history])
    started = time.perf_counter()
    with quiet_fit(r".*(overfit|does not have many workers).*"):
        trainer.fit(module, datamodule=datamodule)
    return RunResult(None, overfit_verdict(history.losses), time.perf_counter() - started)


def _fit_and_evaluate(config: Config, prepared, module, datamodule, run_dir: Path, checkpoint: Path | None,
                      extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True) -> RunResult:
    from earmark.training import build_trainer, quiet_fit

    has_validation = len(prepared.rows("val")) > 0
    steps_per_epoch = -(-len(prepared.rows("train")) // config.train.batch_size)
    trainer = build_trainer(config, run_dir, has_validation, steps_per_epoch, extra_callbacks=list(extra_callbacks))
    # a model that takes groups, resumed after its phase 1 finished, only runs phase 2 again
    phase_one_done = module.uses_groups and checkpoint is not None and _base_checkpoint(run_dir).is_file()
    started = time.perf_counter()
    with quiet_fit():
        if not phase_one_done:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None)
    fit_seconds = time.perf_counter() - started
    extra: dict[str, Any] = {}
    if module.uses_groups:  # phase 2: adapt the group embeddings from phase 1's best weights
        from earmark.personalization import adapt

        run_dir, adapt_seconds, extra["adapt_epochs"] = adapt(config, module, datamodule, trainer, run_dir,
                                                              phase_one_done, has_validation, steps_per_epoch)
        fit_seconds += adapt_seconds
    if not trainer.is_global_zero:  # rank 0 evaluates and writes; the other ranks are done
        return RunResult(run_dir, {}, fit_seconds)
    if not run_dir.is_dir():  # a launcher's environment misled _is_launch_rank_zero: use rank 0's folder
        run_dir = Path(trainer.checkpoint_callback.dirpath).parent
    from earmark.scoring import fit_on_validation, write_untested_metrics

    items = prepared.items
    # temperature and thresholds into best.ckpt and calibration.json; the calibrated best.ckpt is kept loaded
    predictor = fit_on_validation(run_dir, items[items["split"] == "val"], prepared.cache.waves, prepared.labels,
                                  config.evaluation)
    extra = {"fit_seconds": fit_seconds,
             "epochs": _phase_one_epochs(checkpoint) if phase_one_done else int(trainer.current_epoch),
             **extra, "device_resident": datamodule.device_resident}
    if not evaluate_test:
        return RunResult(run_dir, write_untested_metrics(run_dir, extra), fit_seconds)
    metrics = _evaluate_run(run_dir, items[items["split"] == "test"], prepared.cache.waves, prepared.labels,
                            config=config, extra=extra, predictor=predictor)
    personalization = run_dir / "personalization.json"
    return RunResult(run_dir, metrics, fit_seconds,
                     json.loads(personalization.read_text()) if module.uses_groups else None)


def _phase_one_epochs(checkpoint: Path) -> int:
    """Epochs a finished phase 1 ran, from its last checkpoint (saved at the end of its last epoch)."""
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1


def _base_checkpoint(run_dir: Path) -> Path:
    from earmark.personalization import base_checkpoint_of

    return base_checkpoint_of(run_dir)


def _evaluate_run(run_dir: Path, test_items: pd.DataFrame, waves: np.ndarray, labels: list[str],
                  out_dir: Path | None = None, *, config: Config | None = None, group_by: Sequence[str] = (),
                  extra: dict[str, Any] | None = None, predictor=None) -> dict[str, Any]:
    """Score the run's best checkpoint on `test_items` (rows into `waves`) and write every artifact
    (see `earmark.scoring.evaluate_run`)."""
    from earmark.scoring import evaluate_run

    return evaluate_run(run_dir, test_items, waves, labels, out_dir, config=config, group_by=group_by, extra=extra,
                        predictor=predictor)


def evaluate(run: str | Path, data: str | Path | None = None, out_dir: str | Path | None = None, *,
             group_by: Sequence[str] = ()) -> dict[str, Any]:
    """Re-score a run: on its own test split, on another config's test split, or on every row of a CSV.

    group_by: metadata columns analysed per group (accuracy per value, the worst, per_group_<column>.png)
    besides split.group_by, `group` and the run's evaluation.group_by. Writes into `out_dir` (default
    runs/<name>/eval/<time>/) what training's evaluation writes; returns metrics.json's content.
    """
    from earmark.data.cache import prepare_cache
    from earmark.data.prepared import prepare_data
    from earmark.data.splits import load_splits

    run_dir = Path(run)
    config = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if config is None:
        raise EarmarkError(f"{run_dir} is not a run directory (no config.yaml)")
    labels = json.loads((run_dir / "labels.json").read_text())
    if data is None:
        items = load_splits(run_dir / "splits")
        items = items[items["split"] == "test"]
    elif str(data).lower().endswith((".yaml", ".yml")):
        other = load_config(data)
        other = other.model_copy(update={"data": other.data.model_copy(update=config.data.audio_key())})
        prepared = prepare_data(other, progress=True)
        items = prepared.items[prepared.items["split"] == "test"]
    else:
        csv_data = config.data.model_copy(update={"source": "csv", "path": Path(data)})
        from earmark.data.sources import load_table

        items = load_table(csv_data, min_classes=1)
    cache = prepare_cache(items["path"].drop_duplicates().tolist(), config.data, progress=True)
    keep = ["path", "segment"] if "segment" in items else ["path"]
    test_items = items.drop(columns=[c for c in ("row", "start_s", "end_s") if c in items]).merge(
        cache.segments, on=keep, how="inner")
    unknown = sorted(set(test_items["label"].astype(str)) - set(labels))
    if unknown:
        raise EarmarkError(f"the evaluation data has classes the run never saw: {', '.join(unknown)}")
    out = Path(out_dir) if out_dir else run_dir / "eval" / datetime.now().strftime("%Y%m%d-%H%M%S")
    return _evaluate_run(run_dir, test_items, cache.waves, labels, out_dir=out, config=config, group_by=group_by)


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path | None = None, *, top_k: int = 3,
            chunk_s: float | None = None, hop_s: float | None = None, device: str | None = None,
            groups: str | Sequence[str | None] | None = None, batch_size: int = 256, threads: int | None = None):
    """Predict files, folders, CSV lists or "-" (paths on stdin) with a run, a .ckpt or an exported
    .onnx (onnxruntime only, no torch); writes `out` (and `<out>_timeline.csv` when chunking).

    groups (personalized models): one group (e.g. speaker) for every input, or one per resolved file;
    otherwise a CSV list's group column is used. Files without a known group get the base model.
    threads: CPU threads per prediction (onnxruntime's intra-op threads; torch's thread count).
    """
    from earmark.data.metadata import COLUMN_ALIASES
    from earmark.predict import load_predictor, resolve_grouped_inputs

    predictor = load_predictor(run, threads=threads, device=device)
    columns = [predictor.group_column, *COLUMN_ALIASES["group"]] if predictor.uses_groups else []
    resolved = resolve_grouped_inputs(inputs, columns)
    paths = [path for path, _ in resolved]
    if groups is None and any(group is not None for _, group in resolved):
        groups = [group for _, group in resolved]
    result = predictor.predict_files(paths, top_k=top_k, chunk_s=chunk_s, hop_s=hop_s, groups=groups,
                                     batch_size=batch_size)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.files.to_csv(out, index=False)
        if result.timeline is not None:
            result.timeline.to_csv(out.with_name(out.stem + "_timeline.csv"), index=False)
    return result


def inspect(config: Config | str | Path | None = None, overrides: Sequence[str] = (),
            out_dir: str | Path | None = None, augment: bool = False):
    """Summarise the data (counts, durations, rates, bad files) and draw example spectrograms;
    with `augment`, also clean-vs-augmented spectrograms of a few training clips (augment.png)."""
    from earmark.inspection import inspect_data

    return inspect_data(config, overrides, out_dir=Path(out_dir) if out_dir else None, augment=augment)


def clean(config: Config | str | Path | None = None, overrides: Sequence[str] = ()) -> int:
    """Remove decoded caches and generated splits; returns bytes freed. Runs are never touched."""
    from earmark.data.cache import clean_cache

    config = _as_config(config, overrides)
    freed = clean_cache(config.data.cache_dir)
    splits = config.workspace / "splits"
    if splits.exists():
        freed += sum(p.stat().st_size for p in splits.rglob("*") if p.is_file())
        shutil.rmtree(splits)
    return freed


def create_app(model: str | Path, *, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
               request_timeout_s: float = 30.0, threads: int | None = None):
    """The FastAPI app that serves `model` (a run directory, .ckpt or model.onnx): POST /predict,
    POST /predict/timeline, GET /labels, GET /health; run it with any ASGI server."""
    from earmark.serve import create_app as build_app, load_model, model_name
    from earmark.serve_audio import ServeLimits

    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s)
    return build_app(load_model(model, threads), limits, model_name=model_name(model), model_path=str(model))


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          max_duration_s: float = 600.0, request_timeout_s: float = 30.0, threads: int | None = None,
          log_level: str = "info") -> None:
    """Serve `model` over HTTP with uvicorn until interrupted (see `create_app` for the endpoints)."""
    from earmark.serve import run_server
    from earmark.serve_audio import ServeLimits

    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s)
    run_server(model, host, port, limits, threads=threads, log_level=log_level)


def compare(runs: Sequence[str | Path], out_dir: str | Path | None = None):
    """Compare runs scored on the same test clips: metrics side by side, per-class differences, and for
    each run after the first McNemar's exact p-value and paired-bootstrap 95% CIs of the accuracy and
    macro-F1 differences against it. Writes compare.json/.md/.html to `out_dir` (default: a new
    compare-<timestamp> folder beside the first run; never overwrites) and returns the `Comparison`."""
    from earmark.compare import compare_runs
    from earmark.compare_report import write_comparison
    from earmark.config import new_folder

    comparison = compare_runs(list(runs))
    if out_dir is None:
        out_dir = new_folder(Path(runs[0]).resolve().parent, f"compare-{datetime.now():%Y%m%d-%H%M%S}")
    write_comparison(comparison, Path(out_dir))
    return comparison


def cv(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, folds: int | None = None,
       group_by: str | None = None, fold_column: str | None = None, seed: int | None = None,
       resume: str | Path | None = None, strict: bool = False, log=None):
    """K-fold cross-validation: decode once, train one ordinary run per held-out fold under
    `runs/<name>-cv/fold-<f>/`, and write cv_summary.json, cv_report.md/.html and the pooled confusion.

    folds: K computed folds (default 5), stratified, grouped by `group_by` (default split.group_by;
    no group in two folds); fold_column: use the data's own folds instead (e.g. 'fold' of ESC-50).
    seed: the fold assignment's seed (default config.seed). resume: an earlier CV folder; finished
    folds are kept. log: called with one progress line per step. Returns `earmark.crossval.CVResult`.
    """
    from earmark.crossval import cross_validate

    if resume is not None and config is None and not overrides:
        loaded = None  # the CV folder's own config
    else:
        loaded = _as_config(config, overrides)
    return cross_validate(loaded, folds=folds, group_by=group_by, fold_column=fold_column, seed=seed,
                          resume=Path(resume) if resume is not None else None, strict=strict,
                          log=log or (lambda text: None))


def export(run: str | Path, out_dir: str | Path | None = None, *, int8: str | None = None, opset: int | None = None,
           clips: Sequence[str | Path] | None = None, max_int8_drop: float = 2.0, force: bool = False,
           exporter: str = "auto", log=print):
    """Export a run (or .ckpt) to ONNX: `out_dir/model.onnx` (default `<run>/export/`), raw waveform in,
    calibrated probabilities out, checked against PyTorch on the test split (or `clips`) into parity.json.

    int8: "dynamic" or "static" also writes model.int8.onnx, refused (deleted, EarmarkError) when it loses
    more than `max_int8_drop` points of test accuracy, unless `force`. Returns `export.ExportResult`.
    """
    from earmark.export import export_run

    return export_run(run, out_dir, int8=int8, opset=opset, clips=clips, max_int8_drop=max_int8_drop, force=force,
                      exporter=exporter, log=log)


def predict_stream(model: str | Path, source: str | Path = "-", *, chunk_s: float | None = None,
                   hop_s: float | None = None, stream_format: str = "wav", stream_rate_hz: int | None = None,
                   stream_channels: int = 1, threads: int | None = None, device: str | None = None):
    """Predict a recording as it is read: iterating the returned `StreamPrediction` gives one
    {path, start_s, end_s, label, probability} per window (default: the model's clip length and hop)
    as soon as it completes, in bounded memory; its `summary()` then gives the recording's label.

    source: an audio file, or "-" for standard input: a WAV stream, or raw little-endian PCM
    (`stream_format` s16le/s32le/f32le at `stream_rate_hz` with `stream_channels` interleaved).
    """
    from earmark.predict import load_predictor
    from earmark.streaming import StreamPrediction, file_blocks, stdin_blocks

    predictor = load_predictor(model, threads=threads, device=device)
    if str(source) == "-":
        audio = stdin_blocks(stream_format, stream_rate_hz, stream_channels)
    else:
        audio = file_blocks(source)
    return StreamPrediction(predictor, audio, chunk_s, hop_s, path=str(source))


def tune(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *,
         space: str | Path | None = None, trials: int = 20, seed: int | None = None, timeout_s: float | None = None,
         resume: str | Path | None = None, pruner: Any = "median", startup_trials: int = 5, keep: str = "all",
         evaluate_trials: bool = False, log=None):
    """Hyper-parameter search with Optuna over the dotted config keys of a YAML `space`.

    Each trial is an ordinary run under `runs/<name>-tune/trial-NNN/`, scored by its best validation
    `train.monitor` (never the test split); the median pruner (`pruner="none"` to disable, or an optuna
    pruner object) stops poor trials after their second epoch once `startup_trials` finished; TPE seeded
    by `seed` (default config.seed). The study lives in study.db: `resume` (a tune folder) continues it
    until it holds `trials` trials. Writes trials.csv, optimization_history.png, best_config.yaml and
    tune_summary.json; keep="best" deletes the other trials' run folders. Trials skip the test split's
    evaluation unless `evaluate_trials` (the search never uses it). Returns `TuneResult`.
    """
    from earmark.tuning_study import run_study

    if resume is not None and config is None and not overrides:
        loaded = None  # the tune folder's own config
    else:
        loaded = _as_config(config, overrides)
    return run_study(loaded, Path(space) if space is not None else None, trials=trials, seed=seed,
                     timeout_s=timeout_s, resume=Path(resume) if resume is not None else None, pruner=pruner,
                     startup_trials=startup_trials, keep=keep, evaluate_trials=evaluate_trials,
                     log=log or (lambda text: None))


def fetch(source: str | Path, to: str | Path, *, rate_hz: int | None = None, clip_s: float | None = None,
          retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30.0, max_extract_gb: float = 64.0,
          base_url: str | None = None, checksum: str | None = None, drive_base_url: str | None = None,
          progress: bool = False, say=None, max_download_mb: float = 2048.0):
    """Get data into the folder `to`; returns `earmark.fetch.report.FetchResult`.

    `source` is a sources list (SOURCES.yaml / SOURCES.csv: url, label, start_s, end_s, license, kind per
    row) — converted to mono WAV at `rate_hz` (default 16000), cut into `clip_s` clips, listed in
    `to`/metadata.csv — or a preset name from `datasets()` (`esc50`, ...), laid out as `to`/<name>.
    `base_url` (a mirror serving the preset's archive) and `checksum` ('sha256:<hex>') apply to presets;
    `rate_hz`, `clip_s` and `drive_base_url` (replacing https://drive.google.com) to sources lists; an
    option given for the other kind is refused. `result.overrides` point `prepare` at the data.
    """
    from earmark.fetch.entry import fetch as fetch_data

    return fetch_data(source, to, rate_hz=rate_hz, clip_s=clip_s, retries=retries, backoff_s=backoff_s,
                      timeout_s=timeout_s, max_extract_gb=max_extract_gb, base_url=base_url, checksum=checksum,
                      drive_base_url=drive_base_url, progress=progress, say=say, max_download_mb=max_download_mb)


def datasets() -> list[dict[str, str]]:
    """The presets `fetch` knows: name, title, license, size, url, archive, checksum, checksum_source."""
    from earmark.fetch.presets import describe_presets

    return describe_presets()
