"""mfcc_stats: the "no pretraining" view as an embedder — MFCC and log-mel statistics over time.

Nothing here is learned: each clip is peak-normalised, turned into 40 Slaney log-mel bands (floored 80 dB
below the clip's peak, so zero padding does not dominate) and their 20 MFCCs with `earmark.features`'
`MFCC` (its `LogMel` inside), and summarised over time:

    wave (B, samples) at 16 kHz
      -> log-mel (B, 40, frames), MFCC (B, 20, frames)      25 ms window, 10 ms hop, n_fft 512
      -> ++ deltas (regression over ±2 frames)                (B, 120, frames)
      -> mean ++ std over frames                              (B, 240)

Registered as an `EmbeddingClassifier` probe (`model.name=mfcc_stats`), so the embedding cache, the probe
heads, evaluation, prediction and export treat it like `aisfx`; it is also a view of `model.name=fusion`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from earmark.features import MFCC, true_float32
from earmark.models.embedding import EmbeddingClassifier
from earmark.models.registry import register_model

SAMPLE_RATE_HZ = 16_000
N_FFT, WIN_LENGTH, HOP_LENGTH = 512, 400, 160  # 32 ms FFT, 25 ms window, 10 ms hop
N_MELS, N_MFCC = 40, 20
TOP_DB = 80.0  # each clip's floor below its peak: padding reads as quiet, not as -100 dB
DELTA_WIDTH = 2  # frames each side of the regression delta (librosa's width 5)
PEAK_FLOOR = 1e-8  # a silent clip stays silent instead of dividing by zero
EMBEDDING_DIM = 2 * 2 * (N_MELS + N_MFCC)  # (static ++ delta) x (mean ++ std) for every band and coefficient
VERSION = "v1"  # bump when the numbers change: it names the cached embeddings


def deltas(x: torch.Tensor, width: int = DELTA_WIDTH) -> torch.Tensor:
    """(B, C, frames) → (B, C, frames): sum_n n (x[t+n] - x[t-n]) / (2 sum_n n^2), edges repeated."""
    frames = x.shape[-1]
    padded = F.pad(x, (width, width), mode="replicate")  # (B, C, frames + 2 width)
    total = sum(n * (padded[..., width + n:width + n + frames] - padded[..., width - n:width - n + frames])
                for n in range(1, width + 1))
    return total / (2 * sum(n * n for n in range(1, width + 1)))


class MfccStatsEmbedder(nn.Module):
    """(B, samples) at 16 kHz → (B, 240): mean and std over time of log-mels, MFCCs and their deltas."""

    def __init__(self, peak_normalize: bool = True) -> None:
        super().__init__()
        self.peak_normalize = peak_normalize
        self.mfcc = MFCC(SAMPLE_RATE_HZ, N_FFT, WIN_LENGTH, HOP_LENGTH, N_MELS, n_mfcc=N_MFCC, top_db=TOP_DB)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) → (B, EMBEDDING_DIM)."""
        with true_float32(wave.device):
            wave = wave.float()
            if self.peak_normalize:
                wave = wave / wave.abs().amax(dim=1, keepdim=True).clamp(min=PEAK_FLOOR)
            log_mel = self.mfcc.log_mel(wave)  # (B, 1, n_mels, frames)
            mfcc = torch.matmul(self.mfcc.dct, log_mel)  # (B, 1, n_mfcc, frames)
            static = torch.cat([log_mel, mfcc], dim=2).squeeze(1)  # (B, n_mels + n_mfcc, frames)
            both = torch.cat([static, deltas(static)], dim=1)  # (B, 2 (n_mels + n_mfcc), frames)
            return torch.cat([both.mean(dim=2), both.std(dim=2, unbiased=False)], dim=1)  # (B, EMBEDDING_DIM)


@register_model("mfcc_stats", input_kind="waveform", sample_rate_hz=SAMPLE_RATE_HZ,
                description="no pretraining: MFCC and log-mel statistics (mean, std, deltas; 240-d) as an embedder "
                            "+ linear or MLP head, a probe on cached embeddings")
def mfcc_stats(n_classes: int, input_shape: tuple[int, ...], head: str = "linear", hidden: int = 256,
               dropout: float = 0.2, peak_normalize: bool = True) -> EmbeddingClassifier:
    """`peak_normalize`: scale each clip to a peak of 1 first (level-invariant statistics); false keeps its level."""
    backbone_id = f"mfcc_stats-{VERSION}" + ("" if peak_normalize else "-level")
    return EmbeddingClassifier(MfccStatsEmbedder(peak_normalize), EMBEDDING_DIM, n_classes, backbone_id, head=head,
                               hidden=hidden, dropout=dropout, freeze=True)
