"""Prepare once: metadata → decode-once cache → honest splits, handed on as one plain object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from earmark.config import Config
from earmark.data.cache import DecodedCache, prepare_cache
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
        index = {label: i for i, label in enumerate(self.labels)}
        return self.items.loc[self.items["split"] == split, "label"].map(index).to_numpy(dtype=np.int64)


def natural_key(text: str) -> list:
    """'2' < '10', 'dog' < 'rain': digits compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def sorted_labels(labels) -> list[str]:
    return sorted({str(label) for label in labels}, key=natural_key)


def prepare_data(config: Config, *, strict: bool = False, progress: bool = True) -> PreparedData:
    """Read metadata, decode what is not cached yet, assign and write splits."""
    table = load_table(config.data)
    cache = prepare_cache(table["path"].tolist(), config.data, workers=config.data.workers, progress=progress)
    split_dir = config.workspace / "splits" / config.split_key()
    split_dir.mkdir(parents=True, exist_ok=True)
    cache.write_bad_files(split_dir / "bad_files.csv")
    if strict and len(cache.bad_files):
        raise EarmarkError(f"{len(cache.bad_files)} file(s) could not be used (--strict); reasons in "
                           f"{split_dir / 'bad_files.csv'}, first: {cache.bad_files.iloc[0]['path']}: "
                           f"{cache.bad_files.iloc[0]['reason']}")
    items = table.merge(cache.segments, on="path", how="inner", validate="one_to_many")
    if items.empty:
        raise EarmarkError(f"none of the {len(table)} audio files could be decoded; reasons in "
                           f"{split_dir / 'bad_files.csv'}")
    labels = sorted_labels(items["label"])
    if len(labels) < 2:
        raise EarmarkError(f"only one class ('{labels[0]}') has usable audio; a classifier needs at least two "
                           f"(check data.path and {split_dir / 'bad_files.csv'})")
    items = assign_splits(items, config.split, config.seed)
    stats = split_stats(items, config.split.group_by)
    stats["bad_files"] = int(len(cache.bad_files))
    write_splits(items, split_dir, stats)
    return PreparedData(items=items.reset_index(drop=True), labels=labels, cache=cache, split_dir=split_dir,
                        stats=stats)
