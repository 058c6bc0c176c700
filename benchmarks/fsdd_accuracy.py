"""Accuracy and CPU training time on the Free Spoken Digit Dataset, with earmark's default config.

Splits measured (choose with --splits):
    official   the data set's own split column (takes 0-4 test; every speaker also in training),
               val carved from train
    speaker    stratified grouped split on the speaker column: test speakers never heard in training
    sample     the bundled demo (`earmark train` with no arguments)

    python benchmarks/fsdd_accuracy.py [--data PATH] [key=value ...] [--splits official speaker sample]
    (overrides go before --splits, e.g. `fsdd_accuracy.py model.name=lite_cnn --splits official`)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from earmark import api
from earmark.config import load_config

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd"
SPLITS = {
    "official": ["data.source=fsdd"],
    "speaker": ["data.source=fsdd", "split.use_predefined=false", "split.group_by=speaker",
                "split.val_fraction=0.17", "split.test_fraction=0.17"],
    "sample": [],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=["official", "speaker"])
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. model.name=wave_cnn")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as workspace:
        for split in args.splits:
            overrides = list(SPLITS[split])
            if split != "sample":
                if not args.data.is_dir():
                    parser.error(f"FSDD not found at {args.data}; pass --data")
                overrides.append(f"data.path={args.data}")
            overrides += [f"workspace={workspace}", f"data.cache_dir={workspace}/cache", f"runs_dir={workspace}/runs",
                          f"name={split}", "train.progress=false", *args.overrides]
            started = time.perf_counter()
            result = api.train(load_config(overrides=overrides))
            total_s = time.perf_counter() - started
            m = result.metrics
            test = pd.read_csv(result.run_dir / "splits" / "test.csv")
            test_groups = ", ".join(sorted(test["group"].astype(str).unique()))
            rows.append((split, m["n_clips"], m["accuracy"], m["balanced_accuracy"], m["macro_f1"],
                         m["majority_baseline"]["accuracy"], m["epochs"], result.fit_seconds, total_s))
            print(f"{split}: accuracy {m['accuracy']:.4f} on {m['n_clips']} test clips, "
                  f"fit {result.fit_seconds:.1f} s; test speakers: {test_groups}", flush=True)
    print()
    print(f"{'split':10s} {'test':>5s} {'acc':>7s} {'bal_acc':>7s} {'mF1':>7s} {'major':>6s} {'epochs':>6s} "
          f"{'fit_s':>7s} {'total_s':>7s}")
    for split, n, acc, bal, f1, major, epochs, fit_s, total_s in rows:
        print(f"{split:10s} {n:5d} {acc:7.4f} {bal:7.4f} {f1:7.4f} {major:6.3f} {epochs:6d} {fit_s:7.1f} {total_s:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
