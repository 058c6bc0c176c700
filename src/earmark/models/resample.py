"""Band-limited resampling inside the model graph: (B, T) at one rate → (B, T') at another, in pure torch.

A fusion of pretrained views, or an ensemble of runs, takes audio at one rate and hands each member the
rate it was trained on. The resampler is a windowed-sinc polyphase filter (the method of
`torchaudio.functional.resample`, Hann window, 6 zero crossings, roll-off 0.99): the ratio is reduced by the
greatest common divisor to `orig / new`, and a `conv1d` with stride `orig` and `new` output channels (one
per phase) computes every output sample, so the module exports to ONNX and runs on any device. The kernel
is a buffer (`.to(device)` moves it), built once from the two rates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ZERO_CROSSINGS = 6  # filter half-width, in zero crossings of the sinc at the lower of the two rates
ROLLOFF = 0.99  # cut-off as a fraction of the lower Nyquist frequency


def sinc_kernel(orig_hz: int, new_hz: int, zero_crossings: int = ZERO_CROSSINGS,
                rolloff: float = ROLLOFF) -> tuple[torch.Tensor, int]:
    """(kernel (new, 1, 2 * width + orig) float32, width) for rates already divided by their gcd."""
    base_hz = min(orig_hz, new_hz) * rolloff
    width = math.ceil(zero_crossings * orig_hz / base_hz)
    idx = torch.arange(-width, width + orig_hz, dtype=torch.float64)[None, None] / orig_hz  # (1, 1, K)
    t = torch.arange(0, -new_hz, -1, dtype=torch.float64)[:, None, None] / new_hz + idx  # (new, 1, K)
    t = (t * base_hz).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2  # Hann
    t = t * math.pi
    scale = base_hz / orig_hz
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    return (kernel * window * scale).float(), width


def resampled_length(n_samples: int, orig_hz: int, new_hz: int) -> int:
    """Samples after resampling `n_samples` from `orig_hz` to `new_hz` (rounded up)."""
    return math.ceil(n_samples * new_hz / orig_hz)


class Resample(nn.Module):
    """(B, T) at `orig_hz` → (B, ceil(T * new_hz / orig_hz)) at `new_hz`; the identity when the rates agree."""

    def __init__(self, orig_hz: int, new_hz: int) -> None:
        super().__init__()
        self.orig_hz, self.new_hz = int(orig_hz), int(new_hz)
        divisor = math.gcd(self.orig_hz, self.new_hz)
        self._orig, self._new = self.orig_hz // divisor, self.new_hz // divisor
        kernel, self._width = sinc_kernel(self._orig, self._new) if self._orig != self._new else (torch.ones(1, 1, 1), 0)
        self.register_buffer("kernel", kernel, persistent=False)  # rebuilt from the rates: never saved

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, T')."""
        if self._orig == self._new:
            return wave
        n_samples = wave.shape[-1]
        padded = F.pad(wave[:, None], (self._width, self._width + self._orig))  # (B, 1, T + 2w + orig)
        phases = F.conv1d(padded, self.kernel.to(wave.dtype), stride=self._orig)  # (B, new, frames)
        out = phases.transpose(1, 2).reshape(wave.shape[0], -1)  # (B, frames * new), phases interleaved
        return out[:, :(n_samples * self._new + self._orig - 1) // self._orig]  # integer ceil: traced, not fixed

    def extra_repr(self) -> str:
        return f"{self.orig_hz} Hz -> {self.new_hz} Hz"
