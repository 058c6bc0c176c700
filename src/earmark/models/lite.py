"""lite_cnn: a depthwise-separable CNN (MobileNet/DS-CNN style) for edge devices.

Only Conv2d, BatchNorm2d, ReLU, pooling and Linear, in fusable (conv, bn, relu) triples, so the
model quantizes to INT8 without custom layers.
"""

from __future__ import annotations

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model

STEM_CHANNELS = 32
STAGE_CHANNELS = (64, 128, 160, 192)  # each stage: one stride-2 separable block, then one stride-1 block
CHANNEL_MULTIPLE = 8  # channel counts round to multiples of 8 (friendly to SIMD and INT8 kernels)


def scaled_channels(channels: int, width_mult: float) -> int:
    """`channels * width_mult` rounded to a multiple of 8, never below 8 nor under 90% of the target."""
    target = channels * width_mult
    rounded = max(CHANNEL_MULTIPLE, int(target + CHANNEL_MULTIPLE / 2) // CHANNEL_MULTIPLE * CHANNEL_MULTIPLE)
    return rounded + CHANNEL_MULTIPLE if rounded < 0.9 * target else rounded


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def separable_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv (carries the stride) then 1x1 pointwise conv, each with BN + ReLU."""
    return nn.Sequential(
        conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels),
        conv_bn_relu(in_channels, out_channels, 1),
    )


class LiteCNN(PooledClassifier):
    """Input (B, C, n_bins, frames) → logits (B, n_classes); the features shrink 32x on both axes."""

    def __init__(self, n_classes: int, in_channels: int = 1, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        stem = scaled_channels(STEM_CHANNELS, width_mult)
        layers = [conv_bn_relu(in_channels, stem, 3, stride=2)]
        channels = stem
        for stage_channels in STAGE_CHANNELS:
            out_channels = scaled_channels(stage_channels, width_mult)
            layers += [separable_block(channels, out_channels, stride=2),
                       separable_block(out_channels, out_channels, stride=1)]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self._init_head(n_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_bins, frames) → (B, num_features)."""
        x = self.features(x)  # (B, 192w, n_bins/32, frames/32)
        return self.pool(x).flatten(1)  # (B, 192w)


@register_model("lite_cnn", input_kind="spectrogram",
                description="depthwise-separable CNN for edge devices (quantizes to INT8; ~0.16 M params)")
def lite_cnn(n_classes: int, input_shape: tuple[int, ...], width_mult: float = 1.0, dropout: float = 0.2) -> LiteCNN:
    if not width_mult > 0:
        raise EarmarkError(f"model.params.width_mult must be > 0 (1.0 = 32→192 channels); got {width_mult}")
    if not 0 <= dropout < 1:
        raise EarmarkError(f"model.params.dropout must be in [0, 1); got {dropout}")
    return LiteCNN(n_classes, in_channels=input_shape[0], width_mult=width_mult, dropout=dropout)
