"""What earmark prints with rich: its width (the terminal's, or a wide fixed one in logs and pipes) and
progress bars."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

PIPED_WIDTH = 160  # rich's 80 columns squash tables and progress lines written to a log file or a pipe
PIPED_PROGRESS_S = 10.0  # a log file or pipe gets a progress line this often (rich draws nothing there)


def output_width() -> int | None:
    """None (rich asks the terminal) when stdout is a terminal or COLUMNS is set, else PIPED_WIDTH."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return PIPED_WIDTH if piped else None


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1)`: a rich bar of `total` steps with done/total and time left, or nothing when disabled.
    When stdout is not a terminal (a log, a pipe, CI), a plain line every PIPED_PROGRESS_S and one at the end."""
    if not enabled:
        yield lambda n=1: None
        return
    if not sys.stdout.isatty():
        with _progress_lines(total, description) as advance:
            yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextmanager
def _progress_lines(total: int, description: str) -> Iterator[Callable[..., None]]:
    """`description: done/total (pct), elapsed, left` lines at intervals, for output that is not a terminal."""
    started = time.monotonic()
    state = {"done": 0, "next_s": started + PIPED_PROGRESS_S}

    def say(final: bool = False) -> None:
        elapsed_s, done = time.monotonic() - started, state["done"]
        left = "" if final or not done else f", about {elapsed_s * (total - done) / done:.0f} s left"
        print(f"{description}: {done}/{total} ({done / max(total, 1):.0%}), {elapsed_s:.0f} s{left}", flush=True)

    def advance(n: int = 1) -> None:
        state["done"] += n
        if time.monotonic() >= state["next_s"]:
            say()
            state["next_s"] = time.monotonic() + PIPED_PROGRESS_S

    yield advance
    if total:
        say(final=True)
