"""Write tests/fixtures/aisfx_reference.npz with the aisfx package's OWN front-end and network (run once).

Runs in a throwaway venv, never in earmark's:

    python3 -m venv /tmp/aisfx-ref
    /tmp/aisfx-ref/bin/pip install librosa resampy soundfile tqdm torch==2.14.1 numpy
    /tmp/aisfx-ref/bin/pip install --no-deps aisfx-0.1.2-py2.py3-none-any.whl
    /tmp/aisfx-ref/bin/python tools/make_aisfx_fixture.py

For each clip: `aisfx.spectrogram.spectrogram_librosa.compute_spectrogram` (librosa.load at 44.1 kHz,
peak normalisation, HTK mel, log10(1e4 x + 1)), transposed to (frames, mels) as the paper's essentia
path gives it, `spectrogram_normalize("original")`, `blocking(100, hop 50, drop_partial_block=True)`,
and `CrossNet(EmbeddingNet('max', 3, 1, 64)).get_embedding` with the checkpoint's weights.

Deviations from the package, each forced: librosa.load is called with res_type="kaiser_best" (resampy),
the default of the librosa 0.9.2 the package pins (newer librosa defaults to soxr_hq); the checkpoint is
read with weights_only=True (the package's `load_weights` calls plain torch.load, which torch >= 2.6
refuses); `blocking` is called directly because `model_get_embedding` asserts more than 50 frames
(~1.2 s) per clip. What is stored: each clip's 44.1 kHz waveform as the package loaded it (real clips
only; the synthetic one is regenerated from `synthetic_clip`, checked by its first samples), its
normalised log-mel frames (frames, 96), its block count and its block embeddings (n_blocks, 512).
"""

from __future__ import annotations

import functools
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "src" / "earmark" / "sample" / "recordings"
CLIPS = ("2_yweweler_11.flac", "5_theo_5.flac", "4_jackson_8.flac", "8_nicolas_6.flac")  # 4 speakers, 0.28-0.42 s
OUT = ROOT / "tests" / "fixtures" / "aisfx_reference.npz"
WHEEL = Path("/tmp/aisfx/aisfx-0.1.2-py2.py3-none-any.whl")
SAMPLE_RATE_HZ = 44_100
SYNTHETIC_S = 5.0
RESAMPLER = "kaiser_best"  # librosa 0.9.2's default res_type


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ, duration_s: float = SYNTHETIC_S) -> np.ndarray:
    """(samples,) float32: 440 Hz + 3 kHz tones, a 200 -> 8000 Hz chirp, and a noise burst from 2 to 3 s.

    The noise is a splitmix64 hash of the sample index (integer arithmetic), so it is the same on every
    machine and numpy version; tests/test_aisfx.py holds a copy of this function.
    """
    n = np.arange(int(sample_rate_hz * duration_s), dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0  # uniform in [-1, 1)
    t = n.astype(np.float64) / sample_rate_hz
    chirp = np.sin(2 * np.pi * (200.0 * t + (8000.0 - 200.0) / (2 * duration_s) * t ** 2))
    burst = ((t >= 2.0) & (t < 3.0)).astype(np.float64)
    wave = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t) + 0.2 * chirp
    return (wave + 0.3 * burst * noise).astype(np.float32)


def load_model():
    from aisfx.inference import load_bestModel

    data = zipfile.ZipFile(WHEEL).read("aisfx/models/checkpoint.pth")
    allowed = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        weights, datasets = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return load_bestModel(weights, datasets, "cpu")


def reference(path: Path, model) -> dict[str, np.ndarray]:
    import librosa
    from aisfx import inference, preprocessing
    from aisfx.spectrogram import spectrogram_librosa

    load = functools.partial(librosa.load, res_type=RESAMPLER)
    wave, _ = load(path=str(path), sr=float(SAMPLE_RATE_HZ))
    spectrogram_librosa.librosa.load = load  # the package's own call, with the pinned librosa's resampler
    try:
        spec = spectrogram_librosa.compute_spectrogram(
            filename=str(path), sr=inference.SAMPLE_RATE, block_size=inference.SPEC_BLOCK_LENGTH,
            hop_size=inference.SPEC_HOP_LENGTH, n_mels=inference.MEL_BINS, f_min=inference.F_MIN,
            f_max=inference.F_MAX)  # (96, frames)
    finally:
        spectrogram_librosa.librosa.load = librosa.load
    log_mel = preprocessing.spectrogram_normalize(spec.T, spec_norm="original")  # (frames, 96)
    blocks = preprocessing.blocking(log_mel, block_size=inference.EMB_BLOCK_LENGTH,
                                    hop_size=int(round(inference.EMB_BLOCK_LENGTH * 0.5)), drop_partial_block=True)
    with torch.no_grad():
        embeddings = model.get_embedding(torch.Tensor(blocks)).numpy()  # (n_blocks, 512)
    return {"wave": wave.astype(np.float32), "log_mel": log_mel.astype(np.float32),
            "n_blocks": np.int64(len(blocks)), "block_embeddings": embeddings.astype(np.float32)}


def main() -> int:
    import librosa
    import resampy

    torch.set_num_threads(2)
    model = load_model()
    arrays: dict[str, np.ndarray] = {"clips": np.array([Path(c).stem for c in CLIPS] + ["synthetic"])}
    for name in CLIPS:
        for key, value in reference(RECORDINGS / name, model).items():
            arrays[f"{Path(name).stem}/{key}"] = value
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "synthetic.wav"
        sf.write(wav, synthetic_clip(), SAMPLE_RATE_HZ, subtype="FLOAT")  # float32 WAV: read back exactly
        result = reference(wav, model)
    assert np.array_equal(result.pop("wave"), synthetic_clip())
    arrays.update({f"synthetic/{key}": value for key, value in result.items()})
    arrays["synthetic/head"] = synthetic_clip()[:256]
    arrays["versions"] = np.array(["aisfx 0.1.2", f"librosa {librosa.__version__}", f"resampy {resampy.__version__}",
                                   f"numpy {np.__version__}", f"torch {torch.__version__}", f"res_type {RESAMPLER}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB): " + ", ".join(
        f"{c} {arrays[c + '/log_mel'].shape[0]} frames {int(arrays[c + '/n_blocks'])} blocks" for c in arrays["clips"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
