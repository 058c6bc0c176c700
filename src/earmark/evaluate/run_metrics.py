"""The analyses added to a run's metrics: per group, clip level, leakage, binary curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from earmark.config import Config
from earmark.evaluate.calibrate import CALIBRATION_FILE, calibration_report


@dataclass
class PlotData:
    """What the analyses computed and the plots draw again (kept out of metrics.json)."""

    binary_curves: dict[str, Any] | None = None  # binary.curves() of the positive class
    reliability: dict[str, dict] | None = None  # reliability_bins "before" (T = 1) and "after"


def add_analyses(metrics: dict[str, Any], run_dir: Path, config: Config, test_items: pd.DataFrame,
                  y_true: np.ndarray, logits: np.ndarray, probabilities: np.ndarray, labels: list[str],
                  group_columns: list[str], predictor, train_items: pd.DataFrame | None,
                 calibration_fit: dict[str, Any] | None) -> PlotData:
    """binary, per_group (for `group_columns`), leakage warnings, clip_level and calibration entries."""
    from earmark.evaluate.analysis import clip_level_metrics, leakage, leakage_warnings, per_group_accuracy
    from earmark.evaluate.binary import binary_metrics, curves, positive_index

    settings = config.evaluation
    plot_data = PlotData()
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
