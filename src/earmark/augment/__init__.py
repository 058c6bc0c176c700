"""Training-only batch augmentations, computed on the training device from a passed-in generator.

    waveform.py  shift, gain, white noise, background noise        (B, T) → (B, T)
    tempo.py     speed, time stretch, pitch shift                    (B, T) → (B, T)
    masks.py     SpecAugment frequency / time masks                  (B, C, n_bins, frames) → same
    mixing.py    mixup / cutmix, mixed_loss, stack_views

`BatchAugmenter` is what training uses: one object built from `AugmentConfig`, three verbs in step
order (`waveform`, `spectrogram`, `mix`). Whatever the config leaves off draws no random numbers.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from earmark.augment.base import Augmentation
from earmark.augment.masks import SpecAugment
from earmark.augment.mixing import BatchMix, mixed_loss, stack_views
from earmark.augment.tempo import PitchShift, SpeedPerturb, TimeStretch, pitch_shift, resample_by, time_stretch
from earmark.augment.waveform import BackgroundNoise, GaussianNoise, RandomGain, RandomShift
from earmark.config import AugmentConfig

__all__ = [
    "Augmentation", "BackgroundNoise", "BatchAugmenter", "BatchMix", "GaussianNoise", "PitchShift", "RandomGain",
    "RandomShift", "SpecAugment", "SpeedPerturb", "TimeStretch", "WaveAugment", "mixed_loss", "pitch_shift",
    "resample_by", "stack_views", "time_stretch",
]


class WaveAugment(nn.Module):
    """The configured waveform augmentations, (B, T) → (B, T), in a fixed order:
    speed, stretch, pitch (they move content in time), then shift, gain, background noise, white noise.

    Only active steps are kept; `augment.enabled: false` keeps none.
    """

    def __init__(self, augment: AugmentConfig, sample_rate_hz: int) -> None:
        super().__init__()
        steps: list[Augmentation] = []
        if augment.enabled:
            if augment.speed is not None:
                steps.append(SpeedPerturb(augment.speed, augment.speed_p))
            if augment.stretch is not None:
                steps.append(TimeStretch(augment.stretch, augment.stretch_p, sample_rate_hz))
            steps.append(PitchShift(augment.pitch_semitones, augment.pitch_p, sample_rate_hz))
            steps.append(RandomShift(augment.shift_s, sample_rate_hz, augment.shift_p))
            steps.append(RandomGain(augment.gain_db, augment.gain_p))
            if augment.background_dir is not None and augment.background_p > 0:
                steps.append(BackgroundNoise(augment.background_dir, sample_rate_hz, augment.background_snr_db,
                                             augment.background_p))
            steps.append(GaussianNoise(augment.noise_std, augment.noise_p, augment.noise_snr_db))
        self.steps = nn.ModuleList(step for step in steps if step.active)

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            waves = step(waves, generator)
        return waves


class BatchAugmenter(nn.Module):
    """Every augmentation an `AugmentConfig` asks for, applied by training in three places:

        waves = augmenter.waveform(waves, generator)               # (B, T) → (B, T)
        features = augmenter.spectrogram(frontend(waves), generator)  # (B, C, n_bins, frames) → same
        features, targets_a, targets_b, lam = augmenter.mix(features, targets, generator)
        loss = mixed_loss(per_clip_loss, model(features), targets_a, targets_b, lam)

    Random numbers come from `generator` (a CPU one is fine); results land on the batch's device.
    """

    def __init__(self, augment: AugmentConfig, sample_rate_hz: int) -> None:
        super().__init__()
        self.config = augment
        self.wave = WaveAugment(augment, sample_rate_hz)
        enabled = augment.enabled
        self.masks = SpecAugment(augment.freq_masks, augment.freq_mask_bins, augment.time_masks,
                                 augment.time_mask_frames, augment.specaugment_p if enabled else 0.0)
        self.mixer = BatchMix(augment.mixup_alpha, augment.cutmix_alpha, augment.mix_p if enabled else 0.0)

    @property
    def active(self) -> bool:
        """Whether anything is enabled at all."""
        return bool(len(self.wave.steps)) or self.masks.active or self.mixer.active

    def describe(self) -> list[str]:
        """Names of the enabled transforms, in the order they run."""
        names = [type(step).__name__ for step in self.wave.steps]
        return names + [type(m).__name__ for m in (self.masks, self.mixer) if m.active]

    def waveform(self, waves: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(B, T) → (B, T), computed in float32 even under autocast."""
        if not len(self.wave.steps):
            return waves
        device_type = waves.device.type
        no_autocast = (torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type)
                       else nullcontext())
        with no_autocast:
            return self.wave(waves.float(), generator).to(waves.dtype)

    def spectrogram(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(B, C, n_bins, frames) → same, masked; (B, C, T) waveform features pass through."""
        return self.masks(features, generator)

    def mix(self, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, ..., L), targets (B,) → mixed inputs, targets_a, targets_b, lam (B,) (all ones if unmixed)."""
        return self.mixer(inputs, targets, generator)

    def forward(self, waves: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.waveform(waves, generator)
