"""Optimizer and learning-rate schedule builders: plain functions of the model and `TrainConfig`.

Schedules are per optimizer step. `warmup_epochs` ramps the learning rate linearly from
lr / warmup_steps up to lr before cosine/step/none decay; onecycle uses it as its own warm-up
phase (default: the first 20% of training); plateau has no warm-up.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from earmark.config import TrainConfig
from earmark.errors import EarmarkError

ONECYCLE_DEFAULT_WARMUP = 0.2


def check_schedule(train: TrainConfig) -> None:
    """Schedule settings that contradict each other, caught before any work starts."""
    if train.warmup_epochs and train.warmup_epochs >= train.max_epochs:
        raise EarmarkError(f"train.warmup_epochs ({train.warmup_epochs:g}) must be shorter than the training "
                           f"(train.max_epochs={train.max_epochs}); lower it or train longer")
    if train.warmup_epochs and train.scheduler == "plateau":
        raise EarmarkError("train.warmup_epochs does not apply to train.scheduler=plateau; set warmup_epochs=0 "
                           "or use cosine, step or onecycle")
    if train.optimizer == "sgd" and train.nesterov and train.momentum == 0:
        raise EarmarkError("train.nesterov needs train.momentum above 0")


def _top_level_names(module: nn.Module) -> list[str]:
    """'model.features', 'model.head', ...: the first two parts of every parameter's name."""
    return sorted({".".join(name.split(".")[:2]) for name, _ in module.named_parameters()})


def param_groups(module: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one per `train.param_groups` prefix, then every other parameter.

    A parameter joins the group with the longest prefix its dotted name starts with (whole parts:
    'model.head' takes 'model.head.weight', not 'model.header.weight'). A prefix that matches
    nothing is an error listing the names there are.
    """
    specs = sorted(train.param_groups, key=lambda spec: len(spec.prefix), reverse=True)
    prefixes = [spec.prefix.rstrip(".") for spec in specs]
    members: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in prefixes}
    rest: list[nn.Parameter] = []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        match = next((p for p in prefixes if name == p or name.startswith(p + ".")), None)
        (members[match] if match is not None else rest).append(parameter)
    empty = [prefix for prefix in prefixes if not members[prefix]]
    if empty:
        raise EarmarkError(f"train.param_groups prefix {', '.join(repr(p) for p in empty)} matches no trainable "
                           f"parameter; parameter names start with: {', '.join(_top_level_names(module))}")
    groups = [{"name": prefix, "params": members[prefix], "lr": spec.lr,
               "weight_decay": train.weight_decay if spec.weight_decay is None else spec.weight_decay}
              for prefix, spec in zip(prefixes, specs)]
    if rest:
        groups.append({"name": "default", "params": rest, "lr": train.lr, "weight_decay": train.weight_decay})
    return groups


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]] = {
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay),
    "adam": lambda groups, t: torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay),
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                                             weight_decay=t.weight_decay),
}


def build_optimizer(module: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[train.optimizer](param_groups(module, train), train)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear ramp 1/warmup_steps, 2/warmup_steps, ..., 1, then 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Warm-up, then half a cosine from 1 down to 0 at `total_steps`."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def step_factor(step: int, warmup_steps: int, step_size_steps: int, gamma: float) -> float:
    """Warm-up, and a decay by `gamma` every `step_size_steps` steps (counted from the start)."""
    return warmup_factor(step, warmup_steps) * gamma ** (step // max(1, step_size_steps))


class ResumableOneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """OneCycleLR that keeps its own length when loading a state: a resume may extend max_epochs."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own_length = {"total_steps": self.total_steps, "_schedule_phases": self._schedule_phases}
        super().load_state_dict(state_dict)
        self.__dict__.update(own_length)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int, monitor: str,
                    ) -> dict[str, Any] | None:
    """Lightning's lr_scheduler config for `train.scheduler`, or None (constant lr, no warm-up).

    total_steps: optimizer steps in the whole training (Trainer.estimated_stepping_batches).
    monitor: the metric the plateau scheduler watches.
    """
    total_steps = max(1, int(total_steps))
    steps_per_epoch = total_steps / train.max_epochs
    warmup_steps = int(round(train.warmup_epochs * steps_per_epoch))
    lambda_lr = torch.optim.lr_scheduler.LambdaLR
    if train.scheduler == "plateau":
        mode = "min" if monitor.endswith("loss") else "max"
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=train.step_gamma,
                                                               patience=train.plateau_patience)
        return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor}
    if train.scheduler == "onecycle":
        warmup = warmup_steps / total_steps if train.warmup_epochs else ONECYCLE_DEFAULT_WARMUP
        scheduler = ResumableOneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                                        total_steps=total_steps, pct_start=min(max(warmup, 1e-6), 0.999))
    elif train.scheduler == "cosine":
        scheduler = lambda_lr(optimizer, partial(cosine_factor, warmup_steps=warmup_steps, total_steps=total_steps))
    elif train.scheduler == "step":
        step_size_steps = int(round(train.step_size_epochs * steps_per_epoch))
        scheduler = lambda_lr(optimizer, partial(step_factor, warmup_steps=warmup_steps,
                                                 step_size_steps=step_size_steps, gamma=train.step_gamma))
    elif warmup_steps > 0:  # "none" with a warm-up
        scheduler = lambda_lr(optimizer, partial(warmup_factor, warmup_steps=warmup_steps))
    else:
        return None
    return {"scheduler": scheduler, "interval": "step"}
