"""SpecAugment on (B, C, n_bins, frames) features: frequency and time masks, built with arange comparisons.

Masked cells become 0, the mean of standardised features. A clip's masks are shared by its channels.
"""

from __future__ import annotations

import torch

from earmark.augment.base import Augmentation, Params, coin, generator_device


def band_mask(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """(B, n_masks) starts and widths → (B, size) bool, True inside any band [start, start + width)."""
    position = torch.arange(size, device=start.device)  # (size,)
    inside = (position >= start[..., None]) & (position < (start + width)[..., None])  # (B, n_masks, size)
    return inside.any(dim=1)


def draw_bands(batch: int, count: int, max_width: int, size: int, generator: torch.Generator | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, count) widths uniform in {0, ..., min(max_width, size)} and starts that keep each band inside."""
    max_width = min(max_width, size)
    device = generator_device(generator)
    if count == 0:
        empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
        return empty, empty
    width = torch.randint(0, max_width + 1, (batch, count), generator=generator, device=device)
    start = (torch.rand(batch, count, generator=generator, device=device) * (size - width + 1)).long()
    return start.clamp(max=size - width), width


class SpecAugment(Augmentation):
    """`freq_masks` bands of up to `freq_mask_bins` bins and `time_masks` of up to `time_mask_frames` frames,
    on each clip chosen with probability p. 3-D waveform features (B, C, T) pass through untouched."""

    def __init__(self, freq_masks: int, freq_mask_bins: int, time_masks: int, time_mask_frames: int,
                 p: float) -> None:
        super().__init__()
        self.freq_masks, self.freq_mask_bins = freq_masks, freq_mask_bins
        self.time_masks, self.time_mask_frames = time_masks, time_mask_frames
        self.p = p

    @property
    def active(self) -> bool:
        return self.p > 0 and (self.freq_masks > 0 or self.time_masks > 0)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        batch, n_bins, n_frames = shape[0], shape[-2], shape[-1]
        chosen = coin((batch, 1), self.p, generator)
        freq_start, freq_width = draw_bands(batch, self.freq_masks, self.freq_mask_bins, n_bins, generator)
        time_start, time_width = draw_bands(batch, self.time_masks, self.time_mask_frames, n_frames, generator)
        return {"freq_start": freq_start, "freq_width": freq_width * chosen,  # (B, freq_masks); 0 wide = no mask
                "time_start": time_start, "time_width": time_width * chosen}  # (B, time_masks)

    def transform(self, features: torch.Tensor, params: Params) -> torch.Tensor:
        n_bins, n_frames = features.shape[-2:]
        device = features.device
        freq = band_mask(params["freq_start"].to(device), params["freq_width"].to(device), n_bins)  # (B, n_bins)
        time = band_mask(params["time_start"].to(device), params["time_width"].to(device), n_frames)  # (B, frames)
        masked = freq[:, None, :, None] | time[:, None, None, :]  # (B, 1, n_bins, frames)
        return features.masked_fill(masked, 0.0)

    def forward(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, n_bins, frames) → same shape; (B, C, T) waveform features are returned as they are."""
        if features.dim() != 4:
            return features
        return super().forward(features, generator)
