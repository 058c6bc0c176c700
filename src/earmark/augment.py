"""Batch augmentations on the training device: nn.Modules over (B, T) waveforms, training only.

Each transform draws its random numbers for the whole batch at once (no per-clip Python work)
from a generator passed in by the caller, so runs are reproducible without global seeds.
"""

from __future__ import annotations

import torch
from torch import nn

from earmark.config import AugmentConfig


class RandomShift(nn.Module):
    """Circularly shift each clip by up to ±max_shift_s (B, T) → (B, T); padding silence moves with it."""

    def __init__(self, max_shift_s: float, sample_rate_hz: int, p: float) -> None:
        super().__init__()
        self.max_shift = int(round(max_shift_s * sample_rate_hz))
        self.p = p

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, length = waves.shape
        if self.max_shift == 0 or self.p == 0:
            return waves
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch, 1), generator=generator)
        shifts = shifts * (torch.rand(batch, 1, generator=generator) < self.p)
        index = (torch.arange(length).unsqueeze(0) - shifts) % length  # (B, T)
        return waves.gather(1, index.to(waves.device))


class RandomGain(nn.Module):
    """Scale each clip by a gain drawn uniformly in [-max_gain_db, +max_gain_db] dB."""

    def __init__(self, max_gain_db: float, p: float) -> None:
        super().__init__()
        self.max_gain_db = max_gain_db
        self.p = p

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = waves.shape[0]
        gain_db = (torch.rand(batch, 1, generator=generator) * 2 - 1) * self.max_gain_db
        gain_db = gain_db * (torch.rand(batch, 1, generator=generator) < self.p)
        return waves * (10 ** (gain_db / 20)).to(waves.device, waves.dtype)


class GaussianNoise(nn.Module):
    """Add white noise of standard deviation `std` (in full-scale units) to each selected clip."""

    def __init__(self, std: float, p: float) -> None:
        super().__init__()
        self.std = std
        self.p = p

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        batch, length = waves.shape
        chosen = (torch.rand(batch, 1, generator=generator) < self.p).to(waves.device, waves.dtype)
        noise = torch.randn(batch, length, generator=generator).to(waves.device, waves.dtype)
        return waves + chosen * self.std * noise


class WaveAugment(nn.Module):
    """The configured waveform augmentations in a fixed order: shift, gain, noise."""

    def __init__(self, augment: AugmentConfig, sample_rate_hz: int) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        if augment.shift_s > 0:
            steps.append(RandomShift(augment.shift_s, sample_rate_hz, augment.shift_p))
        if augment.gain_db > 0:
            steps.append(RandomGain(augment.gain_db, augment.gain_p))
        if augment.noise_std > 0:
            steps.append(GaussianNoise(augment.noise_std, augment.noise_p))
        self.steps = nn.ModuleList(steps)

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            waves = step(waves, generator)
        return waves
