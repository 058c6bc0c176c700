"""`earmark compare`: several runs scored on the same test clips, side by side, with paired tests.

Each run is a folder holding predictions.csv (a run directory or an `earmark evaluate` folder).
The first run is the reference: every other run gets its differences against it, McNemar's exact
p-value and paired-bootstrap 95% intervals (see `earmark.evaluate.paired_stats`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.errors import EarmarkError
from earmark.evaluate.paired_stats import BOOTSTRAP_RESAMPLES, SIGNIFICANCE_LEVEL, mcnemar_exact, paired_bootstrap
from earmark.evaluate.predictions import PROBABILITY_PREFIX, read_predictions
from earmark.rundir import LABELS_FILE, METRICS_FILE, RunDir


@dataclass
class ScoredRun:
    """One run's test predictions, aligned on the clip key (path, start_s)."""

    name: str
    folder: Path
    predictions: pd.DataFrame  # index: clip key; columns true, predicted, ...
    labels: list[str]
    metrics: dict[str, Any]


@dataclass
class Comparison:
    runs: list[dict[str, Any]]  # one row per run: its metrics on the shared test clips
    differences: list[dict[str, Any]]  # one row per run after the first: B − A, McNemar, bootstrap
    per_class: list[dict[str, Any]]  # one row per class: support, F1/recall per run, differences
    labels: list[str]
    n_clips: int
    warnings: list[str] = field(default_factory=list)
    out_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n_clips": self.n_clips, "labels": self.labels, "warnings": self.warnings, "runs": self.runs,
                "differences": self.differences, "per_class": self.per_class}


def load_scored_run(folder: str | Path) -> ScoredRun:
    """Read `folder/predictions.csv` (+ metrics.json when there) and key its rows by clip."""
    folder = Path(folder)
    csv = folder / "predictions.csv"
    if not csv.is_file():
        raise EarmarkError(f"{folder} has no predictions.csv; give run directories (runs/<name>) or "
                           f"`earmark evaluate --out` folders")
    table = read_predictions(folder)
    labels = [column[len(PROBABILITY_PREFIX):] for column in table.columns if column.startswith(PROBABILITY_PREFIX)]
    labels_json = folder / LABELS_FILE
    if not labels and labels_json.is_file():
        labels = RunDir(folder).labels()
    if "start_s" in table:
        start = table["start_s"].round(6).astype(str)
    else:  # unchunked clips: one row per path (a repeated path is told apart by its order)
        start = table.groupby("path").cumcount().astype(str)
    table.index = table["path"] + "@" + start
    metrics_path = folder / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return ScoredRun(folder.name, folder, table, labels or sorted(set(table["true"]) | set(table["predicted"])),
                     metrics)


def check_same_test_set(runs: Sequence[ScoredRun]) -> None:
    """Refuse, naming the runs and the difference, unless every run scored the same clips with the same
    true labels and classes as the first."""
    reference = runs[0]
    for run in runs[1:]:
        if sorted(run.labels) != sorted(reference.labels):
            only_ref = sorted(set(reference.labels) - set(run.labels))
            only_run = sorted(set(run.labels) - set(reference.labels))
            raise EarmarkError(f"{run.folder} and {reference.folder} have different label sets (only in "
                               f"{reference.name}: {only_ref or 'none'}; only in {run.name}: {only_run or 'none'}); "
                               f"compare runs trained on the same classes")
        ref_keys, run_keys = set(reference.predictions.index), set(run.predictions.index)
        if ref_keys != run_keys:
            only_ref, only_run = sorted(ref_keys - run_keys), sorted(run_keys - ref_keys)
            examples = ", ".join((only_ref or only_run)[:3])
            raise EarmarkError(f"{run.folder} was scored on different test clips than {reference.folder} "
                               f"({len(run_keys)} vs {len(ref_keys)} clips; {len(only_ref)} only in {reference.name}, "
                               f"{len(only_run)} only in {run.name}, e.g. {examples}); compare runs that share a "
                               f"split (same data, split.* and seed), or re-score them on one set with "
                               f"`earmark evaluate RUN --data ...`")
        truth = run.predictions.loc[reference.predictions.index, "true"]
        disagree = truth.index[truth.to_numpy() != reference.predictions["true"].to_numpy()]
        if len(disagree):
            raise EarmarkError(f"{run.folder} and {reference.folder} give {len(disagree)} test clips different true "
                               f"labels (e.g. {disagree[0]}); they were scored on different labellings")


def _unique_names(runs: Sequence[ScoredRun]) -> None:
    """Two folders named alike (e.g. eval/<time>) get their parent's name too."""
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.folder.parent.name}/{run.folder.name}"


def _class_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_fscore_support

    from earmark.evaluate.metrics import label_metrics

    _, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=list(range(n_classes)),
                                                             zero_division=0)
    return {**label_metrics(y_true, y_pred, n_classes), "f1": f1, "recall": recall, "support": support}


