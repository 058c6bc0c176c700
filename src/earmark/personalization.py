"""Speaker personalization: which group each clip has, the adaptation phase, and the before/after report.

A model that takes groups (`personalized`) trains in two phases. Phase 1 is an ordinary run: the
base model learns, the group embeddings are unused, and its best checkpoint is kept as
`checkpoints/base.ckpt`. Phase 2 starts from those weights and trains the embeddings (the base
frozen, or at a tenth of train.lr) for `model.params.adapt_epochs` epochs at `adapt_lr`, in
`<run>/adapt/`; its best checkpoint becomes `checkpoints/best.ckpt`, the run's model. Evaluation
then compares the two on the test split, overall and per group (`personalization.json`/`.png`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, ParamGroup
from earmark.errors import EarmarkError

UNFROZEN_BASE_LR_FACTOR = 0.1  # with freeze_base=false the base adapts at train.lr times this
NO_GROUP = "(none)"  # how clips without a group are listed in the report
BASE_CHECKPOINT = "base.ckpt"
ADAPT_DIR = "adapt"


def settings_for(config: Config):
    """The validated `model.params` of a model that takes groups."""
    from earmark.models.personalized import PersonalizedSettings

    return PersonalizedSettings.from_params(dict(config.model.params))


def group_names(values: Sequence[Any] | pd.Series) -> list[Optional[str]]:
    """One name per clip, as str; NA (or blank) → None; whole floats lose their '.0' (3.0 → '3')."""
    series = pd.Series(values)
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return [None if pd.isna(value) or not str(value).strip() else str(value).strip() for value in series]


def clip_groups(items: pd.DataFrame, column: str) -> list[Optional[str]]:
    """The group of every row of `items` from `column`; a clear error when the column is missing."""
    if column not in items.columns:
        raise EarmarkError(f"model.params.group_column='{column}' is not a column of the data; available: "
                           f"{', '.join(map(str, items.columns))}")
    return group_names(items[column])


def check_group_column(config: Config, items: pd.DataFrame) -> list[str]:
    """The training split's groups (sorted); an EarmarkError before any training when there are none."""
    column = settings_for(config).group_column
    train = items[items["split"] == "train"]
    groups = sorted({g for g in clip_groups(train, column) if g is not None})
    if not groups:
        hint = ("data.columns.group=<column> (the metadata column holding the speaker or source), or "
                "model.params.group_column=<column>")
        other = [c for c in items.columns if c not in ("path", "label", "group", "fold", "split", "row", "segment",
                                                       "start_s", "end_s")]
        raise EarmarkError(f"model '{config.model.name}' needs a group per clip (e.g. the speaker) in the column "
                           f"'{column}', but the training split has none there; set {hint}"
                           + (f"; other columns: {', '.join(map(str, other))}" if other else ""))
    return groups


def split_group_ids(items: pd.DataFrame, column: str, groups: list[str]) -> dict[str, np.ndarray]:
    """Per split, an int64 group id per clip in `items` order (-1: no group, or not in `groups`)."""
    index = {group: i for i, group in enumerate(groups)}
    ids = {}
    for split in ("train", "val", "test"):
        names = clip_groups(items[items["split"] == split], column)
        ids[split] = np.array([index.get(name, -1) if name is not None else -1 for name in names], dtype=np.int64)
    return ids


def adaptation_config(config: Config) -> Config:
    """Phase 2's config: adapt_epochs at adapt_lr, no warm-up or mid-epoch checkpoints, base lr if unfrozen."""
    settings = settings_for(config)
    groups = [] if settings.freeze_base else [ParamGroup(prefix="model.base",
                                                         lr=config.train.lr * UNFROZEN_BASE_LR_FACTOR)]
    train = config.train.model_copy(update={"max_epochs": settings.adapt_epochs, "lr": settings.adapt_lr,
                                            "warmup_epochs": 0.0, "checkpoint_every_n_steps": None,
                                            "param_groups": groups})
    return config.model_copy(update={"train": train})


