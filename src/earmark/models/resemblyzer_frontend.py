"""The resemblyzer front-end (Resemble AI's GE2E voice encoder) in pure torch: 16 kHz wave -> partial utterances.

Follows the `Resemblyzer` 0.1.4 package: `audio.normalize_volume(wav, -30, increase_only=True)` from its
`preprocess_wav`, then `VoiceEncoder.embed_utterance`'s `compute_partial_slices(rate=1.3, min_coverage=0.75)`,
zero padding and `audio.wav_to_mel_spectrogram`:

    wave * max(1, 10^(-30/20) / rms)           louder to -30 dBFS rms, never quieter (a silent clip stays 0)
    zero-padded to the last partial's end      as the package pads; a clip under 1.6 s becomes one partial
    |STFT|^2, n_fft = win = 400, hop 160       25 ms periodic Hann, 10 ms hop, centred, zero-padded by 200
    40 Slaney mel bands, 0-8000 Hz             `librosa.feature.melspectrogram`: power, not log
    partials of 160 frames (1.6 s), every 77   frame_step = round(16000 / 1.3 / 160); a last partial that
                                               covers < 75% real samples is dropped unless it is the only one

`preprocess_wav`'s other step, webrtcvad's trimming of long silences (30 ms windows, mode 3), is not
here: it is a C library deciding per window, which no graph can hold; the clip is embedded with its
pauses. Resampling to 16 kHz is not part of the graph either (the package used librosa's resampler):
decode and resample before. The package's librosa >= 0.10 pads the STFT with zeros (`pad_mode="constant"`,
as here); librosa 0.9 reflected the edges, which changed the first and last two frames.

All partials a clip's length allows are computed; `partial_mask` says which the package keeps, so the
number of partials is a function of the length alone (no branch), and the graph exports with a dynamic
length axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earmark.features import dft_basis, mel_filterbank, power_spectrogram

SAMPLE_RATE_HZ = 16_000
N_FFT = 400  # 25 ms (hparams.mel_window_length)
HOP_LENGTH = 160  # 10 ms (hparams.mel_window_step)
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance (hparams.partials_n_frames)
PARTIAL_SAMPLES = PARTIAL_FRAMES * HOP_LENGTH
PARTIALS_PER_S = 1.3  # embed_utterance's default rate
PARTIAL_STEP_FRAMES = round(SAMPLE_RATE_HZ / PARTIALS_PER_S / HOP_LENGTH)  # 77
MIN_COVERAGE = 0.75  # a last partial with less real audio is dropped
TARGET_DBFS = -30.0  # hparams.audio_norm_target_dBFS
TARGET_RMS = 10.0 ** (TARGET_DBFS / 20.0)
MIN_RMS = 1e-12  # a silent clip's gain stays finite (0 * gain = 0; the package gives NaN)


def n_partials(n_samples: int) -> int:
    """Partials a clip of `n_samples` yields before the coverage rule (`compute_partial_slices`' loop), >= 1."""
    n_frames = (n_samples + HOP_LENGTH) // HOP_LENGTH  # ceil((n_samples + 1) / 160)
    steps = max(1, n_frames - PARTIAL_FRAMES + PARTIAL_STEP_FRAMES + 1)
    return (steps + PARTIAL_STEP_FRAMES - 1) // PARTIAL_STEP_FRAMES


def normalize_volume(wave: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): each clip made louder to TARGET_DBFS rms, never quieter (`increase_only=True`)."""
    rms = wave.square().mean(dim=1, keepdim=True).sqrt()  # (B, 1)
    return wave * (TARGET_RMS / rms.clamp(min=MIN_RMS)).clamp(min=1.0)


def partial_mask(n_samples: int | torch.SymInt, starts: torch.Tensor) -> torch.Tensor:
    """(n_partials,) bool: which partials the package keeps. Only the last can cover < 75% of real audio
    (every earlier one ends inside the clip), and the first is always kept."""
    covered = n_samples - starts * HOP_LENGTH  # (n_partials,) real samples from each start
    return (covered * 4 >= int(MIN_COVERAGE * 4 * PARTIAL_SAMPLES)) | (starts == 0)


class ResemblyzerFrontEnd(nn.Module):
    """(B, samples) float waveform at 16 kHz -> (B, n_partials, 160, 40) mel partials and their (n_partials,) mask.

    n_partials = `n_partials(samples)`; mask[i] is False for a last partial the package drops. The DFT basis
    and the mel filters are rebuilt from the constants: non-persistent buffers (no state_dict keys).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("dft", dft_basis(N_FFT, N_FFT), persistent=False)  # (2 * 201, 1, 400)
        self.register_buffer("mel", mel_filterbank(SAMPLE_RATE_HZ, N_FFT, N_MELS), persistent=False)  # (201, 40)

    def mel_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) volume-normalised, already padded -> (B, 1 + samples // 160, 40) power mel frames."""
        power = power_spectrogram(wave, self.dft, N_FFT, HOP_LENGTH)  # (B, 201, frames)
        return torch.matmul(power.transpose(1, 2), self.mel)  # (B, frames, 40)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) -> ((B, n_partials, 160, 40), (n_partials,) bool)."""
        n_samples = wave.shape[1]
        n_frames = (n_samples + HOP_LENGTH) // HOP_LENGTH
        steps = torch.sym_max(1, n_frames - PARTIAL_FRAMES + PARTIAL_STEP_FRAMES + 1)
        count = (steps + PARTIAL_STEP_FRAMES - 1) // PARTIAL_STEP_FRAMES
        padded_samples = (count - 1) * PARTIAL_STEP_FRAMES * HOP_LENGTH + PARTIAL_SAMPLES  # >= n_samples + 1
        wave = normalize_volume(wave.float())
        wave = F.pad(wave, (0, padded_samples - n_samples))  # (B, padded_samples)
        mels = self.mel_frames(wave)  # (B, frames, 40), frames = 1 + padded_samples // 160
        starts = torch.arange(count, device=wave.device) * PARTIAL_STEP_FRAMES  # (n_partials,)
        index = starts[:, None] + torch.arange(PARTIAL_FRAMES, device=wave.device)  # (n_partials, 160)
        return mels[:, index], partial_mask(n_samples, starts)  # (B, n_partials, 160, 40), (n_partials,)

