"""Pretrained audio backbones as embedders, with a head: probe them frozen, or fine-tune them end to end.

`EmbeddingClassifier` is waves (B, 1, T) → backbone embedding (B, D) → head → logits (B, C), with
timm's `forward_features` / `forward_head` split. Frozen (`freeze=true`, the default) it is a *probe*:
`earmark.workflows.probe` embeds each clip once (cached), fits only the head on those vectors, and
saves the whole chain, so evaluation, prediction, serving and ONNX export see an ordinary model.
With `freeze=false` the normal Lightning loop trains it end to end (augmentation, discriminative
learning rates through `train.param_groups` with prefix `model.embedder`, and gradual unfreezing
through `unfreeze_epochs`: the top conv block first).

Registered here: `aisfx`, the bundled sound-effects CNN (Ma & Lerch 2022, CC BY 4.0; 44.1 kHz). The bundled
speaker encoder `resemblyzer` (models/resemblyzer.py) and the hub embedders (models/hub_embedders.py) register
beside their networks and use the same classifier.
The bundled CREPE pitch view (`crepe`, 16 kHz) registers in `crepe.py` on the same classes.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.registry import register_model

HEAD_KINDS = ("linear", "mlp")


class EmbeddingHead(nn.Module):
    """(B, D) embeddings → standardised with `mean_`/`std_` (fitted on the training split) → logits (B, C)."""

    def __init__(self, dim: int, n_classes: int, kind: str = "linear", hidden: int = 256,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise EarmarkError(f"model.params.head must be one of {', '.join(HEAD_KINDS)}; got {kind!r}")
        self.kind = kind
        self.register_buffer("mean_", torch.zeros(dim))
        self.register_buffer("std_", torch.ones(dim))
        if kind == "linear":
            self.layers = nn.Linear(dim, n_classes)
        else:
            self.layers = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, n_classes))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) → (B, n_classes)."""
        return self.layers((embeddings - self.mean_) / self.std_)


class EmbeddingClassifier(nn.Module):
    """waves (B, 1, T) at the backbone's rate → logits (B, n_classes).

    embedder: a module (B, T) → (B, embedding_dim); backbone_id names it and its weights for the
    embedding cache (two runs with the same id share cached embeddings).
    """

    def __init__(self, embedder: nn.Module, embedding_dim: int, n_classes: int, backbone_id: str, *,
                 head: str = "linear", hidden: int = 256, dropout: float = 0.2, freeze: bool = True,
                 unfreeze_epochs: Optional[list[int]] = None, blocks: Optional[list[nn.Module]] = None) -> None:
        super().__init__()
        self.embedder = embedder
        self.embedding_dim = embedding_dim
        self.backbone_id = backbone_id
        self.head = EmbeddingHead(embedding_dim, n_classes, head, hidden, dropout)
        self.frozen = bool(freeze)
        self.unfreeze_epochs = list(unfreeze_epochs) if unfreeze_epochs else None
        self._blocks = blocks or []  # the backbone's stages, bottom first (gradual unfreezing)
        if self.unfreeze_epochs is not None and (self.frozen or len(self.unfreeze_epochs) > len(self._blocks)):
            raise EarmarkError(f"model.params.unfreeze_epochs takes at most {len(self._blocks)} epochs and needs "
                               "freeze=false (a frozen backbone is never unfrozen)")
        if self.frozen:
            self.embedder.requires_grad_(False)

    def train(self, mode: bool = True) -> "EmbeddingClassifier":
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics and no dropout
            self.embedder.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) → (B, embedding_dim)."""
        return self.embedder(x.flatten(1))

    def forward_head(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) → (B, n_classes)."""
        return self.head(embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) → (B, n_classes)."""
        return self.forward_head(self.forward_features(x))

    def set_epoch(self, epoch: int) -> None:
        """Gradual unfreezing: block i from the top trains from `unfreeze_epochs[i]` on (a pure function of epoch)."""
        if self.unfreeze_epochs is None:
            return
        top_first = self._blocks[::-1]
        for i, block in enumerate(top_first):
            start = self.unfreeze_epochs[i] if i < len(self.unfreeze_epochs) else self.unfreeze_epochs[-1]
            block.requires_grad_(epoch >= start)


@register_model("aisfx", input_kind="waveform", sample_rate_hz=44_100,
                description="pretrained sound-effects CNN embedder (4.7 M, bundled, offline) + linear or MLP head; "
                            "frozen: a probe on cached embeddings, freeze=false: fine-tuned",
                pretrained="bundled: aisfx (Ma & Lerch 2022, CC BY 4.0)")
def aisfx(n_classes: int, input_shape: tuple[int, ...], head: str = "linear", hidden: int = 256,
          dropout: float = 0.2, freeze: bool = True, unfreeze_epochs: Optional[list[int]] = None,
          weights_path: Optional[str] = None, peak_normalize: bool = True) -> EmbeddingClassifier:
    """`weights_path`: a safetensors file of AisfxNet (e.g. fine-tuned elsewhere); default the bundled weights.
    `peak_normalize`: scale each clip to a peak of 1 first (level-invariant); false keeps the clip's level,
    as the features the network was trained on did."""
    from earmark.files import sha256_of
    from earmark.models.aisfx import AISFX_SHA256, CLIP_EMBEDDING_DIM, AisfxEmbedder, load_aisfx_weights

    embedder = AisfxEmbedder(peak_normalize=peak_normalize)
    load_aisfx_weights(embedder, weights_path)
    digest = AISFX_SHA256 if weights_path is None else sha256_of(weights_path)
    return EmbeddingClassifier(embedder, CLIP_EMBEDDING_DIM, n_classes, f"aisfx-{digest[:12]}" + ("" if peak_normalize else "-level"), head=head,
                               hidden=hidden, dropout=dropout, freeze=freeze, unfreeze_epochs=unfreeze_epochs,
                               blocks=[embedder.net.conv_block1, embedder.net.conv_block2, embedder.net.conv_block3,
                                       embedder.net.conv_block4])
