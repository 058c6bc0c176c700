"""The plots of one evaluation: confusion, per group, binary curves, reliability, coverage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from earmark.evaluate.run_metrics import PlotData


def draw_plots(metrics: dict[str, Any], plot_data: PlotData, probabilities: np.ndarray, y_true: np.ndarray,
                out_dir: Path) -> None:
    """Every PNG: confusion (counts and normalised), per class, per group, ROC/PR, reliability, coverage."""
    from earmark.evaluate.calibration import coverage_curve
    from earmark.files import safe_name
    from earmark.reports import plots

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
