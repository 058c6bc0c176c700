"""cnn14: the PANNs CNN14 (Kong et al. 2020, github.com/qiuqiangkong/audioset_tagging_cnn).

Layer names follow the official code, so a PANNs checkpoint (`Cnn14_mAP=0.431.pth`, which stores
`{"model": state_dict}`) maps key for key onto `conv_block1.conv1.weight`, ..., `fc1.bias`. Its
own front-end (`spectrogram_extractor`, `logmel_extractor`, `bn0`) and AudioSet classifier
(`fc_audioset`) are left out: earmark's front-end and head replace them. PANNs was trained on
64-bin log-mels at 32 kHz (hop 10 ms); transfer works best with a similar front-end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model
from earmark.models.weights import load_torch_file, local_weights

BLOCK_CHANNELS = (64, 128, 256, 512, 1024, 2048)
BLOCK_DROPOUT = 0.2  # after every conv block, as in PANNs
IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "bn0.", "fc_audioset.")


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then average pooling (2x2 in blocks 1–5, none in block 6)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        # ceil_mode keeps inputs smaller than 32 bins/frames (e.g. 20 MFCCs) from pooling to nothing
        return F.avg_pool2d(x, self.pool, ceil_mode=True) if self.pool > 1 else x


class Cnn14(PooledClassifier):
    """Input (B, C, n_bins, frames) → logits (B, n_classes); embedding: relu(fc1(...)), 2048 / width_div wide."""

    def __init__(self, n_classes: int, in_channels: int = 1, width_div: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        channels = [in_channels] + [c // width_div for c in BLOCK_CHANNELS]
        for i in range(len(BLOCK_CHANNELS)):
            pool = 2 if i < len(BLOCK_CHANNELS) - 1 else 1
            self.add_module(f"conv_block{i + 1}", ConvBlock(channels[i], channels[i + 1], pool))
        self.num_features = channels[-1]
        self.fc1 = nn.Linear(channels[-1], channels[-1])
        self.embedding_dropout = nn.Dropout(dropout)
        self._init_head(n_classes, dropout)
        self.weights_report_: Optional[str] = None  # set by load_panns_checkpoint

    def offline_params(self, params: dict) -> dict:
        """Params that rebuild this architecture without the PANNs file (weights come from the checkpoint)."""
        return {**params, "checkpoint_path": None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_bins, frames) → (B, num_features)."""
        x = x.transpose(2, 3)  # (B, C, frames, n_bins): PANNs' orientation, so its 3x3 filters apply as trained
        for i in range(len(BLOCK_CHANNELS)):
            x = getattr(self, f"conv_block{i + 1}")(x)
            x = F.dropout(x, BLOCK_DROPOUT, self.training)  # (B, 2048/d, frames/32, n_bins/32) at the end
        x = x.mean(dim=3)  # (B, 2048/d, frames/32): mean over frequency
        x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)  # smooth over neighbouring frames
        x = self.embedding_dropout(x)
        x = x.amax(dim=2) + x.mean(dim=2)  # (B, 2048/d): max + mean over time
        x = self.embedding_dropout(x)
        return F.relu(self.fc1(x))  # (B, 2048/d)


def panns_globals() -> list:
    """The globals PANNs' official checkpoints hold besides tensors: numpy arrays (the sampler's state),
    under numpy 1's and numpy 2's module names."""
    import numpy as np
    from numpy._core.multiarray import _reconstruct

    dtypes = [type(np.dtype(name)) for name in ("int32", "int64", "uint32", "float32", "float64", "bool")]
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


def load_panns_checkpoint(model: Cnn14, path: Path, trust: bool = False) -> int:
    """Copy a PANNs checkpoint's conv/BN/fc1 tensors into `model`; returns how many were loaded.

    The first conv is adapted to the model's input channels (repeated and scaled, as timm does).
    Keys or shapes that do not match raise an EarmarkError naming the file. The file is read without
    running code (numpy arrays of PANNs' sampler state allowed); `trust` (model.params.trust_checkpoint)
    unpickles it in full.
    """
    try:
        checkpoint = load_torch_file(path, trust=trust, allowed=panns_globals(),
                                     opt_in="model.params.trust_checkpoint=true")
    except EarmarkError as exc:
        raise EarmarkError(f"model.params.checkpoint_path: {exc}") from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise EarmarkError(f"model.params.checkpoint_path={path} holds no state dict (expected {{'model': {{...}}}} "
                           f"as in the official Cnn14_mAP=0.431.pth)")
    state = {key.removeprefix("module."): value for key, value in state.items()
             if not key.removeprefix("module.").startswith(IGNORED_PREFIXES)}
    own = {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise EarmarkError(
            f"model.params.checkpoint_path={path} does not match cnn14's layers: {len(missing)} missing key(s) "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''}); give a PANNs CNN14 checkpoint")
    first = "conv_block1.conv1.weight"
    in_channels = own[first].shape[1]
    if state[first].shape[1] == 1 and in_channels > 1:
        state[first] = state[first].repeat(1, in_channels, 1, 1) / in_channels
    wrong = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}" for key, value in own.items()
             if state[key].shape != value.shape]
    if wrong:
        raise EarmarkError(f"model.params.checkpoint_path={path}: tensor shapes differ from this cnn14 "
                           f"({'; '.join(wrong[:2])}); a full-size PANNs checkpoint needs width_div=1")
    model.load_state_dict(state, strict=False)  # strict=False: only the head is (deliberately) left out
    return len(state)


@register_model("cnn14", input_kind="spectrogram",
                description="PANNs CNN14: 6 VGG-style conv blocks, 64→2048 channels (~80 M params)",
                pretrained="PANNs AudioSet checkpoint via model.params.checkpoint_path (Cnn14_mAP=0.431.pth, "
                           "zenodo.org/record/3987831); nothing is downloaded")
def cnn14(n_classes: int, input_shape: tuple[int, ...], checkpoint_path: Optional[str] = None, width_div: int = 1,
          dropout: float = 0.5, trust_checkpoint: bool = False) -> Cnn14:
    if not isinstance(width_div, int) or width_div < 1 or BLOCK_CHANNELS[0] % width_div:
        raise EarmarkError(f"model.params.width_div must be a positive integer dividing 64 (1, 2, 4, ..., 64); "
                           f"got {width_div!r}")
    if not 0 <= dropout < 1:
        raise EarmarkError(f"model.params.dropout must be in [0, 1); got {dropout}")
    model = Cnn14(n_classes, in_channels=input_shape[0], width_div=width_div, dropout=dropout)
    path = local_weights(checkpoint_path, field="model.params.checkpoint_path")
    if path is not None:
        n_loaded = load_panns_checkpoint(model, path, trust=bool(trust_checkpoint))
        model.weights_report_ = f"loaded {n_loaded} tensors from {path} (fc_audioset, bn0 and the extractor skipped)"
    return model
