"""The summary of a cross-validation: per-fold table, mean ± std, pooled confusion and metrics.

Plain rows in, files out: cv_summary.json, cv_confusion.png, cv_report.md, cv_report.html.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config
from earmark.errors import EarmarkError

SUMMARY_FILE, MARKDOWN_FILE, HTML_FILE, CONFUSION_FILE = ("cv_summary.json", "cv_report.md", "cv_report.html",
                                                          "cv_confusion.png")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
METRIC_TITLES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}
MAX_GROUPS_SHOWN = 10
UNEQUAL_FOLDS = 4  # test folds whose sizes differ more than this many times get a warning


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of per-fold scores."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def pooled_predictions(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Every fold's predictions.csv (path, true, predicted, ...) stacked, with a `fold_run` column."""
    from earmark.evaluate.predictions import PREDICTIONS_FILE, read_predictions

    frames = []
    for run_dir in run_dirs:
        if not (Path(run_dir) / PREDICTIONS_FILE).is_file():
            raise EarmarkError(f"{Path(run_dir) / PREDICTIONS_FILE} is missing: fold {Path(run_dir).name} did not "
                               "finish; re-run with --resume to train it")
        frames.append(read_predictions(run_dir).assign(fold_run=Path(run_dir).name))
    return pd.concat(frames, ignore_index=True)


def pooled_metrics(true: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and the confusion matrix over all folds' test clips together."""
    from sklearn.metrics import confusion_matrix

    from earmark.data.labels import class_ids
    from earmark.evaluate.metrics import label_metrics

    y_true, y_pred = class_ids(true, labels), class_ids(predicted, labels)
    return {"n_clips": int(len(y_true)), **label_metrics(y_true, y_pred, len(labels)),
            "confusion": confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).tolist(),
            "labels": list(labels)}


def write_cv_summary(cv_dir: Path, rows: list[dict[str, Any]], labels: list[str], config: Config,
                     folds_description: str, extra_warnings: Sequence[str], total_seconds: float,
                     decoded: dict[str, int]) -> dict[str, Any]:
    """Write cv_summary.json, cv_confusion.png, cv_report.md and cv_report.html; return the summary."""
    from earmark.reports.plots import plot_confusion

    predictions = pooled_predictions([Path(row["run_dir"]) for row in rows])
    pooled = pooled_metrics(predictions["true"], predictions["predicted"], labels)
    warnings = list(extra_warnings) + unequal_folds_warning(rows)
    warnings += [f"fold {row['fold']}: {warning}" for row in rows for warning in row["warnings"]]
    summary = {
        "folds": folds_description,
        "n_folds": len(rows),
        "per_fold": rows,
        **{metric: mean_std([row[metric] for row in rows]) for metric in METRICS},
        "pooled": pooled,
        "warnings": warnings,
        "total_seconds": total_seconds,
        "fit_seconds": float(sum(row["fit_seconds"] or 0.0 for row in rows)),
        "decoded": decoded,
        "model": config.model.name,
        "monitor": config.train.monitor,
    }
    cv_dir = Path(cv_dir)
    (cv_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    plot_confusion(pooled["confusion"], labels, cv_dir / CONFUSION_FILE,
                   title=f"Confusion pooled over {len(rows)} test folds")
    (cv_dir / MARKDOWN_FILE).write_text(markdown_cv_report(cv_dir.name, summary))
    (cv_dir / HTML_FILE).write_text(html_cv_report(cv_dir, summary, config), encoding="utf-8")
    return summary


def fold_table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One display row per fold: sizes, the three scores, the held-out groups (shortened)."""
    table = []
    for row in summary["per_fold"]:
        groups = row["held_out_groups"]
        shown = ", ".join(groups[:MAX_GROUPS_SHOWN])
        if len(groups) > MAX_GROUPS_SHOWN:
            shown += f", … ({len(groups)})"
        table.append({"fold": row["fold"], "n_train": row["n_train"], "n_val": row["n_val"], "n_test": row["n_test"],
                      "accuracy": row["accuracy"], "balanced accuracy": row["balanced_accuracy"],
                      "macro F1": row["macro_f1"], "held-out groups": shown or "-",
                      "warnings": len(row["warnings"])})
    return table


def headline(summary: dict[str, Any]) -> list[str]:
    """'accuracy: pooled 0.9100 (every test clip once, 414 clips); per-fold mean 0.9123 ± 0.0210 (unweighted,
    3 folds of 90–180 clips)', one line per metric: the pooled score first, as folds may differ in size."""
    sizes = [row["n_test"] for row in summary["per_fold"]]
    spread = f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}–{max(sizes)}"
    return [f"{METRIC_TITLES[m]}: pooled {summary['pooled'][m]:.4f} (every test clip once, "
            f"{summary['pooled']['n_clips']} clips); per-fold mean {summary[m]['mean']:.4f} ± {summary[m]['std']:.4f} "
            f"(unweighted, {len(sizes)} folds of {spread} clips)" for m in METRICS]


