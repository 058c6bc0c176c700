"""A run's plan: every decision about a run, resolved once from the config (then the data) and handed down.

`plan_model` answers what can be known before decoding a file (the registry entry, whether the model
takes groups, its personalization settings) and checks the config; `plan_run` adds what the data
decides (the input contract, class weights, the training split's groups and each clip's group id,
whether there is a validation split). Stages receive these answers; none asks the config again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from earmark.config import Config
from earmark.contract import InputContract
from earmark.models.registry import ModelEntry

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ModelPlan:
    config: Config
    entry: ModelEntry
    personalization: Any | None  # PersonalizedSettings of a model that takes groups, else None

    @property
    def uses_groups(self) -> bool:
        return self.entry.needs_groups


@dataclass(frozen=True)
class RunPlan:
    model: ModelPlan
    contract: InputContract
    class_weights: list[float] | None
    groups: list[str] | None  # the training split's groups: they name the group embeddings
    group_ids: dict[str, np.ndarray] | None  # per split, an int64 group id per clip (-1: none)
    has_validation: bool
    steps_per_epoch: int

    @property
    def config(self) -> Config:
        return self.model.config


def with_model_requirements(config: Config) -> Config:
    """A pretrained backbone takes raw audio at its own rate: `features.kind` and `data.sample_rate_hz` follow
    it where the config leaves them at their defaults (a different explicit choice is an error), and nothing
    standardises the waveform in front of it (`features.normalize=false`), so the embeddings cached from the
    decoded audio are exactly what the saved model computes."""
    from earmark.config import DataConfig, FeaturesConfig
    from earmark.errors import EarmarkError
    from earmark.models.registry import MODELS

    entry = MODELS.entry(config.model.name)
    rate_hz = entry.rate_for(config.model.params)
    if rate_hz is None:
        return config
    updates = {}
    if config.data.sample_rate_hz != rate_hz:
        if config.data.sample_rate_hz != DataConfig.model_fields["sample_rate_hz"].default:
            raise EarmarkError(f"model '{entry.name}' takes audio at {rate_hz} Hz; set "
                               f"data.sample_rate_hz={rate_hz} (or leave it unset)")
        updates["data"] = config.data.model_copy(update={"sample_rate_hz": rate_hz})
    features = {}
    if config.features.kind != "waveform" and config.features.kind == FeaturesConfig.model_fields["kind"].default:
        features["kind"] = "waveform"
    if config.features.normalize:  # the backbone was trained on raw audio: no standardisation in front of it
        features["normalize"] = False
    if features:
        updates["features"] = config.features.model_copy(update=features)
    return config.model_copy(update=updates) if updates else config


def plan_model(config: Config) -> ModelPlan:
    """Check everything that can be checked before decoding a single file, and decide the model's side
    (`plan.config` is `config` with the model's requirements applied: use it from here on)."""
    from earmark.errors import EarmarkError
    from earmark.features import build_frontend
    from earmark.models.ensemble import ENSEMBLE_MODEL
    from earmark.models.registry import check_model_config

    if config.model.name == ENSEMBLE_MODEL:  # its members are trained runs; it has nothing to learn itself
        raise EarmarkError("model.name=ensemble is made from trained runs, not trained: run `earmark ensemble RUN "
                           "RUN ... --out DIR` (train each member with `earmark train` first)")
    config = with_model_requirements(config)
    entry = check_model_config(config.model.name, config.model.params, config.features.kind)
    build_frontend(config.features, config.data.sample_rate_hz)
    settings = None
    if entry.needs_groups:
        from earmark.train.optim import check_schedule
        from earmark.train.personalization import adaptation_config, settings_for

        settings = settings_for(config)
        check_schedule(adaptation_config(config, settings).train)
    return ModelPlan(config, entry, settings)


def planned_config(config: Config | str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The config `train` runs with: `config` (an object, a YAML path or None for the defaults) with
    `overrides`, checked as train checks it and with the model's requirements applied (a backbone's
    sample rate and front-end); what `earmark config` prints."""
    from earmark.config import as_config
    from earmark.train.optim import check_schedule
    from earmark.workflows.auto_candidates import AUTO_MODEL

    config = as_config(config, overrides)
    check_schedule(config.train)
    if config.model.name == AUTO_MODEL:  # each candidate is planned when auto tries it
        return config
    return plan_model(config).config


def check_groups(plan: ModelPlan, items) -> list[str] | None:
    """The training split's groups of a model that takes groups (an error when there are none); else None."""
    if not plan.uses_groups:
        return None
    from earmark.train.personalization import check_group_column

    return check_group_column(plan.personalization, plan.config.model.name, items)


def plan_run(plan: ModelPlan, prepared, overfit: bool = False) -> RunPlan:
    """The data's decisions for one run of `plan` on `prepared` (its splits as they are)."""
    from earmark.train.losses import class_weights

    config = plan.config
    groups = check_groups(plan, prepared.items)
    group_ids = None
    if groups is not None:
        from earmark.train.personalization import split_group_ids

        group_ids = split_group_ids(prepared.items, plan.personalization.group_column, groups)
    contract = InputContract(sample_rate_hz=config.data.sample_rate_hz, duration_s=config.data.duration_s,
                             clip=config.data.clip, chunk_hop_s=config.data.chunk_hop_s,
                             labels=tuple(prepared.labels), features=config.features.model_dump())
    weights = class_weights(config.train.class_weights, prepared.labels, prepared.targets("train"))
    n_train = len(prepared.rows("train"))
    return RunPlan(plan, contract, weights, groups, group_ids,
                   has_validation=len(prepared.rows("val")) > 0 and not overfit,
                   steps_per_epoch=1 if overfit else -(-n_train // config.train.batch_size))
