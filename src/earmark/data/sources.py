"""Metadata from what users really have: a folder per class, a CSV/TSV, or a known data set.

Every source ends as one table, one row per audio file, sorted by path:

    path   absolute path (str)            label  class name (str)
    group  e.g. the speaker (str or NA)   fold   predefined fold (str or NA)
    split  train / val / test, or NA

followed by every other metadata column under its own name. A metadata column
that carries a standard name but was not used for it (say a `group` column
while `data.columns.group=speaker`) is kept as `<name>_original`.

Audio is never opened here: a listed file that is missing or unreadable stays
in the table and the decoder reports it in the bad-file report. What a source leaves
out on purpose (files outside class folders, hidden files, sidecars, dangling links,
FIFOs, CSV rows without a path or label, repeated rows) is recorded per reason in
`SourceInfo.ignored`; prepare prints the counts and writes ignored_files.csv.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from earmark.config import ColumnMap, DataConfig
from earmark.data.metadata import (
    SPLIT_ALIASES,
    STANDARD_COLUMNS,
    absolute_paths,
    as_text,
    csv_line,
    normalise_splits,
    read_metadata,
    resolve_columns,
)
from earmark.errors import EarmarkError

ROOT_FILES = "files in the root folder (not in a class folder)"
SIDECARS = "sidecar files (.txt, .csv, .json, ...)"
HIDDEN = "hidden files or folders (name starts with '.')"
DANGLING_LINKS = "dangling symlinks (the target does not exist)"
NOT_REGULAR = "not regular files (FIFOs, sockets, devices)"
NO_PATH = "CSV rows without a path (empty or blank)"
NO_LABEL = "CSV rows without a label (empty or blank)"
BLANK_FOLDERS = "class folders with a blank name (only spaces): no label"
REPEATED = "repeated CSV rows (same file, same label)"
SIDECAR_EXTENSIONS = frozenset({".txt", ".csv", ".tsv", ".md", ".json", ".yaml", ".yml"})
FSDD_NAME = re.compile(r"^(?P<digit>\d+)_(?P<speaker>[^_]+)_(?P<take>\d+)\.wav$", re.IGNORECASE)
FSDD_TEST_TAKES = 5  # the data set's README: takes 0-4 of every digit and speaker are the test split


@dataclass
class SourceInfo:
    """What `load_source` did besides building the table, for logs and reports."""

    description: str
    columns: dict[str, Optional[str]] = field(default_factory=dict)  # standard column -> metadata column used
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason -> files or CSV lines left out

    def notes(self) -> list[str]:
        return [f"ignored {len(items)} {reason}, e.g. {items[0]}" for reason, items in self.ignored.items() if items]

    def ignored_table(self) -> pd.DataFrame:
        """path, reason: one line per file or CSV row left out (a CSV row's path is `<csv> line <n>`)."""
        rows = [(item, reason) for reason, items in self.ignored.items() for item in items]
        return pd.DataFrame(rows, columns=["path", "reason"], dtype="str")

    def leave_out(self, reason: str, item: str) -> None:
        self.ignored.setdefault(reason, []).append(item)


@dataclass(frozen=True)
class Preset:
    title: str
    metadata: str  # relative to the data set root
    audio_dir: str  # where the metadata's paths point, relative to the root
    columns: ColumnMap
    relative_paths: Optional[Callable[[pd.DataFrame, dict], pd.Series]] = None


def _urbansound_paths(meta: pd.DataFrame, columns: dict) -> pd.Series:
    return "fold" + as_text(meta[columns["fold"]]) + "/" + meta[columns["path"]].astype("str")


PRESETS = {
    "esc50": Preset("ESC-50", "meta/esc50.csv", "audio",
                    ColumnMap(path="filename", label="category", group="src_file", fold="fold")),
    "urbansound8k": Preset("UrbanSound8K", "metadata/UrbanSound8K.csv", "audio",
                           ColumnMap(path="slice_file_name", label="class", group="fsID", fold="fold"),
                           _urbansound_paths),
    "fsdd": Preset("FSDD", "metadata.csv", ".",
                   ColumnMap(path="file_path", label="word", group="speaker", split="split")),
}


def bundled_sample_dir() -> Path:
    """The demo data set shipped inside the package (metadata.csv + recordings/)."""
    return Path(str(importlib.resources.files("earmark") / "sample"))


def load_table(data: DataConfig, *, min_classes: int = 2) -> pd.DataFrame:
    """The standard table for `data.source`; see `load_source` for what was left out."""
    return load_source(data, min_classes=min_classes)[0]


def load_source(data: DataConfig, *, min_classes: int = 2) -> tuple[pd.DataFrame, SourceInfo]:
    """The table plus what was left out (root files, sidecars, rows without path or label).

    `min_classes=1` suits scoring a model on a table of a single class.
    """
    if data.source == "stream":
        raise EarmarkError(f"data.source=stream ({data.path}) holds audio already decoded: `earmark train` and "
                           f"`earmark evaluate` read it; decode the original files with their own data.source")
    loader = _LOADERS[data.source]
    table, info = loader(data)
    _check_classes(table, info.description, min_classes)
    return table.sort_values("path", kind="stable").reset_index(drop=True), info


def describe_source(data: DataConfig) -> str:
    """One line saying where the metadata comes from, without reading it."""
    if data.source == "sample":
        return f"bundled sample ({bundled_sample_dir() / 'metadata.csv'})"
    if data.source == "folder":
        return f"folder {data.path} (one sub-folder per class)"
    if data.source == "csv":
        return f"metadata {data.path} (audio under {data.audio_root or Path(data.path).parent})"
    preset = PRESETS[data.source]
    return f"{preset.title} at {data.path} ({preset.metadata})"


# ---------------------------------------------------------------- folder


def _load_folder(data: DataConfig) -> tuple[pd.DataFrame, SourceInfo]:
    root = _existing(data.path, "data.path")
    if not root.is_dir():
        raise EarmarkError(f"data.path {root} is a file, but data.source=folder needs a folder with one "
                           "sub-folder per class; for a metadata table set data.source=csv")
    info = SourceInfo(f"folder {root}")
    top_dirs, root_files = _visible_entries(root, info)
    info.ignored.setdefault(ROOT_FILES, []).extend(root_files)
    if not top_dirs:
        raise EarmarkError(f"data.path {root} has no class sub-folders; data.source=folder expects "
                           f"{root}/<class>/<audio files>, e.g. {root}/dog/bark_01.wav")
    # data/train/<class>/..., data/test/<class>/...: the top level names splits, not classes
    split_layout = all(d.name.lower() in SPLIT_ALIASES and _visible_entries(d, SourceInfo(""))[0]
                       for d in top_dirs)
    rows = []
    for top in top_dirs:
        class_dirs, split = [top], np.nan
        if split_layout:
            class_dirs, stray = _visible_entries(top, info)
            split = SPLIT_ALIASES[top.name.lower()]
            info.ignored.setdefault(ROOT_FILES, []).extend(stray)
        for class_dir in class_dirs:
            rows += [(path, class_dir.name, split) for path in _files_under(class_dir, root, info)]
    if not rows:
        names = ", ".join(d.name for d in top_dirs[:10])
        raise EarmarkError(f"data.path {root} has class folders ({names}) but no files in them; put the audio "
                           f"files inside, e.g. {top_dirs[0]}/clip_01.wav")
    if split_layout:
        info.description += " (split folders train/val/test, then one folder per class)"
    table = pd.DataFrame(rows, columns=["path", "label", "split"])
    table["split"] = table["split"].astype("str")
    table["group"] = pd.Series(np.nan, index=table.index, dtype="str")
    table["fold"] = pd.Series(np.nan, index=table.index, dtype="str")
    info.columns = {"path": None, "label": "folder name", "group": None, "fold": None,
                    "split": "folder name" if split_layout else None}
    return table[list(STANDARD_COLUMNS)], info


def _visible_entries(folder: Path, info: SourceInfo) -> tuple[list[Path], list[str]]:
    """Non-hidden sub-folders (sorted) and non-hidden files directly in `folder`; the rest goes to `info`."""
    dirs, files = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = os.path.abspath(entry.path)
        if entry.name.startswith("."):
            info.leave_out(HIDDEN, path)
        elif entry.is_dir() and not entry.name.strip():  # a CSV row with such a label is left out too
            info.leave_out(BLANK_FOLDERS, path)
        elif entry.is_dir():
            dirs.append(Path(entry.path))
        elif entry.is_file():
            files.append(path)
        else:
            _leave_out_odd(path, info)
    return dirs, files


def _files_under(class_dir: Path, root: Path, info: SourceInfo) -> list[str]:
    """Files below `class_dir`; linked folders are followed unless they point back inside `root`."""
    found, seen_dirs = [], set()
    real_root = os.path.realpath(root)
    for current, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:  # a symlink loop outside the data folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        for hidden in sorted(d for d in dirnames if d.startswith(".")):
            info.leave_out(HIDDEN, os.path.abspath(os.path.join(current, hidden)))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not _links_inside(os.path.join(current, d), real_root))
        for name in sorted(filenames):
            path = os.path.abspath(os.path.join(current, name))
            if name.startswith("."):
                info.leave_out(HIDDEN, path)
            elif not os.path.isfile(path):
                _leave_out_odd(path, info)
            elif os.path.splitext(name)[1].lower() in SIDECAR_EXTENSIONS:
                info.leave_out(SIDECARS, path)
            else:
                found.append(path)
    return found


