"""Two-class tasks: ROC and precision–recall with their areas, and a decision threshold chosen on validation.

Pure functions: `positive` (N,) bool — is the clip's true class the positive one — and `score` (N,) — the
predicted probability of the positive class — in, JSON-ready dicts out. A clip is predicted positive when
score >= threshold.

The threshold chosen on validation is a recommendation: earmark's predictors (and every other metric)
keep the most probable class; `at_threshold` is what the metrics would be if you applied it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

THRESHOLD_METRICS = ("balanced_accuracy", "f1")
DEFAULT_THRESHOLD = 0.5  # argmax of two probabilities, used when validation cannot choose


def positive_index(labels: Sequence[str], positive_label: str | None) -> int:
    """The class id of the positive class: `positive_label`, else the second label (sklearn's pos_label=1)."""
    check_positive_label(labels, positive_label)
    if positive_label is None:
        return 1
    return [str(label) for label in labels].index(str(positive_label))


def check_positive_label(labels: Sequence[str], positive_label: str | None) -> None:
    """Raise EarmarkError unless `evaluation.positive_label` is unset, or the task has two classes and it
    names one of them (it applies to two-class tasks only)."""
    from earmark.errors import EarmarkError

    if positive_label is None:
        return
    names = [str(label) for label in labels]
    if len(names) != 2:
        shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        raise EarmarkError(f"evaluation.positive_label={positive_label!r} applies to two-class tasks only; this "
                           f"data has {len(names)} classes ({shown}); remove evaluation.positive_label")
    if str(positive_label) not in names:
        raise EarmarkError(f"evaluation.positive_label={positive_label!r} is not one of the run's classes; "
                           f"allowed: {', '.join(names)}")


def curves(positive: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    """ROC (fpr, tpr) and precision–recall points with ROC AUC and average precision; the areas are None
    when only one class is present (they are undefined)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if positive.all() or not positive.any():
        return {"roc_auc": None, "average_precision": None, "fpr": [], "tpr": [], "precision": [], "recall": []}
    fpr, tpr, _ = roc_curve(positive, score)
    precision, recall, _ = precision_recall_curve(positive, score)
    return {"roc_auc": float(roc_auc_score(positive, score)),
            "average_precision": float(average_precision_score(positive, score)),
            "fpr": fpr.tolist(), "tpr": tpr.tolist(), "precision": precision.tolist(), "recall": recall.tolist()}


def choose_threshold(positive: np.ndarray, score: np.ndarray, metric: str = "balanced_accuracy"
                     ) -> tuple[float, float | None]:
    """(threshold, the metric's value there) maximising `metric` ('balanced_accuracy', or 'f1' of the positive
    class) over every distinct score. The threshold sits halfway to the next lower score, so new clips near a
    validation score fall on the side validation put them; ties go to the threshold nearest 0.5. With one
    class present nothing can be chosen: (0.5, None)."""
    from sklearn.metrics import roc_curve

    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold metric must be one of {', '.join(THRESHOLD_METRICS)}; got {metric!r}")
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if positive.all() or not positive.any():
        return DEFAULT_THRESHOLD, None
    fpr, tpr, thresholds = roc_curve(positive, score, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # the first point (threshold inf) predicts no positive
    if metric == "balanced_accuracy":
        values = (tpr + 1 - fpr) / 2
    else:
        n_pos, n_neg = positive.sum(), (~positive).sum()
        true_pos, false_pos = tpr * n_pos, fpr * n_neg
        values = 2 * true_pos / np.maximum(true_pos + false_pos + n_pos, 1e-12)
    lower = np.append(thresholds[1:], min(thresholds[-1], 0.0))  # the next lower score for each threshold
    midpoints = np.where(np.isfinite(thresholds), (thresholds + lower) / 2, thresholds)
    best = np.flatnonzero(np.isclose(values, values.max(), rtol=0, atol=1e-12))
    chosen = best[np.argmin(np.abs(midpoints[best] - DEFAULT_THRESHOLD))]
    return float(midpoints[chosen]), float(values[chosen])


def at_threshold(positive: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, balanced accuracy, and the positive class's precision/recall/F1 when predicting
    positive at score >= threshold; counts tp, fp, tn, fn."""
    positive = np.asarray(positive, dtype=bool)
    predicted = np.asarray(score, dtype=np.float64) >= threshold
    tp, fp = int((predicted & positive).sum()), int((predicted & ~positive).sum())
    fn, tn = int((~predicted & positive).sum()), int((~predicted & ~positive).sum())
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    present = [rate for rate, n in ((recall, tp + fn), (specificity, tn + fp)) if n]
    return {"threshold": float(threshold), "accuracy": (tp + tn) / max(len(positive), 1),
            "balanced_accuracy": float(np.mean(present)) if present else 0.0, "precision": precision,
            "recall": recall, "specificity": specificity,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def binary_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], positive: int,
                   threshold: float, threshold_metric: str, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json's `binary` entry: y_true (N,) class ids, probabilities (N, 2); `threshold` was chosen
    on validation (by `threshold_metric`). It is a recommendation: predictions stay the most probable
    class, and `at_threshold` is what the test metrics would be if it were applied. `found`: `curves()`
    of these clips when the caller already computed them."""
    is_positive = np.asarray(y_true) == positive
    score = np.asarray(probabilities, dtype=np.float64)[:, positive]
    found = found if found is not None else curves(is_positive, score)
    return {"positive_label": str(labels[positive]), "roc_auc": found["roc_auc"],
            "average_precision": found["average_precision"], "threshold": float(threshold),
            "threshold_metric": threshold_metric, "at_threshold": at_threshold(is_positive, score, threshold),
            "at_default_threshold": at_threshold(is_positive, score, DEFAULT_THRESHOLD),
            "prevalence": float(is_positive.mean()) if len(is_positive) else 0.0}
