"""Metrics from true labels and predicted probabilities: plain arrays in, a JSON-ready dict out."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np

# Predictions this concentrated on one class mean the model has collapsed.
COLLAPSE_SHARE = 0.9
COLLAPSE_EXCESS = 0.1  # ... and exceed that class's true share by this much (an imbalanced test set is not collapse)
NEAR_CHANCE_FACTOR = 1.2  # balanced accuracy at most this times 1/n_classes is near chance
TINY_TEST_CLIPS = 30  # below this many test clips the report stresses the accuracy interval


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval for an accuracy measured on `total` clips."""
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, labels: Sequence[str],
                           top_k: Sequence[int] = (3, 5)) -> dict[str, Any]:
    """y_true (N,) class ids, probabilities (N, n_classes) → metrics, per-class table, baselines, warnings.

    top_k: the k of the top-k accuracies, each reported only where there are more than k classes.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    scores = label_metrics(y_true, y_pred, len(labels))
    low, high = wilson_interval(int((y_true == y_pred).sum()), len(y_true))
    metrics: dict[str, Any] = {"n_clips": int(len(y_true)), "accuracy": scores["accuracy"],
                               "accuracy_ci95": [low, high], "balanced_accuracy": scores["balanced_accuracy"]}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average, zero_division=0)
        metrics.update({f"{average}_precision": float(p), f"{average}_recall": float(r), f"{average}_f1": float(f)})
    metrics["macro_f1"] = scores["macro_f1"]
    metrics["top_k_accuracy"] = top_k_accuracies(y_true, probabilities, top_k)
    metrics["per_class"] = {
        str(label): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    metrics["confusion"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    metrics["labels"] = [str(label) for label in labels]
    metrics["majority_baseline"] = majority_baseline(y_true, labels)
    metrics["chance_accuracy"] = 1.0 / len(labels)
    metrics["prior_chance_accuracy"] = prior_chance_accuracy(y_true, len(labels))
    metrics["warnings"] = collapse_warnings(y_pred, metrics, labels)
    return metrics


def label_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 (every one of `n_classes` counts; an absent class that is
    never predicted scores 0) of predicted class ids against true ones, both (N,); all 0 when N = 0."""
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0}
    return {"accuracy": float((y_true == y_pred).mean()), "balanced_accuracy": balanced_accuracy_of(y_true, y_pred),
            "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro",
                                       zero_division=0))}


def balanced_accuracy_of(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (sklearn's balanced accuracy, 0 when empty)."""
    from sklearn.metrics import balanced_accuracy_score

    if len(y_true) == 0:
        return 0.0
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on small sets
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(y_true, y_pred))


def top_k_accuracies(y_true: np.ndarray, probabilities: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """{"3": share of clips whose true class is among the 3 most probable, ...}; only k < n_classes."""
    n_classes = probabilities.shape[1]
    if len(y_true) == 0:
        return {}
    # rank of the true class: how many classes score strictly higher (ties count in the clip's favour)
    true_scores = probabilities[np.arange(len(y_true)), y_true]
    rank = (probabilities > true_scores[:, None]).sum(axis=1)
    return {str(k): float((rank < k).mean()) for k in ks if k < n_classes}


def prior_chance_accuracy(y_true: np.ndarray, n_classes: int) -> float:
    """Expected accuracy of guessing each class as often as it occurs in y_true: sum of squared shares."""
    if len(y_true) == 0:
        return 0.0
    shares = np.bincount(y_true, minlength=n_classes) / len(y_true)
    return float((shares ** 2).sum())


def majority_baseline(y_true: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """What always predicting the most frequent test class would score."""
    if len(y_true) == 0:
        return {"label": None, "accuracy": 0.0, "balanced_accuracy": 0.0, "macro_f1": 0.0}
    majority = Counter(y_true.tolist()).most_common(1)[0][0]
    return {"label": str(labels[majority]), **label_metrics(y_true, np.full_like(y_true, majority), len(labels))}


def collapse_warnings(y_pred: np.ndarray, metrics: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """Collapse (predictions piled on one class well beyond its true share, or balanced accuracy near
    chance), an empty test set, and a tiny one (with its accuracy interval)."""
    if len(y_pred) == 0:
        return ["the test split is empty: no metric here means anything"]
    found = []
    top_class, top_count = Counter(y_pred.tolist()).most_common(1)[0]
    share = top_count / len(y_pred)
    true_share = metrics["per_class"][str(labels[top_class])]["support"] / len(y_pred)
    if share >= COLLAPSE_SHARE and share >= true_share + COLLAPSE_EXCESS and len(labels) > 1:
        found.append(f"collapse: {share:.0%} of predictions are '{labels[top_class]}' "
                     f"(it is {true_share:.0%} of the true labels)")
    chance = 1.0 / len(labels)
    if metrics["balanced_accuracy"] <= chance * NEAR_CHANCE_FACTOR:
        found.append(f"collapse: balanced accuracy {metrics['balanced_accuracy']:.3f} is near chance ({chance:.3f})")
    if len(y_pred) < TINY_TEST_CLIPS:
        found.append(f"tiny test set ({len(y_pred)} clips): accuracy 95% CI is "
                     f"{metrics['accuracy_ci95'][0]:.2f}–{metrics['accuracy_ci95'][1]:.2f}")
    return found