def _leave_out_odd(path: str, info: SourceInfo) -> None:
    """Neither a folder nor a regular file: a link to nothing, or a FIFO, socket or device."""
    info.leave_out(DANGLING_LINKS if os.path.islink(path) and not os.path.exists(path) else NOT_REGULAR, path)


# ---------------------------------------------------------------- CSV / presets


def _load_csv(data: DataConfig) -> tuple[pd.DataFrame, SourceInfo]:
    csv_path = _existing(data.path, "data.path")
    audio_root = Path(data.audio_root) if data.audio_root is not None else csv_path.parent
    return _table_from_metadata(csv_path, data.columns, audio_root, f"metadata {csv_path}")


def _load_sample(data: DataConfig) -> tuple[pd.DataFrame, SourceInfo]:
    csv_path = bundled_sample_dir() / "metadata.csv"
    if not csv_path.is_file():
        raise EarmarkError(f"the bundled sample is missing ({csv_path}); reinstall earmark, or point "
                           "data.source=folder or data.source=csv at your own data with data.path=...")
    audio_root = Path(data.audio_root) if data.audio_root is not None else csv_path.parent
    return _table_from_metadata(csv_path, data.columns, audio_root, f"bundled sample {csv_path}")


def _load_preset(data: DataConfig) -> tuple[pd.DataFrame, SourceInfo]:
    preset = PRESETS[data.source]
    root = _existing(data.path, "data.path")
    if root.is_file() and root.as_posix().endswith(preset.metadata):  # pointed at the metadata file itself
        root = root.parents[len(Path(preset.metadata).parts) - 1]
    metadata = root / preset.metadata
    audio_root = Path(data.audio_root) if data.audio_root is not None else root / preset.audio_dir
    if not metadata.is_file():
        if data.source == "fsdd" and (root / "recordings").is_dir():
            return _fsdd_from_names(root / "recordings")
        extra = " (or a recordings/ folder of {digit}_{speaker}_{take}.wav files)" if data.source == "fsdd" else ""
        raise EarmarkError(f"data.source={data.source} expects the {preset.title} metadata file {metadata}{extra}, "
                           f"but it is missing; set data.path to the {preset.title} root, the folder that holds "
                           f"{preset.metadata}")
    explicit = {k: v for k, v in data.columns.model_dump().items() if v is not None}
    columns = preset.columns.model_copy(update=explicit)
    return _table_from_metadata(metadata, columns, audio_root, f"{preset.title} at {root}", preset.relative_paths)


