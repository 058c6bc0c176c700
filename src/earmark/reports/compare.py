"""What `earmark compare` writes: compare.json, compare.md, compare.html and the per-class difference plot."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from earmark.errors import EarmarkError
from earmark.evaluate.compare import Comparison
from earmark.reports.html import html_image, html_table, render_html
from earmark.reports.markdown import markdown_table

OUTPUT_FILES = ("compare.json", "compare.md", "compare.html", "per_class_difference.png")
HOW_TO_READ = (
    "Every run was scored on the same test clips, so the comparison is paired. "
    "McNemar's exact test counts the clips only one of two models gets right: a p-value below 0.05 means a gap "
    "this large would arise by chance less than 1 time in 20 if the two models were equally accurate. "
    "The 95% CI of a difference comes from {resamples:,} paired bootstrap resamples of the test clips: "
    "if it excludes 0 the difference is unlikely to be chance; its width says how precisely the test set measures it. "
    "A non-significant result does not mean the models are equal, only that this test set cannot tell them apart."
)


def _interval(values: list[float]) -> str:
    return f"{values[0]:+.3f} to {values[1]:+.3f}"


def _run_rows(comparison: Comparison) -> list[dict[str, Any]]:
    rows = []
    for row in comparison.runs:
        low, high = row["accuracy_ci95"]
        rows.append({"run": row["run"], "accuracy": row["accuracy"], "accuracy 95% CI": f"{low:.3f}–{high:.3f}",
                     "balanced accuracy": row["balanced_accuracy"], "macro F1": row["macro_f1"],
                     "epochs": row.get("epochs"), "fit seconds": row.get("fit_seconds")})
    return rows


def _difference_rows(comparison: Comparison) -> list[dict[str, Any]]:
    return [{"run": row["run"], "against": row["against"], "Δ accuracy": row["accuracy_difference"],
             "Δ accuracy 95% CI": _interval(row["accuracy_difference_ci95"]),
             "Δ macro F1": row["macro_f1_difference"],
             "Δ macro F1 95% CI": _interval(row["macro_f1_difference_ci95"]),
             "only reference right": row["mcnemar"]["only_a_correct"],
             "only this run right": row["mcnemar"]["only_b_correct"], "McNemar p": f"{row['mcnemar']['p_value']:.3g}",
             "significant (p<0.05)": "yes" if row["significant"] else "no"} for row in comparison.differences]


def markdown_comparison(comparison: Comparison) -> str:
    lines = [f"# earmark compare: {len(comparison.runs)} runs on {comparison.n_clips} shared test clips", ""]
    lines += [f"> **Warning:** {warning}" for warning in comparison.warnings]
    lines += ["", "## Runs", "", markdown_table(_run_rows(comparison)), "",
              f"## Differences against {comparison.runs[0]['run']}", "",
              markdown_table(_difference_rows(comparison)), ""]
    lines += [f"- {row['verdict']}" for row in comparison.differences]
    lines += ["", "## Per class", "", markdown_table(comparison.per_class), "",
              "![per-class F1 differences](per_class_difference.png)", "", "## How to read this", "",
              _how_to_read(comparison), ""]
    return "\n".join(lines)


def plot_class_differences(comparison: Comparison, path: Path) -> Path:
    """Horizontal bars: F1 of each run minus the first run's, per class (one colour per run)."""
    from earmark.reports.plots import pyplot, save_figure

    others = [row["run"] for row in comparison.runs[1:]]
    labels = comparison.labels
    height = 0.8 / len(others)
    y = np.arange(len(labels))
    fig, ax = pyplot().subplots(figsize=(7.5, max(2.5, 0.32 * len(labels) * max(1, len(others) * 0.6) + 1.2)))
    for i, name in enumerate(others):
        deltas = [row[f"Δf1 {name}"] for row in comparison.per_class]
        ax.barh(y + (i - (len(others) - 1) / 2) * height, deltas, height, label=name)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8 if len(labels) > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlabel(f"F1 minus {comparison.runs[0]['run']}'s F1 (right: better)")
    ax.set_title("Per-class F1 difference against the first run")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=100)


def write_comparison(comparison: Comparison, out_dir: Path) -> Path:
    """Write the four files into out_dir (created); refuses a folder that already holds a comparison."""
    out_dir = Path(out_dir)
    existing = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if existing:
        raise EarmarkError(f"{out_dir} already holds {', '.join(existing)}; give a new --out folder "
                           f"(compare never overwrites)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(comparison.to_dict(), indent=1))
    (out_dir / "compare.md").write_text(markdown_comparison(comparison))
    plot = plot_class_differences(comparison, out_dir / "per_class_difference.png")
    verdicts = "<ul>" + "".join(f"<li>{html.escape(row['verdict'])}</li>" for row in comparison.differences) + "</ul>"
    sections = [("Runs", html_table(_run_rows(comparison))),
                (f"Differences against {comparison.runs[0]['run']}",
                 html_table(_difference_rows(comparison)) + verdicts),
                ("Per-class F1 difference", html_image(plot, "per-class F1 difference against the first run")),
                ("Per class", html_table(comparison.per_class, float_format="{:.3f}")),
                ("How to read this", f"<p>{html.escape(_how_to_read(comparison))}</p>")]
    title = f"earmark compare: {len(comparison.runs)} runs on {comparison.n_clips} shared test clips"
    (out_dir / "compare.html").write_text(render_html(title, comparison.warnings, sections), encoding="utf-8")
    comparison.out_dir = out_dir
    return out_dir


def _how_to_read(comparison: Comparison) -> str:
    resamples = comparison.differences[0]["bootstrap"]["n"] if comparison.differences else 0
    return HOW_TO_READ.format(resamples=resamples)
