"""Fitting calibration on validation logits (temperature, binary threshold, rejection) and reporting it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from earmark.config import EvaluationConfig

CALIBRATION_FILE = "calibration.json"
MIN_CALIBRATION_CLIPS = 50  # fewer validation clips fit a temperature to noise (14 clips gave T = 0.069): T = 1 kept


def fit_calibration(logits: np.ndarray, y_true: np.ndarray, labels: Sequence[str],
                    settings: EvaluationConfig) -> dict[str, Any]:
    """calibration.json's content from validation logits (N, C) and class ids (N,): T minimising the NLL,
    the rejection threshold (`settings.reject_target_*`) and, for two classes, the decision threshold."""
    from earmark.evaluate.binary import choose_threshold, positive_index
    from earmark.evaluate.calibration import (
        choose_reject_threshold,
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
        softmax,
    )

    notes = []
    fitted = fit_temperature(logits, y_true) if settings.calibrate else 1.0
    temperature, kept = accept_temperature(fitted, logits, y_true, settings.ece_bins)
    if kept:
        notes.append(f"temperature kept at 1: {kept}")
    calibrated = softmax(logits, temperature)
    fit: dict[str, Any] = {
        "fitted": True, "n_val_clips": int(len(y_true)), "calibrated": settings.calibrate and not kept,
        "temperature": temperature, "fitted_temperature": fitted, "ece_bins": settings.ece_bins,
        "val_nll_before": negative_log_likelihood(logits, y_true, 1.0),
        "val_nll_after": negative_log_likelihood(logits, y_true, temperature),
        "val_ece_before": expected_calibration_error(softmax(logits), y_true, settings.ece_bins),
        "val_ece_after": expected_calibration_error(calibrated, y_true, settings.ece_bins),
        "reject_threshold": 0.0, "notes": notes}
    if settings.reject_target_accuracy is not None or settings.reject_target_coverage is not None:
        chosen = choose_reject_threshold(calibrated, y_true, settings.reject_target_accuracy,
                                         settings.reject_target_coverage)
        fit.update(reject_threshold=chosen["threshold"], reject_target_accuracy=settings.reject_target_accuracy,
                   reject_target_coverage=settings.reject_target_coverage, val_coverage=chosen["coverage"],
                   val_accuracy_on_accepted=chosen["accuracy_on_accepted"])
        if not chosen["met"]:
            fit["notes"].append(f"rejection off: no confidence threshold reaches accuracy "
                                f"{settings.reject_target_accuracy} on the validation split (best: all clips at "
                                f"{chosen['accuracy_on_accepted']:.3f}); lower evaluation.reject_target_accuracy")
    if len(labels) == 2:
        positive = positive_index(labels, settings.positive_label)
        threshold, value = choose_threshold(y_true == positive, calibrated[:, positive], settings.threshold_metric)
        fit["binary"] = {"positive_label": str(labels[positive]), "threshold": threshold,
                         "threshold_metric": settings.threshold_metric if value is not None else "default",
                         "val_value": value}
    return fit


def accept_temperature(fitted: float, logits: np.ndarray, y_true: np.ndarray, n_bins: int) -> tuple[float, str]:
    """(the temperature to use, why 1 was kept instead or ''). A fit at the edge of the searched range, or
    one that does not lower the validation NLL or raises its ECE, says the validation split is too small
    or too easy to calibrate on (typically: every clip right), and would make test probabilities worse."""
    from earmark.evaluate.calibration import (
        TEMPERATURE_RANGE,
        expected_calibration_error,
        negative_log_likelihood,
        softmax,
    )

    if fitted == 1.0:
        return 1.0, ""
    low, high = TEMPERATURE_RANGE
    n = len(y_true)
    if n < MIN_CALIBRATION_CLIPS:
        return 1.0, (f"{n} validation clips are fewer than the {MIN_CALIBRATION_CLIPS} a temperature needs (the "
                     f"fit gave {fitted:.3g}); a larger split.val_fraction helps, or evaluation.calibrate=false")
    if fitted <= low * 1.01 or fitted >= high * 0.99:
        return 1.0, (f"the fit on {n} validation clips reached the bound of the search ({fitted:.3g}; range "
                     f"{low:g}–{high:g}); too few or too easy validation clips to calibrate on — a larger "
                     "split.val_fraction helps, or evaluation.calibrate=false")
    nll = negative_log_likelihood(logits, y_true, 1.0), negative_log_likelihood(logits, y_true, fitted)
    ece = (expected_calibration_error(softmax(logits), y_true, n_bins),
           expected_calibration_error(softmax(logits, fitted), y_true, n_bins))
    if nll[1] >= nll[0] or ece[1] > ece[0]:
        return 1.0, (f"T = {fitted:.3g} would change validation NLL {nll[0]:.4f} → {nll[1]:.4f} and ECE "
                     f"{ece[0]:.4f} → {ece[1]:.4f} on {n} clips; no improvement on both")
    held_out = held_out_calibration(logits, y_true, n_bins)
    if held_out["nll_after"] >= held_out["nll_before"] or held_out["ece_after"] > held_out["ece_before"]:
        return 1.0, (f"T = {fitted:.3g} fitted on part of the {n} validation clips does not help the rest "
                     f"({held_out['folds']}-fold: held-out NLL {held_out['nll_before']:.4f} → "
                     f"{held_out['nll_after']:.4f}, ECE {held_out['ece_before']:.4f} → {held_out['ece_after']:.4f}); "
                     "the improvement on the clips it was fitted on would not carry over to new clips")
    return fitted, ""


CALIBRATION_CHECK_FOLDS = 5


def held_out_calibration(logits: np.ndarray, y_true: np.ndarray, n_bins: int,
                         folds: int = CALIBRATION_CHECK_FOLDS) -> dict[str, float]:
    """Whether a temperature carries over to clips it was not fitted on: the validation clips in `folds`
    shuffled parts (a fixed permutation), T fitted on the others and applied to each; the pooled held-out
    NLL and ECE with those temperatures against T = 1 on the same clips."""
    from earmark.evaluate.calibration import (
        expected_calibration_error,
        fit_temperature,
        negative_log_likelihood,
        softmax,
    )

    y_true = np.asarray(y_true, dtype=int)
    order = np.random.default_rng(0).permutation(len(y_true))
    calibrated = np.zeros(logits.shape, dtype=np.float64)
    nll_after = 0.0
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        temperature = fit_temperature(logits[rest], y_true[rest])
        calibrated[part] = softmax(logits[part], temperature)
        nll_after += negative_log_likelihood(logits[part], y_true[part], temperature) * len(part)
    return {"folds": folds, "nll_before": negative_log_likelihood(logits, y_true, 1.0),
            "nll_after": nll_after / len(y_true),
            "ece_before": expected_calibration_error(softmax(logits), y_true, n_bins),
            "ece_after": expected_calibration_error(calibrated, y_true, n_bins)}


def read_calibration(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def calibration_report(fit: dict[str, Any] | None, logits: np.ndarray, probabilities: np.ndarray,
                       y_true: np.ndarray, predictor, n_bins: int) -> tuple[dict[str, Any] | None, dict | None]:
    """(metrics.json's `calibration`, the reliability bins "before" and "after" for the plot): the stored
    temperature and rejection threshold, test ECE before (T = 1, from the logits) and after (the calibrated
    `probabilities`), test coverage and accuracy on the accepted clips. (None, None) when nothing was fitted."""
    from earmark.evaluate.calibration import ece_of_bins, rejection_outcome, reliability_bins, softmax

    if not fit or not fit.get("fitted"):
        return None, None
    threshold = float(predictor.module.reject_threshold_)
    bins = {"before": reliability_bins(softmax(logits), y_true, n_bins),
            "after": reliability_bins(probabilities, y_true, n_bins)}
    outcome = rejection_outcome(probabilities, y_true, threshold)
    report = {"temperature": float(predictor.module.temperature_), "ece_before": ece_of_bins(bins["before"]),
              "ece_after": ece_of_bins(bins["after"]), "ece_bins": n_bins, "reject_threshold": threshold,
              "test_coverage": outcome["coverage"], "test_accuracy_on_accepted": outcome["accuracy_on_accepted"],
              "n_rejected": outcome["n_rejected"], "validation": fit}
    return report, bins