def _fsdd_from_names(recordings: Path) -> tuple[pd.DataFrame, SourceInfo]:
    info = SourceInfo(f"FSDD file names in {recordings}", ignored={"files not named {digit}_{speaker}_{take}.wav": []})
    rows = []
    for entry in sorted(os.scandir(recordings), key=lambda e: e.name):
        if entry.name.startswith("."):
            info.leave_out(HIDDEN, os.path.abspath(entry.path))
            continue
        if not entry.is_file():
            if not entry.is_dir():
                _leave_out_odd(os.path.abspath(entry.path), info)
            continue
        match = FSDD_NAME.match(entry.name)
        if match is None:
            info.ignored["files not named {digit}_{speaker}_{take}.wav"].append(os.path.abspath(entry.path))
            continue
        take = int(match["take"])
        split = "test" if take < FSDD_TEST_TAKES else "train"
        rows.append((os.path.abspath(entry.path), match["digit"], match["speaker"], np.nan, split, take,
                     match["speaker"]))
    # `speaker` too, as FSDD's own metadata.csv names it: `--group-by speaker` works for either layout
    table = pd.DataFrame(rows, columns=[*STANDARD_COLUMNS, "take", "speaker"])
    for column in STANDARD_COLUMNS:
        table[column] = table[column].astype("str")
    info.columns = {"path": None, "label": "file name", "group": "file name", "fold": None, "split": "take"}
    return table, info


