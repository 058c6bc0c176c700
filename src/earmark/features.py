"""Feature front-ends (waveform, log-mel, MFCC) as pure-torch, ONNX-exportable modules.

Pure functions build the fixed bases (DFT, mel, DCT); thin modules keep them in buffers so `.to(device)`
and export just work. The STFT is a `conv1d` with a windowed real/imag DFT basis (no `torch.stft`, no
complex tensors). Numbers follow librosa: `center=True, pad_mode="constant"`, periodic Hann, Slaney mel.
"""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack, contextmanager
from typing import Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.config import FeaturesConfig
from earmark.errors import EarmarkError

# Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
MEL_LINEAR_HZ_PER_MEL = 200.0 / 3
MEL_LOG_START_HZ = 1000.0
MEL_LOG_START_MEL = MEL_LOG_START_HZ / MEL_LINEAR_HZ_PER_MEL  # 15 mels
MEL_LOG_STEP = math.log(6.4) / 27.0
HTK_MEL_FACTOR = 2595.0  # HTK mel scale: mel = 2595 * log10(1 + f / 700), no linear part
HTK_MEL_BREAK_HZ = 700.0
AMIN = 1e-10  # power floor before log10: silence reads -100 dB, never -inf
MIN_STD = 1e-3  # a bin that never varies on the training split would otherwise divide by ~0


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """Hz -> Slaney mels, elementwise (float64 for Python numbers)."""
    f = torch.as_tensor(f, dtype=torch.float64)
    log_part = MEL_LOG_START_MEL + torch.log(f.clamp(min=MEL_LOG_START_HZ) / MEL_LOG_START_HZ) / MEL_LOG_STEP
    return torch.where(f >= MEL_LOG_START_HZ, log_part, f / MEL_LINEAR_HZ_PER_MEL)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    """Slaney mels -> Hz, elementwise; the inverse of `hz_to_mel`."""
    m = torch.as_tensor(m, dtype=torch.float64)
    log_part = MEL_LOG_START_HZ * torch.exp(MEL_LOG_STEP * (m - MEL_LOG_START_MEL))
    return torch.where(m >= MEL_LOG_START_MEL, log_part, m * MEL_LINEAR_HZ_PER_MEL)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float = 0.0,
                   f_max_hz: float | None = None) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float32 triangular mel filters, as `librosa.filters.mel(norm="slaney")`."""
    f_max_hz = sample_rate_hz / 2 if f_max_hz is None else f_max_hz
    fft_hz = torch.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1, dtype=torch.float64)  # (n_freqs,)
    mels = torch.linspace(hz_to_mel(f_min_hz).item(), hz_to_mel(f_max_hz).item(), n_mels + 2, dtype=torch.float64)
    edges_hz = mel_to_hz(mels)  # (n_mels + 2,) lower edge, centre, upper edge of each band
    widths_hz = edges_hz.diff()  # (n_mels + 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths_hz[:-1, None]
    falling = ramps[2:] / widths_hz[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0)  # (n_mels, n_freqs)
    weights = weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # equal area per band
    return weights.T.contiguous().float()


def htk_mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float = 0.0,
                       f_max_hz: float | None = None) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float32 triangular filters on the HTK mel scale (2595 log10(1 + f / 700)),
    each band's weights summing to 1: `librosa.filters.mel(htk=True, norm=1)`."""
    f_max_hz = sample_rate_hz / 2 if f_max_hz is None else f_max_hz
    fft_hz = torch.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1, dtype=torch.float64)  # (n_freqs,)
    mel_min, mel_max = (HTK_MEL_FACTOR * math.log10(1.0 + f / HTK_MEL_BREAK_HZ) for f in (f_min_hz, f_max_hz))
    mels = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    edges_hz = HTK_MEL_BREAK_HZ * (10.0 ** (mels / HTK_MEL_FACTOR) - 1.0)  # (n_mels + 2,) lower, centre, upper
    widths_hz = edges_hz.diff()  # (n_mels + 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths_hz[:-1, None]
    falling = ramps[2:] / widths_hz[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0)  # (n_mels, n_freqs)
    sums = weights.sum(dim=1, keepdim=True)
    weights = weights / torch.where(sums > 0, sums, torch.ones_like(sums))  # an empty band stays all zero
    return weights.T.contiguous().float()


