"""Prepare once: metadata → decode-once cache → honest splits, handed on as one plain object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from earmark.config import Config, DataConfig
from earmark.data.cache import DecodedCache, prepare_cache
from earmark.data.labels import sorted_labels
from earmark.data.sources import load_source
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
    stream: Any = None  # the `StreamManifest` written by `prepare --to`, or read for data.source=stream

    def rows(self, split: str) -> np.ndarray:
        return self.items.loc[self.items["split"] == split, "row"].to_numpy(dtype=np.int64)

    def targets(self, split: str) -> np.ndarray:
        from earmark.data.labels import class_ids

        return class_ids(self.items.loc[self.items["split"] == split, "label"], self.labels)


def split_folder(config: Config) -> Path:
    """Where `config`'s splits, bad_files.csv and ignored_files.csv are written."""
    return config.workspace / "splits" / config.split_key()


def prepare_data(config: Config, *, strict: bool = False, progress: bool = True) -> PreparedData:
    """Read metadata, decode what is not cached yet (bad_files.csv and ignored_files.csv beside the
    splits), assign and write splits. `progress`: draw the decode bar and print the data summary."""
    split_dir = split_folder(config)
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
    written to `report_dir/bad_files.csv`, the inputs the source left out to `ignored_files.csv`
    (None: not written; cross-validation writes them into its folder once that exists); `strict`
    fails on either. Cross-validation calls this once and splits the items per fold.
    """
    table, source = load_source(config.data)
    cache = prepare_cache(table["path"].tolist(), config.data, workers=config.data.workers, progress=progress)
    cache.ignored_files = source.ignored_table()
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        cache.write_bad_files(report_dir / "bad_files.csv")
    if progress:
        print("\n".join(summary_lines(cache, report_dir)), flush=True)
    if strict and (len(cache.bad_files) or len(cache.ignored_files)):
        raise EarmarkError(f"{len(cache.bad_files)} file(s) could not be used and {len(cache.ignored_files)} "
                           f"input(s) were left out (--strict); {_where_reasons(cache, report_dir)}")
    items = table.merge(cache.segments, on="path", how="inner", validate="one_to_many")
    if items.empty:
        raise EarmarkError(f"none of the {len(table)} audio files could be decoded; {_where_reasons(cache, report_dir)}")
    labels = sorted_labels(items["label"])
    if len(labels) < 2:
        raise EarmarkError(f"only one class ('{labels[0]}') has usable audio; a classifier needs at least two "
                           f"(check data.path; {_where_reasons(cache, report_dir)})")
    return items, labels, cache


def summary_lines(cache: DecodedCache, report_dir: Path | None) -> list[str]:
    """What prepare (and train, which prepares first) prints: the counts, bad and ignored per reason."""
    stats = cache.stats
    lines = [f"files: {stats.n_files}  decoded: {stats.n_decoded}  reused from cache: {stats.n_reused}  "
             f"bad: {stats.n_bad}  ignored: {len(cache.ignored_files)}  clips: {stats.n_segments}  "
             f"({stats.seconds:.1f} s)"]
    for name, counts in reason_counts(cache).items():
        if not counts:
            continue
        where = f" (listed in {report_dir / (name + '_files.csv')})" if report_dir is not None else ""
        lines.append(f"{name} files{where}:")
        lines += [f"  {count:>6}  {reason}" for reason, count in counts.items()]
    return lines


def reason_counts(cache: DecodedCache) -> dict[str, dict[str, int]]:
    """{"bad": {reason: files}, "ignored": {reason: inputs}}, most frequent first; a bad file's reason
    without its details ("cannot decode: <details>" -> "cannot decode")."""
    counts = {}
    for name, table in (("bad", cache.bad_files), ("ignored", cache.ignored_files)):
        reasons = table["reason"].astype("str")
        if name == "bad":  # only a trailing "(...)": "unsupported format '(no extension)' (...)" keeps its name
            reasons = reasons.str.replace(r"\s+\([^()]*\)$", "", regex=True).str.split(": ").str[0]
        counts[name] = {str(reason): int(count) for reason, count in reasons.value_counts().items()}
    return counts


def _where_reasons(cache: DecodedCache, report_dir: Path | None) -> str:
    """Where an error sends the reader: the reports (when written) and the first bad or ignored input."""
    parts = [f"reasons in {report_dir / 'bad_files.csv'} and {report_dir / 'ignored_files.csv'}"
             ] if report_dir is not None else []
    for table in (cache.bad_files, cache.ignored_files):
        if len(table):
            parts.append(f"first: {table.iloc[0]['path']}: {table.iloc[0]['reason']}")
            break
    return ", ".join(parts) or "no file failed to decode"


def with_splits(items: pd.DataFrame, labels: list[str], cache: DecodedCache, split_dir: Path,
                group_key: str | None) -> PreparedData:
    """Hand on `items` whose `split` column is already assigned (by `assign_splits`, or a
    cross-validation fold): write train/val/test CSVs and split_stats.json (which counts the bad files)
    to `split_dir`."""
    stats = split_stats(items, group_key)
    stats["bad_files"] = int(len(cache.bad_files))
    stats["ignored_files"] = int(len(cache.ignored_files))
    split_dir.mkdir(parents=True, exist_ok=True)
    write_splits(items, split_dir, stats)
    return PreparedData(items=items.reset_index(drop=True), labels=labels, cache=cache, split_dir=split_dir,
                        stats=stats)
