"""What the commands print: metrics, personalization and prediction tables, streamed windows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional


def make_console():
    """stdout's console: the terminal's width, or COLUMNS, or a wide fixed one when stdout is a file or pipe."""
    from rich.console import Console

    from earmark.console import output_width

    return Console(stderr=False, width=output_width())


def print_plan_line(line: str) -> None:
    """A line of the split plan; "warning:" and "note:" lines are marked."""
    from rich.markup import escape

    for mark, style in (("warning:", "bold yellow"), ("note:", "bold")):
        if line.startswith(mark):
            make_console().print(f"[{style}]{mark}[/]{escape(line[len(mark):])}")
            return
    make_console().print(line, markup=False)


def print_evaluation(metrics: dict, title: str = "test split") -> None:
    """The headline table (model, majority baseline, chance), the other analyses in a line each, warnings."""
    from rich.table import Table

    from earmark.reports.markdown import summary_lines

    baseline = metrics["majority_baseline"]
    chance = f"{metrics['chance_accuracy']:.4f}" if "chance_accuracy" in metrics else ""
    table = Table(title=f"{title} ({metrics['n_clips']} clips)")
    for column in ("metric", "model", "majority baseline", "chance"):
        table.add_column(column)
    low, high = metrics["accuracy_ci95"]
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}  (95% CI {low:.3f}–{high:.3f})", f"{baseline['accuracy']:.4f}",
                  chance)
    table.add_row("balanced accuracy", f"{metrics['balanced_accuracy']:.4f}", f"{baseline['balanced_accuracy']:.4f}",
                  chance)
    table.add_row("macro F1", f"{metrics['macro_f1']:.4f}", f"{baseline['macro_f1']:.4f}", "")
    console = make_console()
    console.print(table)
    for line in summary_lines(metrics):
        console.print(line, markup=False)
    for warning in metrics.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")


def print_metrics(result) -> None:
    metrics = result.metrics
    if "auto" in metrics:
        print_leaderboard(metrics["auto"])
    print_evaluation(metrics)
    console = make_console()
    low, high = metrics["accuracy_ci95"]
    console.print(f"test accuracy: {metrics['accuracy']:.4f} ({metrics['n_clips']} test clips, 95% CI "
                  f"{low:.3f}–{high:.3f})")
    if result.personalization:
        print_personalization(result.personalization)
    console.print(f"trained in {result.fit_seconds:.1f} s; run directory: {result.run_dir}")
    console.print(f"next: earmark predict {result.run_dir} AUDIO...; earmark export {result.run_dir} makes "
                  f"an ONNX model (no torch needed; predict then starts without it)", markup=False)


def print_leaderboard(summary: dict) -> None:
    """auto's candidates: validation score with its interval, what it was scored on, seconds, chosen/skipped."""
    from rich.table import Table

    from earmark.reports.leaderboard import COLUMNS, leaderboard_heading, leaderboard_rows

    table = Table(title="auto: candidates")
    for column in COLUMNS:
        table.add_column(column)
    for row in leaderboard_rows(summary):
        table.add_row(*(str(row[column]) for column in COLUMNS))
    console = make_console()
    console.print(table)
    console.print(leaderboard_heading(summary), markup=False)


MAX_GROUPS_PRINTED = 20


