"""The LightningModule (what a step is) and the Trainer assembly (callbacks, loggers, checkpoints).

The loop, devices, precision and checkpoint writing live in Lightning's Trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from earmark.augment import WaveAugment
from earmark.config import AugmentConfig, Config, FeaturesConfig, TrainConfig
from earmark.contract import InputContract
from earmark.features import build_frontend
from earmark.models.registry import create_model

STAGES = ("train", "val", "test")


class AudioClassifier(L.LightningModule):
    """Front-end + model. forward: waves (B, n_samples) → logits (B, n_classes).

    Every constructor argument is a plain dict/str saved in the checkpoint's hyper-parameters,
    so `AudioClassifier.load_from_checkpoint(path)` alone rebuilds the front-end and the model.
    """

    def __init__(self, contract: dict[str, Any], model_name: str, model_params: dict[str, Any],
                 train: dict[str, Any], augment: dict[str, Any] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.contract = InputContract.from_dict(contract)
        self.train_cfg = TrainConfig(**train)
        self.augment = WaveAugment(AugmentConfig(**(augment or {})), self.contract.sample_rate_hz)
        self._augment_generator = torch.Generator().manual_seed(seed)
        self.frontend = build_frontend(FeaturesConfig(**self.contract.features), self.contract.sample_rate_hz)
        input_shape = self.frontend.output_shape(self.contract.n_samples)
        self.model = create_model(model_name, len(self.contract.labels), input_shape, **model_params)
        n = len(self.contract.labels)
        self._confusion = {stage: torch.zeros(n * n, dtype=torch.long) for stage in STAGES}

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """waves (B, n_samples) → logits (B, n_classes)."""
        return self.model(self.frontend(waves))

    def _common_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        waves, targets = batch  # (B, n_samples), (B,)
        if stage == "train":
            waves = self.augment(waves, self._augment_generator)
        logits = self(waves)
        smoothing = self.train_cfg.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(targets))
        n = len(self.labels)
        pairs = targets * n + logits.argmax(dim=1)
        self._confusion[stage] = self._confusion[stage].to(pairs.device) + torch.bincount(pairs, minlength=n * n)
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        n = len(self.labels)
        confusion = self._confusion[stage].view(n, n).float()  # rows: true, cols: predicted
        self._confusion[stage] = torch.zeros_like(self._confusion[stage])
        if confusion.sum() == 0:
            return
        true_positive = confusion.diag()
        precision = true_positive / confusion.sum(0).clamp(min=1)
        recall = true_positive / confusion.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = confusion.sum(1) > 0
        self.log(f"{stage}_acc", true_positive.sum() / confusion.sum(), prog_bar=stage != "test")
        self.log(f"{stage}_macro_f1", f1[present].mean())

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._common_step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self):
        cfg = self.train_cfg
        optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        if cfg.scheduler == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                            pct_start=0.2)
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def default_precision(config: Config) -> str:
    if config.train.precision:
        return config.train.precision
    if config.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(config: Config, run_dir: Path, has_validation: bool) -> L.Trainer:
    """The Trainer for a run: best + last checkpoints, early stopping, TensorBoard, rich progress."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    cfg = config.train
    monitor = cfg.monitor if has_validation else "train_loss"
    mode = "min" if monitor.endswith("loss") else "max"
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode,
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False)
    callbacks: list = [checkpoint]
    if cfg.early_stopping_patience and has_validation:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping_patience))
    if cfg.progress:
        callbacks.append(RichProgressBar(leave=False))
    max_time = {"seconds": cfg.max_time_s} if cfg.max_time_s else None
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        max_time=max_time,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=default_precision(config),
        deterministic=cfg.deterministic,
        callbacks=callbacks,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""),
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )
