"""Wall time of the commands a user waits on for one file: start-up dominates them.

Trains a tiny run in a temporary folder (serve_load.py's: width-4 simple_cnn on 8-kHz tones,
0.5-s clips), then times, each --repeat times in a fresh process:
    python -c "import torch"                      the floor of anything that runs a checkpoint
    earmark --help
    earmark predict RUN clip.wav --backend torch  the checkpoint on torch
    earmark predict RUN clip.wav                  after `earmark export RUN`: the run's current export
    earmark predict RUN/export/model.onnx clip.wav
and prints min / median / max seconds (the minimum is the figure: other work on a shared machine
only ever adds time).

    python benchmarks/startup.py [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_files import save_results
from serve_load import train_tiny_run  # benchmarks/ is on sys.path when a script here runs

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"


def wall_s(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per command (default 5)")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="earmark-startup-"))
    base.mkdir(parents=True, exist_ok=True)
    earmark = [sys.executable, "-m", "earmark"]
    try:
        run = base / "runs" / "serve-bench"
        if not (run / "metrics.json").is_file():
            run = train_tiny_run(base)
        clip = str(base / "tones" / "low" / "0.wav")
        rows = {"import torch": [sys.executable, "-c", "import torch"],
                "earmark --help": [*earmark, "--help"],
                "predict RUN --backend torch": [*earmark, "predict", str(run), clip, "--backend", "torch"]}
        figures = {name: wall_s(command, args.repeat) for name, command in rows.items()}
        if not (run / "export" / "model.onnx").is_file():
            started = time.perf_counter()
            subprocess.run([*earmark, "export", str(run)], check=True, capture_output=True)
            print(f"earmark export RUN: {time.perf_counter() - started:.1f} s (once)")
        for name, command in {"predict RUN (its export)": [*earmark, "predict", str(run), clip],
                              "predict model.onnx": [*earmark, "predict", str(run / "export" / "model.onnx"),
                                                     clip]}.items():
            figures[name] = wall_s(command, args.repeat)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"{'command':32} {'min s':>7} {'median s':>9} {'max s':>7}   ({args.repeat} fresh processes each)")
    for name, times in figures.items():
        print(f"{name:32} {min(times):7.2f} {statistics.median(times):9.2f} {max(times):7.2f}")
    ratio = min(figures["predict RUN --backend torch"]) / min(figures["predict RUN (its export)"])
    print(f"predict RUN: the export starts {ratio:.1f}x sooner than the checkpoint (reference: --backend torch, "
          f"measured in this run)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    rows = {name: {"min_s": round(min(t), 3), "median_s": round(statistics.median(t), 3), "max_s": round(max(t), 3)}
            for name, t in figures.items()}
    save_results(RESULTS, {**rows, "export_vs_checkpoint_speedup": round(ratio, 2)})
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
