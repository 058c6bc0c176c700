"""The demo's figure and its spread: `earmark train` on the bundled sample, as a new user runs it, over several seeds.

    python benchmarks/demo_seeds.py [--seeds 0,1,2,3,4] [--keep DIR]

On 70 test clips of one held-out speaker an accuracy has a 95% interval about ±0.11 wide, and a second seed
can move it as much: this prints each seed's test accuracy (with its Wilson interval and test size), the
winning model where the run chose one, and the wall time, then mean / min / max, and writes
benchmarks/results/demo.json (machine, date, command) for the README and the docs to render.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from earmark import api
from earmark.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--keep", default=None, help="runs and cache folder (default: a temporary one)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="earmark-demo-"))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.perf_counter()
        result = api.train(load_config(overrides=[f"seed={seed}", f"runs_dir={work / 'runs'}",
                                                  f"workspace={work / 'ws'}", "train.progress=false"]))
        metrics = result.metrics
        model = metrics.get("auto", {}).get("winner") if isinstance(metrics.get("auto"), dict) else None
        row = {"seed": seed, "accuracy": round(float(metrics["accuracy"]), 4),
               "accuracy_ci95": [round(float(v), 4) for v in metrics["accuracy_ci95"]],
               "n_test": int(metrics["n_clips"]),
               "model": model, "wall_s": round(time.perf_counter() - started, 1), "run_dir": str(result.run_dir)}
        rows.append(row)
        print(f"seed {seed}: accuracy {row['accuracy']:.4f} ({row['accuracy_ci95'][0]:.2f}-{row['accuracy_ci95'][1]:.2f}, "
              f"{row['n_test']} clips)  model {model}  wall {row['wall_s']:.1f} s", flush=True)
    accuracies = [row["accuracy"] for row in rows]
    summary = {"command": "earmark train (bundled sample, speaker held out)", "date": date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "seeds": rows,
               "mean": round(statistics.mean(accuracies), 4), "min": min(accuracies), "max": max(accuracies),
               "median_wall_s": round(statistics.median(row["wall_s"] for row in rows), 1)}
    print(f"over {len(rows)} seeds: mean {summary['mean']:.4f}, min {summary['min']:.4f}, max {summary['max']:.4f}; "
          f"median wall {summary['median_wall_s']} s")
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
