"""wave_cnn: a 1-D CNN on the raw waveform (M5-style: wide strided first layer, then small kernels)."""

from __future__ import annotations

import torch
from torch import nn

from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model


def conv1d_block(in_channels: int, out_channels: int, kernel: int, stride: int = 1, pool: int = 4) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(pool, ceil_mode=True),
    )


class WaveCNN(PooledClassifier):
    """Input (B, C, samples) → logits (B, n_classes)."""

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 32, first_kernel: int = 80,
                 first_stride: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv1d_block(in_channels, width, first_kernel, stride=first_stride),
            conv1d_block(width, width, 3),
            conv1d_block(width, width * 2, 3),
            conv1d_block(width * 2, width * 4, 3),
        )
        self.num_features = width * 4
        self._init_head(n_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 4w, samples / (stride * 256))
        return x.mean(dim=2)  # (B, 4w)


@register_model("wave_cnn", input_kind="waveform", description="1-D CNN on the raw waveform (M5-style)")
def wave_cnn(n_classes: int, input_shape: tuple[int, ...], width: int = 32, first_kernel: int = 80,
             first_stride: int = 4, dropout: float = 0.2) -> WaveCNN:
    return WaveCNN(n_classes, in_channels=input_shape[0], width=width, first_kernel=first_kernel,
                   first_stride=first_stride, dropout=dropout)