def unequal_folds_warning(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A warning when the largest test fold holds over UNEQUAL_FOLDS times the smallest one's clips."""
    sizes = [row["n_test"] for row in rows]
    if not sizes or max(sizes) <= UNEQUAL_FOLDS * max(1, min(sizes)):
        return []
    return [f"the test folds hold {min(sizes)} to {max(sizes)} clips: the per-fold mean weighs each fold alike, so "
            f"read the pooled score (every clip once)"]


def markdown_cv_report(name: str, summary: dict[str, Any]) -> str:
    from earmark.reports.markdown import markdown_table

    lines = [f"# earmark cross-validation `{name}`", ""]
    lines += [f"> **Warning:** {warning}" for warning in summary["warnings"]]
    if summary["warnings"]:
        lines.append("")
    lines += [f"Folds: {summary['folds']}. Model `{summary['model']}`. Each fold is a complete run in "
              f"`fold-<fold>/`; its test split is the held-out fold, never seen in training or validation.", "",
              "## Pooled (every test clip once) and per-fold mean ± standard deviation", "",
              markdown_table([{"metric": METRIC_TITLES[m], "pooled over all test clips": summary["pooled"][m],
                               "per-fold mean ± std (unweighted, ddof=1)": f"{summary[m]['mean']:.4f} ± "
                               f"{summary[m]['std']:.4f}"} for m in METRICS])]
    lines += ["", "## Per fold", "", markdown_table(fold_table_rows(summary))]
    lines += ["", f"## Pooled confusion ({summary['pooled']['n_clips']} test clips)", "",
              f"![pooled confusion matrix]({CONFUSION_FILE})", "",
              timing_text(summary) + f"; decoded {summary['decoded']['n_decoded']} file(s), reused "
              f"{summary['decoded']['n_reused']}.", ""]
    return "\n".join(lines)


def timing_text(summary: dict[str, Any]) -> str:
    """Wall time and training time, saying which folds an earlier, interrupted invocation did."""
    rows = summary["per_fold"]
    kept = [row["fold"] for row in rows if row.get("reused")]
    resumed = [row["fold"] for row in rows if row.get("resumed")]
    if not kept and not resumed:
        return f"Total time {summary['total_seconds']:.1f} s (training {summary['fit_seconds']:.1f} s)"
    parts = ([f"fold(s) {', '.join(kept)} kept from before"] if kept else []) + (
        [f"fold(s) {', '.join(resumed)} resumed from a checkpoint, their training time counts only the resumed "
         f"part"] if resumed else [])
    return (f"Resumed: {'; '.join(parts)}. This invocation took {summary['total_seconds']:.1f} s; training over "
            f"all folds {summary['fit_seconds']:.1f} s")


def html_cv_report(cv_dir: Path, summary: dict[str, Any], config: Config) -> str:
    from earmark.reports.html import html_image, html_pre, html_table, render_html

    means = [{"metric": METRIC_TITLES[m], "pooled (every test clip once)": summary["pooled"][m],
              "per-fold mean (unweighted)": summary[m]["mean"], "std (ddof=1)": summary[m]["std"]} for m in METRICS]
    timing = (f"<p>Folds: {html.escape(str(summary['folds']))}. {html.escape(timing_text(summary))}; decoded "
              f"{summary['decoded']['n_decoded']} file(s), reused "
              f"{summary['decoded']['n_reused']} from the cache. Each fold's test split is its held-out fold, "
              f"never seen in training or validation.</p>")
    sections = [("Pooled and per-fold scores", timing + html_table(means)),
                ("Per fold", html_table(fold_table_rows(summary))),
                (f"Pooled confusion ({summary['pooled']['n_clips']} test clips)",
                 html_image(cv_dir / CONFUSION_FILE, "confusion matrix pooled over all folds")),
                ("Config", html_pre(config.to_yaml()))]
    return render_html(f"earmark cross-validation {cv_dir.name}", summary["warnings"], sections)
