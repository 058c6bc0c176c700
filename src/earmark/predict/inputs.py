"""What to predict: files, folders, CSV/TSV lists and stdin lists resolved to audio paths (torch-free)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from earmark.errors import EarmarkError
from earmark.files import AUDIO_EXTENSIONS

STDIN = "-"  # an input of "-" reads one path per line from standard input


def read_path_lines(stream: TextIO) -> list[Path]:
    """One path per non-blank line (surrounding spaces dropped); lines starting with '#' are comments."""
    return [Path(line.strip()) for line in stream if line.strip() and not line.lstrip().startswith("#")]


def resolve_inputs(inputs: Sequence[str | Path], stdin: TextIO | None = None) -> list[Path]:
    """Files, folders (searched recursively for audio), CSV lists and "-" (stdin), in the order given."""
    return [path for path, _ in resolve_grouped_inputs(inputs, stdin=stdin)]


def resolve_grouped_inputs(inputs: Sequence[str | Path], group_columns: Sequence[str] = (),
                           stdin: TextIO | None = None) -> list[tuple[Path, Optional[str]]]:
    """(path, group) per input: a CSV list's group comes from the first of `group_columns` it has
    (case-insensitive); files, folders and stdin lines have no group (None)."""
    resolved: list[tuple[Path, Optional[str]]] = []
    for item in inputs:
        if str(item) == STDIN:
            lines = read_path_lines(stdin or sys.stdin)
            if not lines:
                raise EarmarkError("'-' reads paths from standard input, one per line, but it was empty")
            resolved += resolve_grouped_inputs(lines, group_columns)
            continue
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise EarmarkError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {item}")
            resolved += [(path, None) for path in found]
        elif item.suffix.lower() in (".csv", ".tsv") and item.is_file():
            from earmark.data.labels import group_names
            from earmark.data.metadata import read_path_list

            paths, group_values = read_path_list(item, group_columns)
            groups = group_names(group_values) if group_values is not None else [None] * len(paths)
            resolved += list(zip(map(Path, paths), groups))
        elif item.exists():
            resolved.append((item, None))
        else:
            raise EarmarkError(f"input not found: {item}")
    return resolved
