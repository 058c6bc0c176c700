"""What earmark prints with rich: its width (the terminal's, or a wide fixed one in logs and pipes) and
progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PIPED_WIDTH = 160  # rich's 80 columns squash tables and progress lines written to a log file or a pipe


def output_width() -> int | None:
    """None (rich asks the terminal) when stdout is a terminal or COLUMNS is set, else PIPED_WIDTH."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return PIPED_WIDTH if piped else None


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1)`: a rich bar of `total` steps with done/total and time left, or nothing when disabled."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