def adapt(config: Config, module, datamodule, phase_one, run_dir: Path, phase_one_done: bool,
          has_validation: bool, steps_per_epoch: int) -> tuple[Path, float, int]:
    """Phase 2 after `phase_one` (its Trainer) from its best weights, or from checkpoints/base.ckpt when
    `phase_one_done` (a resumed run). Writes checkpoints/base.ckpt (phase 1's best) and checkpoints/best.ckpt
    (the adapted model). Returns (run_dir as rank 0 names it, seconds, epochs)."""
    import lightning as L
    import torch

    from earmark.training import AudioClassifier, build_trainer, quiet_fit

    if not run_dir.is_dir():  # a DDP rank other than 0: Lightning broadcast rank 0's checkpoint folder
        run_dir = Path(phase_one.checkpoint_callback.dirpath).parent
    checkpoints = run_dir / "checkpoints"
    base_checkpoint = checkpoints / BASE_CHECKPOINT
    if not phase_one_done:
        phase_one_best = Path(phase_one.checkpoint_callback.best_model_path or checkpoints / "last.ckpt")
        if phase_one.is_global_zero:
            shutil.copy2(phase_one_best, base_checkpoint)
        base_checkpoint = phase_one_best  # every rank reads the file it already has
    adapt_config = adaptation_config(config)
    L.seed_everything(config.seed, workers=True, verbose=False)
    adapting = AudioClassifier(**{**module.hparams, "train": adapt_config.train.model_dump(), "adapt": True})
    adapting.load_state_dict(torch.load(base_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    trainer = build_trainer(adapt_config, run_dir / ADAPT_DIR, has_validation, steps_per_epoch)
    started = time.perf_counter()
    with quiet_fit(r".*module\(s\) in eval mode"):  # the frozen base, on purpose
        trainer.fit(adapting, datamodule=datamodule)
    seconds = time.perf_counter() - started
    if trainer.is_global_zero:
        shutil.copy2(trainer.checkpoint_callback.best_model_path, checkpoints / "best.ckpt")
    return run_dir, seconds, int(trainer.current_epoch)


def base_checkpoint_of(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / BASE_CHECKPOINT


def _accuracy(correct: np.ndarray) -> Optional[float]:
    return float(correct.mean()) if len(correct) else None


def personalization_summary(y_true: np.ndarray, basic: np.ndarray, personalized: np.ndarray,
                            groups: Sequence[Optional[str]], train_groups: Sequence[str], column: str,
                            settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of the base model (`basic`, probabilities (N, C)) and of the personalized one, overall
    and per group; which test groups the training split never had (they get the base model)."""
    y_true = np.asarray(y_true)
    basic_right = basic.argmax(axis=1) == y_true
    personal_right = personalized.argmax(axis=1) == y_true
    names = np.array([NO_GROUP if g is None else g for g in groups], dtype=object)
    known = set(train_groups)
    seen = np.array([g in known for g in groups], dtype=bool)
    per_group = {}
    for name in sorted(set(names), key=str):
        mask = names == name
        before, after = _accuracy(basic_right[mask]), _accuracy(personal_right[mask])
        per_group[name] = {"n_clips": int(mask.sum()), "basic_accuracy": before, "personalized_accuracy": after,
                           "improvement": after - before, "seen_in_training": name in known}
    basic_accuracy, personalized_accuracy = _accuracy(basic_right), _accuracy(personal_right)
    return {
        "group_column": column,
        "n_clips": int(len(y_true)),
        "basic_accuracy": basic_accuracy,
        "personalized_accuracy": personalized_accuracy,
        "improvement": (personalized_accuracy - basic_accuracy) if len(y_true) else None,
        "seen_groups": {"n_clips": int(seen.sum()), "basic_accuracy": _accuracy(basic_right[seen]),
                        "personalized_accuracy": _accuracy(personal_right[seen])},
        "per_group": per_group,
        "unseen_groups": sorted(name for name in per_group if name != NO_GROUP and name not in known),
        "clips_without_group": int((names == NO_GROUP).sum()),
        "train_groups": list(train_groups),
        "settings": settings,
    }


def write_personalization(run_dir: Path, out_dir: Path, predictor, waves: np.ndarray, y_true: np.ndarray,
                          personalized: np.ndarray, groups: Sequence[Optional[str]]) -> dict[str, Any]:
    """Score the phase-1 base model beside the personalized one; write personalization.json and .png."""
    from earmark.predict import Predictor
    from earmark.reports import plot_personalization

    base_path = base_checkpoint_of(run_dir)
    if base_path.is_file():
        base = Predictor.from_run(base_path, device=predictor.device)
        basic, basic_from = base.predict_waves(waves), f"checkpoints/{BASE_CHECKPOINT}"
    else:  # a frozen base is exactly the personalized model without groups
        basic, basic_from = predictor.predict_waves(waves), "checkpoints/best.ckpt without groups"
    from earmark.models.personalized import PersonalizedSettings

    model = predictor.module.model
    settings = {**PersonalizedSettings.from_params(dict(predictor.module.hparams["model_params"])).to_dict(),
                "basic_from": basic_from}
    summary = personalization_summary(y_true, basic, personalized, groups, model.groups_, model.group_column,
                                      settings)
    (out_dir / "personalization.json").write_text(json.dumps(summary, indent=1))
    plot_personalization(summary, out_dir / "personalization.png")
    return summary
