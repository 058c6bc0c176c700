"""Calibration and "none of these": temperature scaling, expected calibration error, a rejection threshold.

Pure functions on arrays. Probabilities are (N, n_classes) rows that sum to 1, y_true (N,) class ids.
Temperature scaling divides the model's logits by T > 0 (fitted on the logits themselves, never on logits
rebuilt from float32 probabilities, which underflow to 0 for confident clips). A rejection threshold turns
a prediction whose top probability is below it into "unknown"; 0 means off.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ECE_BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)  # searched on a log scale; beyond it the model is broken, not miscalibrated


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) logits → (N, C) softmax(logits / temperature), in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of softmax(logits / temperature) against y_true, in nats."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float((log_norm - scaled[np.arange(len(y_true)), y_true]).mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on (validation) clips; 1.0 when there are none."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, dtype=int)
    if len(y_true) == 0:
        return 1.0
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, y_true, math.exp(log_t)),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def reliability_bins(probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, list]:
    """Equal-width bins of the top probability: per bin the clips, their mean confidence and accuracy
    (None in empty bins)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true) if len(probabilities) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)  # (lo, hi] bins
    counts, mean_confidence, accuracy = [], [], []
    for b in range(n_bins):
        members = index == b
        counts.append(int(members.sum()))
        mean_confidence.append(float(confidence[members].mean()) if members.any() else None)
        accuracy.append(float(correct[members].mean()) if members.any() else None)
    return {"edges": edges.tolist(), "counts": counts, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the clip-weighted mean |accuracy - confidence| over equal-width confidence bins (0 = calibrated)."""
    return ece_of_bins(reliability_bins(probabilities, y_true, n_bins))


def ece_of_bins(bins: dict[str, list]) -> float:
    """The ECE of bins already computed by `reliability_bins`."""
    total = sum(bins["counts"])
    if total == 0:
        return 0.0
    return float(sum(n * abs(acc - conf) for n, acc, conf in zip(bins["counts"], bins["accuracy"],
                                                                  bins["confidence"]) if n) / total)


def coverage_curve(probabilities: np.ndarray, y_true: np.ndarray) -> dict[str, np.ndarray]:
    """Accepting the k most confident clips, k = 1..N: threshold (their lowest top probability), coverage
    k/N and accuracy on the accepted clips. Arrays of length N, most confident first."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    order = np.argsort(-confidence, kind="stable")
    accepted = np.arange(1, len(order) + 1)
    return {"threshold": confidence[order], "coverage": accepted / max(len(order), 1),
            "accuracy": np.cumsum(correct[order]) / accepted}


def choose_reject_threshold(probabilities: np.ndarray, y_true: np.ndarray, target_accuracy: float | None = None,
                            target_coverage: float | None = None) -> dict[str, Any]:
    """The lowest top-probability threshold whose accepted clips reach `target_accuracy`, or the one that
    keeps `target_coverage` of the clips. A clip is accepted when its top probability >= threshold, so
    clips tied at the threshold are accepted together. Returns threshold (0 when no target, or none is
    met), coverage, accuracy_on_accepted and met."""
    if (target_accuracy is None) == (target_coverage is None):
        raise ValueError("give exactly one of target_accuracy and target_coverage")
    curve = coverage_curve(probabilities, y_true)
    if len(curve["threshold"]) == 0:
        return {"threshold": 0.0, "coverage": 0.0, "accuracy_on_accepted": None, "met": False}
    # only cut where the next clip is less confident: ties are accepted together
    distinct = np.append(curve["threshold"][:-1] > curve["threshold"][1:], True)
    if target_accuracy is not None:
        ok = np.flatnonzero(distinct & (curve["accuracy"] >= target_accuracy - 1e-12))
        met = len(ok) > 0
        k = int(ok[-1]) if met else len(distinct) - 1  # the largest coverage meeting the target
    else:
        ok = np.flatnonzero(distinct & (curve["coverage"] >= target_coverage - 1e-12))
        met, k = True, int(ok[0])  # the smallest coverage reaching the target (the last index always does)
    threshold = float(curve["threshold"][k]) if met else 0.0
    return {"threshold": threshold, "coverage": float(curve["coverage"][k]) if met else 1.0,
            "accuracy_on_accepted": float(curve["accuracy"][k]) if met else float(curve["accuracy"][-1]),
            "met": met}


def rejection_outcome(probabilities: np.ndarray, y_true: np.ndarray, threshold: float) -> dict[str, Any]:
    """Coverage and accuracy on the accepted clips at `threshold` (top probability >= threshold accepted)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) == 0:
        return {"coverage": 0.0, "accuracy_on_accepted": None, "n_rejected": 0}
    accepted = probabilities.max(axis=1) >= threshold
    correct = probabilities.argmax(axis=1) == np.asarray(y_true)
    return {"coverage": float(accepted.mean()),
            "accuracy_on_accepted": float(correct[accepted].mean()) if accepted.any() else None,
            "n_rejected": int((~accepted).sum())}
