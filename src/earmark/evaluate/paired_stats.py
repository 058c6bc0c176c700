"""Is model B really better than model A on the same test clips? Paired tests: arrays in, numbers out.

Both tests use the pairing: each clip is scored by both models, so clip difficulty cancels out.
- McNemar's exact test looks only at the discordant clips (one model right, the other wrong).
- The paired bootstrap resamples clips (the same resample for both models) and reads a 95%
  interval for the difference of a metric off the resampled differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
SIGNIFICANCE_LEVEL = 0.05
# Resamples are drawn in blocks so memory stays at block × n_clips × n_classes floats.
BOOTSTRAP_BLOCK = 250


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on paired outcomes: correct_a, correct_b (N,) bool.

    only_a_correct (b) and only_b_correct (c) are the discordant clips; under "the models are equally
    accurate" each discordant clip is a fair coin flip, so p = two-sided binomial(min(b, c); b + c, 1/2).
    """
    from scipy.stats import binomtest

    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "both_correct": int((correct_a & correct_b).sum()),
            "both_wrong": int((~correct_a & ~correct_b).sum()), "p_value": p_value}


def macro_f1_from_counts(clip_weights: np.ndarray, true_onehot: np.ndarray, pred_onehot: np.ndarray) -> np.ndarray:
    """Macro F1 of R weighted copies of one test set: clip_weights (R, N) → (R,).

    true_onehot, pred_onehot (N, C). Every class counts, a class with no true and no predicted clip as 0
    (as `earmark.evaluate.metrics.classification_metrics` does, so the unweighted value matches metrics.json).
    """
    hits = clip_weights @ (true_onehot * pred_onehot)  # (R, C) true positives
    support = clip_weights @ true_onehot  # (R, C) true positives + false negatives
    predicted = clip_weights @ pred_onehot  # (R, C) true positives + false positives
    denominator = support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros_like(hits, dtype=float), where=denominator > 0)
    return f1.mean(axis=1)


def _onehot(ids: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=float)[np.asarray(ids, dtype=int)]  # (N, C)


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """95% percentile intervals of B − A for accuracy and macro F1; y_true, pred_a, pred_b (N,) class ids.

    Each resample draws N clips with replacement, the same clips for both models.
    """
    y_true, pred_a, pred_b = (np.asarray(a, dtype=int) for a in (y_true, pred_a, pred_b))
    n_clips = len(y_true)
    true_onehot = _onehot(y_true, n_classes)
    onehot_a, onehot_b = _onehot(pred_a, n_classes), _onehot(pred_b, n_classes)
    correct_diff = (pred_b == y_true).astype(float) - (pred_a == y_true).astype(float)  # (N,)
    rng = np.random.default_rng(seed)
    accuracy_diffs, f1_diffs = [], []
    for start in range(0, n_resamples, BOOTSTRAP_BLOCK):
        block = min(BOOTSTRAP_BLOCK, n_resamples - start)
        drawn = rng.integers(0, n_clips, size=(block, n_clips))  # (R, N) clip indices
        flat = (np.arange(block)[:, None] * n_clips + drawn).ravel()
        weights = np.bincount(flat, minlength=block * n_clips).reshape(block, n_clips).astype(float)  # (R, N) draws
        accuracy_diffs.append(weights @ correct_diff / n_clips)
        f1_diffs.append(macro_f1_from_counts(weights, true_onehot, onehot_b)
                        - macro_f1_from_counts(weights, true_onehot, onehot_a))
    everything = np.ones((1, n_clips))
    observed = {
        "accuracy": float(correct_diff.mean()),
        "macro_f1": float((macro_f1_from_counts(everything, true_onehot, onehot_b)
                           - macro_f1_from_counts(everything, true_onehot, onehot_a))[0]),
    }
    result = {}
    for name, diffs in (("accuracy", np.concatenate(accuracy_diffs)), ("macro_f1", np.concatenate(f1_diffs))):
        low, high = np.percentile(diffs, [2.5, 97.5])
        result[name] = {"difference": observed[name], "ci95": [float(low), float(high)],
                        "excludes_zero": bool(low > 0 or high < 0)}
    result["resamples"] = {"n": int(n_resamples), "seed": int(seed)}
    return result
