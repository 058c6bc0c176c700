"""aisfx: a pretrained sound-effects embedding network (Ma & Lerch, ISMIR 2022), ported to pure torch.

"Representation Learning for the Automatic Indexing of Sound Effects Libraries": a 4-block, 8-conv CNN
(64 -> 512 channels, 4.7 M parameters) trained across nine sound-effects libraries; its 512-d output for
each 2.3 s block of log-mels is the embedding. Weights: CC BY 4.0, (c) 2022 A.B. Ma and A. Lerch,
converted from the `aisfx` 0.1.2 wheel by `tools/convert_aisfx.py` (see `pretrained/README.md`).

    wave (B, samples) at 44.1 kHz
      -> AisfxFrontEnd   (B, n_blocks, 100, 96)   log-mel blocks, see `aisfx_frontend.py`
      -> AisfxNet        (B * n_blocks, 512)       one embedding per block
      -> mean ++ max     (B, 1024)                 one embedding per clip
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError
from earmark.files import sha256_of  # noqa: F401 - tests/test_aisfx.py reads aisfx.sha256_of
from earmark.models.aisfx_frontend import AisfxFrontEnd
from earmark.models.weights import load_safetensors_into

WEIGHTS_PATH = Path(__file__).parent / "pretrained" / "aisfx.safetensors"
AISFX_SHA256 = "a61dedf17e73c23e2987229d953ee4eeead9dc2428d596fc1087ae2a51241802"  # of WEIGHTS_PATH
BASE_CHANNELS = 64  # the package's EmbeddingNet('max', 3, 1, 64): 64, 128, 256, 512 channels
KERNEL_SIZE = 3
BLOCK_EMBEDDING_DIM = 8 * BASE_CHANNELS  # 512
CLIP_EMBEDDING_DIM = 2 * BLOCK_EMBEDDING_DIM  # mean and max over blocks
CONVERT_COMMAND = "python tools/convert_aisfx.py aisfx-0.1.2-py2.py3-none-any.whl"


class ConvBlock(nn.Module):
    """Two 3x3 conv -> BN -> ReLU layers, then max-pooling; names as in the package's `cnn2d.ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, KERNEL_SIZE, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, time, mels) -> (N, C_out, time // pool, mels // pool)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, self.pool) if self.pool > 1 else x


class AisfxNet(nn.Module):
    """The package's `EmbeddingNet('max', 3, 1, 64)`: (N, 100, 96) log-mel block -> (N, 512) embedding.

    Parameter names match the checkpoint's `embedding_net.*` tensors, so the converted weights load strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        c = BASE_CHANNELS
        self.conv_block1 = ConvBlock(1, c, pool=2)
        self.conv_block2 = ConvBlock(c, 2 * c, pool=2)
        self.conv_block3 = ConvBlock(2 * c, 4 * c, pool=2)
        self.conv_block4 = ConvBlock(4 * c, 8 * c, pool=1)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """(N, time=100, mels=96) -> (N, 512)."""
        x = blocks.unsqueeze(1)  # (N, 1, 100, 96)
        x = self.conv_block1(x)  # (N, 64, 50, 48)
        x = self.conv_block2(x)  # (N, 128, 25, 24)
        x = self.conv_block3(x)  # (N, 256, 12, 12)
        x = self.conv_block4(x)  # (N, 512, 12, 12)
        x = x.mean(dim=3)  # (N, 512, 12): average over mel bands
        return x.amax(dim=2)  # (N, 512): strongest time step


class AisfxEmbedder(nn.Module):
    """(B, samples) waveform at 44.1 kHz -> (B, 1024) clip embedding: mean ++ max of the 512-d block embeddings.

    Clips of any length work (n_blocks = 1 + max(0, frames - 100) // 50, frames = 1 + samples // 1024);
    a clip shorter than one block (2.3 s) is padded with silence. Clips in one batch share a length, so
    a batch of different-length clips is zero-padded by the caller, which adds silent blocks to the
    shorter ones; embed them one by one where that matters. Call `load_aisfx_weights` before use.
    peak_normalize: see `AisfxFrontEnd` (True: the package's librosa path; False: the paper's level-keeping
    essentia features).
    """

    def __init__(self, peak_normalize: bool = True) -> None:
        super().__init__()
        self.frontend = AisfxFrontEnd(peak_normalize)
        self.net = AisfxNet()

    def block_embeddings(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, n_blocks, 512)."""
        blocks = self.frontend(wave)  # (B, n_blocks, 100, 96)
        embeddings = self.net(blocks.flatten(0, 1))  # (B * n_blocks, 512)
        return embeddings.unflatten(0, blocks.shape[:2])  # (B, n_blocks, 512)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1024)."""
        blocks = self.block_embeddings(wave)  # (B, n_blocks, 512)
        return torch.cat([blocks.mean(dim=1), blocks.amax(dim=1)], dim=1)  # (B, 1024)


def load_aisfx_weights(module: nn.Module, path: Optional[str | Path] = None,
                       sha256: Optional[str] = None) -> nn.Module:
    """Load the aisfx weights into an `AisfxNet`, or the `.net` of an `AisfxEmbedder`; returns `module`.

    path: a safetensors file with AisfxNet's state dict; default the bundled one, whose sha256 must equal
    AISFX_SHA256. sha256: the digest a user's file must have (unchecked when None, e.g. fine-tuned weights);
    either way it must hold exactly AisfxNet's tensors. Safetensors cannot run code. A missing, corrupt or
    mismatched file raises EarmarkError. The module's train/eval mode is left alone: call `.eval()`.
    """
    net = module.net if isinstance(module, AisfxEmbedder) else module
    if not isinstance(net, AisfxNet):
        raise EarmarkError(f"load_aisfx_weights takes an AisfxNet or AisfxEmbedder; got {type(module).__name__}")
    bundled = path is None
    fix = (f"reinstall earmark, or rebuild it with `{CONVERT_COMMAND}`" if bundled
           else "give the path of a safetensors file written by tools/convert_aisfx.py")
    load_safetensors_into(net, WEIGHTS_PATH if bundled else Path(path).expanduser(),
                          sha256=AISFX_SHA256 if bundled else sha256, model="aisfx", fix=fix)
    return module
