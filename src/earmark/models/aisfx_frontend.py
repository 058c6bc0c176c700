"""The aisfx front-end (Ma & Lerch, ISMIR 2022) in pure torch: 44.1 kHz waveform -> blocks of log-mel frames.

Follows the `aisfx` 0.1.2 package's librosa path (`aisfx/spectrogram/spectrogram_librosa.py`), then its
`spectrogram_normalize(spec_norm="original")` and `blocking(hop=0.5, drop_partial_block=True)`:

    y / max|y|                                  peak-normalised clip (a silent clip is left as it is)
    |STFT|^2, n_fft = win = 2048, hop 1024      periodic Hann, centred, zero-padded by n_fft // 2 each side
    96 HTK mel bands, 0-22050 Hz, each sums to 1 `librosa.feature.melspectrogram(htk=True, norm=1.0, power=2)`
    log10(1e4 * mel + 1) / 9.4578               essentia's "shift_scale_log", then min-max (0, LOG_MAX)
    100-frame blocks (2.32 s), hop 50 frames    a trailing partial block is dropped; a clip shorter than
                                                one block is padded with zero (silent) frames to one block

Peak normalisation is what the package's librosa path does, and the default here. The paper's features
(the package's default, essentia path: `EasyLoader`, no normalisation) keep the file's own level; with
`peak_normalize=False` this front-end matches those log-mels to ~1e-4 on average (max 3e-2: essentia
resamples and warps its mel weights a little differently, and emits one more, partial, last frame).

Resampling to 44.1 kHz is not part of the graph: decode and resample before (the package used
`librosa.load(sr=44100)`). The package's librosa path hands `blocking` a (mels, frames) array, which
blocks along the mel axis; the blocks here are (frames, mels), as its essentia path (the paper's) gives
them and as the network reads them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earmark.features import dft_basis, htk_mel_filterbank, power_spectrogram

SAMPLE_RATE_HZ = 44_100
N_FFT = 2048
WIN_LENGTH = 2048
HOP_LENGTH = 1024  # 23.2 ms per frame
N_MELS = 96
F_MIN_HZ = 0.0
F_MAX_HZ = 22_050.0
LOG_SCALE = 1e4  # log10(LOG_SCALE * power + 1)
LOG_MAX = 9.457798957824707  # the package's "original" normalisation: max of log-mels over its training sets
BLOCK_FRAMES = 100  # frames per block fed to the network (2.32 s)
BLOCK_HOP_FRAMES = 50  # 50% overlap between blocks


def n_blocks(n_frames: int) -> int:
    """Blocks from a clip of `n_frames` frames: whole blocks only, at least one (the package's `blocking`)."""
    return 1 + max(0, n_frames - BLOCK_FRAMES) // BLOCK_HOP_FRAMES


def peak_normalize(wave: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T) scaled so each clip's largest |sample| is 1; an all-zero clip stays zero."""
    peak = wave.abs().amax(dim=1, keepdim=True)  # (B, 1)
    return wave / torch.where(peak > 0, peak, torch.ones_like(peak))


def frame_blocks(log_mel: torch.Tensor) -> torch.Tensor:
    """(B, frames, n_mels) -> (B, n_blocks, BLOCK_FRAMES, n_mels); padded with zero frames to one block.

    A gather rather than `unfold`: with the length axis symbolic, torch.export cannot prove unfold's
    and a padding branch's conditions and would fix the length; one index tensor has no conditions.
    """
    n_blocks = 1 + torch.sym_max(0, log_mel.shape[1] - BLOCK_FRAMES) // BLOCK_HOP_FRAMES
    # zeros past the end (the package pads with zeros too); only a clip under one block reaches them
    padded = F.pad(log_mel, (0, 0, 0, BLOCK_FRAMES))  # (B, frames + BLOCK_FRAMES, n_mels)
    starts = torch.arange(n_blocks, device=log_mel.device) * BLOCK_HOP_FRAMES  # (n_blocks,)
    index = starts[:, None] + torch.arange(BLOCK_FRAMES, device=log_mel.device)  # (n_blocks, BLOCK_FRAMES)
    return padded[:, index]  # (B, n_blocks, BLOCK_FRAMES, n_mels)


class AisfxFrontEnd(nn.Module):
    """(B, samples) float waveform at 44.1 kHz -> (B, n_blocks, 100, 96) normalised log-mel blocks.

    n_blocks = 1 + max(0, frames - 100) // 50 with frames = 1 + samples // 1024. The DFT basis and the
    mel filters are rebuilt from the constants, so they are non-persistent buffers (no state_dict keys).
    peak_normalize: scale each clip to a peak of 1 first (the package's librosa path); False keeps the
    clip's level, as the paper's essentia features did.
    """

    def __init__(self, peak_normalize: bool = True) -> None:
        super().__init__()
        self.peak_normalize = peak_normalize
        self.register_buffer("dft", dft_basis(N_FFT, WIN_LENGTH), persistent=False)  # (2 * 1025, 1, 2048)
        mel = htk_mel_filterbank(SAMPLE_RATE_HZ, N_FFT, N_MELS, F_MIN_HZ, F_MAX_HZ)  # (1025, 96)
        self.register_buffer("mel", mel, persistent=False)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, frames, 96) normalised log-mel frames, before blocking."""
        wave = peak_normalize(wave.float()) if self.peak_normalize else wave.float()
        power = power_spectrogram(wave, self.dft, N_FFT, HOP_LENGTH)  # (B, 1025, frames)
        mel = torch.matmul(power.transpose(1, 2), self.mel)  # (B, frames, 96)
        return torch.log10(LOG_SCALE * mel + 1.0) / LOG_MAX

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, n_blocks, 100, 96)."""
        return frame_blocks(self.log_mel(wave))