def compare_runs(folders: Sequence[str | Path], n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Comparison:
    """Score every run on the shared test clips; differences, McNemar and bootstrap against the first."""
    from earmark.data.labels import class_ids
    from earmark.evaluate.metrics import wilson_interval

    if len(folders) < 2:
        raise EarmarkError("compare needs at least two runs: earmark compare RUN_A RUN_B [...]")
    runs = [load_scored_run(folder) for folder in folders]
    check_same_test_set(runs)
    _unique_names(runs)
    labels = list(runs[0].labels)
    keys = runs[0].predictions.index
    y_true = class_ids(runs[0].predictions["true"], labels)
    predicted = []
    for run in runs:
        unknown = sorted(set(run.predictions["predicted"]) - set(labels))
        if unknown:
            raise EarmarkError(f"{run.folder}/predictions.csv predicts classes outside its labels: {unknown}")
        predicted.append(class_ids(run.predictions.loc[keys, "predicted"], labels))
    scores = [_class_scores(y_true, y_pred, len(labels)) for y_pred in predicted]
    n_clips = len(keys)
    rows = []
    for run, y_pred, score in zip(runs, predicted, scores):
        low, high = wilson_interval(int((y_pred == y_true).sum()), n_clips)
        row = {"run": run.name, "folder": str(run.folder), "accuracy": score["accuracy"], "accuracy_ci95": [low, high],
               "balanced_accuracy": score["balanced_accuracy"], "macro_f1": score["macro_f1"]}
        row.update({key: run.metrics[key] for key in ("epochs", "fit_seconds") if key in run.metrics})
        rows.append(row)
    differences = [difference(run.name, runs[0].name, y_true, predicted[0], predicted[i], len(labels), n_resamples,
                              seed) for i, run in enumerate(runs[1:], start=1)]
    per_class = _per_class_rows([run.name for run in runs], labels, scores)
    warnings = []
    if n_clips < 100:
        warnings.append(f"only {n_clips} shared test clips: only large differences can be told from chance")
    for diff in differences:
        for metric in ("accuracy", "macro_f1"):
            method = diff[f"{metric}_difference_method"]
            if method != "BCa":
                warnings.append(f"{diff['run']} − {diff['against']} {metric} interval: {method}")
    return Comparison(rows, differences, per_class, labels, n_clips, warnings)


def difference(name: str, reference: str, y_true: np.ndarray, pred_reference: np.ndarray, pred_run: np.ndarray,
               n_classes: int, n_resamples: int, seed: int) -> dict[str, Any]:
    """One run against the reference: B − A for accuracy and macro F1 with bootstrap CIs, McNemar."""
    test = mcnemar_exact(pred_reference == y_true, pred_run == y_true)
    bootstrap = paired_bootstrap(y_true, pred_reference, pred_run, n_classes, n_resamples, seed)
    return {"run": name, "against": reference,
            "accuracy_difference": bootstrap["accuracy"]["difference"],
            "accuracy_difference_ci95": bootstrap["accuracy"]["ci95"],
            "macro_f1_difference": bootstrap["macro_f1"]["difference"],
            "macro_f1_difference_ci95": bootstrap["macro_f1"]["ci95"],
            "accuracy_difference_method": bootstrap["accuracy"]["method"],
            "macro_f1_difference_method": bootstrap["macro_f1"]["method"],
            "mcnemar": test, "significant": test["p_value"] < SIGNIFICANCE_LEVEL, "bootstrap": bootstrap["resamples"],
            "verdict": verdict(name, reference, test["p_value"], bootstrap)}


def _per_class_rows(names: list[str], labels: list[str], scores: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Support, F1 and recall of each run per class, and each run's difference from the first."""
    rows = []
    for k, label in enumerate(labels):
        row: dict[str, Any] = {"class": label, "support": int(scores[0]["support"][k])}
        for name, score in zip(names, scores):
            row[f"f1 {name}"] = float(score["f1"][k])
            row[f"recall {name}"] = float(score["recall"][k])
        for name, score in zip(names[1:], scores[1:]):
            row[f"Δf1 {name}"] = float(score["f1"][k] - scores[0]["f1"][k])
            row[f"Δrecall {name}"] = float(score["recall"][k] - scores[0]["recall"][k])
        rows.append(row)
    return rows


def verdict(name: str, reference: str, p_value: float, bootstrap: dict[str, Any]) -> str:
    """One sentence a person can act on."""
    accuracy = bootstrap["accuracy"]
    low, high = accuracy["ci95"]
    direction = "more" if accuracy["difference"] > 0 else "less"
    if p_value < SIGNIFICANCE_LEVEL:
        return (f"{name} is {direction} accurate than {reference} by {abs(accuracy['difference']):.3f} "
                f"(95% CI {low:+.3f} to {high:+.3f}, McNemar p={p_value:.3g}): unlikely to be chance")
    return (f"no significant difference between {name} and {reference} (accuracy {accuracy['difference']:+.3f}, "
            f"95% CI {low:+.3f} to {high:+.3f}, McNemar p={p_value:.3g})")
