"""The front-end and model an input contract and a registered model describe, built from plain values.

Shared by training (`earmark.train.module.AudioClassifier`), prediction (`earmark.train.network`) and
models made of other runs' networks (`earmark.models.ensemble`), so all build the same pair.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from earmark.config import FeaturesConfig
from earmark.contract import InputContract
from earmark.features import build_frontend
from earmark.models.registry import MODELS, create_model


def build_network(contract: InputContract, model_name: str, model_params: dict[str, Any],
                  groups: list[str] | None = None) -> tuple[nn.Module, nn.Module, bool, bool]:
    """(front-end, model, stack_views, uses_groups) for a contract and a registered model.

    With `features.stack_augmented` the model takes 2 channels (clean and augmented views).
    """
    features = FeaturesConfig(**contract.features)
    frontend = build_frontend(features, contract.sample_rate_hz)
    input_shape = frontend.output_shape(contract.n_samples)  # (1, n_bins, frames) or (1, T)
    if features.stack_augmented:
        input_shape = (2,) + tuple(input_shape[1:])
    model = create_model(model_name, len(contract.labels), input_shape, **model_params)
    uses_groups = MODELS.entry(model_name).needs_groups
    if uses_groups:
        model.fit_groups(groups or [])
    return frontend, model, features.stack_augmented, uses_groups
