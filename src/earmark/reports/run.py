"""The sections of a run's report.html, built from metrics.json, the PNGs beside it and config.yaml.

Every section is optional: a key absent from metrics.json (or a plot not drawn) leaves it out, so
the page renders for old runs, for evaluations on other data and for runs that crashed half-way.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping

from earmark.reports.html import html_image, html_pre, html_table, render_html
from earmark.rundir import METRICS_FILE, REPORT_HTML, RunDir

HEADLINE_METRICS = (
    ("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
    ("macro_precision", "macro precision"), ("macro_recall", "macro recall"), ("macro_f1", "macro F1"),
    ("weighted_precision", "weighted precision"), ("weighted_recall", "weighted recall"),
    ("weighted_f1", "weighted F1"),
)
RUN_FACTS = ("n_clips", "epochs", "fit_seconds", "adapt_epochs", "device_resident")
# PNGs placed in a named section; any other PNG in the folder goes under "Other plots".
PLACED_PNGS = ("embedding_map.png", "curves.png", "confusion.png", "confusion_normalized.png", "per_class.png", "roc.png", "pr.png",
               "reliability.png", "coverage.png", "personalization.png")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _scalars(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The plain values of a dict (numbers, strings), nested dicts and lists left out."""
    return {key: value for key, value in mapping.items() if not isinstance(value, (dict, list))}


def headline_section(metrics: Mapping[str, Any]) -> str:
    """Model beside the majority-class baseline and chance; the accuracy's 95% CI."""
    baseline = metrics.get("majority_baseline") or {}
    labels = metrics.get("labels") or list(metrics.get("per_class") or {})
    chance = {"accuracy": _number(metrics.get("chance_accuracy")),
              "balanced_accuracy": 1.0 / len(labels) if labels else None}
    rows = []
    for key, name in HEADLINE_METRICS:
        value = _number(metrics.get(key))
        if value is None:
            continue
        row: dict[str, Any] = {"metric": name, "model": value, "majority baseline": _number(baseline.get(key)),
                               "chance": chance.get(key)}
        ci = metrics.get("accuracy_ci95") if key == "accuracy" else None
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            row["95% CI"] = f"{ci[0]:.3f}–{ci[1]:.3f}"
        rows.append(row)
    for k, value in sorted((metrics.get("top_k_accuracy") or {}).items(), key=lambda item: int(item[0])):
        rows.append({"metric": f"top-{k} accuracy", "model": _number(value)})
    if not rows:
        return ""
    facts = []
    if metrics.get("n_clips") is not None:
        facts.append(f"{metrics['n_clips']} test clips")
    if baseline.get("label") is not None:
        facts.append(f"the majority baseline always predicts {baseline['label']}")
    facts.append("chance guesses uniformly at random")
    prior = _number(metrics.get("prior_chance_accuracy"))
    if prior is not None:
        facts.append(f"guessing in proportion to the test classes scores {prior:.4f}")
    note = f'<p class="note">{html.escape("; ".join(facts))}.</p>'
    return (html_table(rows, ["metric", "model", "95% CI", "majority baseline", "chance"]) + note
            + _note_list(metrics.get("notes")))


def per_class_section(metrics: Mapping[str, Any], out_dir: Path) -> str:
    per_class = metrics.get("per_class") or {}
    rows = [{"class": label, **_scalars(row)} for label, row in per_class.items() if isinstance(row, Mapping)]
    table = html_table(rows, ["class", "precision", "recall", "f1", "support"]) if rows else ""
    return html_image(out_dir / "per_class.png", "precision, recall and F1 per class") + table


def _per_group_png(metrics: Mapping[str, Any], column: str) -> str:
    """The plot's file name: metrics["per_group_plots"] when the evaluation recorded it (file-safe names)."""
    recorded = metrics.get("per_group_plots") or {}
    return str(recorded.get(column) or f"per_group_{column}.png")


