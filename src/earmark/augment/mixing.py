"""Batch mixing (mixup, cutmix along time) with the targets mixed in the loss; the two-view stack.

Each clip i is mixed with clip perm[i] of the same batch: mixed = lam * a + (1 - lam) * b, per clip.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from earmark.augment.base import Params, coin, generator_device


class BatchMix(nn.Module):
    """Mixup (`mixup_alpha`) or cutmix along the last axis (`cutmix_alpha`) on a batch chosen with probability p.

    With both alphas above 0, each mixed batch uses one of them, half the time each.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, p: float) -> None:
        super().__init__()
        self.mixup_alpha, self.cutmix_alpha, self.p = mixup_alpha, cutmix_alpha, p

    @property
    def active(self) -> bool:
        return self.p > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        """perm (B,), lam (B,) and, for cutmix, the cut [cut_start, cut_start + cut_length) along the last axis."""
        batch, length = shape[0], shape[-1]
        device = generator_device(generator)
        params = {"cutmix": torch.tensor(False), "perm": torch.arange(batch), "lam": torch.ones(batch),
                  "cut_start": torch.zeros(batch, dtype=torch.long), "cut_length": torch.zeros(batch, dtype=torch.long)}
        if not bool(coin((1,), self.p, generator)):
            return params
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or bool(coin((1,), 0.5, generator)))
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        params["perm"] = torch.randperm(batch, generator=generator, device=device).cpu()
        # torch has no Beta sampler that takes a generator: seed numpy's from it instead
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=batch)).float()  # (B,)
        if cutmix:
            cut_length = ((1 - lam) * length).round().long()
            cut_start = (torch.rand(batch, generator=generator, device=device).cpu() * (length - cut_length + 1)).long()
            params.update(cutmix=torch.tensor(True), cut_start=cut_start.clamp(max=length - cut_length),
                          cut_length=cut_length)
            lam = 1 - cut_length.float() / length  # the share of the clip really left from a
        params["lam"] = lam
        return params

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, ..., L), targets (B, ...) → mixed inputs, targets_a, targets_b, lam (B,)."""
        if not self.active:
            return inputs, targets, targets, torch.ones(len(inputs), device=inputs.device)
        params = self.draw(tuple(inputs.shape), generator)
        return self.mix_with(inputs, targets, params)

    def mix_with(self, inputs: torch.Tensor, targets: torch.Tensor, params: Params
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        device = inputs.device
        perm = params["perm"].to(device)
        lam = params["lam"].to(device)
        other = inputs[perm]
        broadcast = (len(inputs),) + (1,) * (inputs.dim() - 1)  # (B, 1, ..., 1)
        if bool(params["cutmix"]):
            start, cut = params["cut_start"].to(device)[:, None], params["cut_length"].to(device)[:, None]
            position = torch.arange(inputs.shape[-1], device=device)  # (L,)
            from_b = (position >= start) & (position < start + cut)  # (B, L)
            mixed = torch.where(from_b.view(broadcast[:-1] + (-1,)), other, inputs)
        else:
            weight = lam.to(inputs.dtype).view(broadcast)
            mixed = weight * inputs + (1 - weight) * other
        return mixed, targets, targets[perm.to(targets.device)], lam


def mixed_loss(per_clip_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
               targets_a: torch.Tensor, targets_b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """mean over clips of lam * loss(logits, a) + (1 - lam) * loss(logits, b); a scalar.

    `per_clip_loss(logits, targets)` must return one loss per clip, shape (B,), e.g.
    `lambda logits, y: F.cross_entropy(logits, y, reduction="none")`.
    """
    loss_a = per_clip_loss(logits, targets_a)
    if loss_a.shape != (len(logits),):
        raise ValueError(f"per_clip_loss must return one loss per clip, shape ({len(logits)},); got "
                         f"{tuple(loss_a.shape)} (use reduction='none')")
    loss_b = per_clip_loss(logits, targets_b)
    lam = lam.to(loss_a.device, loss_a.dtype)
    return (lam * loss_a + (1 - lam) * loss_b).mean()


def stack_views(clean_features: torch.Tensor, augmented_features: torch.Tensor) -> torch.Tensor:
    """(B, 1, ...) clean and (B, 1, ...) augmented features → (B, 2, ...): channel 0 clean, channel 1 augmented."""
    if clean_features.shape != augmented_features.shape or clean_features.shape[1] != 1:
        raise ValueError("stack_views takes two (B, 1, ...) feature batches of the same shape; got "
                         f"{tuple(clean_features.shape)} and {tuple(augmented_features.shape)}")
    return torch.cat([clean_features, augmented_features], dim=1)
