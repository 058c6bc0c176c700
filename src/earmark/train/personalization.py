"""Speaker personalization: which group each clip has, the adaptation phase, and the before/after report.

A model that takes groups (`personalized`) trains in two phases. Phase 1 is an ordinary run: the
base model learns, the group embeddings are unused, and its best checkpoint is kept as
`checkpoints/base.ckpt`. Phase 2 starts from those weights and trains the embeddings (the base
frozen, or at a tenth of train.lr) for `model.params.adapt_epochs` epochs at `adapt_lr`, in
`<run>/adapt/`; its best checkpoint becomes `checkpoints/best.ckpt`, the run's model. Evaluation
then compares the two on the test split, overall and per group (`personalization.json`/`.png`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from earmark.config import Config, ParamGroup
from earmark.data.labels import clip_groups
from earmark.errors import EarmarkError
from earmark.rundir import RunDir

UNFROZEN_BASE_LR_FACTOR = 0.1  # with freeze_base=false the base adapts at train.lr times this
BASE_CHECKPOINT = "base.ckpt"
ADAPT_DIR = "adapt"


def settings_for(config: Config):
    """The validated `model.params` of a model that takes groups."""
    from earmark.models.personalized import PersonalizedSettings

    return PersonalizedSettings.from_params(dict(config.model.params))


def check_group_column(settings, model_name: str, items: pd.DataFrame) -> list[str]:
    """The training split's groups (sorted) in `settings.group_column`; an EarmarkError before any training
    when there are none."""
    column = settings.group_column
    train = items[items["split"] == "train"]
    groups = sorted({g for g in clip_groups(train, column) if g is not None})
    if not groups:
        hint = ("data.columns.group=<column> (the metadata column holding the speaker or source), or "
                "model.params.group_column=<column>")
        other = [c for c in items.columns if c not in ("path", "label", "group", "fold", "split", "row", "segment",
                                                       "start_s", "end_s")]
        raise EarmarkError(f"model '{model_name}' needs a group per clip (e.g. the speaker) in the column "
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


def adaptation_config(config: Config, settings) -> Config:
    """Phase 2's config (`settings`: the model's PersonalizedSettings): adapt_epochs at adapt_lr, no warm-up
    or mid-epoch checkpoints, base lr if unfrozen."""
    groups = [] if settings.freeze_base else [ParamGroup(prefix="model.base",
                                                         lr=config.train.lr * UNFROZEN_BASE_LR_FACTOR)]
    train = config.train.model_copy(update={"max_epochs": settings.adapt_epochs, "lr": settings.adapt_lr,
                                            "warmup_epochs": 0.0, "checkpoint_every_n_steps": None,
                                            "param_groups": groups})
    return config.model_copy(update={"train": train})


def adapt(config: Config, settings, module, datamodule, phase_one, run_dir: Path, phase_one_done: bool,
          has_validation: bool, steps_per_epoch: int, trust_checkpoint: bool = False) -> tuple[Path, float, int]:
    """Phase 2 after `phase_one` (its Trainer) from its best weights, or from checkpoints/base.ckpt when
    `phase_one_done` (a resumed run). Writes checkpoints/base.ckpt (phase 1's best) and checkpoints/best.ckpt
    (the adapted model). Returns (run_dir as rank 0 names it, seconds, epochs). `trust_checkpoint`: the
    user's --trust-checkpoint for a resumed run's base.ckpt."""
    import lightning as L

    from earmark.train.checkpoints import load_checkpoint_dict
    from earmark.train.module import AudioClassifier
    from earmark.train.trainer import build_trainer, quiet_fit

    if not run_dir.is_dir():  # a DDP rank other than 0: Lightning broadcast rank 0's checkpoint folder
        run_dir = Path(phase_one.checkpoint_callback.dirpath).parent
    checkpoints = RunDir(run_dir).checkpoints
    base_checkpoint = checkpoints / BASE_CHECKPOINT
    if not phase_one_done:
        phase_one_best = Path(phase_one.checkpoint_callback.best_model_path or RunDir(run_dir).last_checkpoint)
        if phase_one.is_global_zero:
            shutil.copy2(phase_one_best, base_checkpoint)
        base_checkpoint = phase_one_best  # every rank reads the file it already has
    adapt_config = adaptation_config(config, settings)
    L.seed_everything(config.seed, workers=True, verbose=False)
    adapting = AudioClassifier(**{**module.hparams, "train": adapt_config.train.model_dump(), "adapt": True})
    adapting.load_state_dict(load_checkpoint_dict(base_checkpoint, trust=trust_checkpoint)["state_dict"])
    trainer = build_trainer(adapt_config, run_dir / ADAPT_DIR, has_validation, steps_per_epoch)
    started = time.perf_counter()
    with quiet_fit(r".*module\(s\) in eval mode"):  # the frozen base, on purpose
        trainer.fit(adapting, datamodule=datamodule)
    seconds = time.perf_counter() - started
    if trainer.is_global_zero:
        shutil.copy2(trainer.checkpoint_callback.best_model_path, RunDir(run_dir).best_checkpoint)
    return run_dir, seconds, int(trainer.current_epoch)


def base_checkpoint_of(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoints / BASE_CHECKPOINT
