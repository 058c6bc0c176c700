"""What a person reads: the markdown report of an evaluation and its one-line summaries."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

THRESHOLD_IS_A_RECOMMENDATION = (
    "The threshold is a recommendation: predictions, predictions.csv and every other metric here use the most "
    "probable class (argmax); the metrics at the chosen threshold are what you would get if you applied it.")


def markdown_report(run_name: str, metrics: dict[str, Any], context: dict[str, Any]) -> str:
    """A readable report.md: warnings first, headline metrics with the baselines beside them, then each
    analysis metrics.json holds (clip level, binary, calibration, per group, per class) with its plot."""
    lines = [f"# earmark run `{run_name}`", ""]
    for warning in metrics.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ""]
    for note in metrics.get("notes", []):
        lines.append(f"- note: {note}")
    if metrics.get("notes"):
        lines.append("")
    lines += _headline(metrics)
    for section in (_selection, _ensemble, _clip_level, _binary, _calibration, _per_group, _per_class):
        lines += section(metrics)
    lines += ["## Run", ""]
    for key, value in context.items():
        lines.append(f"- {key}: {value}")
    lines.append("")
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   float_format: str = "{:.4f}") -> str:
    """A markdown table; columns default to the keys of the rows in first-seen order. None is an empty
    cell, floats use `float_format`, and a `|` inside a cell is escaped."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        text = "" if value is None else float_format.format(value) if isinstance(value, float) else str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _headline(metrics: dict[str, Any]) -> list[str]:
    low, high = metrics["accuracy_ci95"]
    baseline = metrics["majority_baseline"]
    chance = metrics.get("chance_accuracy", 1 / max(len(metrics["labels"]), 1))
    lines = [
        "## Test metrics",
        "",
        "| metric | model | majority-class baseline | chance |",
        "|---|---|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} (95% CI {low:.3f}–{high:.3f}) | {baseline['accuracy']:.4f} | "
        f"{chance:.4f} (class-prior guess {metrics.get('prior_chance_accuracy', chance):.4f}) |",
        f"| balanced accuracy | {metrics['balanced_accuracy']:.4f} | {baseline['balanced_accuracy']:.4f} | {chance:.4f} |",
        f"| macro F1 | {metrics['macro_f1']:.4f} | {baseline['macro_f1']:.4f} | |",
    ]
    for name in ("macro_precision", "macro_recall", "weighted_precision", "weighted_recall", "weighted_f1"):
        if name in metrics:
            lines.append(f"| {name.replace('_', ' ')} | {metrics[name]:.4f} | | |")
    for k, value in metrics.get("top_k_accuracy", {}).items():
        lines.append(f"| top-{k} accuracy | {value:.4f} | | {min(1.0, int(k) * chance):.4f} |")
    lines += ["", f"Test clips: {metrics['n_clips']}. Majority class: `{baseline['label']}`.", "",
              "![confusion matrix, counts](confusion.png)", "",
              "![confusion matrix, share of each true class](confusion_normalized.png)", ""]
    return lines


def _selection(metrics: dict[str, Any]) -> list[str]:
    """model.name=auto's leaderboard; nothing for a run that auto did not choose."""
    from earmark.reports.leaderboard import COLUMNS, leaderboard_heading, leaderboard_rows

    summary = metrics.get("auto")
    if not isinstance(summary, Mapping):
        return []
    return ["## Model selection (auto)", "", leaderboard_heading(summary) + ".", "",
            markdown_table(leaderboard_rows(summary), COLUMNS), "",
            "Every candidate's row is in leaderboard.csv; the other candidates' runs are in candidates/.", ""]


