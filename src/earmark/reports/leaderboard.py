"""The leaderboard of a `model.name=auto` run (metrics.json's `auto`): the same rows for the console, report.md
and report.html."""

from __future__ import annotations

from typing import Any, Mapping

COLUMNS = ("candidate", "validation score (95% CI)", "scored on", "validation split", "seconds", "status")


def leaderboard_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One display row per candidate: the score with its interval, what it was scored on, its time, its fate."""
    rows = []
    for row in summary.get("leaderboard", []):
        score = row.get("score")
        shown = "" if score is None else f"{score:.4f} ({row['ci95_low']:.3f}–{row['ci95_high']:.3f})"
        rows.append({"candidate": row["candidate"], "validation score (95% CI)": shown,
                     "scored on": row.get("scored_on") or "",
                     "validation split": "" if row.get("val_accuracy") is None else f"{row['val_accuracy']:.4f}",
                     "seconds": f"{row.get('seconds', 0):.1f}",
                     "status": row["status"]})
    return rows


def leaderboard_heading(summary: Mapping[str, Any]) -> str:
    return (f"auto: {summary['winner']} chosen among {len(summary.get('leaderboard', []))} candidate(s) in "
            f"{summary.get('selection_seconds', 0):.0f} s (budget {summary.get('budget_s', 0):.0f} s); scores are "
            f"accuracy on validation clips only: the test split scored the winner alone")


def leaderboard_html(metrics: Mapping[str, Any]) -> str:
    from earmark.reports.html import html_table

    summary = metrics.get("auto")
    if not isinstance(summary, Mapping):
        return ""
    return f"<p>{_escape(leaderboard_heading(summary))}.</p>" + html_table(leaderboard_rows(summary), COLUMNS)


def _escape(text: str) -> str:
    import html

    return html.escape(text)
