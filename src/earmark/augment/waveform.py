"""Level and noise augmentations on (B, T) waveforms: circular shift, gain, white noise, background noise.

SNRs are relative to each clip's own mean power over all T samples (padding silence included), so a
quiet clip gets quiet noise; a silent clip gets none.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from earmark.augment.base import Augmentation, Params, coin, generator_device, uniform
from earmark.errors import EarmarkError

MIN_POWER = 1e-12  # below this a clip or noise excerpt counts as silence: nothing is mixed in


def snr_scale(signal: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """(B, 1) factor that puts `noise` (B, T) at `snr_db` (B, 1) below `signal` (B, T), by mean power."""
    signal_power = signal.pow(2).mean(dim=1, keepdim=True)  # (B, 1)
    noise_power = noise.pow(2).mean(dim=1, keepdim=True)
    scale = torch.sqrt(signal_power / (noise_power.clamp(min=MIN_POWER) * 10 ** (snr_db / 10)))
    return torch.where((noise_power > MIN_POWER) & (signal_power > MIN_POWER), scale, torch.zeros_like(scale))


class RandomShift(Augmentation):
    """Circularly shift each clip by up to ±max_shift_s (B, T) → (B, T); padding silence moves with it."""

    def __init__(self, max_shift_s: float, sample_rate_hz: int, p: float) -> None:
        super().__init__()
        self.max_shift = int(round(max_shift_s * sample_rate_hz))
        self.p = p

    @property
    def active(self) -> bool:
        return self.max_shift > 0 and self.p > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        batch = shape[0]
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch, 1), generator=generator,
                               device=generator_device(generator))
        return {"shift": shifts * coin((batch, 1), self.p, generator)}  # (B, 1) samples, 0 = untouched

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        length = waves.shape[1]
        index = (torch.arange(length, device=waves.device) - params["shift"].to(waves.device)) % length  # (B, T)
        return waves.gather(1, index)


class RandomGain(Augmentation):
    """Scale each clip by a gain drawn uniformly in [-max_gain_db, +max_gain_db] dB."""

    def __init__(self, max_gain_db: float, p: float) -> None:
        super().__init__()
        self.max_gain_db = max_gain_db
        self.p = p

    @property
    def active(self) -> bool:
        return self.max_gain_db > 0 and self.p > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        batch = shape[0]
        draws = torch.rand(batch, 1, generator=generator, device=generator_device(generator))
        gain_db = (draws * 2 - 1) * self.max_gain_db  # written as before, so old runs reproduce bit for bit
        return {"gain_db": gain_db * coin((batch, 1), self.p, generator)}  # (B, 1), 0 dB = untouched

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        return waves * (10 ** (params["gain_db"] / 20)).to(waves.device, waves.dtype)


class GaussianNoise(Augmentation):
    """Add white noise: of standard deviation `std` (full scale = 1), or at an SNR drawn from `snr_db`."""

    def __init__(self, std: float, p: float, snr_db: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.std = std
        self.p = p
        self.snr_db = None if snr_db is None else (float(snr_db[0]), float(snr_db[1]))

    @property
    def active(self) -> bool:
        return (self.std > 0 or self.snr_db is not None) and self.p > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        batch, length = shape
        params = {"chosen": coin((batch, 1), self.p, generator),
                  "noise": torch.randn(batch, length, generator=generator, device=generator_device(generator))}
        if self.snr_db is not None:
            params["snr_db"] = uniform((batch, 1), *self.snr_db, generator)
        return params

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        chosen = params["chosen"].to(waves.device, waves.dtype)
        noise = params["noise"].to(waves.device, waves.dtype)  # (B, T)
        if self.snr_db is None:
            return waves + chosen * self.std * noise
        noise = noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt()  # exactly unit power, so the SNR is exact
        return waves + chosen * snr_scale(waves, noise, params["snr_db"].to(waves.device)) * noise


def load_background_bank(folder: Path, sample_rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """Every audio file under `folder`, mono at `sample_rate_hz`: (concatenated samples, per-file lengths).

    Raises EarmarkError naming the folder when nothing in it decodes; unreadable files are listed in a warning.
    """
    from earmark.data.audio import AudioError, decode, extension, resample, to_mono
    from earmark.files import AUDIO_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise EarmarkError(f"augment.background_dir {folder} is not a folder; give a folder of noise recordings "
                           f"({', '.join(AUDIO_EXTENSIONS)}) or leave it unset")
    pieces, bad = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and extension(p) in AUDIO_EXTENSIONS):
        try:
            audio, rate_hz = decode(path)
        except AudioError as exc:
            bad.append(f"{path}: {exc.reason}")
            continue
        pieces.append(resample(to_mono(audio), rate_hz, sample_rate_hz))
    pieces = [piece for piece in pieces if len(piece)]
    if not pieces:
        found = f"; unreadable: {'; '.join(bad[:5])}" if bad else ""
        raise EarmarkError(f"augment.background_dir {folder} holds no usable audio ({', '.join(AUDIO_EXTENSIONS)})"
                           f"{found}; add noise recordings or unset augment.background_dir")
    if bad:
        warnings.warn(f"augment.background_dir: {len(bad)} file(s) skipped: " + "; ".join(bad[:10]), stacklevel=2)
    return np.concatenate(pieces).astype(np.float32), np.array([len(p) for p in pieces], dtype=np.int64)


class BackgroundNoise(Augmentation):
    """Mix a random excerpt of the background recordings into each chosen clip at an SNR drawn from `snr_db`.

    The recordings are decoded once, here, into one buffer (not saved in checkpoints). An excerpt starts
    anywhere in the bank (so long files are picked more often) and wraps around within its own file.
    """

    def __init__(self, folder: Path, sample_rate_hz: int, snr_db: tuple[float, float], p: float) -> None:
        super().__init__()
        bank, lengths = load_background_bank(folder, sample_rate_hz)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.p = p
        self.register_buffer("bank", torch.from_numpy(bank), persistent=False)  # (total,)
        self.register_buffer("file_lengths", torch.from_numpy(lengths), persistent=False)  # (n_files,)
        self.register_buffer("file_starts", torch.from_numpy(np.cumsum(lengths) - lengths), persistent=False)

    @property
    def active(self) -> bool:
        return self.p > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Params:
        batch = shape[0]
        total = len(self.bank)
        start = uniform((batch,), 0, total, generator, dtype=torch.float64).long().clamp(max=total - 1)
        return {"chosen": coin((batch, 1), self.p, generator), "start": start,  # (B,) sample in the bank
                "snr_db": uniform((batch, 1), *self.snr_db, generator)}

    def excerpts(self, start: torch.Tensor, length: int) -> torch.Tensor:
        """(B,) bank positions → (B, length) excerpts, each wrapping within the file it starts in."""
        start = start.to(self.bank.device)
        file = torch.searchsorted(self.file_starts, start, right=True) - 1  # (B,)
        offset = start - self.file_starts[file]
        steps = torch.arange(length, device=self.bank.device)
        index = self.file_starts[file, None] + (offset[:, None] + steps) % self.file_lengths[file, None]  # (B, T)
        return self.bank[index]

    def transform(self, waves: torch.Tensor, params: Params) -> torch.Tensor:
        noise = self.excerpts(params["start"], waves.shape[1]).to(waves.device, waves.dtype)  # (B, T)
        scale = snr_scale(waves, noise, params["snr_db"].to(waves.device))
        return waves + params["chosen"].to(waves.device, waves.dtype) * scale * noise
