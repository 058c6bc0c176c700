"""The network a checkpoint holds, without Lightning: built from the checkpoint's hyper-parameters.

`build_network` (`earmark.models.assembly`) is shared by the LightningModule
(`earmark.train.module.AudioClassifier`) and `InferenceClassifier`, so training and prediction build
the same front-end and model from the same plain dicts. `InferenceClassifier.load` reads a checkpoint
with `torch.load(weights_only=True)` and keeps only what prediction needs; importing Lightning (and
what it pulls in) would cost seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.models.assembly import build_network  # noqa: F401 (re-exported for train.module)

# state_dict entries prediction needs; the rest (augmenter, loss weights) only matter in training
INFERENCE_PREFIXES = ("frontend.", "model.")
FITTED_BUFFERS = ("temperature_", "reject_threshold_")


class ClassifierSurface:
    """What a trained classifier shows a predictor, the same whether Lightning trains it or not: its labels,
    its clean features and its calibrated probabilities (needs contract, frontend, stack_views, temperature_)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """waves (B, n_samples) → (B, C, n_bins, frames) or (B, C, T); C = 2 when stacking views."""
        features = self.frontend(waves)
        return torch.cat([features, features], dim=1) if self.stack_views else features

    def predict_probabilities(self, waves: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """waves (B, n_samples) → calibrated probabilities (B, n_classes): softmax(logits / temperature_)."""
        return torch.softmax(self(waves, groups).float() / self.temperature_, dim=1)


class InferenceClassifier(ClassifierSurface, nn.Module):
    """Front-end + model + the calibration fitted after training; what a predictor runs.

    forward: waves (B, n_samples), groups (B,) int64 or None → logits (B, n_classes).
    Same attribute names as `AudioClassifier` (contract, model, temperature_, reject_threshold_,
    uses_groups, hparams), so predictors and evaluation use either.
    """

    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__()
        self.hparams = dict(hparams)
        self.contract = InputContract.from_dict(hparams["contract"])
        self.frontend, self.model, self.stack_views, self.uses_groups = build_network(
            self.contract, hparams["model_name"], dict(hparams["model_params"]), hparams.get("groups"))
        self.register_buffer("temperature_", torch.ones(()))
        self.register_buffer("reject_threshold_", torch.zeros(()))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu", trust: bool = False) -> "InferenceClassifier":
        """The network of an earmark checkpoint, read without running code from the file (unless `trust`:
        the user's explicit --trust-checkpoint); a foreign, corrupt or crafted file is one EarmarkError."""
        from earmark.train.checkpoint_file import load_checkpoint_dict

        checkpoint = load_checkpoint_dict(path, trust=trust)
        module = cls(checkpoint["hyper_parameters"])
        weights = {name: value for name, value in checkpoint["state_dict"].items()
                   if name.startswith(INFERENCE_PREFIXES) or name in FITTED_BUFFERS}
        for name in FITTED_BUFFERS:  # checkpoints written before calibration existed
            weights.setdefault(name, getattr(module, name).detach().clone())
        try:
            module.load_state_dict(weights, strict=True)
        except RuntimeError as exc:  # weights that do not fit the hyper-parameters
            raise EarmarkError(f"{path} is a damaged earmark checkpoint: {str(exc).splitlines()[0][:300]}") from None
        return module.eval().to(map_location)


    def forward(self, waves: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(waves)
        return self.model(features) if groups is None else self.model(features, groups)
