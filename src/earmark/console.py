"""The width of what earmark prints with rich: the terminal's, or a wide fixed one in logs and pipes."""

from __future__ import annotations

import os
import sys

PIPED_WIDTH = 160  # rich's 80 columns squash tables and progress lines written to a log file or a pipe


def output_width() -> int | None:
    """None (rich asks the terminal) when stdout is a terminal or COLUMNS is set, else PIPED_WIDTH."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return PIPED_WIDTH if piped else None
