"""Is model B really better than model A on the same test clips? Paired tests: arrays in, numbers out.

Both tests use the pairing: each clip is scored by both models, so clip difficulty cancels out.
- McNemar's exact test looks only at the discordant clips (one model right, the other wrong).
- The paired bootstrap (scipy.stats.bootstrap, BCa) resamples clips (the same resample for both
  models) and gives a bias-corrected 95% interval for the difference of a metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
SIGNIFICANCE_LEVEL = 0.05
# Resamples (and BCa's jackknife) are evaluated in blocks so memory stays at block × n_clips integers.
BOOTSTRAP_BLOCK = 250
WIDENED = "BCa, widened to hold the estimate (the resampled differences are biased: too few clips per class)"


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


def macro_f1_batched(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 over the last axis: y_true, pred (..., N) class ids → (...).

    Every class counts, a class with no true and no predicted clip as 0 (as
    `earmark.evaluate.metrics.classification_metrics` does, so the full-set value matches metrics.json).
    """
    y_true, pred = np.asarray(y_true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    lead = y_true.shape[:-1]
    n_rows = int(np.prod(lead, dtype=np.int64))
    offsets = (np.arange(n_rows, dtype=np.int64) * n_classes)[:, None]  # (R, 1): one block of classes per row
    true_codes, pred_codes = offsets + y_true.reshape(n_rows, -1), offsets + pred.reshape(n_rows, -1)  # (R, N)
    size = n_rows * n_classes

    def counts(codes: np.ndarray) -> np.ndarray:
        return np.bincount(codes.ravel(), minlength=size).reshape(n_rows, n_classes)  # (R, C)

    hits = counts(true_codes[true_codes == pred_codes])
    denominator = counts(true_codes) + counts(pred_codes)  # support + predicted
    f1 = np.divide(2 * hits, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1).reshape(lead)


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """95% intervals of B − A for accuracy and macro F1; y_true, pred_a, pred_b (N,) class ids.

    scipy.stats.bootstrap, paired (each resample draws N clips with replacement, the same clips for both
    models) with the bias-corrected and accelerated (BCa) interval: the percentile interval of a biased
    statistic such as macro F1 on resamples (which miss rare classes) can miss the estimate itself.
    Degenerate data (every clip's difference the same, e.g. identical predictions) has no spread to
    resample: the interval is the estimate itself, and `method` says so.
    """
    y_true, pred_a, pred_b = (np.asarray(a, dtype=np.int64) for a in (y_true, pred_a, pred_b))

    def accuracy_difference(t: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return (b == t).mean(axis=axis) - (a == t).mean(axis=axis)

    def macro_f1_difference(t: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return macro_f1_batched(t, b, n_classes) - macro_f1_batched(t, a, n_classes)

    result: dict[str, dict[str, Any]] = {}
    for name, statistic in (("accuracy", accuracy_difference), ("macro_f1", macro_f1_difference)):
        estimate = float(statistic(y_true, pred_a, pred_b))
        low, high, method = _bca_interval(statistic, (y_true, pred_a, pred_b), estimate, n_resamples, seed)
        result[name] = {"difference": estimate, "ci95": [low, high], "method": method,
                        "excludes_zero": bool(low > 0 or high < 0)}
    result["resamples"] = {"n": int(n_resamples), "seed": int(seed), "method": "scipy.stats.bootstrap, paired, BCa"}
    return result


def _bca_interval(statistic, data: tuple[np.ndarray, ...], estimate: float, n_resamples: int,
                  seed: int) -> tuple[float, float, str]:
    """(low, high, method) of scipy's paired BCa bootstrap; the estimate itself where the data are degenerate."""
    import warnings

    from scipy.stats import bootstrap

    if len(data[0]) < 2:
        return estimate, estimate, "degenerate: fewer than 2 clips, nothing to resample"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: handled below
        found = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                          batch=BOOTSTRAP_BLOCK, method="BCa", confidence_level=0.95,
                          random_state=np.random.default_rng(seed))
    low, high = float(found.confidence_interval.low), float(found.confidence_interval.high)
    distribution = found.bootstrap_distribution
    if np.ptp(distribution) == 0:
        return estimate, estimate, "degenerate: every resample gives the same difference"
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa undefined (e.g. no jackknife spread)
        low, high = (float(v) for v in np.percentile(distribution, [2.5, 97.5]))
        return min(low, estimate), max(high, estimate), "percentile, widened to hold the estimate (BCa undefined)"
    if not low <= estimate <= high:  # resamples this biased (too few clips per class) do not bracket the truth
        return min(low, estimate), max(high, estimate), WIDENED
    return low, high, "BCa"
