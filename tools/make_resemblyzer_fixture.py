"""Write tests/fixtures/resemblyzer_reference.npz with the Resemblyzer package's OWN front-end and network (run once).

Runs in a throwaway venv, never in earmark's:

    python3 -m venv /tmp/rz-ref
    /tmp/rz-ref/bin/pip install torch librosa numpy scipy soundfile webrtcvad-wheels
    /tmp/rz-ref/bin/pip install --no-deps Resemblyzer-0.1.4-py3-none-any.whl
    /tmp/rz-ref/bin/python tools/make_resemblyzer_fixture.py [--vad-report 120] [--compare EMBEDDINGS.npy]

For each clip: `librosa.load(sr=None)` and `librosa.resample(orig_sr, 16000)` (what `preprocess_wav` does
with a path), `audio.normalize_volume(wav, -30, increase_only=True)`, then `VoiceEncoder.embed_utterance
(return_partials=True)` with the wheel's `pretrained.pt`; the mel frames are the ones `embed_utterance` hands
its network, captured from the package's own `audio.wav_to_mel_spectrogram` call. Left out, as in earmark:
`preprocess_wav`'s `trim_long_silences` (webrtcvad); the fixture also stores each clip's embedding WITH it
(`preprocess_wav` whole), so the test can state what leaving it out changes. `--vad-report N` prints that
for the first N bundled clips too. `--compare E.npy` only compares (the fixture is left alone): the vectors
`earmark embed model.name=resemblyzer --out E.npy` wrote (its index `E.csv` names each clip) against the
package's whole path (`preprocess_wav(path)`, `embed_utterance`) on the same files. Deviation: none needed
(torch >= 2.6 loads `pretrained.pt` with its default weights_only=True: it holds only tensors and plain values).

What is stored: each real clip's 16 kHz waveform as the package resampled it (the synthetic one is
regenerated from `synthetic_clip`, checked by its first samples; "speech" is the four real clips joined,
rebuilt by the test), its mel frames (frames, 40), its kept partials' embeddings (n, 256) and start
frames, its utterance embedding (256,), and the utterance embedding after webrtcvad trimming.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "src" / "earmark" / "sample" / "recordings"
CLIPS = ("2_yweweler_11.flac", "5_theo_5.flac", "4_jackson_8.flac", "3_lucas_7.flac")  # 4 speakers, 0.3-1.3 s
JOINED = "speech"  # the four clips one after another (~2.8 s: two partials of real speech)
OUT = ROOT / "tests" / "fixtures" / "resemblyzer_reference.npz"
SAMPLE_RATE_HZ = 16_000
SYNTHETIC_S = 5.0


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ, duration_s: float = SYNTHETIC_S) -> np.ndarray:
    """(samples,) float32: 220 Hz + 3 kHz tones, a 100 -> 7000 Hz chirp, and a noise burst from 2 to 3 s.

    The noise is a splitmix64 hash of the sample index (integer arithmetic), so it is the same on every
    machine and numpy version; tests/test_resemblyzer.py holds a copy of this function.
    """
    n = np.arange(int(sample_rate_hz * duration_s), dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0  # uniform in [-1, 1)
    t = n.astype(np.float64) / sample_rate_hz
    chirp = np.sin(2 * np.pi * (100.0 * t + (7000.0 - 100.0) / (2 * duration_s) * t ** 2))
    burst = ((t >= 2.0) & (t < 3.0)).astype(np.float64)
    wave = 0.04 * np.sin(2 * np.pi * 220.0 * t) + 0.02 * np.sin(2 * np.pi * 3000.0 * t) + 0.02 * chirp
    return (wave + 0.03 * burst * noise).astype(np.float32)


def load_16k(path: Path) -> np.ndarray:
    """The package's `preprocess_wav(path)` up to its resampling: librosa.load(sr=None), librosa.resample."""
    import librosa

    wav, source_sr = librosa.load(str(path), sr=None)
    return librosa.resample(wav, orig_sr=source_sr, target_sr=SAMPLE_RATE_HZ).astype(np.float32)