def per_group_sections(metrics: Mapping[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    sections = []
    for column, summary in (metrics.get("per_group") or {}).items():
        if not isinstance(summary, Mapping):
            continue
        groups = summary.get("groups") or {}
        rows = [{column: name, **_scalars(row)} for name, row in groups.items() if isinstance(row, Mapping)]
        worst = summary.get("worst") or []
        fragment = html_image(out_dir / _per_group_png(metrics, column), f"accuracy per {column}")
        if worst:
            fragment += f'<p class="note">Worst {column}s: {", ".join(map(str, worst))}</p>'
        fragment += html_table(rows) if rows else ""
        sections.append((f"Per {column}", fragment))
    return sections


def binary_section(binary: Mapping[str, Any], out_dir: Path) -> str:
    from earmark.reports.markdown import THRESHOLD_IS_A_RECOMMENDATION

    rows = [{"quantity": key, "value": value} for key, value in _scalars(binary).items()]
    fragment = html_table(rows)
    at_threshold = binary.get("at_threshold")
    if isinstance(at_threshold, Mapping) and at_threshold:
        fragment += (f'<p class="note">{html.escape(THRESHOLD_IS_A_RECOMMENDATION)}</p>'
                     "<h3>At the chosen threshold (if applied)</h3>" + html_table([_scalars(at_threshold)]))
    return fragment + html_image(out_dir / "roc.png", "ROC curve") + html_image(out_dir / "pr.png",
                                                                                "precision-recall curve")


def clip_level_section(clip_level: Mapping[str, Any]) -> str:
    rows = [{"aggregation": name, **_scalars(values)} for name, values in clip_level.items()
            if isinstance(values, Mapping)]
    note = '<p class="note">Scores per source file, from the predictions of all its chunks.</p>'
    return note + html_table(rows) if rows else ""


def _note_list(notes: Any) -> str:
    if not isinstance(notes, list) or not notes:
        return ""
    return '<ul class="note">' + "".join(f"<li>{html.escape(str(note))}</li>" for note in notes) + "</ul>"


def calibration_section(calibration: Mapping[str, Any], out_dir: Path) -> str:
    rows = [{"quantity": key, "value": value} for key, value in _scalars(calibration).items()]
    fragment = html_table(rows)
    validation = calibration.get("validation")
    if isinstance(validation, Mapping) and _scalars(validation):
        fragment += "<h3>Fitted on the validation split</h3>" + html_table(
            [{"quantity": key, "value": value} for key, value in _scalars(validation).items()])
        fragment += _note_list(validation.get("notes"))
    return (fragment + html_image(out_dir / "reliability.png", "reliability diagram")
            + html_image(out_dir / "coverage.png", "accuracy against coverage"))


def run_report_sections(metrics: Mapping[str, Any], out_dir: Path, run_dir: Path) -> list[tuple[str, str]]:
    """(heading, HTML fragment) for every part of a run report that has something to show."""
    sections: list[tuple[str, str]] = []

    def add(heading: str, fragment: str) -> None:
        if fragment:
            sections.append((heading, fragment))

    from earmark.reports.leaderboard import leaderboard_html

    add("Test metrics", headline_section(metrics))
    add("Model selection (auto)", leaderboard_html(metrics))
    add("Training curves", html_image(out_dir / "curves.png", "training curves"))
    add("Confusion", html_image(out_dir / "confusion.png", "confusion matrix (counts)")
        + html_image(out_dir / "confusion_normalized.png", "confusion matrix (row-normalised)"))
    add("Per class", per_class_section(metrics, out_dir))
    for heading, fragment in per_group_sections(metrics, out_dir):
        add(heading, fragment)
    if isinstance(metrics.get("binary"), Mapping):
        add(f"Binary: {metrics['binary'].get('positive_label', 'positive class')} against the rest",
            binary_section(metrics["binary"], out_dir))
    if isinstance(metrics.get("clip_level"), Mapping):
        add("Clip level", clip_level_section(metrics["clip_level"]))
    if isinstance(metrics.get("calibration"), Mapping):
        add("Calibration and rejection", calibration_section(metrics["calibration"], out_dir))
    add("Personalization", html_image(out_dir / "personalization.png", "accuracy per group before and after"))
    add("Test clips through the embedding", html_image(out_dir / "embedding_map.png",
                                                        "t-SNE map of the test clips' embeddings, errors marked"))
    placed = set(PLACED_PNGS) | {_per_group_png(metrics, column) for column in metrics.get("per_group") or {}}
    add("Other plots", "".join(html_image(png, png.stem) for png in sorted(out_dir.glob("*.png"))
                               if png.name not in placed))
    facts = [{"fact": key, "value": metrics[key]} for key in RUN_FACTS if key in metrics]
    facts.append({"fact": "run directory", "value": str(run_dir)})
    if Path(out_dir).resolve() != Path(run_dir).resolve():
        facts.append({"fact": "evaluation folder", "value": str(out_dir)})
    add("Run", html_table(facts, float_format="{:.2f}"))
    config = RunDir(run_dir).config_file
    if config.is_file():
        add("Config (config.yaml)", html_pre(config.read_text()))
    return sections


def write_run_report(out_dir: Path, run_dir: Path | None = None) -> Path:
    """Write `out_dir/report.html` for an evaluation: out_dir's metrics.json and PNGs, run_dir's
    config.yaml and training curves (drawn into out_dir/curves.png). run_dir defaults to out_dir."""
    from earmark.reports.run import run_report_sections

    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir
    metrics_path = out_dir / METRICS_FILE
    metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    try:
        from earmark.reports.curves import plot_training_curves

        plot_training_curves(run_dir, out_dir / "curves.png")
    except ImportError:  # tensorboard is optional for the report; the page is written without curves
        pass
    warnings = list(metrics.get("warnings", []))
    if not metrics:
        warnings.insert(0, f"{metrics_path} is missing: no test metrics to show")
    title = f"earmark run {run_dir.resolve().name}"
    if out_dir.resolve() != run_dir.resolve():
        title += f" — evaluation {out_dir.name}"
    page = render_html(title, warnings, run_report_sections(metrics, out_dir, run_dir))
    path = out_dir / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path
