"""The statistics earmark reports, checked as numbers against independent references.

McNemar against scipy's binomial test and the closed-form two-sided tail; the paired bootstrap against
scipy.stats.bootstrap's BCa on reference statistics (exactly with the same seed, within Monte-Carlo error
with another), holding its estimate on hard cases and handling degenerate data;
ECE against torchmetrics and a direct loop; the Wilson interval against its closed form. Then same-seed
determinism of a tiny training, with a different-seed control that must differ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, bootstrap
from torchmetrics.classification import MulticlassCalibrationError

from earmark import api
from earmark.evaluate.calibration import expected_calibration_error, reliability_bins
from earmark.evaluate.metrics import wilson_interval
from earmark.evaluate.paired_stats import BOOTSTRAP_BLOCK, WIDENED, mcnemar_exact, paired_bootstrap

# --- McNemar's exact test ------------------------------------------------------------------------------------


def paired_outcomes(only_a: int, only_b: int, both: int = 7, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """correct_a, correct_b (N,) bool with the given discordant and concordant counts, shuffled."""
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    order = np.random.default_rng(only_a * 100 + only_b).permutation(len(a))
    return np.array(a)[order], np.array(b)[order]


def two_sided_binomial_tail(k: int, n: int) -> float:
    """Closed form for p = 1/2: twice the smaller tail, at most 1."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("only_a", [0, 1, 2, 5, 9, 17, 40])
@pytest.mark.parametrize("only_b", [0, 1, 3, 6, 9, 25])
def test_mcnemar_exact_p_value_is_the_two_sided_binomial_test(only_a, only_b):
    result = mcnemar_exact(*paired_outcomes(only_a, only_b))
    assert (result["only_a_correct"], result["only_b_correct"]) == (only_a, only_b)
    assert (result["both_correct"], result["both_wrong"]) == (7, 3)
    n = only_a + only_b
    if n == 0:
        assert result["p_value"] == 1.0
        return
    reference = binomtest(only_b, n, 0.5, alternative="two-sided").pvalue  # the other count: symmetric at 1/2
    assert result["p_value"] == pytest.approx(reference, rel=1e-12, abs=1e-15)
    assert result["p_value"] == pytest.approx(two_sided_binomial_tail(only_a, n), rel=1e-9, abs=1e-15)


def test_mcnemar_is_symmetric_and_known_values_hold():
    a, b = paired_outcomes(10, 2)
    assert mcnemar_exact(a, b)["p_value"] == mcnemar_exact(b, a)["p_value"]
    # 10 vs 2 discordant: 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(158 / 4096, rel=1e-12)


# --- the paired bootstrap ------------------------------------------------------------------------------------


def three_predictions(n_clips: int = 240, n_classes: int = 4, seed: int = 3):
    """y_true and two models' predictions: A right 70% of the time, B 80%, errors random."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n_clips)

    def model(accuracy: float) -> np.ndarray:
        wrong = (y_true + rng.integers(1, n_classes, n_clips)) % n_classes
        return np.where(rng.random(n_clips) < accuracy, y_true, wrong)

    return y_true, model(0.7), model(0.8), n_classes


def macro_f1(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro F1 over the last axis (a class with no true and no predicted clip counts 0): (..., N) → (...)."""
    scores = []
    for c in range(n_classes):
        hits = ((y_true == c) & (pred == c)).sum(axis=-1)
        denominator = (y_true == c).sum(axis=-1) + (pred == c).sum(axis=-1)
        scores.append(np.divide(2 * hits, denominator, out=np.zeros(np.shape(hits)), where=denominator > 0))
    return np.mean(scores, axis=0)


def accuracy_diff(t, a, b, axis=-1):
    return (b == t).mean(axis=axis) - (a == t).mean(axis=axis)


def scipy_bca(y_true, pred_a, pred_b, n_classes, n_resamples, seed):
    """The method written directly: scipy's paired BCa bootstrap of the reference statistics above."""
    def f1_diff(t, a, b, axis=-1):
        return macro_f1(t, b, n_classes) - macro_f1(t, a, n_classes)

    limits = {}
    for name, statistic in (("accuracy", accuracy_diff), ("macro_f1", f1_diff)):
        found = bootstrap((y_true, pred_a, pred_b), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                          batch=BOOTSTRAP_BLOCK, method="BCa", random_state=np.random.default_rng(seed))
        limits[name] = [found.confidence_interval.low, found.confidence_interval.high]
    return limits


