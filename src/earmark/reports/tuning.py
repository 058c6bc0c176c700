"""What a person looks at after `earmark tune`: the optimisation history and a short report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from earmark.config import Config

MARKDOWN_FILE, HTML_FILE = "tune_report.md", "tune_report.html"


def plot_history(table: pd.DataFrame, monitor: str, direction: str, path: Path) -> Path:
    """Each finished trial's objective (dots), pruned trials at their last reported value (grey x),
    and the best value so far (a step line)."""
    from earmark.reports.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7.0, 4.0))
    complete = table[table["state"] == "COMPLETE"].sort_values("number")
    if len(complete):
        values = complete["value"].to_numpy(dtype=float)
        best = np.minimum.accumulate(values) if direction == "minimize" else np.maximum.accumulate(values)
        ax.plot(complete["number"], values, "o", color="#2b6cb0", label="trial")
        last = int(table["number"].max())  # the best-so-far line runs to the last trial, pruned ones included
        ax.step(list(complete["number"]) + [last], list(best) + [best[-1]], where="post", color="#c53030",
                label="best so far")
    pruned = table[(table["state"] == "PRUNED") & table["last_reported"].notna()]
    if len(pruned):
        ax.plot(pruned["number"], pruned["last_reported"].astype(float), "x", color="#718096",
                label="pruned (last reported)")
    ax.set_xlabel("trial")
    ax.set_ylabel(monitor)
    ax.set_title(f"Optimisation history ({direction} validation {monitor})")
    if len(complete) or len(pruned):
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_tune_reports(tune_dir: Path, summary: dict[str, Any], table: pd.DataFrame, config: Config) -> None:
    (tune_dir / MARKDOWN_FILE).write_text(markdown_tune_report(tune_dir.name, summary, table))
    (tune_dir / HTML_FILE).write_text(html_tune_report(tune_dir, summary, table), encoding="utf-8")


def _display_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    shown = table.drop(columns=["run_dir", "last_reported"], errors="ignore")
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in shown.to_dict("records")]


def markdown_tune_report(name: str, summary: dict[str, Any], table: pd.DataFrame) -> str:
    from earmark.reports.markdown import markdown_table

    best = [{"parameter": key, "best value": value} for key, value in summary["best_params"].items()]
    lines = [f"# earmark hyper-parameter search `{name}`", "",
             f"Objective: {summary['objective']}.", "",
             f"Best: trial {summary['best_trial']}, validation {summary['monitor']} {summary['best_value']:.4f}, "
             f"run `{summary['best_run_dir']}`; `earmark train best_config.yaml` reproduces it.", "",
             markdown_table(best, ["parameter", "best value"], float_format="{}"), "", "## Trials", "",
             markdown_table(_display_rows(table), float_format="{:.4g}"), "",
             "![optimisation history](optimization_history.png)", "",
             f"{sum(summary['n_trials'].values())} trial(s) in {summary['seconds']:.1f} s this session.", ""]
    return "\n".join(lines)


def html_tune_report(tune_dir: Path, summary: dict[str, Any], table: pd.DataFrame) -> str:
    from earmark.reports.html import html_image, html_pre, html_table, render_html

    best = [{"parameter": key, "best value": value} for key, value in summary["best_params"].items()]
    intro = html_table([{"objective": summary["objective"], "best trial": summary["best_trial"],
                         f"best validation {summary['monitor']}": summary["best_value"],
                         "seconds (this session)": summary["seconds"]}])
    warnings = [] if summary["n_trials"].get("COMPLETE", 0) > 1 else [
        "only one trial completed: nothing was compared"]
    sections = [("Best trial", intro + html_table(best)),
                ("Optimisation history", html_image(tune_dir / "optimization_history.png", "optimisation history")),
                ("Trials", html_table(_display_rows(table))),
                ("best_config.yaml", html_pre((tune_dir / "best_config.yaml").read_text()))]
    return render_html(f"earmark hyper-parameter search {tune_dir.name}", warnings, sections)
