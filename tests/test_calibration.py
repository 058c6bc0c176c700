"""Temperature scaling, calibration error and the rejection threshold, on synthetic logits."""

import numpy as np
import pytest

from earmark.evaluate.calibration import (
    choose_reject_threshold,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    rejection_outcome,
    reliability_bins,
    softmax,
)


def sampled(n: int, n_classes: int, true_temperature: float, seed: int = 0):
    """Logits and labels drawn from softmax(logits / true_temperature): the model is over-confident by T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, n_classes))
    probabilities = softmax(logits, true_temperature)
    cumulative = probabilities.cumsum(axis=1)
    y = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    return logits, np.minimum(y, n_classes - 1)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_temperature_scaling_recovers_a_known_temperature_and_lowers_ece(true_temperature):
    logits, y = sampled(4000, 5, true_temperature)
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    assert negative_log_likelihood(logits, y, fitted) < negative_log_likelihood(logits, y, 1.0)
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits, fitted), y)
    assert after < before / 2 and after < 0.03


def test_temperature_is_fitted_on_logits_that_float32_probabilities_cannot_hold():
    """Very confident clips: their float32 probabilities are exactly 0 and 1, yet the logits still carry how
    wrong the wrong ones are. Calibration gets the logits (`Predictor.predict_logits`), so it sees that."""
    from earmark.config import EvaluationConfig
    from earmark.evaluate.calibrate import fit_calibration

    logits, y = sampled(400, 3, 1.0, seed=5)
    logits = logits * 60  # margins of hundreds of nats: float32 softmax saturates
    float32 = softmax(logits).astype(np.float32)
    assert (float32 == 0).any()
    fit = fit_calibration(logits, y, ["a", "b", "c"], EvaluationConfig())
    assert fit["val_nll_before"] == pytest.approx(negative_log_likelihood(logits, y, 1.0))
    rebuilt = np.log(np.clip(float32, 1e-30, None))  # what rebuilding logits from probabilities gives
    assert fit["val_nll_before"] > 1.5 * negative_log_likelihood(rebuilt, y, 1.0)
    assert fit["fitted_temperature"] == pytest.approx(fit_temperature(logits, y)) and fit["fitted_temperature"] > 10
    if fit["fitted_temperature"] >= 19.8:  # the search's bound: reported, not applied
        assert fit["temperature"] == 1.0 and fit["notes"]


def test_ece_is_zero_when_confidence_matches_accuracy_and_bins_count_every_clip():
    probabilities = np.tile([0.75, 0.25], (8, 1))
    y = np.array([0, 0, 0, 1] * 2)  # 75% correct at confidence 0.75
    assert expected_calibration_error(probabilities, y) == pytest.approx(0.0)
    assert expected_calibration_error(probabilities, np.ones(8, dtype=int)) == pytest.approx(0.75)
    logits, labels = sampled(300, 3, 1.0)
    bins = reliability_bins(softmax(logits), labels, 15)
    assert sum(bins["counts"]) == 300 and len(bins["edges"]) == 16


def test_rejection_threshold_meets_its_accuracy_target_on_validation_with_the_most_coverage():
    logits, y = sampled(2000, 4, 1.0, seed=3)
    probabilities = softmax(logits)
    overall = (probabilities.argmax(axis=1) == y).mean()
    target = min(0.95, overall + 0.1)
    chosen = choose_reject_threshold(probabilities, y, target_accuracy=target)
    assert chosen["met"] and 0 < chosen["threshold"] < 1
    outcome = rejection_outcome(probabilities, y, chosen["threshold"])
    assert outcome["accuracy_on_accepted"] >= target  # the target holds on the clips it was chosen on
    assert outcome["coverage"] == pytest.approx(chosen["coverage"]) and chosen["coverage"] < 1
    # no lower threshold (one more clip accepted) reaches the target
    confidence = np.sort(probabilities.max(axis=1))[::-1]
    next_lower = confidence[confidence < chosen["threshold"]].max()
    assert rejection_outcome(probabilities, y, next_lower)["accuracy_on_accepted"] < target


def test_coverage_target_and_unreachable_target():
    logits, y = sampled(500, 3, 1.0, seed=4)
    probabilities = softmax(logits)
    chosen = choose_reject_threshold(probabilities, y, target_coverage=0.6)
    assert chosen["coverage"] == pytest.approx(0.6, abs=0.01)
    assert rejection_outcome(probabilities, y, chosen["threshold"])["coverage"] >= 0.6
    wrong = (y + 1) % 3  # every prediction wrong: no threshold reaches 50%
    impossible = choose_reject_threshold(np.eye(3)[wrong] * 0.9 + 0.1 / 3, y, target_accuracy=0.5)
    assert not impossible["met"] and impossible["threshold"] == 0.0
    curve = coverage_curve(probabilities, y)
    assert curve["coverage"][-1] == 1.0 and curve["accuracy"][-1] == pytest.approx((probabilities.argmax(1) == y).mean())


def test_store_calibration_sets_the_loaded_module_and_writes_the_checkpoint_once(tmp_path):
    from types import SimpleNamespace

    import torch

    from earmark.workflows.evaluate import store_calibration

    checkpoint_path = tmp_path / "best.ckpt"
    checkpoint = {"state_dict": {"temperature_": torch.tensor(1.0), "reject_threshold_": torch.tensor(0.0),
                                 "model.weight": torch.ones(2)}, "epoch": 3}
    module = SimpleNamespace(temperature_=torch.ones(()), reject_threshold_=torch.zeros(()))
    predictor = SimpleNamespace(module=module, reject_threshold=0.0)
    store_calibration(checkpoint_path, checkpoint, predictor, 1.8, 0.42)
    assert float(module.temperature_) == pytest.approx(1.8) and float(module.reject_threshold_) == pytest.approx(0.42)
    assert predictor.reject_threshold == pytest.approx(0.42)
    state = torch.load(checkpoint_path, weights_only=False)
    assert float(state["state_dict"]["temperature_"]) == pytest.approx(1.8)
    assert float(state["state_dict"]["reject_threshold_"]) == pytest.approx(0.42)
    assert torch.equal(state["state_dict"]["model.weight"], torch.ones(2)) and state["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]  # no temporary file left behind


def test_a_temperature_at_the_bound_or_without_improvement_is_not_applied():
    """A small validation split the model gets all right drives T to the lower bound (sharper is always
    better there); such a fit is refused, T stays 1, and the notes say why."""
    from earmark.config import EvaluationConfig
    from earmark.evaluate.calibrate import accept_temperature, fit_calibration

    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.5, 0.0], [0.0, 0.0, 1.5], [3.0, 0.0, 1.0]])
    y = np.array([0, 1, 2, 0])
    assert fit_temperature(logits, y) < 0.06  # the bound
    fit = fit_calibration(logits, y, ["a", "b", "c"], EvaluationConfig())
    assert fit["temperature"] == 1.0 and fit["fitted_temperature"] < 0.06 and not fit["calibrated"]
    assert fit["val_nll_after"] == fit["val_nll_before"]
    assert any("temperature kept at 1" in note and "fewer than the 50" in note for note in fit["notes"])
    # a temperature that makes validation worse is refused too; a good one is kept
    good_logits, good_y = sampled(2000, 4, 2.0)
    assert accept_temperature(0.5, good_logits, good_y, 15)[0] == 1.0
    fitted = fit_temperature(good_logits, good_y)
    assert accept_temperature(fitted, good_logits, good_y, 15) == (fitted, "")


def test_a_temperature_fitted_on_too_few_clips_is_not_applied_even_inside_the_range():
    """14 validation clips fitted T = 0.069 (inside the bounds) and it was applied; below
    MIN_CALIBRATION_CLIPS a fit is kept out whatever it says, and a large enough split keeps its fit."""
    from earmark.config import EvaluationConfig
    from earmark.evaluate.calibrate import MIN_CALIBRATION_CLIPS, fit_calibration

    logits, y = sampled(14, 3, 0.4)  # under-confident logits: the fit wants a sharper T, inside the range
    fit = fit_calibration(logits, y, ["a", "b", "c"], EvaluationConfig())
    assert fit["temperature"] == 1.0 and not fit["calibrated"] and 0.05 < fit["fitted_temperature"] < 1
    assert any(f"fewer than the {MIN_CALIBRATION_CLIPS}" in note for note in fit["notes"])
    logits, y = sampled(2000, 3, 0.4)
    fit = fit_calibration(logits, y, ["a", "b", "c"], EvaluationConfig())
    assert fit["calibrated"] and fit["temperature"] == fit["fitted_temperature"] < 1


def _well_calibrated_validation(seed: int, n: int = 120, n_classes: int = 5):
    """Logits whose softmax is the true distribution of the labels: T = 1 is right; any fitted T is noise."""
    from earmark.evaluate.calibration import softmax

    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, n_classes))
    y = np.array([rng.choice(n_classes, p=p) for p in softmax(logits)])
    return logits, y


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 8])
def test_a_temperature_that_only_fits_its_own_clips_is_not_applied(seed):
    """On these validation sets the fitted T lowers NLL and ECE on the clips it was fitted on (the in-sample
    check passes), but fitted on 4/5 of them it does not help the fifth: T = 1 is kept, with the reason."""
    from earmark.evaluate.calibrate import accept_temperature, held_out_calibration
    from earmark.evaluate.calibration import (
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
        softmax,
    )

    logits, y = _well_calibrated_validation(seed)
    fitted = fit_temperature(logits, y)
    assert negative_log_likelihood(logits, y, fitted) < negative_log_likelihood(logits, y, 1.0)
    assert expected_calibration_error(softmax(logits, fitted), y, 10) <= expected_calibration_error(softmax(logits), y, 10)
    temperature, reason = accept_temperature(fitted, logits, y, 10)
    assert temperature == 1.0 and "does not help the rest" in reason
    held_out = held_out_calibration(logits, y, 10)
    assert held_out["nll_after"] >= held_out["nll_before"] or held_out["ece_after"] > held_out["ece_before"]


def test_an_overconfident_model_is_still_calibrated():
    from earmark.evaluate.calibrate import accept_temperature
    from earmark.evaluate.calibration import fit_temperature

    logits, y = _well_calibrated_validation(0)
    overconfident = 3 * logits
    fitted = fit_temperature(overconfident, y)
    temperature, reason = accept_temperature(fitted, overconfident, y, 10)
    assert reason == "" and temperature == pytest.approx(3.0, rel=0.15)