def test_paired_bootstrap_limits_equal_scipy_bca_with_the_same_seed():
    y_true, pred_a, pred_b, n_classes = three_predictions()
    result = paired_bootstrap(y_true, pred_a, pred_b, n_classes, n_resamples=1100, seed=11)  # a partial block too
    reference = scipy_bca(y_true, pred_a, pred_b, n_classes, 1100, 11)
    for name in ("accuracy", "macro_f1"):
        np.testing.assert_allclose(result[name]["ci95"], reference[name], rtol=0, atol=1e-12)
        assert result[name]["method"] == "BCa"
    assert result["accuracy"]["difference"] == pytest.approx((pred_b == y_true).mean() - (pred_a == y_true).mean())
    assert result["macro_f1"]["difference"] == pytest.approx(
        float(macro_f1(y_true, pred_b, n_classes) - macro_f1(y_true, pred_a, n_classes)))


def test_paired_bootstrap_limits_agree_with_another_seed_within_monte_carlo_error():
    y_true, pred_a, pred_b, n_classes = three_predictions()
    result = paired_bootstrap(y_true, pred_a, pred_b, n_classes, n_resamples=4000, seed=0)
    reference = scipy_bca(y_true, pred_a, pred_b, n_classes, 4000, 1)
    for name in ("accuracy", "macro_f1"):
        # the limits' Monte-Carlo error at 4000 resamples is about 0.005 here (N = 240)
        assert result[name]["ci95"] == pytest.approx(reference[name], abs=0.02), name
        assert result[name]["excludes_zero"] == (reference[name][0] > 0 or reference[name][1] < 0)


@pytest.mark.parametrize("case", range(24))
def test_every_interval_holds_its_estimate(case):
    """Up to 50 classes and as few as 20 clips: macro F1 on resamples is biased there, and a percentile
    interval (the hand-written bootstrap's) fell beside its estimate (+0.4575 with +0.262 to +0.448)."""
    rng = np.random.default_rng(case)
    n_classes, n_clips = (2, 5, 10, 50)[case % 4], (20, 60, 150, 400)[case // 6]
    y_true = rng.integers(0, n_classes, n_clips)

    def model(accuracy: float) -> np.ndarray:
        wrong = (y_true + rng.integers(1, n_classes, n_clips)) % n_classes
        return np.where(rng.random(n_clips) < accuracy, y_true, wrong)

    result = paired_bootstrap(y_true, model(rng.uniform(0.1, 0.9)), model(rng.uniform(0.1, 0.99)), n_classes,
                              n_resamples=1000, seed=case)
    for name in ("accuracy", "macro_f1"):
        low, high = result[name]["ci95"]
        assert np.isfinite([low, high]).all() and low <= result[name]["difference"] <= high, (name, result[name])


@pytest.mark.parametrize("n_classes, per_class", [(50, 1), (100, 2), (20, 3)])
def test_many_classes_few_clips_hold_the_estimate_and_say_how(n_classes, per_class):
    """Resamples miss classes, which then score 0 for both runs: the resampled Δ macro F1 sits below the
    estimate. The hand-written percentile interval excluded it here (50 × 1: 0.79 with 0.41 to 0.59)."""
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(n_classes), per_class)

    def model(accuracy: float) -> np.ndarray:
        wrong = (y_true + rng.integers(1, n_classes, len(y_true))) % n_classes
        return np.where(rng.random(len(y_true)) < accuracy, y_true, wrong)

    result = paired_bootstrap(y_true, model(0.3), model(1.0), n_classes, n_resamples=2000, seed=0)
    macro = result["macro_f1"]
    assert macro["ci95"][0] <= macro["difference"] <= macro["ci95"][1], macro
    assert macro["method"] in ("BCa", "percentile, widened to hold the estimate (BCa undefined)", WIDENED)


def test_degenerate_data_give_the_estimate_not_nan():
    y_true = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    same = paired_bootstrap(y_true, y_true, y_true, 3, n_resamples=500)  # identical predictions: every Δ is 0
    for name in ("accuracy", "macro_f1"):
        assert same[name]["ci95"] == [0.0, 0.0] and same[name]["difference"] == 0.0
        assert same[name]["method"].startswith("degenerate") and not same[name]["excludes_zero"]
    wrong = (y_true + 1) % 3  # A always wrong, B always right: every clip's difference is +1
    flipped = paired_bootstrap(y_true, wrong, y_true, 3, n_resamples=500)
    assert flipped["accuracy"]["ci95"] == [1.0, 1.0] and flipped["accuracy"]["excludes_zero"]
    low, high = flipped["macro_f1"]["ci95"]  # a resample missing a class scores it 0 for both: not degenerate
    assert np.isfinite([low, high]).all() and 0 < low <= 1.0 <= high
    one = paired_bootstrap(y_true[:1], wrong[:1], y_true[:1], 3, n_resamples=500)
    assert one["accuracy"]["ci95"] == [1.0, 1.0] and one["accuracy"]["method"].startswith("degenerate")


