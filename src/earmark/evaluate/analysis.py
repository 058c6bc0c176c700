"""Beyond one number: accuracy per metadata group, leakage between train and test, and chunk → file
aggregation. Tables and arrays in, JSON-ready dicts out; no I/O."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

MISSING_VALUES = {"", "nan", "none", "<na>"}  # what a missing metadata value reads as once stored as text
LEAKAGE_COLUMNS = ("group", "speaker")  # checked besides split.group_by when the test rows carry them
MAX_NAMED = 8  # leaking values named in a warning


def present_values(values: pd.Series) -> pd.Series:
    """The column as text, with missing values (NaN, '', 'nan') as None."""
    text = values.astype("object").where(values.notna(), None)
    return text.map(lambda v: None if v is None or str(v).strip().lower() in MISSING_VALUES else str(v))


def analysed_columns(items: pd.DataFrame, split_group_by: str | None, requested: Sequence[str]) -> list[str]:
    """The columns to analyse per group: `requested` (each must be a column), then split.group_by and
    `group` where they have values; each once, and `group` not when it repeats one of those (FSDD's
    `group` is its speaker). Raises EarmarkError naming the available columns."""
    from earmark.errors import EarmarkError

    missing = [c for c in requested if c not in items.columns]
    if missing:
        raise EarmarkError(f"--group-by {', '.join(missing)}: not a column of the evaluated rows (from --group-by "
                           f"or evaluation.group_by); available: {', '.join(map(str, items.columns))}")
    columns = list(dict.fromkeys(requested))
    for column in (split_group_by, "group"):
        if column and column in items.columns and column not in columns and present_values(items[column]).notna().any():
            values = present_values(items[column]).reset_index(drop=True)
            if not any(values.equals(present_values(items[c]).reset_index(drop=True)) for c in columns):
                columns.append(column)
    return columns


def per_group_accuracy(correct: np.ndarray, groups: pd.Series, worst_n: int = 5) -> dict[str, Any]:
    """correct (N,) bool per clip, groups (N,) the clip's value of a metadata column →
    {"groups": {name: {"n_clips", "accuracy"}}, "worst": the `worst_n` lowest-accuracy names (the larger group
    first on ties), "n_missing": clips without a value}. Groups are listed largest first."""
    names = present_values(pd.Series(groups).reset_index(drop=True))
    table = pd.DataFrame({"group": names, "correct": np.asarray(correct, dtype=float)}).dropna(subset=["group"])
    summary = table.groupby("group")["correct"].agg(["size", "mean"]).reset_index()
    summary = summary.sort_values(["size", "group"], ascending=[False, True])
    worst = summary.sort_values(["mean", "size", "group"], ascending=[True, False, True])["group"].head(worst_n)
    return {"groups": {str(row.group): {"n_clips": int(row.size), "accuracy": float(row.mean)}
                       for row in summary.itertuples(index=False)},
            "worst": [str(name) for name in worst], "n_missing": int(names.isna().sum())}


def leakage(train_items: pd.DataFrame, test_items: pd.DataFrame, split_group_by: str | None) -> dict[str, Any]:
    """Values of split.group_by, `group` or `speaker` (and file paths) found in both train and test:
    {column: sorted shared values}. A column whose values repeat those of one already checked (`group`
    detected from `speaker`) is checked once."""
    found: dict[str, list[str]] = {}
    checked: list[pd.Series] = []
    for column in dict.fromkeys([c for c in (split_group_by, *LEAKAGE_COLUMNS, "path") if c]):
        if column not in train_items.columns or column not in test_items.columns:
            continue
        test_values = present_values(test_items[column]).reset_index(drop=True)
        if test_values.isna().all() or any(test_values.equals(other) for other in checked):
            continue
        checked.append(test_values)
        shared = set(test_values.dropna()) & set(present_values(train_items[column]).dropna())
        if shared:
            found[column] = sorted(shared)
    return found


def leakage_warnings(shared: dict[str, list[str]]) -> list[str]:
    """One 'leakage: ...' line per column from `leakage`."""
    found = []
    for column, values in shared.items():
        named = ", ".join(values[:MAX_NAMED]) + (f", … ({len(values) - MAX_NAMED} more)" if len(values) > MAX_NAMED
                                                 else "")
        if column == "path":
            found.append(f"leakage: {len(values)} file(s) are in both train and test ({named}); test accuracy "
                         f"overstates accuracy on new recordings")
        else:
            found.append(f"leakage: {len(values)} {column} value(s) are in both train and test ({named}); test "
                         f"accuracy overstates accuracy on new {column}s; set split.group_by={column}")
    return found


def aggregate_chunks(paths: Sequence[str], probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Chunk predictions (N, C) of files `paths` (N,) → per file, in first-seen order: `paths` (F,),
    `mean_probability` (F, C) and `majority_vote` (F,) class ids. A vote tie goes to the tied class with
    the highest mean probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    codes, unique_paths = pd.factorize(pd.Series(list(paths)).astype(str))
    n_files, n_classes = len(unique_paths), probabilities.shape[1]
    sums = np.zeros((n_files, n_classes))
    np.add.at(sums, codes, probabilities)
    counts = np.bincount(codes, minlength=n_files)
    mean = sums / counts[:, None]
    votes = np.zeros((n_files, n_classes))
    np.add.at(votes, (codes, probabilities.argmax(axis=1)), 1)
    tied = votes == votes.max(axis=1, keepdims=True)
    vote = np.where(tied, mean, -1.0).argmax(axis=1)
    return {"paths": np.asarray(unique_paths), "mean_probability": mean, "majority_vote": vote,
            "n_chunks": counts}


def clip_level_metrics(paths: Sequence[str], y_true: np.ndarray, probabilities: np.ndarray,
                       labels: Sequence[str]) -> dict[str, Any]:
    """metrics.json's `clip_level`: chunk rows aggregated to their source file by mean probability and by
    majority vote; each {n_files, accuracy, balanced_accuracy, macro_f1}. A file's label is its chunks' label."""
    from earmark.evaluate.metrics import label_metrics

    aggregated = aggregate_chunks(paths, probabilities)
    codes, _ = pd.factorize(pd.Series(list(paths)).astype(str))
    file_true = np.zeros(len(aggregated["paths"]), dtype=int)
    file_true[codes] = np.asarray(y_true, dtype=int)
    result: dict[str, Any] = {}
    for name, predicted in (("mean_probability", aggregated["mean_probability"].argmax(axis=1)),
                            ("majority_vote", aggregated["majority_vote"])):
        result[name] = {"n_files": int(len(file_true)), **label_metrics(file_true, predicted, len(labels))}
    result["chunks_per_file"] = float(aggregated["n_chunks"].mean()) if len(file_true) else 0.0
    return result