def _clip_level(metrics: dict[str, Any]) -> list[str]:
    clip = metrics.get("clip_level")
    if not clip:
        return []
    lines = ["## Chunks and files", "",
             f"Each file was cut into chunks ({clip['chunks_per_file']:.1f} per file on average); the metrics above "
             "count chunks. Aggregated to the file:", "",
             "| level | clips | accuracy | balanced accuracy | macro F1 |", "|---|---|---|---|---|",
             f"| chunk | {metrics['n_clips']} | {metrics['accuracy']:.4f} | {metrics['balanced_accuracy']:.4f} | "
             f"{metrics['macro_f1']:.4f} |"]
    for name in ("mean_probability", "majority_vote"):
        row = clip[name]
        lines.append(f"| file, {name.replace('_', ' ')} | {row['n_files']} | {row['accuracy']:.4f} | "
                     f"{row['balanced_accuracy']:.4f} | {row['macro_f1']:.4f} |")
    return lines + [""]


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _binary(metrics: dict[str, Any]) -> list[str]:
    binary = metrics.get("binary")
    if not binary:
        return []
    chosen, default = binary["at_threshold"], binary["at_default_threshold"]
    how = ("chosen on the validation split to maximise " + binary["threshold_metric"].replace("_", " ")
           if binary["threshold_metric"] != "default" else "the default (no validation split chose one)")
    lines = ["## Two classes", "",
             f"Positive class `{binary['positive_label']}` ({binary['prevalence']:.1%} of test clips). "
             f"ROC AUC {_number(binary['roc_auc'])}, average precision {_number(binary['average_precision'])}. "
             f"Decision threshold {binary['threshold']:.4f}, {how}.", "",
             f"{THRESHOLD_IS_A_RECOMMENDATION}", "",
             "| at threshold | accuracy | balanced accuracy | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    for name, row in ((f"{binary['threshold']:.4f} (chosen)", chosen), ("0.5", default)):
        lines.append(f"| {name} | {row['accuracy']:.4f} | {row['balanced_accuracy']:.4f} | {row['precision']:.4f} | "
                     f"{row['recall']:.4f} | {row['f1']:.4f} |")
    return lines + ["", "![ROC](roc.png) ![precision-recall](pr.png)", ""]


def _calibration(metrics: dict[str, Any]) -> list[str]:
    calibration = metrics.get("calibration")
    if not calibration:
        return []
    fit = calibration["validation"]
    lines = ["## Calibration", "",
             f"Temperature T = {calibration['temperature']:.3f}, fitted on {fit['n_val_clips']} validation clips "
             f"(probabilities = softmax(logits / T)). Expected calibration error ({calibration['ece_bins']} bins) "
             f"on the test split: {calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after "
             f"(validation: {fit['val_ece_before']:.4f} → {fit['val_ece_after']:.4f}).", ""]
    for note in fit.get("notes", []):
        if note.startswith("temperature kept"):
            lines += [f"Note: {note}.", ""]
    if calibration["reject_threshold"] > 0:
        target = (f"accuracy {fit['reject_target_accuracy']}" if fit.get("reject_target_accuracy") is not None
                  else f"coverage {fit.get('reject_target_coverage')}")
        lines += [f"Rejection: a prediction whose top probability is below {calibration['reject_threshold']:.4f} "
                  f"is `unknown` (chosen on validation for {target}: coverage {fit['val_coverage']:.3f}, accuracy "
                  f"{_number(fit['val_accuracy_on_accepted'])}). On the test split: coverage "
                  f"{calibration['test_coverage']:.3f}, accuracy on accepted clips "
                  f"{_number(calibration['test_accuracy_on_accepted'])}.", ""]
    else:
        lines += ["Rejection is off (set evaluation.reject_target_accuracy or reject_target_coverage).", ""]
    return lines + ["![reliability diagram](reliability.png) ![accuracy vs coverage](coverage.png)", ""]


def _per_group(metrics: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for column, analysis in metrics.get("per_group", {}).items():
        groups = analysis["groups"]
        lines += [f"## Per {column}", "",
                  f"{len(groups)} {column} value(s) in the test split; the worst:", "",
                  f"| {column} | clips | accuracy |", "|---|---|---|"]
        for name in analysis["worst"]:
            lines.append(f"| {name} | {groups[name]['n_clips']} | {groups[name]['accuracy']:.4f} |")
        plot = metrics.get("per_group_plots", {}).get(column)
        lines += [""] + ([f"![accuracy per {column}]({plot})", ""] if plot and groups else [])
    return lines


def _ensemble(metrics: dict[str, Any]) -> list[str]:
    """An ensemble's members beside it: each run's weight, rate, temperature and test accuracy alone."""
    members = metrics.get("ensemble", {}).get("members")
    if not members:
        return []
    rows = [{"run": m["run"], "model": m["model"], "sample rate (Hz)": m["sample_rate_hz"], "weight": m["weight"],
             "temperature": m["temperature"], "test accuracy alone": m["test_accuracy"]} for m in members]
    return ["## Ensemble members", "", "Calibrated probabilities averaged with these weights:", "",
            markdown_table(rows), ""]


def _per_class(metrics: dict[str, Any]) -> list[str]:
    lines = ["## Per class", "", "![recall and F1 per class](per_class.png)", "",
             "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, row in metrics["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    return lines + [""]


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """The evaluation in a few printed lines beyond the headline table: top-k, files, two classes,
    calibration, the worst groups and the notes (warnings are printed apart)."""
    lines = []
    if metrics.get("top_k_accuracy"):
        lines.append("top-k accuracy: " + ", ".join(f"top-{k} {v:.4f}" for k, v in metrics["top_k_accuracy"].items()))
    clip = metrics.get("clip_level")
    if clip:
        lines.append(f"per file ({clip['mean_probability']['n_files']} files): accuracy "
                     f"{clip['mean_probability']['accuracy']:.4f} by mean probability, "
                     f"{clip['majority_vote']['accuracy']:.4f} by majority vote")
    binary = metrics.get("binary")
    if binary:
        chosen = binary["at_threshold"]
        lines.append(f"'{binary['positive_label']}' as positive: ROC AUC {_number(binary['roc_auc'])}, average "
                     f"precision {_number(binary['average_precision'])}; if you applied the recommended threshold "
                     f"{binary['threshold']:.4f} ({binary['threshold_metric'].replace('_', ' ')}; predictions use "
                     f"argmax): balanced accuracy {chosen['balanced_accuracy']:.4f}, F1 {chosen['f1']:.4f}")
    calibration = metrics.get("calibration")
    if calibration:
        line = (f"calibration: temperature {calibration['temperature']:.3f}, test ECE {calibration['ece_before']:.4f} "
                f"→ {calibration['ece_after']:.4f}")
        if calibration["reject_threshold"] > 0:
            line += (f"; rejecting below {calibration['reject_threshold']:.3f} keeps {calibration['test_coverage']:.1%}"
                     f" of test clips at accuracy {_number(calibration['test_accuracy_on_accepted'])}")
        lines.append(line)
    for column, analysis in metrics.get("per_group", {}).items():
        worst = ", ".join(f"{name} {analysis['groups'][name]['accuracy']:.3f}" for name in analysis["worst"])
        lines.append(f"per {column} ({len(analysis['groups'])}): worst {worst}")
    lines += [f"note: {note}" for note in metrics.get("notes", [])]
    return lines