def _table_from_metadata(csv_path: Path, explicit: ColumnMap, audio_root: Path, description: str,
                         relative_paths: Optional[Callable[[pd.DataFrame, dict], pd.Series]] = None,
                         ) -> tuple[pd.DataFrame, SourceInfo]:
    meta = read_metadata(csv_path)
    columns = resolve_columns(meta, explicit, csv_path)
    info = SourceInfo(description, columns=columns, ignored={})
    split_column = columns["split"]
    if split_column is not None and explicit.split is None and split_column.lower() != "split":
        # a detected `set`/`subset` column may mean something else; use it only if it holds split names
        values = set(meta[split_column].dropna().astype("str").str.strip().str.lower())
        if not values <= set(SPLIT_ALIASES):
            columns["split"] = None
    missing_path = _blank(meta[columns["path"]])
    missing_label = _blank(meta[columns["label"]]) & ~missing_path  # "  " is no label: left out, not a crash
    info.ignored[NO_PATH] = [f"{csv_path} line {csv_line(meta, i)}" for i in meta.index[missing_path]]
    info.ignored[NO_LABEL] = [f"{csv_path} line {csv_line(meta, i)}" for i in meta.index[missing_label]]
    meta = meta[~missing_path & ~missing_label]
    relative = relative_paths(meta, columns) if relative_paths else meta[columns["path"]].astype("str")
    table = pd.DataFrame(index=meta.index)
    table["path"] = pd.Series(absolute_paths(relative, audio_root), index=meta.index, dtype="str")
    for name in ("label", "group", "fold", "split"):
        source = columns[name]
        table[name] = as_text(meta[source]) if source else pd.Series(np.nan, index=meta.index, dtype="str")
    if columns["split"]:
        table["split"] = normalise_splits(table["split"], columns["split"], csv_path)
    extras = meta.drop(columns=[c for c in STANDARD_COLUMNS if columns.get(c) == c and c in meta.columns])
    extras = extras.rename(columns={c: f"{c}_original" for c in STANDARD_COLUMNS if c in extras.columns})
    table = pd.concat([table, extras], axis=1)
    return _drop_duplicates(table, csv_path, info), info


def _drop_duplicates(table: pd.DataFrame, csv_path: Path, info: SourceInfo) -> pd.DataFrame:
    repeated = table.duplicated("path", keep="first")
    if not repeated.any():
        return table
    labels_per_path = table.groupby("path")["label"].nunique()
    conflicting = labels_per_path[labels_per_path > 1]
    if len(conflicting):
        examples = "; ".join(f"{p}: {', '.join(sorted(table.loc[table.path == p, 'label'].unique()))}"
                             for p in conflicting.index[:3])
        raise EarmarkError(f"{csv_path} gives {len(conflicting)} file(s) several labels ({examples}); earmark "
                           "needs one label per file, so keep one row per file")
    info.ignored[REPEATED] = list(table.loc[repeated, "path"])
    return table[~repeated]


def _check_classes(table: pd.DataFrame, description: str, min_classes: int) -> None:
    labels = sorted(table["label"].dropna().unique())
    if len(labels) < min_classes:
        found = f"only {labels[0]!r}" if labels else "none"
        raise EarmarkError(f"{description} has fewer than {min_classes} classes ({found}, {len(table)} files); "
                           f"a classifier needs at least 2: add files of another class, or check data.columns.label")


# ---------------------------------------------------------------- small helpers


def _blank(values: pd.Series) -> pd.Series:
    """True where a metadata cell is empty, NA or only whitespace."""
    return values.isna() | (values.astype("str").str.strip() == "")


def _links_inside(folder: str, real_root: str) -> bool:
    """A linked folder that points inside the data folder would list its files twice."""
    if not os.path.islink(folder):
        return False
    target = os.path.realpath(folder)
    return target == real_root or target.startswith(real_root + os.sep)


def _existing(path: Optional[Path], field_name: str) -> Path:
    if path is None:
        raise EarmarkError(f"{field_name} is not set; set {field_name}=<folder or metadata file>")
    path = Path(path).expanduser()
    if not path.exists():
        raise EarmarkError(f"{field_name} {path} does not exist; check the path (relative paths are relative "
                           f"to the config file, or to the current folder {Path.cwd()})")
    return path


_LOADERS: dict[str, Callable[[DataConfig], tuple[pd.DataFrame, SourceInfo]]] = {
    "sample": _load_sample,
    "folder": _load_folder,
    "csv": _load_csv,
    **{name: _load_preset for name in PRESETS},
}
