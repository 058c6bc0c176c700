"""Metrics from true labels and predicted probabilities: plain arrays in, a JSON-ready dict out."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np

# Predictions this concentrated on one class mean the model has collapsed.
COLLAPSE_SHARE = 0.9


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval for an accuracy measured on `total` clips."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """y_true (N,) class ids, probabilities (N, n_classes) → metrics, per-class table, baseline, warnings."""
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support)

    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    correct = int((y_true == y_pred).sum())
    low, high = wilson_interval(correct, len(y_true))
    metrics: dict[str, Any] = {
        "n_clips": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": [low, high],
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "per_class": {
            str(label): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                         "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "labels": [str(label) for label in labels],
    }
    metrics["majority_baseline"] = majority_baseline(y_true, labels)
    metrics["warnings"] = collapse_warnings(y_pred, metrics, labels)
    return metrics


def majority_baseline(y_true: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """What always predicting the most frequent test class would score."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    if len(y_true) == 0:
        return {"label": None, "accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0}
    majority = Counter(y_true.tolist()).most_common(1)[0][0]
    constant = np.full_like(y_true, majority)
    return {
        "label": str(labels[majority]),
        "accuracy": float((y_true == majority).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, constant)),
        "macro_f1": float(f1_score(y_true, constant, labels=list(range(len(labels))), average="macro",
                                   zero_division=0)),
    }


def collapse_warnings(y_pred: np.ndarray, metrics: dict[str, Any], labels: Sequence[str]) -> list[str]:
    warnings = []
    if len(y_pred) == 0:
        return ["the test split is empty: no metric here means anything"]
    top_class, top_count = Counter(y_pred.tolist()).most_common(1)[0]
    share = top_count / len(y_pred)
    if share >= COLLAPSE_SHARE and len(labels) > 1:
        warnings.append(f"collapse: {share:.0%} of predictions are '{labels[top_class]}'")
    chance = 1.0 / len(labels)
    if metrics["balanced_accuracy"] <= chance * 1.2:
        warnings.append(f"balanced accuracy {metrics['balanced_accuracy']:.3f} is near chance ({chance:.3f})")
    if len(y_pred) < 30:
        warnings.append(f"tiny test set ({len(y_pred)} clips): accuracy 95% CI is "
                        f"{metrics['accuracy_ci95'][0]:.2f}–{metrics['accuracy_ci95'][1]:.2f}")
    return warnings
