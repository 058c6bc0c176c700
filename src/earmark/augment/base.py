"""What every batch augmentation shares: random draws from a passed-in generator, split from their effect.

`draw(shape, generator)` makes every random choice for a batch (small tensors on the generator's device,
usually the CPU); `transform(x, params)` applies them on the batch's device. Tests and previews call `draw`
with a seeded generator to know exactly what `forward` will do with the same seed.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Params = dict[str, torch.Tensor]


def generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform in [low, high), drawn on the generator's device."""
    draws = torch.rand(shape, generator=generator, device=generator_device(generator), dtype=dtype)
    return low + (high - low) * draws


def coin(shape: tuple[int, ...], p: float, generator: torch.Generator | None) -> torch.Tensor:
    """True with probability p, independently per element."""
    return torch.rand(shape, generator=generator, device=generator_device(generator)) < p


def on_chosen(waves: torch.Tensor, chosen: torch.Tensor, fn: Callable[..., torch.Tensor],
              *per_clip: torch.Tensor) -> torch.Tensor:
    """fn(waves[chosen], *(p[chosen] for p in per_clip)) written back into a copy; other clips untouched.

    For the costly transforms (resampling, phase vocoder): unchosen clips are neither computed nor altered.
    """
    index = chosen.reshape(-1).nonzero().squeeze(1)  # (n_chosen,) on the generator's device
    if len(index) == 0:
        return waves
    rows = index.to(waves.device)
    out = waves.clone()
    out[rows] = fn(waves[rows], *(p[index].to(waves.device) for p in per_clip)).to(waves.dtype)
    return out


class Augmentation(nn.Module):
    """A batch transform: `forward(x, generator)` = `transform(x, draw(x.shape, generator))`.

    An inactive augmentation (probability 0, zero strength) returns its input and draws nothing,
    so switching a transform off never changes the random numbers the others see.
    """

    @property
    def active(self) -> bool:
        raise NotImplementedError

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        raise NotImplementedError

    def transform(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active:
            return x
        return self.transform(x, self.draw(tuple(x.shape), generator))
