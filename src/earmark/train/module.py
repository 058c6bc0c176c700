"""The LightningModule: a model, its front-end and augmentation, and what one step is."""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from earmark.augment import BatchAugmenter, mixed_loss, stack_views
from earmark.config import AugmentConfig, ModelConfig, TrainConfig
from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.train.losses import ClassificationLoss
from earmark.train.network import ClassifierSurface, build_network
from earmark.train.optim import build_optimizer, build_scheduler

STAGES = ("train", "val", "test")


class EpochMetrics:
    """Per-stage accumulators over an epoch: the summed loss and the confusion matrix (its sum: the clips).

    Kept as plain tensors (not buffers) so they stay out of the model's state_dict; checkpoints carry
    them separately, so an epoch resumed halfway reports the same numbers as an uninterrupted one.
    """

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.state = {stage: self._zeros() for stage in STAGES}

    def _zeros(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        n = self.n_classes
        return {"loss_sum": torch.zeros((), dtype=torch.float64, device=device),
                "confusion": torch.zeros(n * n, dtype=torch.long, device=device)}

    @torch.no_grad()
    def update(self, stage: str, per_clip_loss: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        state = self.state[stage]
        device = targets.device
        pairs = targets * self.n_classes + logits.argmax(dim=1)  # (B,) row-major (true, predicted)
        state["loss_sum"] = state["loss_sum"].to(device) + per_clip_loss.detach().double().sum()
        state["confusion"] = state["confusion"].to(device) + torch.bincount(pairs, minlength=self.n_classes ** 2)

    def compute(self, stage: str, sum_across_ranks: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """loss, acc and macro_f1 over every clip of the epoch (all ranks); then the accumulators reset."""
        state = self.state[stage]
        device = state["confusion"].device
        self.state[stage] = self._zeros(device)
        confusion = sum_across_ranks(state["confusion"].clone()).view(self.n_classes, self.n_classes).double()
        loss_sum = sum_across_ranks(state["loss_sum"].clone())
        n_clips = confusion.sum()
        if n_clips == 0:
            return {}
        true_positive = confusion.diag()
        precision = true_positive / confusion.sum(0).clamp(min=1)
        recall = true_positive / confusion.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = confusion.sum(1) > 0
        return {"loss": (loss_sum / n_clips).float(), "acc": (true_positive.sum() / n_clips).float(),
                "macro_f1": f1[present].mean().float()}


class AudioClassifier(ClassifierSurface, L.LightningModule):
    """Front-end + model. forward: waves (B, n_samples) → logits (B, n_classes).

    Every constructor argument is a plain dict/str/list saved in the checkpoint's hyper-parameters,
    so `AudioClassifier.load_from_checkpoint(path)` alone rebuilds the front-end and the model.
    With `features.stack_augmented` the model takes 2 channels: the clean and the augmented view
    (in training), the clean view twice (evaluation and prediction).
    """

    def __init__(self, contract: dict[str, Any], model_name: str, model_params: dict[str, Any],
                 train: dict[str, Any], augment: dict[str, Any] | None = None, seed: int = 0,
                 class_weights: list[float] | None = None, monitor: str = "val_loss",
                 groups: list[str] | None = None, adapt: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.contract = InputContract.from_dict(contract)
        self.train_cfg = TrainConfig(**train)
        self.seed = seed
        self.monitor = monitor
        self.augmenter = BatchAugmenter(AugmentConfig(**(augment or {})), self.contract.sample_rate_hz)
        self.frontend, self.model, self.stack_views, self.uses_groups = build_network(
            self.contract, model_name, model_params, groups)
        offline_params = getattr(self.model, "offline_params", None)
        if callable(offline_params):  # checkpoints rebuild the architecture offline; their weights replace it
            self.hparams["model_params"] = offline_params(dict(model_params))
        self.adapt = adapt
        if self.uses_groups:
            self.model.set_adapting(adapt)
        elif groups is not None or adapt:
            raise EarmarkError(f"model '{model_name}' takes no groups; only models registered with needs_groups do")
        cfg = self.train_cfg
        self.criterion = ClassificationLoss(cfg.loss, cfg.focal_gamma, class_weights, cfg.label_smoothing)
        self.epoch_metrics = EpochMetrics(len(self.contract.labels))
        # fitted on the validation split after training (calibration); every predictor and export uses them
        self.register_buffer("temperature_", torch.ones(()))  # probabilities = softmax(logits / temperature_)
        self.register_buffer("reject_threshold_", torch.zeros(()))  # top probability below it → "unknown"; 0: off

    @classmethod
    def create(cls, contract: InputContract, model: ModelConfig, train: TrainConfig, augment: AugmentConfig,
               seed: int = 0, class_weights: list[float] | None = None, monitor: str = "val_loss",
               groups: list[str] | None = None) -> "AudioClassifier":
        """Build from the typed objects of a run's plan. The checkpoint keeps their serialised form (plain
        dicts, the one contract), so loading it rebuilds everything without unpickling earmark's types."""
        return cls(contract.to_dict(), model.name, dict(model.params), train.model_dump(), augment.model_dump(), seed,
                   class_weights, monitor, groups=groups)

    def forward(self, waves: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """waves (B, n_samples), groups (B,) int64 ids or None → logits (B, n_classes)."""
        return self._run_model(self.features(waves), groups)

    def configure_model(self) -> None:
        """Training-speed settings, applied by the Trainer only (a model loaded to predict stays eager)."""
        if self.train_cfg.channels_last and self.frontend.kind != "waveform":
            self.model.to(memory_format=torch.channels_last)
        if self.train_cfg.compile and getattr(self.model, "_compiled_call_impl", None) is None:
            self.model.compile()  # in place: parameter names (and checkpoints) stay the same

    def _run_model(self, features: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        if self.train_cfg.channels_last and features.dim() == 4:
            features = features.contiguous(memory_format=torch.channels_last)
        return self.model(features) if groups is None else self.model(features, groups)

    def _augment_generator(self, batch_idx: int) -> torch.Generator:
        """A generator for this batch alone: runs resumed mid-epoch and every DDP rank draw their own."""
        key = [self.seed, self.global_rank, self.current_epoch, batch_idx]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def _training_logits(self, waves: torch.Tensor, targets: torch.Tensor, batch_idx: int,
                         groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented training pass: waveform aug → front-end → SpecAugment → (clean + augmented views)
        → mix → model. Returns (logits, mixed loss)."""
        generator = self._augment_generator(batch_idx)
        features = self.frontend(self.augmenter.waveform(waves, generator))
        features = self.augmenter.spectrogram(features, generator)
        if self.stack_views:
            features = stack_views(self.frontend(waves), features)  # (B, 2, ...)
        features, targets_a, targets_b, lam = self.augmenter.mix(features, targets, generator)
        logits = self._run_model(features, groups)  # a mixed clip keeps the group of its first clip
        return logits, mixed_loss(self.criterion, logits, targets_a, targets_b, lam)

    def _common_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, stage: str) -> torch.Tensor:
        waves, targets = batch[0], batch[1]  # (B, n_samples), (B,)
        groups = batch[2] if len(batch) > 2 and self.adapt else None  # (B,) group ids, used in phase 2 only
        if stage == "train" and self.augmenter.active:
            logits, loss = self._training_logits(waves, targets, batch_idx, groups)
            per_clip = loss.detach().expand(len(targets))  # train_loss: the mean objective, mixing included
        else:
            logits = self(waves, groups)
            # training uses the configured loss; evaluation plain cross-entropy, comparable across recipes
            per_clip = (self.criterion(logits, targets) if stage == "train"
                        else F.cross_entropy(logits.float(), targets, reduction="none"))
            loss = per_clip.mean()
        self.epoch_metrics.update(stage, per_clip, targets, logits)
        if stage == "train":
            self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(targets))
        return loss

    def _log_epoch_metrics(self, stage: str) -> None:
        values = self.epoch_metrics.compute(stage, lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        for name, value in values.items():  # already summed over ranks: every rank logs the same value
            self.log(f"{stage}_{name}", value, prog_bar=stage != "test" and name in ("loss", "acc"), sync_dist=True)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._common_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._common_step(batch, batch_idx, "test")

    def on_train_epoch_start(self) -> None:
        # models with a schedule of their own (e.g. gradual unfreezing) learn the epoch here; on resume
        # Lightning calls this again for the restored epoch, so the model's state follows the loop's
        set_epoch = getattr(self.model, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self):
        optimizer = build_optimizer(self, self.train_cfg)
        scheduler = build_scheduler(optimizer, self.train_cfg, self.trainer.estimated_stepping_batches, self.monitor)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # every rank runs this hook; rank 0 writes the file, so gather each rank's accumulators
        accumulators = {stage: {name: self._gather(value) for name, value in state.items()}
                        for stage, state in self.epoch_metrics.state.items()}
        checkpoint["earmark_resume"] = {"torch_rng": torch.get_rng_state(), "epoch_metrics": accumulators,
                                        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}

    def _gather(self, value: torch.Tensor) -> torch.Tensor:
        """(world_size, ...) on the CPU: this tensor from every rank."""
        if self.trainer.world_size == 1:
            return value[None].cpu()
        gathered = [torch.zeros_like(value) for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather(gathered, value.contiguous())
        return torch.stack(gathered).cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        weights = checkpoint.get("state_dict", {})
        for name in ("temperature_", "reject_threshold_"):  # checkpoints written before calibration existed
            weights.setdefault(name, getattr(self, name).detach().clone())
        state = checkpoint.get("earmark_resume")
        if state is None or self._trainer is None:  # loading weights to predict: leave the RNG alone
            return
        # ranks draw dropout masks from the same seed in the same amounts, so rank 0's RNG state fits all
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
        rank = self.trainer.global_rank
        for stage, saved in state["epoch_metrics"].items():
            if all(len(value) > rank for value in saved.values()):
                self.epoch_metrics.state[stage] = {name: value[rank].clone() for name, value in saved.items()}
