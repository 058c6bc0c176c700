"""Score a run: predict the evaluated clips with checkpoints/best.ckpt, compute every metric and analysis,
write predictions.csv, the PNGs, report.md, metrics.json and report.html.

Also the step between training and evaluation, `fit_on_validation`: temperature scaling, an optional
rejection threshold and (two classes) the decision threshold, fitted on the validation split's logits,
written into best.ckpt's buffers and calibration.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, EvaluationConfig, load_config
from earmark.errors import EarmarkError

CALIBRATION_FILE = "calibration.json"
PREDICTIONS_FILE = "predictions.csv"
PROBABILITY_PREFIX = "p_"  # predictions.csv's probability columns: p_<label>
# read back as text, so a label "01" stays "01" and a label "NA" stays "NA"
PREDICTIONS_TEXT_COLUMNS = ("path", "true", "predicted", "group", "decision")


def predict_item_logits(predictor, items: pd.DataFrame, waves: np.ndarray) -> tuple[np.ndarray, list | None]:
    """Logits (N, C) of `items` (rows into `waves`), before temperature scaling, and the groups given to a
    personalized model (each clip's, e.g. its speaker; None for other models)."""
    groups = None
    if predictor.uses_groups:
        from earmark.personalization import clip_groups

        groups = clip_groups(items, predictor.module.model.group_column)
    return predictor.predict_logits(waves[items["row"].to_numpy()], groups), groups


# ---------------------------------------------------------------- fitted on validation


def fit_calibration(logits: np.ndarray, y_true: np.ndarray, labels: Sequence[str],
                    settings: EvaluationConfig) -> dict[str, Any]:
    """calibration.json's content from validation logits (N, C) and class ids (N,): T minimising the NLL,
    the rejection threshold (`settings.reject_target_*`) and, for two classes, the decision threshold."""
    from earmark.binary import choose_threshold, positive_index
    from earmark.calibration import (choose_reject_threshold, expected_calibration_error, fit_temperature,
                                     negative_log_likelihood, softmax)

    temperature = fit_temperature(logits, y_true) if settings.calibrate else 1.0
    calibrated = softmax(logits, temperature)
    fit: dict[str, Any] = {
        "fitted": True, "n_val_clips": int(len(y_true)), "calibrated": settings.calibrate,
        "temperature": temperature, "ece_bins": settings.ece_bins,
        "val_nll_before": negative_log_likelihood(logits, y_true, 1.0),
        "val_nll_after": negative_log_likelihood(logits, y_true, temperature),
        "val_ece_before": expected_calibration_error(softmax(logits), y_true, settings.ece_bins),
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
    return fit


def store_calibration(path: Path, checkpoint: dict[str, Any], predictor, temperature: float,
                      reject_threshold: float) -> None:
    """Set the `temperature_` and `reject_threshold_` buffers on the loaded predictor's module and in its
    checkpoint dict (read from `path`), then write the checkpoint back once, atomically."""
    import torch

    from earmark.training import save_checkpoint_atomically

    predictor.module.temperature_.fill_(float(temperature))
    predictor.module.reject_threshold_.fill_(float(reject_threshold))
    predictor.reject_threshold = float(reject_threshold)
    checkpoint["state_dict"]["temperature_"] = torch.tensor(float(temperature))
    checkpoint["state_dict"]["reject_threshold_"] = torch.tensor(float(reject_threshold))
    save_checkpoint_atomically(checkpoint, path)


def fit_on_validation(run_dir: Path, val_items: pd.DataFrame, waves: np.ndarray, labels: Sequence[str],
                      settings: EvaluationConfig):
    """Fit calibration and thresholds on the validation clips' logits (`fit_calibration`), store T and the
    rejection threshold in best.ckpt (read once, written once) and write calibration.json.

    Returns best.ckpt's calibrated `Predictor`, for the evaluation that follows; None without validation
    clips (nothing is fitted and calibration.json says why)."""
    import torch

    from earmark.evaluation import class_ids
    from earmark.predict import Predictor, find_checkpoint
    from earmark.training import read_checkpoint

    run_dir = Path(run_dir)
    if len(val_items) == 0:
        fit: dict[str, Any] = {"fitted": False, "reason": "no validation split: calibration and thresholds "
                               "were not fitted (temperature 1, no rejection, binary threshold 0.5)"}
        (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
        return None
    path = find_checkpoint(run_dir, "best")
    checkpoint, module = read_checkpoint(path)
    predictor = Predictor(module, "cuda" if torch.cuda.is_available() else "cpu")
    logits, _ = predict_item_logits(predictor, val_items, waves)
    fit = fit_calibration(logits, class_ids(val_items["label"], labels), labels, settings)
    store_calibration(path, checkpoint, predictor, fit["temperature"], fit["reject_threshold"])
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
    return predictor


def _read_calibration(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- predictions.csv


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
        table[f"{PROBABILITY_PREFIX}{label}"] = probabilities[:, i].round(6)
    return table


def read_predictions(folder: Path) -> pd.DataFrame:
    """`folder/predictions.csv` as `predictions_table` wrote it: labels, paths and groups as text (never
    numbers or NaN), probabilities and start_s as numbers. Raises EarmarkError when the file or one of
    path/true/predicted is missing."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        raise EarmarkError(f"{path} is missing")
    table = pd.read_csv(path, dtype={column: "str" for column in PREDICTIONS_TEXT_COLUMNS}, keep_default_na=False)
    missing = [column for column in ("path", "true", "predicted") if column not in table]
    if missing:
        raise EarmarkError(f"{path} lacks the column(s) {', '.join(missing)}; it was not written by earmark")
    return table


# ---------------------------------------------------------------- evaluation


@dataclass
class PlotData:
    """What the analyses computed and the plots draw again (kept out of metrics.json)."""

    binary_curves: dict[str, Any] | None = None  # binary.curves() of the positive class
    reliability: dict[str, dict] | None = None  # reliability_bins "before" (T = 1) and "after"


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


def evaluate_run(run_dir: Path, test_items: pd.DataFrame, waves: np.ndarray, labels: list[str],
                 out_dir: Path | None = None, *, config: Config | None = None, group_by: Sequence[str] = (),
                 extra: dict[str, Any] | None = None, predictor=None) -> dict[str, Any]:
    """Score the run's best checkpoint on `test_items` (rows into `waves`) and write every artifact into
    `out_dir` (default: the run directory). `config`: the run's (default: its config.yaml); `group_by`:
    metadata columns analysed per group besides the defaults; `extra`: entries added to metrics.json;
    `predictor`: best.ckpt already loaded (default: loaded from the run)."""
    from earmark.analysis import analysed_columns
    from earmark.calibration import softmax
    from earmark.evaluation import class_ids, classification_metrics
    from earmark.html_report import write_run_report
    from earmark.predict import Predictor
    from earmark.reports import markdown_report

    run_dir = Path(run_dir)
    config = _run_config(run_dir, config)
    settings = config.evaluation
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = predictor if predictor is not None else Predictor.from_run(run_dir)
    if list(predictor.labels) != list(labels):
        raise EarmarkError(f"the data's classes {labels} differ from the run's {list(predictor.labels)}")
    test_items = test_items.reset_index(drop=True)
    group_columns = analysed_columns(test_items, config.split.group_by, [*group_by, *settings.group_by])
    logits, groups = predict_item_logits(predictor, test_items, waves)
    probabilities = softmax(logits, float(predictor.module.temperature_))  # what the predictor returns
    y_true = class_ids(test_items["label"], labels)
    metrics = classification_metrics(y_true, probabilities, labels, top_k=settings.top_k)
    metrics["notes"] = []
    reject_threshold = float(predictor.module.reject_threshold_)
    predictions_table(test_items, probabilities, labels, groups, reject_threshold).to_csv(
        out_dir / PREDICTIONS_FILE, index=False)
    if groups is not None:
        from earmark.personalization import write_personalization

        write_personalization(run_dir, out_dir, predictor, waves[test_items["row"].to_numpy()], y_true,
                              probabilities, groups)
    plot_data = _add_analyses(metrics, run_dir, config, test_items, y_true, logits, probabilities, labels,
                              group_columns, predictor)
    metrics.update(extra or {})
    _draw_plots(metrics, plot_data, probabilities, y_true, out_dir)
    context = {"run directory": run_dir, "checkpoint": "checkpoints/best.ckpt"}
    (out_dir / "report.md").write_text(markdown_report(run_dir.name, metrics, context))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    write_run_report(out_dir, run_dir)  # reads metrics.json and the PNGs just written
    # where the files went: returned to the caller, not saved (metrics.json stays free of paths)
    return {**metrics, "evaluation_dir": str(out_dir)}


def write_untested_metrics(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a run whose test split was deliberately not evaluated (a tuning trial): the
    training facts in `extra` only; `earmark evaluate <run>` scores it later."""
    metrics = {"test_evaluated": False, **extra,
               "notes": ["the test split was not evaluated (tuning trial); `earmark evaluate` this run to score it"]}
    (Path(run_dir) / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _add_analyses(metrics: dict[str, Any], run_dir: Path, config: Config, test_items: pd.DataFrame,
                  y_true: np.ndarray, logits: np.ndarray, probabilities: np.ndarray, labels: list[str],
                  group_columns: list[str], predictor) -> PlotData:
    """binary, per_group (for `group_columns`), leakage warnings, clip_level and calibration entries."""
    from earmark.analysis import clip_level_metrics, leakage, leakage_warnings, per_group_accuracy
    from earmark.binary import binary_metrics, curves, positive_index

    settings = config.evaluation
    plot_data = PlotData()
    calibration_fit = _read_calibration(run_dir)
    if len(labels) == 2:
        fitted = (calibration_fit or {}).get("binary")
        if fitted and fitted["positive_label"] in labels:
            positive, threshold, metric = labels.index(fitted["positive_label"]), fitted["threshold"], \
                fitted["threshold_metric"]
        else:
            positive, threshold, metric = positive_index(labels, settings.positive_label), 0.5, "default"
            metrics["notes"].append("binary decision threshold 0.5: none was chosen on a validation split")
        plot_data.binary_curves = curves(y_true == positive, probabilities[:, positive])
        metrics["binary"] = binary_metrics(y_true, probabilities, labels, positive, threshold, metric,
                                           plot_data.binary_curves)
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
    calibration, plot_data.reliability = calibration_report(calibration_fit, logits, probabilities, y_true, predictor,
                                                            settings.ece_bins)
    if calibration is not None:
        metrics["calibration"] = calibration
        metrics["warnings"] += [f"calibration: {note}" for note in calibration["validation"].get("notes", [])]
    else:
        reason = (calibration_fit or {}).get("reason", f"no {CALIBRATION_FILE} in the run (it predates calibration)")
        metrics["notes"].append(f"calibration skipped: {reason}")
    return plot_data


def calibration_report(fit: dict[str, Any] | None, logits: np.ndarray, probabilities: np.ndarray,
                       y_true: np.ndarray, predictor, n_bins: int) -> tuple[dict[str, Any] | None, dict | None]:
    """(metrics.json's `calibration`, the reliability bins "before" and "after" for the plot): the stored
    temperature and rejection threshold, test ECE before (T = 1, from the logits) and after (the calibrated
    `probabilities`), test coverage and accuracy on the accepted clips. (None, None) when nothing was fitted."""
    from earmark.calibration import ece_of_bins, rejection_outcome, reliability_bins, softmax

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


def _draw_plots(metrics: dict[str, Any], plot_data: PlotData, probabilities: np.ndarray, y_true: np.ndarray,
                out_dir: Path) -> None:
    """Every PNG: confusion (counts and normalised), per class, per group, ROC/PR, reliability, coverage."""
    from earmark import plots
    from earmark.calibration import coverage_curve
    from earmark.fetch.names import safe_name

    labels = metrics["labels"]
    plots.plot_confusion(metrics["confusion"], labels, out_dir / "confusion.png")
    plots.plot_confusion(metrics["confusion"], labels, out_dir / "confusion_normalized.png", normalized=True)
    plots.plot_per_class(metrics["per_class"], out_dir / "per_class.png")
    metrics["per_group_plots"] = {column: f"per_group_{safe_name(column, 'column')}.png"
                                  for column in metrics["per_group"]}
    for column, analysis in metrics["per_group"].items():
        if analysis["groups"]:
            plots.plot_per_group(column, analysis, metrics["accuracy"], out_dir / metrics["per_group_plots"][column])
    binary = metrics.get("binary")
    if binary is not None and plot_data.binary_curves is not None:
        found, point = plot_data.binary_curves, binary["at_threshold"]
        plots.plot_roc(found["fpr"], found["tpr"], binary["roc_auc"], binary["positive_label"], out_dir / "roc.png",
                       (1 - point["specificity"], point["recall"]))
        plots.plot_pr(found["precision"], found["recall"], binary["average_precision"], binary["prevalence"],
                      binary["positive_label"], out_dir / "pr.png", (point["recall"], point["precision"]))
    calibration = metrics.get("calibration")
    if calibration is not None and plot_data.reliability is not None and len(y_true):
        plots.plot_reliability(plot_data.reliability["before"], plot_data.reliability["after"],
                               calibration["ece_before"], calibration["ece_after"], calibration["temperature"],
                               out_dir / "reliability.png")
        curve = coverage_curve(probabilities, y_true)
        chosen = None
        if calibration["reject_threshold"] > 0 and calibration["test_accuracy_on_accepted"] is not None:
            chosen = (calibration["test_coverage"], calibration["test_accuracy_on_accepted"])
        plots.plot_coverage(curve["coverage"], curve["accuracy"], out_dir / "coverage.png", chosen,
                            calibration["validation"].get("reject_target_accuracy"))