# --- expected calibration error ------------------------------------------------------------------------------


def calibration_case(n_clips: int, n_classes: int, sharpness: float, seed: int):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharpness, (n_clips, n_classes))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # labels that follow the model only partly, so every bin has a gap between accuracy and confidence
    y_true = np.where(rng.random(n_clips) < 0.6, probabilities.argmax(axis=1), rng.integers(0, n_classes, n_clips))
    return probabilities, y_true


def ece_loop(probabilities: np.ndarray, y_true: np.ndarray, n_bins: int) -> float:
    """Direct definition: bins (lo, hi] of the top probability, sum over bins of |acc - conf| * n_bin / N."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(confidence)) if (lo < confidence[i] <= hi) or (b == 0 and confidence[i] == 0)]
        if members:
            accuracy = np.mean([predicted[i] == y_true[i] for i in members])
            total += len(members) * abs(accuracy - np.mean(confidence[members]))
    return total / len(confidence)


@pytest.mark.parametrize(("n_clips", "n_classes", "sharpness", "n_bins"),
                         [(500, 3, 1.0, 15), (800, 10, 3.0, 15), (300, 5, 0.5, 10), (1000, 4, 2.0, 20)])
def test_ece_equals_torchmetrics_and_the_direct_definition(n_clips, n_classes, sharpness, n_bins):
    probabilities, y_true = calibration_case(n_clips, n_classes, sharpness, seed=n_clips + n_bins)
    counts = reliability_bins(probabilities, y_true, n_bins)["counts"]
    assert sum(c > 0 for c in counts) >= 4  # a multi-bin case, not one bin
    ece = expected_calibration_error(probabilities, y_true, n_bins)
    assert ece > 0.01
    assert ece == pytest.approx(ece_loop(probabilities, y_true, n_bins), rel=1e-12, abs=1e-15)
    metric = MulticlassCalibrationError(num_classes=n_classes, n_bins=n_bins, norm="l1")
    reference = float(metric(torch.from_numpy(probabilities), torch.from_numpy(y_true)))
    assert ece == pytest.approx(reference, abs=1e-5)  # torchmetrics works in float32


def test_ece_puts_a_confidence_on_a_bin_edge_in_the_lower_bin():
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1]])  # 0.6 is an edge of 5 bins
    y_true = np.array([0, 1, 0])
    bins = reliability_bins(probabilities, y_true, 5)
    assert bins["counts"] == [0, 0, 2, 0, 1]
    assert expected_calibration_error(probabilities, y_true, 5) == pytest.approx(ece_loop(probabilities, y_true, 5))


# --- the Wilson interval -------------------------------------------------------------------------------------


def wilson_closed_form(k: int, n: int, z: float) -> tuple[float, float]:
    """The score interval as the roots of (p̂ - p)² = z² p (1 - p) / n, solved as a quadratic in p."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 20), (20, 20), (3, 10), (57, 60), (500, 1000),
                                      (1, 1000), (999, 1000), (12345, 20000)])
@pytest.mark.parametrize("z", [1.96, 1.0, 2.5758])
def test_wilson_interval_is_the_closed_form_score_interval(k, n, z):
    low, high = wilson_interval(k, n, z)
    expected_low, expected_high = wilson_closed_form(k, n, z)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)
    # (k = n at z = 1 gives 0.9999999999999999: the interval holds k/n only to rounding)
    assert 0.0 <= low <= k / n + 1e-12 and k / n <= high + 1e-12 and high <= 1.0


def test_wilson_interval_known_value():
    # 8 of 10 at z = 1.96: (0.4902, 0.9433) as tabulated (Newcombe 1998, method 3)
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 0.0)


# --- same seed, same weights ---------------------------------------------------------------------------------


def trained_weights(tone_config, seed: int, name: str) -> dict[str, torch.Tensor]:
    result = api.train(tone_config, [f"seed={seed}", f"name={name}", "train.max_epochs=1", "train.deterministic=true",
                                     "augment.freq_masks=1", "augment.mixup_alpha=0.4"],
                       evaluate_test=False)  # the weights are the point; the test split's report is not
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return {key: value for key, value in checkpoint["state_dict"].items() if value.is_floating_point()}


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tone_config):
    first = trained_weights(tone_config, 7, "first")
    again = trained_weights(tone_config, 7, "again")
    other = trained_weights(tone_config, 8, "other")
    assert first.keys() == again.keys() == other.keys()
    for key in first:
        assert torch.equal(first[key], again[key]), key
    changed = [key for key in first if not torch.equal(first[key], other[key])]
    assert any(key.startswith("model.") for key in changed), "a different seed must give different weights"
