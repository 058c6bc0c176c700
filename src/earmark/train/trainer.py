"""The LightningModule (what a step is) and the Trainer assembly (callbacks, loggers, checkpoints).

The loop, devices, precision and checkpoint writing live in Lightning's Trainer. What Lightning does
not keep for an exact mid-epoch resume, the module adds to every checkpoint: the global torch RNG
(dropout) and the epoch's metric accumulators. The batch order comes back through the stateful
train loader (`data.batches.IndexBatches`), and augmentation draws from a generator derived from
(seed, rank, epoch, batch), so nothing about it needs saving.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch

from earmark.config import Config
from earmark.rundir import RunDir
from earmark.train.checkpoints import AtomicCheckpointIO

# Lightning warnings that say nothing about the user's run (earmark's loaders, folders and logging choices)
EXPECTED_FIT_WARNINGS = (
    r".*LeafSpec.*is deprecated",
    r".*Checkpoint directory .* exists and is not empty",
    r".*is smaller than the logging interval",
)
OVERFIT_TARGET_LOSS = 0.05  # "near zero" for the one-batch check, in nats


# Lightning's info lines that say nothing about the user's run: an advertisement, the device inventory
# (the run's device is in its config and report), and a note on how it counts steps
NOISE_LINES = ("💡 Tip", "GPU available:", "TPU available:", "HPU available:", "Loading `train_dataloader` to estimate",
               "`Trainer.fit` stopped: `max_")  # the planned end (max_epochs / max_steps), not news


@contextlib.contextmanager
def quiet_fit(*extra_patterns: str) -> Iterator[None]:
    """Around `trainer.fit`: hide EXPECTED_FIT_WARNINGS (and `extra_patterns`) and Lightning's NOISE_LINES,
    nothing else."""
    with warnings.catch_warnings(), lightning_noise_dropped():
        for pattern in EXPECTED_FIT_WARNINGS + extra_patterns:
            warnings.filterwarnings("ignore", message=pattern)
        yield


class LossHistory(L.Callback):
    """Records the training loss of every step (for the one-batch overfit check)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


def overfit_verdict(losses: list[float]) -> dict[str, Any]:
    """Did one batch get learned? first/final loss and a verdict."""
    if not losses:
        return {"first_loss": None, "final_loss": None, "steps": 0, "passed": False, "verdict": "no training step ran"}
    first, final = losses[0], losses[-1]
    passed = final <= OVERFIT_TARGET_LOSS
    verdict = (f"passed: the loss fell from {first:.4f} to {final:.4f}, so model, labels and optimiser can learn"
               if passed else
               f"failed: the loss only fell from {first:.4f} to {final:.4f} (target {OVERFIT_TARGET_LOSS}); check the "
               f"labels, train.lr, more train.max_epochs, or a bigger model")
    return {"first_loss": first, "final_loss": final, "steps": len(losses), "passed": passed, "verdict": verdict}


def default_precision(config: Config) -> str:
    if config.train.precision:
        return config.train.precision
    if config.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def monitor_metric(config: Config, has_validation: bool) -> str:
    return config.train.monitor if has_validation else "train_loss"


def build_callbacks(config: Config, run_dir: Path, has_validation: bool) -> list[L.Callback]:
    """best.ckpt by the monitored metric; epochNNN.ckpt for the last `save_last_k` epochs; stepNNNNNN.ckpt
    every `checkpoint_every_n_steps`; last.ckpt is always the newest state (what `--resume` reads)."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    cfg = config.train
    monitor = monitor_metric(config, has_validation)
    mode = "min" if monitor.endswith("loss") else "max"
    directory = RunDir(run_dir).checkpoints
    common = dict(dirpath=directory, auto_insert_metric_name=False, enable_version_counter=False)
    callbacks: list[L.Callback] = [
        ModelCheckpoint(filename="best", monitor=monitor, mode=mode, save_top_k=1, **common),
        ModelCheckpoint(filename="epoch{epoch:03d}", monitor="epoch", mode="max", save_top_k=cfg.save_last_k,
                        save_last=True, save_on_train_epoch_end=True, **common),
    ]
    if cfg.checkpoint_every_n_steps:
        callbacks.append(ModelCheckpoint(filename="step{step:06d}", monitor="step", mode="max", save_top_k=1,
                                         every_n_train_steps=cfg.checkpoint_every_n_steps, save_last=True, **common))
    if cfg.early_stopping_patience and has_validation:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping_patience))
    if cfg.progress:
        from earmark.console import output_width

        width = output_width()
        callbacks.append(_progress_bar(width))
    return callbacks


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NOISE_LINES)


@contextlib.contextmanager
def lightning_noise_dropped() -> Iterator[None]:
    """Drop Lightning's NOISE_LINES (logged through its rank-zero loggers while a Trainer is built and
    while it fits); only those lines, only for the duration."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch.utilities.rank_zero",
                                                     "lightning.fabric.utilities.rank_zero")]
    noise_filter = _DropNoise()
    for logger in loggers:
        logger.addFilter(noise_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise_filter)


def _progress_bar(width: int | None):
    """Lightning's rich bar, its epoch counted from 1 of max_epochs ("Epoch 3/3" in the last of 3 epochs;
    Lightning shows the 0-based epoch of max_epochs - 1, "Epoch 2/2")."""
    from lightning.pytorch.callbacks import RichProgressBar

    class EpochFromOne(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            description = f"Epoch {current_epoch + 1}"
            if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
                description += f"/{self.trainer.max_epochs}"
            return f"{description:{max(len(description), len(self.validation_description))}}"

    return EpochFromOne(leave=False, console_kwargs={"width": width} if width else None)


def build_trainer(config: Config, run_dir: Path | None, has_validation: bool, steps_per_epoch: int = 10,
                  overfit: bool = False, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """The Trainer for a run: checkpoints, early stopping, TensorBoard, rich progress; devices and
    strategy from the config. `overfit`: one fixed batch, no validation, no checkpoints, no logs."""
    from lightning.pytorch.loggers import TensorBoardLogger

    cfg = config.train
    callbacks = list(extra_callbacks or [])
    if not overfit:
        assert run_dir is not None
        callbacks += build_callbacks(config, run_dir, has_validation)
    max_time = {"seconds": cfg.max_time_s} if cfg.max_time_s else None
    logger = False if overfit else TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
    with lightning_noise_dropped():
        return L.Trainer(
            max_epochs=cfg.max_epochs,
            max_time=max_time,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            strategy=cfg.strategy,
            num_nodes=cfg.num_nodes,
            precision=default_precision(config),
            deterministic=cfg.deterministic,
            accumulate_grad_batches=cfg.accumulate_grad_batches,
            gradient_clip_val=cfg.gradient_clip_val,
            callbacks=callbacks,
            logger=logger,
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=not overfit,
            overfit_batches=1 if overfit else 0.0,
            limit_val_batches=0 if overfit or not has_validation else None,  # no empty val loop
            use_distributed_sampler=False,  # the batch loaders shard per rank themselves
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            log_every_n_steps=max(1, min(50, steps_per_epoch)),
            num_sanity_val_steps=0,
            default_root_dir=str(run_dir) if run_dir else None,
        )
