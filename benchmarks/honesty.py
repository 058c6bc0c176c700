"""Does earmark's honesty machinery say true things? Audit precision/recall and calibrated test ECE, in one run.

    python benchmarks/honesty.py [--sets fsdd,mridangam] [--flip 0.1] [--folds 5] [--keep DIR]

On each set's aisfx embeddings (`earmark embed`, cached: a second run embeds nothing):
- audit: 10 % of the labels flipped to another class at random (ungrouped folds), then the audit's
  out-of-fold probe and cleanlab's `find_label_issues` (what `earmark audit` runs) and, on the same
  probabilities, the hand-written confident-learning rule earmark used before: precision and recall of
  the flagged clips against the flips, and what each flags on the clean labels.
- calibration: the probe's head (logistic regression, C=1, as train/probe.py fits it) on the train split, the
  temperature fitted on the validation split by `fit_calibration` (refused, T = 1, where it would not help
  or the split is too small), test ECE before and after.
Prints one line per figure and writes benchmarks/results/honesty.json. Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from earmark import api

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "honesty.json"
DATA = {"fsdd": ["data.source=fsdd", f"data.path={SHARED / 'fsdd'}"],
        "mridangam": ["data.source=csv", f"data.path={SHARED / 'mridangam' / 'metadata.csv'}", "data.duration_s=1.0"]}


def hand_rule(probabilities: np.ndarray, y: np.ndarray) -> np.ndarray:
    """earmark's former rule: class j's threshold is the mean probability of j over clips labelled j; a clip is
    suspect when the most probable class clearing its threshold is not its label (kept here to compare)."""
    thresholds = np.array([probabilities[y == j, j].mean() if (y == j).any() else 1.0
                           for j in range(probabilities.shape[1])])
    confident = np.where(probabilities >= thresholds[None, :], probabilities, -1.0)
    return (confident.max(axis=1) >= 0) & (confident.argmax(axis=1) != y)


def embeddings(name: str, workspace: Path) -> tuple[np.ndarray, pd.DataFrame]:
    out = workspace / f"{name}.npy"
    overrides = [f"workspace={workspace}", f"data.cache_dir={workspace}/cache", f"runs_dir={workspace}/runs",
                 "model.name=aisfx", *DATA[name]]
    api.embed(None, overrides, out=out)
    return np.load(out), pd.read_csv(out.with_suffix(".csv"), dtype={"label": str})


def scores(flagged: np.ndarray, truth: np.ndarray) -> dict:
    hits = int((flagged & truth).sum())
    return {"flagged": int(flagged.sum()), "precision": round(hits / max(int(flagged.sum()), 1), 3),
            "recall": round(hits / max(int(truth.sum()), 1), 3)}


def audit_figures(x: np.ndarray, y: np.ndarray, flip: float, folds: int) -> dict:
    from earmark.workflows.embed import find_label_issues, out_of_fold_probabilities

    n_classes = int(y.max()) + 1
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), int(round(flip * len(y))), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    truth = np.zeros(len(y), bool)
    truth[flipped] = True
    started = time.perf_counter()
    probabilities = out_of_fold_probabilities(x, noisy, None, n_classes, folds)
    row = {"clips": len(y), "flipped": len(flipped), "oof_s": round(time.perf_counter() - started, 1),
           "oof_accuracy_vs_given": round(float((probabilities.argmax(1) == noisy).mean()), 3),
           "cleanlab": scores(find_label_issues(probabilities, noisy), truth),
           "hand_rule": scores(hand_rule(probabilities, noisy), truth)}
    clean = out_of_fold_probabilities(x, y, None, n_classes, folds)
    row["clean_labels_flagged"] = {"cleanlab": int(find_label_issues(clean, y).sum()),
                                   "hand_rule": int(hand_rule(clean, y).sum())}
    return row


def calibration_figures(x: np.ndarray, index: pd.DataFrame, labels: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression

    from earmark.config import EvaluationConfig
    from earmark.evaluate.calibrate import fit_calibration
    from earmark.evaluate.calibration import expected_calibration_error, softmax

    y = np.array([labels.index(label) for label in index["label"]])
    part = {name: (index["split"] == name).to_numpy() for name in ("train", "val", "test")}
    mean, std = x[part["train"]].mean(0), np.maximum(x[part["train"]].std(0), 1e-3)
    probe = LogisticRegression(C=1.0, max_iter=2000).fit((x[part["train"]] - mean) / std, y[part["train"]])
    logits = {name: probe.decision_function((x[rows] - mean) / std) for name, rows in part.items()}
    settings = EvaluationConfig()
    fit = fit_calibration(logits["val"], y[part["val"]], labels, settings)
    before = expected_calibration_error(softmax(logits["test"]), y[part["test"]], settings.ece_bins)
    after = expected_calibration_error(softmax(logits["test"], fit["temperature"]), y[part["test"]], settings.ece_bins)
    return {"val_clips": int(part["val"].sum()), "test_clips": int(part["test"].sum()),
            "temperature": round(fit["temperature"], 4), "fitted_temperature": round(fit["fitted_temperature"], 4),
            "test_ece_uncalibrated": round(before, 4), "test_ece_calibrated": round(after, 4), "notes": fit["notes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="fsdd,mridangam")
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as scratch:
        workspace = args.keep or Path(scratch)
        for name in args.sets.split(","):
            x, index = embeddings(name, workspace)
            labels = sorted(index["label"].unique())
            y = np.array([labels.index(label) for label in index["label"]])
            audit = audit_figures(x, y, args.flip, args.folds)
            for rule in ("cleanlab", "hand_rule"):
                print(f"{name:<10} audit {rule:<9} {args.flip:.0%} flips: flagged {audit[rule]['flagged']:>4}  precision "
                      f"{audit[rule]['precision']:.3f}  recall {audit[rule]['recall']:.3f}  (clean labels: "
                      f"{audit['clean_labels_flagged'][rule]} flagged)", flush=True)
            calibration = calibration_figures(x, index, labels)
            print(f"{name:<10} probe test ECE {calibration['test_ece_uncalibrated']:.4f} uncalibrated, "
                  f"{calibration['test_ece_calibrated']:.4f} calibrated (T = {calibration['temperature']}, "
                  f"{calibration['val_clips']} val clips)", flush=True)
            results[name] = {"audit": audit, "calibration": calibration}
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
