"""The methods every earmark model shares (timm's habit): features, head, classifier reset."""

from __future__ import annotations

import torch
from torch import nn


class PooledClassifier(nn.Module):
    """A model whose `forward_features` returns pooled embeddings (B, num_features), with a linear head.

    Subclasses set `self.num_features`, call `_init_head(n_classes, dropout)` and define
    `forward_features`; fine-tuning, embeddings and export then work the same for every family.
    """

    num_features: int

    def _init_head(self, n_classes: int, dropout: float) -> None:
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features) → logits (B, n_classes), or the dropped-out embedding with pre_logits."""
        x = self.dropout(x)
        return x if pre_logits else self.head(x)

    def reset_classifier(self, n_classes: int) -> None:
        self.head = nn.Linear(self.num_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
