"""resemblyzer: Resemble AI's pretrained GE2E speaker encoder (the `Resemblyzer` 0.1.4 package), in pure torch.

A 3-layer LSTM (40 -> 256) over 1.6-s partials of 40 mel bands, the last layer's final hidden state through
a 256 -> 256 linear layer and a ReLU, L2-normalised: one 256-d voice embedding per partial, trained with the
generalised end-to-end (GE2E) loss on thousands of speakers. Weights: Apache-2.0, Copyright 2019 Resemble.AI,
converted from the wheel by `tools/convert_resemblyzer.py` (see `pretrained/README.md`).

    wave (B, samples) at 16 kHz
      -> ResemblyzerFrontEnd  (B, n_partials, 160, 40)  volume-normalised power mels, see `resemblyzer_frontend.py`
      -> VoiceEncoderNet      (B * n_partials, 256)     one L2-normalised embedding per partial
      -> masked mean, L2 norm (B, 256)                  `embed_utterance`: the utterance embedding

The package's webrtcvad silence trimming is left out (see `resemblyzer_frontend.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.embedding import EmbeddingClassifier
from earmark.models.registry import register_model
from earmark.models.resemblyzer_frontend import N_MELS, SAMPLE_RATE_HZ, ResemblyzerFrontEnd
from earmark.models.weights import load_safetensors_into

WEIGHTS_PATH = Path(__file__).parent / "pretrained" / "resemblyzer.safetensors"
RESEMBLYZER_SHA256 = "fa107d60fdc57b858f4a5109c1911f8298aa7894708390feae5ccaa3158afed1"  # of WEIGHTS_PATH
HIDDEN_SIZE = 256  # hparams.model_hidden_size
N_LAYERS = 3  # hparams.model_num_layers
EMBEDDING_DIM = 256  # hparams.model_embedding_size
NORM_EPS = 1e-12  # an all-zero ReLU output stays zero instead of NaN
CONVERT_COMMAND = "python tools/convert_resemblyzer.py Resemblyzer-0.1.4-py3-none-any.whl"


class VoiceEncoderNet(nn.Module):
    """The package's `VoiceEncoder` network: (N, 160, 40) mel partials -> (N, 256) L2-normalised embeddings.

    Parameter names match the checkpoint's `lstm.*` and `linear.*` tensors, so the converted weights load strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN_SIZE, N_LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN_SIZE, EMBEDDING_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(N, frames, 40) -> (N, 256)."""
        _, (hidden, _) = self.lstm(mels)  # hidden: (3, N, 256), each layer's last step
        embeddings = F.relu(self.linear(hidden[-1]))  # (N, 256)
        return F.normalize(embeddings, dim=1, eps=NORM_EPS)


class ResemblyzerEmbedder(nn.Module):
    """(B, samples) waveform at 16 kHz -> (B, 256) utterance embedding, as `VoiceEncoder.embed_utterance`.

    Clips of any length work; one under 1.6 s is zero-padded to one partial, as the package pads it. Clips
    in one batch share a length, so a batch of different-length clips is zero-padded by the caller, which
    lowers the volume normalisation's rms and may add partials; embed them one by one where that matters.
    Call `load_resemblyzer_weights` before use.
    """

    def __init__(self) -> None:
        super().__init__()
        self.frontend = ResemblyzerFrontEnd()
        self.net = VoiceEncoderNet()

    def partial_embeddings(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) -> ((B, n_partials, 256), (n_partials,) bool: the partials the package keeps)."""
        partials, keep = self.frontend(wave)  # (B, n_partials, 160, 40), (n_partials,)
        embeddings = self.net(partials.flatten(0, 1))  # (B * n_partials, 256)
        return embeddings.unflatten(0, partials.shape[:2]), keep  # (B, n_partials, 256)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 256)."""
        partials, keep = self.partial_embeddings(wave)  # (B, n_partials, 256), (n_partials,)
        weights = keep.to(partials.dtype)[None, :, None]  # (1, n_partials, 1)
        mean = (partials * weights).sum(dim=1) / weights.sum(dim=1)  # (B, 256)
        return F.normalize(mean, dim=1, eps=NORM_EPS)


def load_resemblyzer_weights(module: nn.Module, path: Optional[str | Path] = None,
                             sha256: Optional[str] = None) -> nn.Module:
    """Load the voice encoder's weights into a `VoiceEncoderNet`, or the `.net` of a `ResemblyzerEmbedder`.

    path: a safetensors file with VoiceEncoderNet's state dict; default the bundled one, whose sha256 must
    equal RESEMBLYZER_SHA256. sha256: the digest a user's file must have (unchecked when None, e.g.
    fine-tuned weights). A missing, corrupt or mismatched file raises EarmarkError. Returns `module`; its
    train/eval mode is left alone: call `.eval()`.
    """
    net = module.net if isinstance(module, ResemblyzerEmbedder) else module
    if not isinstance(net, VoiceEncoderNet):
        raise EarmarkError("load_resemblyzer_weights takes a VoiceEncoderNet or ResemblyzerEmbedder; "
                           f"got {type(module).__name__}")
    bundled = path is None
    fix = (f"reinstall earmark, or rebuild it with `{CONVERT_COMMAND}`" if bundled
           else "give the path of a safetensors file written by tools/convert_resemblyzer.py")
    load_safetensors_into(net, WEIGHTS_PATH if bundled else Path(path).expanduser(),
                          sha256=RESEMBLYZER_SHA256 if bundled else sha256, model="resemblyzer", fix=fix)
    return module


@register_model("resemblyzer", input_kind="waveform", sample_rate_hz=SAMPLE_RATE_HZ,
                description="pretrained GE2E speaker encoder (3-layer LSTM, 1.4 M, bundled, offline) + linear or "
                            "MLP head; frozen: a probe on cached embeddings, freeze=false: fine-tuned",
                pretrained="bundled: resemblyzer (Resemble AI 2019, Apache-2.0)")
def resemblyzer(n_classes: int, input_shape: tuple[int, ...], head: str = "linear", hidden: int = 256,
                dropout: float = 0.2, freeze: bool = True, unfreeze_epochs: Optional[list[int]] = None,
                weights_path: Optional[str] = None) -> EmbeddingClassifier:
    """`weights_path`: a safetensors file of VoiceEncoderNet (e.g. fine-tuned elsewhere); default the bundled
    weights. Gradual unfreezing (`unfreeze_epochs`) has two blocks: the linear layer first, then the LSTM."""
    from earmark.files import sha256_of

    embedder = ResemblyzerEmbedder()
    load_resemblyzer_weights(embedder, weights_path)
    digest = RESEMBLYZER_SHA256 if weights_path is None else sha256_of(Path(weights_path).expanduser())
    return EmbeddingClassifier(embedder, EMBEDDING_DIM, n_classes, f"resemblyzer-{digest[:12]}", head=head,
                               hidden=hidden, dropout=dropout, freeze=freeze, unfreeze_epochs=unfreeze_epochs,
                               blocks=[embedder.net.lstm, embedder.net.linear])
