"""Memory and time of `train` and `evaluate` as the number of classes grows (synthetic tones, 6 clips each).

    python benchmarks/many_classes.py [--classes 10,100,1000] [--per-class 6] [--cap-gb 4] [--keep DIR]

Each class is a sine tone of its own frequency (0.5 s at 8 kHz); simple_cnn (width 4) trains 1 epoch. Every
command runs as its own process (`earmark train`, then `earmark evaluate RUN`), its peak resident memory read
from the kernel (wait4's ru_maxrss) and watched while it runs: one that passes --cap-gb is killed and reported
as such, so a regression cannot take the machine down. Prints one line per command and writes
benchmarks/results/many_classes.json. Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "many_classes.json"
RATE_HZ, SECONDS = 8000, 0.5


def tone_folders(root: Path, n_classes: int, per_class: int) -> Path:
    """n_classes folders of `per_class` tones each, frequencies spread log-evenly over 100–3,800 Hz."""
    import soundfile as sf

    t = np.arange(int(RATE_HZ * SECONDS)) / RATE_HZ
    rng = np.random.default_rng(n_classes)
    for index, frequency in enumerate(np.geomspace(100, 3800, n_classes)):
        folder = root / f"c{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for take in range(per_class):
            clip = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
            sf.write(folder / f"{take}.wav", (clip + rng.normal(0, 0.01, len(t))).astype(np.float32), RATE_HZ)
    return root


def measured(command: list[str], cap_gb: float) -> dict:
    """Run `command`; its wall time, peak RSS (GB) and exit code; killed (and said so) above `cap_gb`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = []

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                rss_kb = next(int(line.split()[1]) for line in status.read_text().splitlines()
                              if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            if rss_kb > cap_gb * 1024 ** 2:
                killed.append(rss_kb)
                process.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    return {"wall_s": round(time.perf_counter() - started, 1), "max_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 3),
            "rc": process.returncode, "killed_above_cap": bool(killed), "tail": output[-600:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="10,100,1000")
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--cap-gb", type=float, default=4.0)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    earmark = [sys.executable, "-m", "earmark"]
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        for n_classes in (int(n) for n in args.classes.split(",")):
            work = base / f"classes-{n_classes}"
            root = tone_folders(work / "tones", n_classes, args.per_class)
            overrides = [f"runs_dir={work / 'runs'}", f"workspace={work / 'ws'}", "data.source=folder",
                         f"data.path={root}", f"data.sample_rate_hz={RATE_HZ}", f"data.duration_s={SECONDS}",
                         f"data.cache_dir={work / 'ws' / 'cache'}", "data.workers=1", "features.n_fft=256",
                         "features.n_mels=32", "model.params.width=4", "train.max_epochs=1", "train.batch_size=32",
                         "train.progress=false", "name=many"]
            row = {"clips": n_classes * args.per_class,
                   "train": measured(earmark + ["train", *overrides], args.cap_gb)}
            if row["train"]["rc"] == 0:
                row["evaluate"] = measured(earmark + ["evaluate", str(work / "runs" / "many"),
                                                      "--out", str(work / "eval")], args.cap_gb)
            for step in ("train", "evaluate"):
                if step in row:
                    figures = row[step]
                    note = " KILLED above the cap" if figures["killed_above_cap"] else \
                        f" FAILED rc={figures['rc']}: {figures['tail'][-300:]}" if figures["rc"] else ""
                    print(f"{n_classes:>5} classes ({row['clips']} clips) {step:<8} max RSS {figures['max_rss_gb']:.2f} GB"
                          f"  wall {figures['wall_s']:>6.1f} s{note}", flush=True)
                    figures.pop("tail")
            results[str(n_classes)] = row
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
