"""simple_cnn: three conv blocks on a log-mel (or MFCC) image, the classic baseline."""

from __future__ import annotations

import torch
from torch import nn

from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convs with batch norm, then 2x2 max pooling: halves both axes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
    )


class SimpleCNN(PooledClassifier):
    """Input (B, C, n_bins, frames) → logits (B, n_classes)."""

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width),
            conv_block(width, width * 2),
            conv_block(width * 2, width * 4),
        )
        self.num_features = width * 4
        self._init_head(n_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 4w, n_bins/8, frames/8)
        return x.mean(dim=3).amax(dim=2)  # (B, 4w): mean over time, max over frequency


@register_model("simple_cnn", input_kind="spectrogram", description="three conv blocks on log-mel/MFCC (baseline)")
def simple_cnn(n_classes: int, input_shape: tuple[int, ...], width: int = 16, dropout: float = 0.2) -> SimpleCNN:
    return SimpleCNN(n_classes, in_channels=input_shape[0], width=width, dropout=dropout)