def print_personalization(summary: dict) -> None:
    """Before/after in a few lines: overall, per group (the largest first), and the unseen groups."""
    console = make_console()

    def share(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    improvement = summary["improvement"]
    console.print(f"personalization by '{summary['group_column']}': base model {share(summary['basic_accuracy'])} "
                  f"→ personalized {share(summary['personalized_accuracy'])}"
                  + ("" if improvement is None else f" ({improvement:+.4f})"))
    per_group = sorted(summary["per_group"].items(), key=lambda item: -item[1]["n_clips"])
    for name, row in per_group[:MAX_GROUPS_PRINTED]:
        console.print(f"  {name}: {share(row['basic_accuracy'])} → {share(row['personalized_accuracy'])} "
                      f"({row['n_clips']} clips{'' if row['seen_in_training'] else ', unseen: base model'})")
    if len(per_group) > MAX_GROUPS_PRINTED:
        console.print(f"  … {len(per_group) - MAX_GROUPS_PRINTED} more in personalization.json")
    if summary["unseen_groups"]:
        console.print(f"unseen in training (predicted by the base model): {', '.join(summary['unseen_groups'])}")


def print_table(frame) -> None:
    from rich.table import Table

    table = Table()
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    make_console().print(table)


def print_model_source(model: Path, source: str) -> None:
    """For a run directory, which of its models predicted (its checkpoint or its current ONNX export), on stderr."""
    if Path(model).is_dir() and source:
        print(f"model: {source}", file=sys.stderr)


def print_stream(stream, out: Optional[Path]) -> None:
    """CSV lines start_s,end_s,label,probability on stdout (flushed per window; also to `out`),
    then the recording's label (from the mean over its windows) on stderr."""
    import csv

    handle = open(out, "w", newline="") if out is not None else None
    writers = [csv.writer(sys.stdout)] + ([csv.writer(handle)] if handle else [])
    try:
        for writer in writers:
            writer.writerow(["start_s", "end_s", "label", "probability"])
        for row in stream:
            for writer in writers:
                writer.writerow([f"{row['start_s']:.3f}", f"{row['end_s']:.3f}", row["label"],
                                 f"{row['probability']:.4f}"])
            sys.stdout.flush()
    finally:
        if handle:
            handle.close()
    summary = stream.summary()
    if summary["n_windows"]:
        print(f"{summary['n_windows']} windows; recording label: {summary['label']} "
              f"(mean probability {summary['probability']:.4f})", file=sys.stderr)
    else:
        print("no audio in the stream", file=sys.stderr)


MAX_FAILURES_PRINTED = 20


def print_fetch_result(console, result) -> bool:
    """What `earmark fetch` got (and where the next step goes); True when some sources failed."""
    from rich.markup import escape

    if result.root is not None:
        state = "downloaded, verified and laid out" if result.n_downloaded else "already laid out"
        console.print(f"{result.root}: {state}")
    else:
        console.print(f"{result.n_sources - len({f.line for f in result.failures})} of {result.n_sources} sources "
                      f"fetched completely ({result.n_downloaded} downloaded now, {result.n_reused} already there): "
                      f"{result.n_clips} clips, {result.audio_s:.1f} s of audio, listed in {result.metadata}")
    console.print("next: earmark prepare " + " ".join(result.overrides))
    if result.failures:
        for failure in result.failures[:MAX_FAILURES_PRINTED]:
            console.print(f"[bold red]failed[/] line {failure.line}: {escape(failure.source)}: "
                          f"{escape(failure.reason)}", highlight=False)
        console.print(f"{len(result.failures)} failure(s) listed in {result.failures_file}; run the same command "
                      f"again to retry them (finished items are skipped); a source refused for what it holds "
                      f"fails the same way until its row is fixed or removed")
        return True
    return False


def print_datasets(rows: list[dict]) -> None:
    """The presets table of `earmark datasets`, then each one's page."""
    from rich.table import Table

    table = Table(caption="earmark fetch NAME --to DIR (checksums: sha256 of the first download is locked in "
                          "DIR/checksums.lock, and checked against the published one where there is one)")
    for column in ("name", "data set", "license", "size", "published checksum"):
        table.add_column(column)
    for row in rows:
        published = f"{row['checksum'].split(':')[0]} ({row['checksum_source']})" if row["checksum"] else \
            row["checksum_source"]
        table.add_row(row["name"], row["title"], row["license"], row["size"], published)
    console = make_console()
    console.print(table)
    for row in rows:
        console.print(f"{row['name']}: {row['url']}" + (f" — {row['notes']}" if row["notes"] else ""),
                      highlight=False)


def print_comparison(comparison) -> None:
    """`earmark compare`: one row per run with its differences against the first, then verdicts and the folder."""
    from rich.table import Table

    console = make_console()
    table = Table(title=f"{len(comparison.runs)} runs on {comparison.n_clips} shared test clips")
    for column in ("run", "accuracy (95% CI)", "macro F1", f"Δ accuracy vs {comparison.runs[0]['run']} (95% CI)",
                   "Δ macro F1 (95% CI)", "McNemar p"):
        table.add_column(column)
    differences = comparison.differences
    for i, row in enumerate(comparison.runs):
        low, high = row["accuracy_ci95"]
        cells = [row["run"], f"{row['accuracy']:.4f} ({low:.3f}–{high:.3f})", f"{row['macro_f1']:.4f}"]
        if i == 0:
            cells += ["reference", "", ""]
        else:
            diff = differences[i - 1]
            (a_low, a_high), (f_low, f_high) = diff["accuracy_difference_ci95"], diff["macro_f1_difference_ci95"]
            p_value = f"{diff['mcnemar']['p_value']:.3g}"
            cells += [f"{diff['accuracy_difference']:+.4f} ({a_low:+.3f} to {a_high:+.3f})",
                      f"{diff['macro_f1_difference']:+.4f} ({f_low:+.3f} to {f_high:+.3f})",
                      f"[bold]{p_value}[/]" if diff["significant"] else p_value]
        table.add_row(*cells)
    console.print(table)
    for warning in comparison.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    for diff in differences:
        console.print(diff["verdict"])
    console.print(f"comparison written to {comparison.out_dir} (report: {comparison.out_dir / 'compare.html'})",
                  markup=False)


def print_cv(result) -> None:
    """`earmark cv`: the per-fold table, warnings, mean ± std and where the report is."""
    from rich.markup import escape
    from rich.table import Table

    from earmark.reports.crossval import fold_table_rows, headline, timing_text

    console = make_console()
    summary = result.summary
    rows = fold_table_rows(summary)
    table = Table(title=f"cross-validation: {summary['folds']}")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else escape(str(v)) for v in row.values()])
    console.print(table)
    for warning in summary["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
    for line in headline(summary):
        console.print(line)
    console.print(f"{summary['n_folds']} folds. {timing_text(summary)}; report: {result.cv_dir / 'cv_report.html'}",
                  markup=False)


def print_tune(result) -> None:
    """`earmark tune`: one row per trial, the best trial and its config."""
    from rich.table import Table

    console = make_console()
    summary = result.summary
    table = Table(title=f"{len(result.trials)} trials, objective: {summary['direction']} validation "
                        f"{summary['monitor']}")
    hidden = ["run_dir", "last_reported", "error"]
    for column in result.trials.columns.drop(hidden, errors="ignore"):
        table.add_column(str(column))
    for row in result.trials.drop(columns=hidden, errors="ignore").itertuples(index=False):
        table.add_row(*["" if v is None or v != v else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row])
    console.print(table)
    console.print(f"best: trial {summary['best_trial']}, validation {summary['monitor']} {result.best_value:.4f}: "
                  + ", ".join(f"{k}={v}" for k, v in result.best_params.items()))
    console.print(f"best config: {result.best_config} (earmark train {result.best_config}); "
                  f"report: {result.tune_dir / 'tune_report.html'}")
