"""Score a run: predict the evaluated clips with checkpoints/best.ckpt, compute every metric and analysis,
write predictions.csv, the PNGs, report.md, metrics.json and report.html.

Also the step between training and evaluation, `fit_on_validation`: temperature scaling, an optional
rejection threshold and (two classes) the decision threshold, fitted on the validation split, written into
best.ckpt's buffers and calibration.json.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, EvaluationConfig, load_config
from earmark.errors import EarmarkError

CALIBRATION_FILE = "calibration.json"


def predict_items(predictor, items: pd.DataFrame, waves: np.ndarray) -> tuple[np.ndarray, list | None]:
    """Probabilities (N, C) of `items` (rows into `waves`); a personalized model gets each clip's group."""
    item_waves = waves[items["row"].to_numpy()]
    groups = None
    if predictor.uses_groups:  # a personalized model: each clip with its group (e.g. speaker)
        from earmark.personalization import clip_groups

        groups = clip_groups(items, predictor.module.model.group_column)
    return predictor.predict_waves(item_waves, groups), groups


def class_ids(items: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    index = {str(label): i for i, label in enumerate(labels)}
    return items["label"].astype(str).map(index).to_numpy(dtype=int)


def write_calibration(checkpoint: Path, temperature: float, reject_threshold: float) -> None:
    """Set the `temperature_` and `reject_threshold_` buffers in a checkpoint's state_dict, atomically
    (a temporary file beside it, fsynced, then renamed over it)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state_dict"]["temperature_"] = torch.tensor(float(temperature))
    state["state_dict"]["reject_threshold_"] = torch.tensor(float(reject_threshold))
    partial = checkpoint.with_name(checkpoint.name + ".calibrating.tmp")
    with open(partial, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, checkpoint)


def fit_on_validation(run_dir: Path, val_items: pd.DataFrame, waves: np.ndarray, labels: Sequence[str],
                      settings: EvaluationConfig) -> dict[str, Any]:
    """Fit T (NLL on validation), the rejection threshold (`settings.reject_target_*`) and, for two
    classes, the decision threshold; store T and the rejection threshold in best.ckpt; write and return
    calibration.json's content. Without validation clips nothing is fitted and the file says why."""
    from earmark.binary import choose_threshold, positive_index
    from earmark.calibration import (choose_reject_threshold, expected_calibration_error, fit_temperature,
                                     logits_of, negative_log_likelihood, softmax)
    from earmark.predict import Predictor, find_checkpoint

    run_dir = Path(run_dir)
    if len(val_items) == 0:
        fit: dict[str, Any] = {"fitted": False, "reason": "no validation split: calibration and thresholds "
                               "were not fitted (temperature 1, no rejection, binary threshold 0.5)"}
        (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
        return fit
    checkpoint = find_checkpoint(run_dir, "best")
    predictor = Predictor.from_run(checkpoint)
    probabilities, _ = predict_items(predictor, val_items, waves)
    logits = logits_of(probabilities, float(predictor.module.temperature_))  # undo any earlier calibration
    y_true = class_ids(val_items, labels)
    temperature = fit_temperature(logits, y_true) if settings.calibrate else 1.0
    calibrated = softmax(logits, temperature)
    raw = softmax(logits)
    fit = {"fitted": True, "n_val_clips": int(len(y_true)), "calibrated": settings.calibrate,
           "temperature": temperature, "ece_bins": settings.ece_bins,
           "val_nll_before": negative_log_likelihood(logits, y_true, 1.0),
           "val_nll_after": negative_log_likelihood(logits, y_true, temperature),
           "val_ece_before": expected_calibration_error(raw, y_true, settings.ece_bins),
           "val_ece_after": expected_calibration_error(calibrated, y_true, settings.ece_bins),
           "reject_threshold": 0.0, "notes": []}
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
    write_calibration(checkpoint, temperature, fit["reject_threshold"])
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
    return fit


def _run_config(run_dir: Path, config: Config | None) -> Config:
    if config is not None:
        return config
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise EarmarkError(f"{run_dir} is not a run directory (no config.yaml)")
    return load_config(path)


def _train_items(run_dir: Path) -> pd.DataFrame | None:
    from earmark.data.splits import load_splits

    try:
        items = load_splits(Path(run_dir) / "splits")
    except EarmarkError:  # a run copied without its splits/ folder: no leakage check possible
        return None
    return items[items["split"] == "train"]


def predictions_table(items: pd.DataFrame, probabilities: np.ndarray, labels: Sequence[str],
                      groups: list | None, reject_threshold: float) -> pd.DataFrame:
    """path, true, predicted, [start_s], [group], [decision: predicted or 'unknown'], p_<label>..."""
    predicted = np.asarray(labels)[probabilities.argmax(axis=1)]
    table = pd.DataFrame({"path": items["path"].to_numpy(), "true": items["label"].to_numpy(),
                          "predicted": predicted})
    if "start_s" in items:
        table["start_s"] = items["start_s"].to_numpy()
    if groups is not None:
        table["group"] = groups
    if reject_threshold > 0:
        table["decision"] = np.where(probabilities.max(axis=1) >= reject_threshold, predicted, "unknown")
    for i, label in enumerate(labels):
        table[f"p_{label}"] = probabilities[:, i].round(6)
    return table


def evaluate_run(run_dir: Path, test_items: pd.DataFrame, waves: np.ndarray, labels: list[str],
                 out_dir: Path | None = None, *, config: Config | None = None, group_by: Sequence[str] = (),
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score the run's best checkpoint on `test_items` (rows into `waves`) and write every artifact into
    `out_dir` (default: the run directory). `config`: the run's (default: its config.yaml); `group_by`:
    metadata columns analysed per group besides the defaults; `extra`: entries added to metrics.json."""
    from earmark.analysis import analysed_columns
    from earmark.evaluation import classification_metrics
    from earmark.html_report import write_run_report
    from earmark.predict import Predictor
    from earmark.reports import markdown_report

    run_dir = Path(run_dir)
    config = _run_config(run_dir, config)
    settings = config.evaluation
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_run(run_dir)
    if list(predictor.labels) != list(labels):
        raise EarmarkError(f"the data's classes {labels} differ from the run's {list(predictor.labels)}")
    test_items = test_items.reset_index(drop=True)
    group_columns = analysed_columns(test_items, config.split.group_by, [*group_by, *settings.group_by])
    probabilities, groups = predict_items(predictor, test_items, waves)
    y_true = class_ids(test_items, labels)
    metrics = classification_metrics(y_true, probabilities, labels, top_k=settings.top_k)
    metrics["notes"] = []
    reject_threshold = float(predictor.module.reject_threshold_)
    predictions_table(test_items, probabilities, labels, groups, reject_threshold).to_csv(
        out_dir / "predictions.csv", index=False)
    if groups is not None:
        from earmark.personalization import write_personalization

        write_personalization(run_dir, out_dir, predictor, waves[test_items["row"].to_numpy()], y_true,
                              probabilities, groups)
    _add_analyses(metrics, run_dir, config, test_items, y_true, probabilities, labels, group_columns, predictor)
    metrics.update(extra or {})
    _draw_plots(metrics, probabilities, y_true, out_dir)
    context = {"run directory": run_dir, "checkpoint": "checkpoints/best.ckpt"}
    (out_dir / "report.md").write_text(markdown_report(run_dir.name, metrics, context))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    write_run_report(out_dir, run_dir)  # reads metrics.json and the PNGs just written
    # where the files went: returned to the caller, not saved (metrics.json stays free of paths)
    return {**metrics, "evaluation_dir": str(out_dir)}


def _add_analyses(metrics: dict[str, Any], run_dir: Path, config: Config, test_items: pd.DataFrame,
                  y_true: np.ndarray, probabilities: np.ndarray, labels: list[str], group_columns: list[str],
                  predictor) -> None:
    """binary, per_group (for `group_columns`), leakage warnings, clip_level and calibration entries."""
    from earmark.analysis import clip_level_metrics, leakage, leakage_warnings, per_group_accuracy
    from earmark.binary import binary_metrics, positive_index

    settings = config.evaluation
    calibration_fit = _read_calibration(run_dir)
    if len(labels) == 2:
        fitted = (calibration_fit or {}).get("binary")
        if fitted and fitted["positive_label"] in labels:
            positive, threshold, metric = labels.index(fitted["positive_label"]), fitted["threshold"], \
                fitted["threshold_metric"]
        else:
            positive, threshold, metric = positive_index(labels, settings.positive_label), 0.5, "default"
            metrics["notes"].append("binary decision threshold 0.5: none was chosen on a validation split")
        metrics["binary"] = binary_metrics(y_true, probabilities, labels, positive, threshold, metric)
    correct = probabilities.argmax(axis=1) == y_true
    metrics["per_group"] = {column: per_group_accuracy(correct, test_items[column], settings.worst_groups)
                            for column in group_columns}
    train_items = _train_items(run_dir)
    if train_items is not None:
        shared = leakage(train_items, test_items, config.split.group_by)
        metrics["leakage"] = {column: {"count": len(values), "values": values[:50]} for column, values in shared.items()}
        metrics["warnings"] += leakage_warnings(shared)
    if predictor.contract.clip == "chunk" or test_items["path"].duplicated().any():
        metrics["clip_level"] = clip_level_metrics(test_items["path"].astype(str).tolist(), y_true, probabilities,
                                                   labels)
    calibration = calibration_report(calibration_fit, probabilities, y_true, predictor, settings.ece_bins)
    if calibration is not None:
        metrics["calibration"] = calibration
        metrics["warnings"] += [f"calibration: {note}" for note in calibration["validation"].get("notes", [])]
    else:
        reason = (calibration_fit or {}).get("reason", f"no {CALIBRATION_FILE} in the run (it predates calibration)")
        metrics["notes"].append(f"calibration skipped: {reason}")


def _read_calibration(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def calibration_report(fit: dict[str, Any] | None, probabilities: np.ndarray, y_true: np.ndarray, predictor,
                       n_bins: int) -> dict[str, Any] | None:
    """metrics.json's `calibration`: the stored temperature and rejection threshold, test ECE before
    (T = 1) and after, test coverage and accuracy on the accepted clips; None when nothing was fitted."""
    from earmark.calibration import expected_calibration_error, logits_of, rejection_outcome, softmax

    if not fit or not fit.get("fitted"):
        return None
    temperature = float(predictor.module.temperature_)
    threshold = float(predictor.module.reject_threshold_)
    raw = softmax(logits_of(probabilities, temperature))
    outcome = rejection_outcome(probabilities, y_true, threshold)
    return {"temperature": temperature, "ece_before": expected_calibration_error(raw, y_true, n_bins),
            "ece_after": expected_calibration_error(probabilities, y_true, n_bins), "ece_bins": n_bins,
            "reject_threshold": threshold, "test_coverage": outcome["coverage"],
            "test_accuracy_on_accepted": outcome["accuracy_on_accepted"], "n_rejected": outcome["n_rejected"],
            "validation": fit}


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "column"


def _draw_plots(metrics: dict[str, Any], probabilities: np.ndarray, y_true: np.ndarray, out_dir: Path) -> None:
    """Every PNG: confusion (counts and normalised), per class, per group, ROC/PR, reliability, coverage."""
    from earmark import plots
    from earmark.binary import curves
    from earmark.calibration import coverage_curve, logits_of, reliability_bins, softmax

    labels = metrics["labels"]
    plots.plot_confusion(metrics["confusion"], labels, out_dir / "confusion.png")
    plots.plot_confusion(metrics["confusion"], labels, out_dir / "confusion_normalized.png", normalized=True)
    plots.plot_per_class(metrics["per_class"], out_dir / "per_class.png")
    metrics["per_group_plots"] = {column: f"per_group_{_file_safe(column)}.png" for column in metrics["per_group"]}
    for column, analysis in metrics["per_group"].items():
        if analysis["groups"]:
            plots.plot_per_group(column, analysis, metrics["accuracy"], out_dir / metrics["per_group_plots"][column])
    binary = metrics.get("binary")
    if binary is not None:
        positive = labels.index(binary["positive_label"])
        found = curves(y_true == positive, probabilities[:, positive])
        point = binary["at_threshold"]
        plots.plot_roc(found["fpr"], found["tpr"], binary["roc_auc"], binary["positive_label"], out_dir / "roc.png",
                       (1 - point["specificity"], point["recall"]))
        plots.plot_pr(found["precision"], found["recall"], binary["average_precision"], binary["prevalence"],
                      binary["positive_label"], out_dir / "pr.png", (point["recall"], point["precision"]))
    calibration = metrics.get("calibration")
    if calibration is not None and len(y_true):
        raw = softmax(logits_of(probabilities, calibration["temperature"]))
        plots.plot_reliability(reliability_bins(raw, y_true, calibration["ece_bins"]),
                               reliability_bins(probabilities, y_true, calibration["ece_bins"]),
                               calibration["ece_before"], calibration["ece_after"], calibration["temperature"],
                               out_dir / "reliability.png")
        curve = coverage_curve(probabilities, y_true)
        chosen = None
        if calibration["reject_threshold"] > 0 and calibration["test_accuracy_on_accepted"] is not None:
            chosen = (calibration["test_coverage"], calibration["test_accuracy_on_accepted"])
        plots.plot_coverage(curve["coverage"], curve["accuracy"], out_dir / "coverage.png", chosen,
                            calibration["validation"].get("reject_target_accuracy"))
