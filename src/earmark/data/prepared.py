"""Prepare once: metadata → decode-once cache → honest splits, handed on as one plain object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from earmark.config import Config, DataConfig
from earmark.data.cache import DecodedCache, prepare_cache
from earmark.data.labels import sorted_labels
from earmark.data.sources import load_table
from earmark.data.splits import assign_splits, split_stats, write_splits
from earmark.errors import EarmarkError


@dataclass
class PreparedData:
    """One row per clip segment in `items` (path, label, group, fold, split, row, ...).

    `items.row` indexes `cache.waves`; `labels` are sorted naturally and define class ids.
    """

    items: pd.DataFrame
    labels: list[str]
    cache: DecodedCache
    split_dir: Path
    stats: dict

    def rows(self, split: str) -> np.ndarray:
        return self.items.loc[self.items["split"] == split, "row"].to_numpy(dtype=np.int64)

    def targets(self, split: str) -> np.ndarray:
        from earmark.data.labels import class_ids

        return class_ids(self.items.loc[self.items["split"] == split, "label"], self.labels)


def prepare_data(config: Config, *, strict: bool = False, progress: bool = True) -> PreparedData:
    """Read metadata, decode what is not cached yet (bad_files.csv beside the splits), assign and write splits."""
    split_dir = config.workspace / "splits" / config.split_key()
    items, labels, cache = decode_items(config, split_dir, strict=strict, progress=progress)
    items = assign_splits(items, config.split, config.seed)
    return with_splits(items, labels, cache, split_dir, config.split.group_by)


def decode_listed(items: pd.DataFrame, data: DataConfig, *, progress: bool = True
                  ) -> tuple[pd.DataFrame, DecodedCache]:
    """Rows listed elsewhere (a run's split, an evaluation CSV) joined with the decode-once cache:
    (one row per clip segment, `row` indexing `cache.waves`; files that cannot be decoded drop out, cache)."""
    cache = prepare_cache(items["path"].drop_duplicates().tolist(), data, progress=progress)
    keep = ["path", "segment"] if "segment" in items else ["path"]
    joined = items.drop(columns=[c for c in ("row", "start_s", "end_s") if c in items]).merge(
        cache.segments, on=keep, how="inner")
    return joined, cache


def decode_items(config: Config, report_dir: Path | None, *, strict: bool = False, progress: bool = True
                 ) -> tuple[pd.DataFrame, list[str], DecodedCache]:
    """Metadata joined with the decode-once cache, before any split: (items, labels, cache).

    One row per clip segment (`row` indexes `cache.waves`). The files that could not be used are
    written to `report_dir/bad_files.csv` (None: not written; cross-validation writes them into its
    folder once that exists). Cross-validation calls this once and splits the items per fold.
    """
    table = load_table(config.data)
    cache = prepare_cache(table["path"].tolist(), config.data, workers=config.data.workers, progress=progress)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        cache.write_bad_files(report_dir / "bad_files.csv")
    if strict and len(cache.bad_files):
        raise EarmarkError(f"{len(cache.bad_files)} file(s) could not be used (--strict); "
                           f"{_where_reasons(cache, report_dir)}")
    items = table.merge(cache.segments, on="path", how="inner", validate="one_to_many")
    if items.empty:
        raise EarmarkError(f"none of the {len(table)} audio files could be decoded; {_where_reasons(cache, report_dir)}")
    labels = sorted_labels(items["label"])
    if len(labels) < 2:
        raise EarmarkError(f"only one class ('{labels[0]}') has usable audio; a classifier needs at least two "
                           f"(check data.path; {_where_reasons(cache, report_dir)})")
    return items, labels, cache


def _where_reasons(cache: DecodedCache, report_dir: Path | None) -> str:
    """Where an error sends the reader: the bad-file report (when written) and the first bad file."""
    parts = [f"reasons in {report_dir / 'bad_files.csv'}"] if report_dir is not None else []
    if len(cache.bad_files):
        parts.append(f"first: {cache.bad_files.iloc[0]['path']}: {cache.bad_files.iloc[0]['reason']}")
    return ", ".join(parts) or "no file failed to decode"


def with_splits(items: pd.DataFrame, labels: list[str], cache: DecodedCache, split_dir: Path,
                group_key: str | None) -> PreparedData:
    """Hand on `items` whose `split` column is already assigned (by `assign_splits`, or a
    cross-validation fold): write train/val/test CSVs and split_stats.json (which counts the bad files)
    to `split_dir`."""
    stats = split_stats(items, group_key)
    stats["bad_files"] = int(len(cache.bad_files))
    split_dir.mkdir(parents=True, exist_ok=True)
    write_splits(items, split_dir, stats)
    return PreparedData(items=items.reset_index(drop=True), labels=labels, cache=cache, split_dir=split_dir,
                        stats=stats)
