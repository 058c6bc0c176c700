"""Tempo and pitch augmentations on (B, T) waveforms, batched with a different factor per clip.

    resample_by(x, factors)        y[n] = x(n * factor): speed (tempo and pitch together), band-limited
    time_stretch(x, rates)         phase vocoder: tempo × rate, pitch kept
    pitch_shift(x, semitones)      time_stretch by 1 / ratio, then resample_by ratio: pitch × ratio, length kept

Every output is cropped or zero-padded back to the input's T samples. Augmentation is never exported,
so torch.stft / istft and complex tensors are fine here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from earmark.augment.base import Augmentation, Params, coin, on_chosen, uniform

SINC_HALF_TAPS = 8  # 16 input samples per output sample: error -60 dB at half Nyquist, -40 dB at 3/4 Nyquist
SINC_PHASES = 1024  # positions are rounded to 1/1024 of a sample (a precomputed weight table per position)
STRETCH_WINDOW_S = 0.025  # phase-vocoder frame, rounded up to a power of two samples; hop = a quarter of it


def stretch_fft_size(sample_rate_hz: int) -> tuple[int, int]:
    """(n_fft, hop_length) of the phase vocoder: 256/64 at 8 kHz, 512/128 at 16 kHz, 2048/512 at 44.1 kHz."""
    n_fft = 2 ** math.ceil(math.log2(max(16.0, STRETCH_WINDOW_S * sample_rate_hz)))
    return n_fft, n_fft // 4


def sinc_table(cutoffs: torch.Tensor, phases: int = SINC_PHASES) -> torch.Tensor:
    """(B,) cut-offs (fraction of Nyquist) → (B, phases + 1, 2 * SINC_HALF_TAPS) interpolation weights.

    Row j interpolates at j / phases of a sample past the base sample; rows sum to 1 (unit DC gain).
    """
    taps = torch.arange(1 - SINC_HALF_TAPS, SINC_HALF_TAPS + 1, device=cutoffs.device, dtype=cutoffs.dtype)
    fraction = torch.arange(phases + 1, device=cutoffs.device, dtype=cutoffs.dtype) / phases
    distance = taps[None, :] - fraction[:, None]  # (phases + 1, taps)
    window = 0.5 + 0.5 * torch.cos(math.pi * distance / SINC_HALF_TAPS)
    cutoffs = cutoffs[:, None, None]
    weights = cutoffs * torch.sinc(cutoffs * distance) * window  # (B, phases + 1, taps)
    return weights / weights.sum(dim=2, keepdim=True)


def resample_by(waves: torch.Tensor, factors: torch.Tensor, out_length: int | None = None) -> torch.Tensor:
    """Read each clip `factor` times faster: (B, T), (B,) → (B, out_length), out_length defaulting to T.

    y[n] = x(n * factor) with a Hann-windowed sinc (positions rounded to 1 / SINC_PHASES of a sample);
    for factor > 1 its cut-off drops to 1 / factor of Nyquist so nothing aliases. Positions past the
    input's last sample read silence.
    """
    batch, length = waves.shape
    out_length = length if out_length is None else out_length
    factors = factors.to(waves.device)
    position = torch.arange(out_length, device=waves.device, dtype=torch.float64) * factors.double()[:, None]
    base = position.floor()  # (B, L)
    phase = ((position - base) * SINC_PHASES).round().long()  # (B, L) row of the weight table
    table = sinc_table(factors.clamp(min=1).reciprocal().to(waves.dtype)).flatten(0, 1).T.contiguous()
    # table: (taps, B * rows)
    row = phase + (SINC_PHASES + 1) * torch.arange(batch, device=waves.device)[:, None]  # (B, L) into the table
    # zero-padded so every tap of every position up to the end reads a real sample or silence
    padded = F.pad(waves, (SINC_HALF_TAPS, SINC_HALF_TAPS))  # (B, T + 2 * half)
    first = base.long().clamp(max=length - 1) + 1  # padded index of the first tap; past the end: zeroed below
    out = torch.zeros(batch, out_length, device=waves.device, dtype=waves.dtype)
    for tap in range(2 * SINC_HALF_TAPS):  # one (B, L) gather per tap, never per clip
        out.addcmul_(table[tap][row], padded.gather(1, first + tap))
    return out * (position <= length - 1)


def time_stretch(waves: torch.Tensor, rates: torch.Tensor, n_fft: int, hop_length: int,
                 out_length: int | None = None) -> torch.Tensor:
    """Play each clip `rate` times faster at the same pitch: (B, T), (B,) → (B, out_length), default T.

    A phase vocoder (as librosa's): output frame m reads input frame m * rate, magnitudes interpolated
    linearly, phases advanced by each bin's measured frequency. Clip b lasts round(T / rate_b) samples,
    then silence.
    """
    batch, length = waves.shape
    out_length = length if out_length is None else out_length
    rates = rates.to(waves.device, torch.float64)
    window = torch.hann_window(n_fft, device=waves.device, dtype=waves.dtype)
    spectrum = torch.stft(waves, n_fft, hop_length, window=window, center=True, pad_mode="constant",
                          return_complex=True)  # (B, n_freqs, n_in)
    n_freqs, n_in = spectrum.shape[1:]
    n_out = (out_length + n_fft) // hop_length + 1  # enough frames that even the last sample gets its full overlap
    steps = torch.arange(n_out, device=waves.device, dtype=torch.float64) * rates[:, None]  # (B, n_out)
    first = steps.floor().long().clamp(max=n_in)[:, None, :].expand(-1, n_freqs, -1)  # (B, n_freqs, n_out)
    alpha = (steps - steps.floor()).to(waves.dtype)[:, None, :]
    padded = F.pad(spectrum, (0, 2))  # two silent frames, so first + 1 is always readable
    magnitude, phase = padded.abs(), padded.angle()  # (B, n_freqs, n_in + 2)
    magnitude = (1 - alpha) * magnitude.gather(2, first) + alpha * magnitude.gather(2, first + 1)
    magnitude = magnitude * (steps < n_in)[:, None, :].to(waves.dtype)
    advance = torch.linspace(0, math.pi * hop_length, n_freqs, device=waves.device, dtype=waves.dtype)[:, None]
    deviation = phase.gather(2, first + 1) - phase.gather(2, first) - advance  # (B, n_freqs, n_out)
    increment = _wrap(_wrap(deviation) + advance)  # wrapped again: e^{i phase} is periodic, cumsum stays small
    accumulated = phase[:, :, :1] + increment.cumsum(dim=2) - increment  # exclusive cumsum from frame 0's phase
    out = torch.istft(torch.polar(magnitude, accumulated), n_fft, hop_length, window=window, center=True,
                      length=out_length)  # (B, out_length)
    duration = (length / rates).round()  # (B,) samples each stretched clip really lasts
    return out * (torch.arange(out_length, device=waves.device)[None, :] < duration[:, None])


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles into [-pi, pi]."""
    return angle - 2 * math.pi * torch.round(angle / (2 * math.pi))


def pitch_shift(waves: torch.Tensor, semitones: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Shift each clip's pitch by `semitones` (B,), keeping its length: (B, T) → (B, T)."""
    length = waves.shape[1]
    ratios = 2 ** (semitones.double() / 12)  # (B,) frequency ratio
    longest = math.ceil(length * float(ratios.max()))
    stretched = time_stretch(waves, 1 / ratios, n_fft, hop_length, out_length=longest)  # T * ratio long, same pitch
    return resample_by(stretched, ratios, out_length=length)  # back to T samples: pitch × ratio


class SpeedPerturb(Augmentation):
    """Resample each chosen clip by a factor drawn from `speed` = (min, max): 1.1 is 10 % faster and higher."""

    def __init__(self, speed: tuple[float, float], p: float) -> None:
        super().__init__()
        self.speed = (float(speed[0]), float(speed[1]))
        self.p = p

    @property
    def active(self) -> bool:
        return self.p > 0 and self.speed != (1.0, 1.0)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        return {"chosen": coin((shape[0],), self.p, generator), "factor": uniform((shape[0],), *self.speed, generator)}

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        return on_chosen(waves, params["chosen"], resample_by, params["factor"])


class TimeStretch(Augmentation):
    """Phase-vocoder stretch of each chosen clip by a rate drawn from `stretch` = (min, max); pitch kept."""

    def __init__(self, stretch: tuple[float, float], p: float, sample_rate_hz: int) -> None:
        super().__init__()
        self.stretch = (float(stretch[0]), float(stretch[1]))
        self.p = p
        self.n_fft, self.hop_length = stretch_fft_size(sample_rate_hz)

    @property
    def active(self) -> bool:
        return self.p > 0 and self.stretch != (1.0, 1.0)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        return {"chosen": coin((shape[0],), self.p, generator), "rate": uniform((shape[0],), *self.stretch, generator)}

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        def stretch(chosen: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
            return time_stretch(chosen, rates, self.n_fft, self.hop_length)

        return on_chosen(waves, params["chosen"], stretch, params["rate"])


class PitchShift(Augmentation):
    """Shift each chosen clip's pitch by up to ± `max_semitones`, keeping its duration."""

    def __init__(self, max_semitones: float, p: float, sample_rate_hz: int) -> None:
        super().__init__()
        self.max_semitones = float(max_semitones)
        self.p = p
        self.n_fft, self.hop_length = stretch_fft_size(sample_rate_hz)

    @property
    def active(self) -> bool:
        return self.p > 0 and self.max_semitones > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        semitones = uniform((shape[0],), -self.max_semitones, self.max_semitones, generator)
        return {"chosen": coin((shape[0],), self.p, generator), "semitones": semitones}

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        def shift(chosen: torch.Tensor, semitones: torch.Tensor) -> torch.Tensor:
            return pitch_shift(chosen, semitones, self.n_fft, self.hop_length)

        return on_chosen(waves, params["chosen"], shift, params["semitones"])
