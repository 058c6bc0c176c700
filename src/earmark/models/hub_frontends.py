"""Hub models' feature extractors re-implemented in torch, so they run in the batch on the training device and
export inside the ONNX graph. Each is checked against the transformers extractor it replaces
(tests/test_hub_embedders.py); their filter banks are that extractor's own arrays.

- `WhisperLogMel`: Whisper's log-mel (Slaney mels, window 400, hop 160, log10, 8-decade floor, 30-s frame).
- `AstFbank`: AST's Kaldi-style fbank (25-ms frames every 10 ms, DC removed, pre-emphasis 0.97, Hann window,
  512-point FFT, Kaldi mels, natural log), zero-padded or cut to the model's frames and standardised.
- `ClapLogMel`: CLAP's dB mel (window 1024, hop 480 at 48 kHz) of a clip repeated and padded to 10 s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earmark.features import dft_basis, mel_filterbank, power_spectrogram, power_to_db, stacked_power

WHISPER_RATE_HZ, WHISPER_N_FFT, WHISPER_HOP, WHISPER_SECONDS = 16_000, 400, 160, 30
KALDI_FRAME, KALDI_HOP, KALDI_FFT, KALDI_PREEMPHASIS, KALDI_FLOOR = 400, 160, 512, 0.97, 1.192092955078125e-07


class WhisperLogMel(nn.Module):
    """(B, samples) at 16 kHz → (B, n_mels, 3000): Whisper's log-mel of the clip padded to 30 s."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("basis", dft_basis(WHISPER_N_FFT, WHISPER_N_FFT))  # (2 * 201, 1, 400)
        self.register_buffer("mel", mel_filterbank(WHISPER_RATE_HZ, WHISPER_N_FFT, n_mels))  # (201, n_mels)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n_samples = WHISPER_RATE_HZ * WHISPER_SECONDS
        wave = F.pad(wave[:, :n_samples], (0, max(0, n_samples - wave.shape[1])))  # (B, 480000)
        power = power_spectrogram(wave, self.basis, WHISPER_N_FFT, WHISPER_HOP, "reflect")[..., :-1]  # (B, 201, 3000)
        log_mel = torch.clamp(torch.einsum("bft,fm->bmt", power, self.mel), min=1e-10).log10()
        log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_mel + 4.0) / 4.0


def kaldi_frame_basis(window: np.ndarray) -> torch.Tensor:
    """conv1d weights (2 * 257, 1, 400): one linear map per 400-sample frame doing Kaldi's DC removal,
    pre-emphasis, window and 512-point DFT (real rows, then imaginary rows); all four steps are linear."""
    n = KALDI_FRAME
    remove_dc = np.eye(n) - np.full((n, n), 1.0 / n)
    preemphasis = np.eye(n) - KALDI_PREEMPHASIS * np.eye(n, k=-1)
    preemphasis[0, 0] = 1.0 - KALDI_PREEMPHASIS
    per_frame = np.diag(window.astype(np.float64)) @ preemphasis @ remove_dc  # (400, 400)
    angle = 2 * math.pi * np.outer(np.arange(KALDI_FFT // 2 + 1), np.arange(n)) / KALDI_FFT  # (257, 400)
    dft = np.concatenate([np.cos(angle), -np.sin(angle)])  # (514, 400)
    return torch.from_numpy(dft @ per_frame).float().unsqueeze(1)


class AstFbank(nn.Module):
    """(B, samples) at 16 kHz → (B, max_length, n_mels): what `ASTFeatureExtractor` gives the model."""

    def __init__(self, extractor) -> None:
        super().__init__()
        self.register_buffer("basis", kaldi_frame_basis(extractor.window))
        self.register_buffer("mel", torch.from_numpy(np.asarray(extractor.mel_filters)).float())  # (257, n_mels)
        self.max_length, self.do_normalize = int(extractor.max_length), bool(extractor.do_normalize)
        self.mean, self.std = float(extractor.mean), float(extractor.std)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = F.pad(wave, (0, max(0, KALDI_FRAME - wave.shape[1])))
        power = stacked_power(F.conv1d(wave.unsqueeze(1), self.basis, stride=KALDI_HOP))  # (B, 257, frames): no padding
        fbank = torch.clamp(torch.einsum("bft,fm->btm", power, self.mel), min=KALDI_FLOOR).log()
        fbank = F.pad(fbank[:, :self.max_length], (0, 0, 0, max(0, self.max_length - fbank.shape[1])))
        return (fbank - self.mean) / (2 * self.std) if self.do_normalize else fbank


class ClapLogMel(nn.Module):
    """(B, samples) at 48 kHz → (B, channels, frames, n_mels): `ClapFeatureExtractor`'s input for clips up to
    10 s (repeated, then zero-padded, to 10 s). A longer clip is cut to its first 10 s, where the extractor
    would draw random crops: embeddings stay deterministic, as a cache needs."""

    def __init__(self, extractor) -> None:
        super().__init__()
        fusion = extractor.truncation == "fusion"
        filters = extractor.mel_filters if fusion else extractor.mel_filters_slaney
        self.register_buffer("basis", dft_basis(extractor.fft_window_size, extractor.fft_window_size))
        self.register_buffer("mel", torch.from_numpy(np.asarray(filters)).float())  # (513, n_mels)
        self.hop, self.n_fft = int(extractor.hop_length), int(extractor.fft_window_size)
        self.n_samples, self.padding = int(extractor.nb_max_samples), extractor.padding
        self.channels = 4 if fusion else 1

    def fill(self, wave: torch.Tensor) -> torch.Tensor:
        length = wave.shape[1]
        if length >= self.n_samples:
            return wave[:, :self.n_samples]
        if self.padding == "repeat":
            return wave.repeat(1, self.n_samples // length + 1)[:, :self.n_samples]
        if self.padding == "repeatpad":
            wave = wave.repeat(1, self.n_samples // length)
        return F.pad(wave, (0, self.n_samples - wave.shape[1]))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        power = power_spectrogram(self.fill(wave), self.basis, self.n_fft, self.hop, "reflect")  # (B, 513, frames)
        log_mel = power_to_db(torch.einsum("bft,fm->btm", power, self.mel))
        return log_mel.unsqueeze(1).expand(-1, self.channels, -1, -1)
