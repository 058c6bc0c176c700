"""Compare runs scored on the same clips and write the comparison reports."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence


def compare(runs: Sequence[str | Path], out_dir: str | Path | None = None):
    """Compare runs scored on the same test clips: metrics side by side, per-class differences, and for
    each run after the first McNemar's exact p-value and paired-bootstrap 95% CIs of the accuracy and
    macro-F1 differences against it. Writes compare.json/.md/.html to `out_dir` (default: a new
    compare-<first>-vs-<second>[-and-N-more]-<timestamp> folder beside the first run, named after the runs;
    never overwrites) and returns the `Comparison`."""
    from earmark.evaluate.compare import compare_runs
    from earmark.files import safe_name
    from earmark.reports.compare import write_comparison
    from earmark.rundir import new_folder

    comparison = compare_runs(list(runs))
    if out_dir is None:
        names = [Path(run).resolve().name for run in runs]
        more = f"-and-{len(names) - 2}-more" if len(names) > 2 else ""
        label = safe_name(f"{names[0]}-vs-{names[1]}{more}", "runs")
        out_dir = new_folder(Path(runs[0]).resolve().parent, f"compare-{label}-{datetime.now():%Y%m%d-%H%M%S}")
    write_comparison(comparison, Path(out_dir))
    return comparison
