"""Reading metadata tables: CSV/TSV sniffing, common column names, split names, paths.

Shared by every source that starts from a metadata file (csv, the presets, the bundled
sample) and by prediction on a CSV list of files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from earmark.config import ColumnMap
from earmark.errors import EarmarkError

STANDARD_COLUMNS = ("path", "label", "group", "fold", "split")
# Detected case-insensitively, first match wins (explicit data.columns.* always win).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "path": ("file_path", "path", "filepath", "filename", "file", "file_name", "slice_file_name", "audio",
             "audio_path", "wav"),
    "label": ("label", "word", "class", "category", "classid", "class_id", "target", "digit"),
    "group": ("speaker", "speaker_id", "group", "source", "recording", "fsid", "src_file", "actor", "client_id"),
    "fold": ("fold",),
    "split": ("split", "set", "subset", "partition"),
}
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
DELIMITERS = (",", "\t", ";", "|")
LINE_NUMBERS = "line_numbers"  # read_metadata's `attrs` key: each row's line in the file


def csv_line(meta: pd.DataFrame, row: int) -> int:
    """The line of `read_metadata`'s row `row` (its index label) in the file."""
    lines = meta.attrs.get(LINE_NUMBERS)
    return lines[row] if lines is not None else row + 2


def read_path_list(csv_path: Path, group_columns: Sequence[str] = ()) -> tuple[list[str], Optional[pd.Series]]:
    """The audio paths a CSV/TSV lists (path column detected as for data.source=csv), absolute, and the
    values of the first of `group_columns` it has (case-insensitive) for the same rows, or None."""
    meta = read_metadata(Path(csv_path))
    by_lower = {column.lower(): column for column in meta.columns}
    column = next((by_lower[a] for a in COLUMN_ALIASES["path"] if a in by_lower), None)
    if column is None:
        raise EarmarkError(f"no path column found in {csv_path} (its columns are: {', '.join(meta.columns)}); "
                           f"name it one of {', '.join(COLUMN_ALIASES['path'])}")
    meta = meta[meta[column].notna()]
    group_column = next((by_lower[c.lower()] for c in group_columns if c.lower() in by_lower), None)
    groups = meta[group_column].reset_index(drop=True) if group_column is not None else None
    return absolute_paths(meta[column].astype(str), Path(csv_path).parent), groups


def read_metadata(csv_path: Path) -> pd.DataFrame:
    if csv_path.is_dir():
        raise EarmarkError(f"data.path {csv_path} is a folder, but data.source=csv needs a CSV or TSV file; "
                           "for one sub-folder per class set data.source=folder")
    kind = "TSV" if csv_path.suffix.lower() in (".tsv", ".tab") else "CSV"
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise EarmarkError(f"cannot read metadata file {csv_path}: {exc.strerror}; "
                           "check the path and its permissions") from None
    encoding = "utf-8-sig"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        encoding, text = "latin-1", raw.decode("latin-1")
    header = text.lstrip().split("\n", 1)[0]
    sep = "\t" if kind == "TSV" else max(DELIMITERS, key=header.count)
    try:
        meta = pd.read_csv(csv_path, sep=sep, encoding=encoding, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise EarmarkError(f"metadata file {csv_path} is empty; it needs a header row (e.g. path,label) "
                           "and one row per audio file") from None
    except (pd.errors.ParserError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise EarmarkError(f"metadata file {csv_path} could not be read as a {kind} ({reason}); check that "
                           "every row has as many fields as the header") from None
    meta.columns = [str(c).strip() for c in meta.columns]
    # the file's line of each row: pandas skips blank (and whitespace-only) lines, so the row number is not it
    lines = [number for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if len(lines) == len(meta) + 1:  # else a quoted field spans lines: row numbers are the best there is
        meta.attrs[LINE_NUMBERS] = lines[1:]
    if meta.empty:
        raise EarmarkError(f"metadata file {csv_path} has a header ({', '.join(meta.columns)}) but no rows; "
                           "add one row per audio file")
    return meta


def resolve_columns(meta: pd.DataFrame, explicit: ColumnMap, csv_path: Path) -> dict[str, Optional[str]]:
    by_lower: dict[str, str] = {}
    for column in meta.columns:
        by_lower.setdefault(column.lower(), column)
    available = ", ".join(meta.columns)
    columns: dict[str, Optional[str]] = {}
    for name in STANDARD_COLUMNS:
        wanted = getattr(explicit, name)
        if wanted is not None:
            found = wanted if wanted in meta.columns else by_lower.get(wanted.lower())
            if found is None:
                raise EarmarkError(f"data.columns.{name}={wanted!r} is not a column of {csv_path}; "
                                   f"its columns are: {available}")
            columns[name] = found
            continue
        candidates = [by_lower[a] for a in COLUMN_ALIASES[name] if a in by_lower]
        if name == "label":  # `class` beats `classID`, `category` beats `target`
            candidates.sort(key=lambda c: is_numeric(meta[c]))
        columns[name] = candidates[0] if candidates else None
    for name in ("path", "label"):
        if columns[name] is None:
            common = ", ".join(COLUMN_ALIASES[name])
            raise EarmarkError(f"no {name} column found in {csv_path} (its columns are: {available}); "
                               f"name it one of {common}, or set data.columns.{name}=<column>")
    return columns


def normalise_splits(values: pd.Series, column: str, csv_path: Path) -> pd.Series:
    lowered = values.str.strip().str.lower()
    unknown = sorted(set(lowered.dropna()) - set(SPLIT_ALIASES))
    if unknown:
        accepted = ", ".join(SPLIT_ALIASES)
        raise EarmarkError(f"column {column!r} of {csv_path} holds split values earmark does not know: "
                           f"{', '.join(repr(v) for v in unknown[:10])}; use train, val or test (also accepted: "
                           f"{accepted}), or point data.columns.split at another column")
    return lowered.map(SPLIT_ALIASES).astype("str")


def absolute_paths(relative: pd.Series, base: Path) -> list[str]:
    base_text = os.path.abspath(os.path.expanduser(str(base)))
    fix_separators = os.sep == "/"  # metadata written on Windows uses backslashes
    cleaned = (p.strip().replace("\\", "/") if fix_separators else p.strip() for p in relative)
    return [os.path.normpath(os.path.join(base_text, os.path.expanduser(p))) for p in cleaned]


def is_numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return bool(len(present)) and bool(pd.to_numeric(present.astype("str"), errors="coerce").notna().all())


def as_text(values: pd.Series) -> pd.Series:
    """Labels, groups and folds as str; whole floats lose their '.0' (1.0 -> '1'), NA stays NA."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    text = values.astype("str").str.strip()
    return text.where(text != "", np.nan).astype("str")
