"""Free rows of a cache's waves file: written by no one the index points at, so safe to reuse.

A prepare records in `free_rows.json` every row it may write before the index points at it
(its reservation), and at the end the rows of it that nothing points at (bad files). A
prepare that was killed leaves its whole reservation listed; the next one reuses the rows
the index does not reference (overwriting what the killed run half-wrote), and cuts such rows
off the end of the file, so a killed and re-run prepare takes no more disk than one clean run.

A row the index ever referenced never becomes free here: a reader holding an older view of
the cache may still read it (the old rows of a changed file stay until `earmark clean`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from earmark.files import atomic_write_text

FREE_ROWS_FILE = "free_rows.json"


def free_rows(folder: Path, index: dict[str, dict], rows_on_disk: int) -> np.ndarray:
    """Sorted rows listed as free (or reserved by a prepare that never finished) that no index record uses."""
    try:
        listed = json.loads((folder / FREE_ROWS_FILE).read_text())
    except FileNotFoundError:
        return np.zeros(0, dtype=np.int64)
    except (OSError, ValueError):  # damaged: reuse nothing, which is always safe
        return np.zeros(0, dtype=np.int64)
    free = np.zeros(rows_on_disk, dtype=bool)
    for start, end in listed.get("ranges", []):
        free[max(0, int(start)) : rows_on_disk if end is None else min(int(end), rows_on_disk)] = True
    for record in index.values():
        if record["n_rows"] > 0:
            free[record["first_row"] : record["first_row"] + record["n_rows"]] = False
    return np.flatnonzero(free)


def rows_after_trim(free: np.ndarray, rows_on_disk: int) -> int:
    """The file's length in rows once free rows at its end are cut off."""
    rows = rows_on_disk
    position = len(free) - 1
    while position >= 0 and free[position] == rows - 1:
        rows -= 1
        position -= 1
    return rows


def record_free_rows(folder: Path, rows: Iterable[int] = (), *, from_row: int | None = None) -> None:
    """List `rows` (and every row from `from_row` to the end of the file) as free; replaces the list."""
    ranges = _ranges(np.asarray(sorted(rows), dtype=np.int64))
    if from_row is not None:
        ranges.append([int(from_row), None])
    path = folder / FREE_ROWS_FILE
    if not ranges:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps({"ranges": ranges}))


def unused(rows: Iterable[int], index: dict[str, dict]) -> list[int]:
    """Those of `rows` that no index record points at."""
    used: set[int] = set()
    for record in index.values():
        if record["n_rows"] > 0:
            used.update(range(record["first_row"], record["first_row"] + record["n_rows"]))
    return [row for row in rows if row not in used]


def _ranges(rows: np.ndarray) -> list[list]:
    """Sorted rows -> [[start, end), ...] runs."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [[int(run[0]), int(run[-1]) + 1] for run in np.split(rows, breaks)]
