"""How fast `prepare_cache` turns a folder of audio into clips, against the seed pipelines' way.

Reference (what the seed pipelines did, serially, for every file, every run):
    librosa.load(path, sr=16000) -> melspectrogram(n_fft=512, hop_length=160, n_mels=64) -> power_to_db
earmark: prepare_cache(sample_rate_hz=16000, duration_s=1.0, clip=pad) into a fresh cache (cold),
then the same call again (warm: it must decode nothing). Each is run --repeat times; the
fastest run is shown, since other work on a shared machine only ever adds time.

    python benchmarks/prepare_speed.py [--data PATH] [--limit N] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from earmark.config import DataConfig
from earmark.data.audio import SUPPORTED_FORMATS
from earmark.data.cache import prepare_cache

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd"
SAMPLE_RATE_HZ = 16000


def audio_files(root: Path, limit: int | None) -> list[str]:
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in SUPPORTED_FORMATS)
    return paths[:limit] if limit else paths


def reference(paths: list[str]) -> tuple[float, float]:
    """Seconds for the seed pipeline over all files, and the part spent in librosa.load alone."""
    import librosa  # here, not at the top: pool workers re-import this script's top level

    def one(path: str) -> float:
        started = time.perf_counter()
        y, _ = librosa.load(path, sr=SAMPLE_RATE_HZ)
        loaded = time.perf_counter()
        mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE_HZ, n_fft=512, hop_length=160, n_mels=64)
        librosa.power_to_db(mel)
        return loaded - started

    one(paths[0])  # warm-up (numba compilation, lazy imports) is not timed
    started = time.perf_counter()
    load_s = sum(one(path) for path in paths)
    return time.perf_counter() - started, load_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.exists() else None,
                        help=f"folder searched recursively for {', '.join(SUPPORTED_FORMATS)} (default: {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files (sorted by path)")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: CPU count)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest is shown")
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_dir():
        parser.error(f"no data folder: pass --data (the default {DEFAULT_DATA} does not exist)")
    paths = audio_files(args.data, args.limit)
    if not paths:
        parser.error(f"no audio files ({', '.join(SUPPORTED_FORMATS)}) under {args.data}")

    # best of --repeat: other work on a shared machine only ever adds time
    reference_s, reference_load_s = min(reference(paths) for _ in range(args.repeat))
    colds, warms = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="earmark-bench-") as cache_dir:
            data = DataConfig(sample_rate_hz=SAMPLE_RATE_HZ, duration_s=1.0, clip="pad", cache_dir=Path(cache_dir))
            colds.append(prepare_cache(paths, data, workers=args.workers, progress=False).stats)
            warms.append(prepare_cache(paths, data, workers=args.workers, progress=False).stats)
    cold = min(colds, key=lambda stats: stats.seconds)
    warm = min(warms, key=lambda stats: stats.seconds)

    n = len(paths)
    rows = [
        ("reference: librosa load + log-mel", reference_s, "serial"),
        ("  of which librosa.load alone", reference_load_s, "serial"),
        ("earmark prepare_cache, cold", cold.seconds, f"decoded {cold.n_decoded}, bad {cold.n_bad}"),
        ("earmark prepare_cache, warm re-run", warm.seconds, f"decoded {warm.n_decoded}"),
    ]
    print(f"data: {args.data}  files: {n}  clips: {cold.n_segments}")
    print(f"{'pipeline':<38}{'files':>7}{'seconds':>10}{'files/s':>11}  note")
    for name, seconds, note in rows:
        print(f"{name:<38}{n:>7}{seconds:>10.3f}{n / seconds:>11.0f}  {note}")
    print(f"cold speed-up, reference / earmark: {reference_s / cold.seconds:.1f}x "
          f"(librosa.load alone / earmark: {reference_load_s / cold.seconds:.1f}x)")
    print(f"warm re-run: {warm.seconds:.3f} s, n_decoded = {warm.n_decoded}")
    if any(stats.n_decoded for stats in warms):
        print("FAIL: the warm re-run decoded files again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