def reference(wave: np.ndarray, encoder) -> dict[str, np.ndarray]:
    from resemblyzer import audio, hparams, voice_encoder

    captured, package_mel = [], audio.wav_to_mel_spectrogram

    def wav_to_mel_spectrogram(wav):
        captured.append(package_mel(wav))
        return captured[-1]

    normalized = audio.normalize_volume(wave, hparams.audio_norm_target_dBFS, increase_only=True)
    voice_encoder.audio.wav_to_mel_spectrogram = wav_to_mel_spectrogram  # record the package's own call
    try:
        embedding, partials, wav_slices = encoder.embed_utterance(normalized, return_partials=True)
    finally:
        voice_encoder.audio.wav_to_mel_spectrogram = package_mel
    trimmed = audio.preprocess_wav(wave)  # normalize_volume + trim_long_silences: the package's whole path
    return {"wave": wave, "mel": captured[0].astype(np.float32),
            "partial_starts": np.array([s.start // 160 for s in wav_slices], dtype=np.int64),
            "partial_embeddings": partials.astype(np.float32), "embedding": embedding.astype(np.float32),
            "trimmed_samples": np.int64(len(trimmed)),
            "trimmed_embedding": encoder.embed_utterance(trimmed).astype(np.float32)}


def vad_report(encoder, n_clips: int) -> None:
    """Cosine between each clip's embedding without and with webrtcvad trimming, over the first n bundled clips."""
    from resemblyzer import audio

    cosines, kept = [], []
    for path in sorted(RECORDINGS.glob("*.flac"))[:n_clips]:
        wave = load_16k(path)
        plain = encoder.embed_utterance(audio.normalize_volume(wave, -30, increase_only=True))
        trimmed = audio.preprocess_wav(wave)
        cosines.append(float(plain @ encoder.embed_utterance(trimmed)))
        kept.append(len(trimmed) / len(wave))
    c = np.array(cosines)
    print(f"webrtcvad trimming, {len(c)} bundled clips: cosine(untrimmed, trimmed) mean {c.mean():.4f}, "
          f"median {np.median(c):.4f}, min {c.min():.4f}; trimming keeps {np.mean(kept):.0%} of the samples")


def compare(encoder, vectors_path: Path) -> None:
    """Cosine between earmark's pipeline embedding of each clip and the package's `preprocess_wav` + embed."""
    import csv

    vectors = np.load(vectors_path)
    with open(vectors_path.with_suffix(".csv"), newline="") as index:
        paths = [row["path"] for row in csv.DictReader(index)]
    from resemblyzer import preprocess_wav

    package = np.stack([encoder.embed_utterance(preprocess_wav(Path(p))) for p in paths])
    c = (vectors * package).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(package, axis=1)
    print(f"earmark embed vs the package's preprocess_wav + embed_utterance, {len(c)} clips: cosine mean "
          f"{c.mean():.4f}, median {np.median(c):.4f}, min {c.min():.4f}")


def main(argv: list[str] | None = None) -> int:
    import librosa
    import resemblyzer
    from resemblyzer import VoiceEncoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vad-report", type=int, default=0, metavar="N")
    parser.add_argument("--compare", type=Path, metavar="EMBEDDINGS.npy")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    encoder = VoiceEncoder("cpu", verbose=False)
    if args.compare:  # only the comparison; the fixture is left as it is
        compare(encoder, args.compare)
        return 0
    waves = {Path(name).stem: load_16k(RECORDINGS / name) for name in CLIPS}
    waves[JOINED] = np.concatenate(list(waves.values()))
    arrays: dict[str, np.ndarray] = {"clips": np.array([*waves, "synthetic"])}
    for name, wave in waves.items():
        arrays.update({f"{name}/{key}": value for key, value in reference(wave, encoder).items()
                       if not (name == JOINED and key == "wave")})
    with tempfile.TemporaryDirectory() as tmp:  # through a file, as a user's clip would come
        wav = Path(tmp) / "synthetic.wav"
        sf.write(wav, synthetic_clip(), SAMPLE_RATE_HZ, subtype="FLOAT")  # float32 WAV: read back exactly
        result = reference(load_16k(wav), encoder)
    assert np.array_equal(result.pop("wave"), synthetic_clip())
    arrays.update({f"synthetic/{key}": value for key, value in result.items()})
    arrays["synthetic/head"] = synthetic_clip()[:256]
    arrays["versions"] = np.array([f"resemblyzer {getattr(resemblyzer, '__version__', '0.1.4')}",
                                   f"librosa {librosa.__version__}", f"numpy {np.__version__}",
                                   f"torch {torch.__version__}"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB): " + ", ".join(
        f"{c} {arrays[c + '/mel'].shape[0]} frames {len(arrays[c + '/partial_starts'])} partials"
        for c in arrays["clips"]))
    for c in arrays["clips"]:
        cosine = float(arrays[c + "/embedding"] @ arrays[c + "/trimmed_embedding"])
        print(f"  {c}: cosine(untrimmed, webrtcvad-trimmed) {cosine:.4f}, "
              f"trimmed to {int(arrays[c + '/trimmed_samples'])} samples")
    if args.vad_report:
        vad_report(encoder, args.vad_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