def dft_basis(n_fft: int, win_length: int) -> torch.Tensor:
    """conv1d weights (2 * (n_fft // 2 + 1), 1, win_length): DFT real rows, then imaginary rows, times a
    periodic Hann window of `win_length` centred inside n_fft, as librosa does.

    Only the window's support is kept: the n_fft - win_length taps outside it are zero and would cost
    a quarter of the STFT's multiplications at the defaults (`power_spectrogram` shifts the padding).
    """
    n = torch.arange(win_length, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / win_length)  # (win_length,)
    left = (n_fft - win_length) // 2  # where the window starts inside the n_fft frame
    k = torch.arange(n_fft // 2 + 1, dtype=torch.int64)
    t = torch.arange(left, left + win_length, dtype=torch.int64)
    # reducing k * t modulo n_fft keeps every angle in [0, 2 pi), where cos/sin are most accurate
    angle = 2 * math.pi * ((k[:, None] * t[None, :]) % n_fft).double() / n_fft  # (n_freqs, win_length)
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2 * n_freqs, win_length)
    return basis.unsqueeze(1).float()


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II (n_mels, n_mfcc): `log_mel.T @ D` equals scipy's `dct(type=2, norm="ortho")[:n_mfcc]`."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)
    basis = torch.cos(math.pi / n_mels * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def n_frames(n_samples: int, n_fft: int, hop_length: int) -> int:
    """Frames of a centred STFT: 1 + n_samples // hop_length for even n_fft."""
    return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def power_spectrogram(wave: torch.Tensor, basis: torch.Tensor, n_fft: int, hop_length: int,
                      pad_mode: str = "constant") -> torch.Tensor:
    """|STFT|^2 of (B, T) -> (B, n_fft // 2 + 1, frames): librosa's centred STFT, padded by n_fft // 2 on
    both sides (zeros; `pad_mode="reflect"` as torch.stft's default). `basis` (2 * n_freqs, 1, win_length)
    spans only the window, so the padding is shifted by the window's offset inside the n_fft frame; the
    frames are the same."""
    win_length = basis.shape[-1]
    left = (n_fft - win_length) // 2
    pad_left, pad_right = n_fft // 2 - left, n_fft // 2 - (n_fft - left - win_length)
    padded = F.pad(wave.unsqueeze(1), (pad_left, pad_right), mode=pad_mode)  # (B, 1, T + pad_left + pad_right)
    return stacked_power(F.conv1d(padded, basis, stride=hop_length))


def stacked_power(spectrum: torch.Tensor) -> torch.Tensor:
    """(B, 2 * n_freqs, frames), real rows then imaginary rows as `dft_basis` makes them → power (B, n_freqs,
    frames)."""
    real, imag = spectrum.chunk(2, dim=1)  # (B, n_freqs, frames) each
    return real * real + imag * imag


def power_to_db(power: torch.Tensor, amin: float = AMIN) -> torch.Tensor:
    """10 * log10(max(power, amin)), any shape; no reference level, no top_db clipping."""
    return 10.0 * torch.log10(power.clamp(min=amin))


@contextmanager
def true_float32(device: torch.device) -> Iterator[None]:
    """Compute in real float32 under autocast and under cuDNN's default TF32 convolutions.

    A float16 power spectrum overflows (|X|^2 > 65504 for loud clips); TF32's 10-bit mantissa buries
    bands ~50 dB below a frame's peak in the DFT's rounding noise, so GPU features would drift from
    CPU/ONNX ones. Under export neither applies (no autocast, `is_compiling`): the graph holds only math.
    """
    with ExitStack() as stack:
        if torch.is_autocast_enabled(device.type):
            stack.enter_context(torch.autocast(device.type, enabled=False))
        if device.type == "cuda" and not torch.compiler.is_compiling():
            conv = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9 has per-op precision flags
            owner, flag, exact = (conv, "fp32_precision", "ieee") if hasattr(conv, "fp32_precision") else (
                torch.backends.cudnn, "allow_tf32", False)
            previous = getattr(owner, flag)
            setattr(owner, flag, exact)
            stack.callback(setattr, owner, flag, previous)
        yield


class LogMel(nn.Module):
    """(B, T) waveform -> (B, 1, n_mels, frames) log-mel power in dB."""

    kind = "log_mel"

    def __init__(self, sample_rate_hz: int, n_fft: int, win_length: int, hop_length: int, n_mels: int,
                 f_min_hz: float = 0.0, f_max_hz: Optional[float] = None, top_db: Optional[float] = None):
        super().__init__()
        self.n_fft, self.hop_length, self.n_bins = n_fft, hop_length, n_mels
        self.top_db = top_db
        # rebuilt from the config, so kept out of the state_dict (non-persistent)
        self.register_buffer("dft", dft_basis(n_fft, win_length), persistent=False)
        filters = mel_filterbank(sample_rate_hz, n_fft, n_mels, f_min_hz, f_max_hz)
        self.register_buffer("mel", filters.T.contiguous(), persistent=False)  # (n_mels, n_freqs)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        power = power_spectrogram(wave, self.dft, self.n_fft, self.hop_length)  # (B, n_freqs, frames)
        db = power_to_db(torch.matmul(self.mel, power))  # (B, n_mels, frames)
        if self.top_db is not None:  # floor each clip at top_db below its peak (librosa's power_to_db default)
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        return db.unsqueeze(1)  # (B, 1, n_mels, frames)

    def output_shape(self, n_samples: int) -> tuple[int, ...]:
        return (1, self.n_bins, n_frames(n_samples, self.n_fft, self.hop_length))


class MFCC(nn.Module):
    """(B, T) waveform -> (B, 1, n_mfcc, frames): orthonormal DCT-II of the log-mel dB (librosa's mfcc)."""

    kind = "mfcc"

    def __init__(self, sample_rate_hz: int, n_fft: int, win_length: int, hop_length: int, n_mels: int,
                 f_min_hz: float = 0.0, f_max_hz: Optional[float] = None, n_mfcc: int = 20,
                 top_db: Optional[float] = None):
        super().__init__()
        self.log_mel = LogMel(sample_rate_hz, n_fft, win_length, hop_length, n_mels, f_min_hz, f_max_hz, top_db)
        self.n_bins = n_mfcc
        self.register_buffer("dct", dct_matrix(n_mfcc, n_mels).T.contiguous(), persistent=False)  # (n_mfcc, n_mels)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, self.log_mel(wave))  # (B, 1, n_mels, frames) -> (B, 1, n_mfcc, frames)

    def output_shape(self, n_samples: int) -> tuple[int, ...]:
        return (1, self.n_bins, self.log_mel.output_shape(n_samples)[-1])


class Waveform(nn.Module):
    """(B, T) waveform -> (B, 1, T), for models that learn their own front-end."""

    kind = "waveform"

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave.unsqueeze(1)

    def output_shape(self, n_samples: int) -> tuple[int, ...]:
        return (1, n_samples)


class FrontEnd(nn.Module):
    """A feature transform plus per-bin standardisation fitted on the training split.

    forward: (B, T) float waveform -> (B, 1, n_bins, frames), or (B, 1, T) for kind "waveform".
    `mean_`, `std_` and `fitted_` are persistent buffers, so they travel in every checkpoint.
    """

    def __init__(self, transform: nn.Module, sample_rate_hz: int, normalize: bool = True,
                 config: Optional[dict] = None, clip_mean_norm: bool = False):
        super().__init__()
        self.transform = transform
        self.kind: str = transform.kind
        self.sample_rate_hz = sample_rate_hz
        self.normalize = normalize
        self.clip_mean_norm = clip_mean_norm and transform.kind != "waveform"
        self.config = dict(config or {})
        # (1, 1, n_bins, 1) for spectra, (1, 1, 1) for waveforms: every dim but the bins broadcasts
        stats_shape = (1,) + transform.output_shape(sample_rate_hz)[:-1] + (1,)
        self.register_buffer("mean_", torch.zeros(stats_shape))
        self.register_buffer("std_", torch.ones(stats_shape))
        self.register_buffer("fitted_", torch.tensor(False))

    def raw_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Features before standardisation, always computed in float32."""
        if wave.dim() != 2:
            raise ValueError(f"the front-end takes mono waveforms shaped (batch, samples); got {tuple(wave.shape)}")
        with true_float32(wave.device):
            features = self.transform(wave.float())  # (B, 1, n_bins, frames) or (B, 1, T)
            if self.clip_mean_norm:  # each bin's mean over this clip's frames: the recording's fixed colouring
                features = features - features.mean(dim=-1, keepdim=True)
            return features

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        features = self.raw_features(wave)
        if self.normalize:
            features = (features - self.mean_) / self.std_
        return features

    @torch.no_grad()
    def fit_normalization(self, batches: Iterable[torch.Tensor]) -> "FrontEnd":
        """Set `mean_`/`std_` per bin over every frame of every (B, T) batch; pass the training split only."""
        bin_dims = tuple(d for d, size in enumerate(self.mean_.shape) if size == 1)
        total = torch.zeros(self.mean_.shape, dtype=torch.float64, device=self.mean_.device)
        total_sq = torch.zeros_like(total)
        count = 0
        for wave in batches:
            features = self.raw_features(wave.to(self.mean_.device)).double()
            total += features.sum(dim=bin_dims, keepdim=True)
            total_sq += (features * features).sum(dim=bin_dims, keepdim=True)
            count += features.numel() // self.mean_.numel()
        if count == 0:
            raise EarmarkError("fit_normalization got no audio; pass the training split's waveform batches")
        mean = total / count
        std = (total_sq / count - mean * mean).clamp(min=0).sqrt().clamp(min=MIN_STD)
        self.mean_.copy_(mean)
        self.std_.copy_(std)
        self.fitted_.fill_(True)
        return self

    def output_shape(self, n_samples: int) -> tuple[int, ...]:
        """Per-clip feature shape without the batch dim, e.g. (1, 64, 101) for 1 s at 16 kHz, 10 ms hop."""
        return tuple(self.transform.output_shape(n_samples))


def build_frontend(features: FeaturesConfig, sample_rate_hz: int) -> FrontEnd:
    """The front-end a FeaturesConfig describes, validated against the sample rate."""
    config = features.model_dump(mode="json")
    if features.kind == "waveform":
        return FrontEnd(Waveform(), sample_rate_hz, features.normalize, config)
    win_length = round(features.win_ms * sample_rate_hz / 1000)
    hop_length = round(features.hop_ms * sample_rate_hz / 1000)
    one_sample_ms = 1000 / sample_rate_hz
    if min(win_length, hop_length) < 1:
        raise EarmarkError(
            f"features.win_ms ({features.win_ms}) and features.hop_ms ({features.hop_ms}) must each span at least "
            f"one sample: set them to {one_sample_ms:.4g} ms or more at {sample_rate_hz} Hz")
    if win_length > features.n_fft:
        raise EarmarkError(
            f"features.win_ms ({features.win_ms} ms = {win_length} samples at {sample_rate_hz} Hz) is longer than "
            f"features.n_fft ({features.n_fft} samples); set features.n_fft to at least {win_length} "
            f"(e.g. {2 ** math.ceil(math.log2(win_length))}) or features.win_ms to at most "
            f"{features.n_fft * one_sample_ms:.4g}")
    nyquist_hz = sample_rate_hz / 2
    if features.f_max_hz is not None and features.f_max_hz > nyquist_hz:
        raise EarmarkError(
            f"features.f_max_hz ({features.f_max_hz} Hz) is above the Nyquist frequency ({nyquist_hz:g} Hz at "
            f"data.sample_rate_hz={sample_rate_hz}); set features.f_max_hz to at most {nyquist_hz:g} "
            f"or leave it unset")
    f_max_hz = nyquist_hz if features.f_max_hz is None else features.f_max_hz
    if features.f_min_hz >= f_max_hz:
        raise EarmarkError(
            f"features.f_min_hz ({features.f_min_hz} Hz) must be below features.f_max_hz ({f_max_hz:g} Hz, "
            f"the Nyquist frequency when unset); lower features.f_min_hz")
    spectral = dict(sample_rate_hz=sample_rate_hz, n_fft=features.n_fft, win_length=win_length,
                    hop_length=hop_length, n_mels=features.n_mels, f_min_hz=features.f_min_hz, f_max_hz=f_max_hz,
                    top_db=features.top_db)
    transform = MFCC(**spectral, n_mfcc=features.n_mfcc) if features.kind == "mfcc" else LogMel(**spectral)
    log_mel = transform.log_mel if isinstance(transform, MFCC) else transform
    empty = int((log_mel.mel.amax(dim=1) == 0).sum())
    if empty:
        warnings.warn(
            f"features.n_mels={features.n_mels} with features.n_fft={features.n_fft} leaves {empty} mel bands "
            f"without any FFT bin (constant -100 dB); lower features.n_mels or raise features.n_fft", stacklevel=2)
    return FrontEnd(transform, sample_rate_hz, features.normalize, config, features.clip_mean_norm)
