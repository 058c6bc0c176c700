"""Training and evaluation from streamed chunks (`data.source=stream`, `earmark.data.stream`).

The train split is read through `litdata.StreamingDataLoader` (shuffled across chunks from (seed,
epoch), each DDP rank its own share, its state saved in every checkpoint); the val and test splits
are read through the stream once and held in memory, so calibration, evaluation and reports are
those of a run from the local cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from earmark.config import Config
from earmark.data.batches import AudioDataModule
from earmark.data.stream import (
    StreamManifest,
    open_stream,
    stack_clips,
    stream_items,
    stream_location,
    stream_split_waves,
    streaming_dataset,
)
from earmark.errors import EarmarkError

NORMALIZATION_CLIPS = 50_000  # the front-end's statistics from at most this many training clips


@dataclass
class StreamedClips:
    """What a `PreparedData` needs of a cache: the val and test clips in memory, rows into `waves`."""

    waves: np.ndarray
    directory: Path
    bad_files: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    ignored_files: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))


def chunk_cache_dir(config: Config, location: str) -> Path:
    """Where LitData keeps the chunks it downloaded from `location`."""
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    return config.data.cache_dir / "stream" / digest


def adopt_stream_audio(config: Config) -> tuple[Config, StreamManifest]:
    """`config` with the stream's audio settings (those it was prepared with) for every one not set
    explicitly; an explicit different one is an error naming both."""
    manifest = open_stream(stream_location(config.data.path))
    explicit = config.data.model_fields_set
    clashes = [f"data.{key}={getattr(config.data, key)} (prepared with {value})"
               for key, value in manifest.audio.items() if key in explicit and getattr(config.data, key) != value]
    if clashes:
        raise EarmarkError(f"{manifest.location} was prepared with other audio settings: {', '.join(clashes)}; "
                           f"leave them out (the stream's are used) or prepare again with yours")
    data = config.data.model_copy(update=dict(manifest.audio))
    return config.model_copy(update={"data": data}), manifest


def stream_prepared(config: Config, manifest: StreamManifest, held: tuple[str, ...] = ("val", "test")):
    """A `PreparedData` for a streamed run: items from items.csv with the stream's split, the clips of
    the `held` splits in memory (`row` into them); other rows are -1: the train split is only ever read
    through the train loader."""
    from earmark.data.prepared import with_splits

    items = stream_items(manifest)
    cache_dir = chunk_cache_dir(config, manifest.location)
    items["row"] = -1
    blocks, offset = [], 0
    for split in held:
        waves, index = stream_split_waves(manifest, split, cache_dir / split)
        items.loc[index, "row"] = np.arange(offset, offset + len(index))
        blocks.append(waves)
        offset += len(index)
    clips = StreamedClips(np.concatenate(blocks), cache_dir)
    split_dir = config.workspace / "splits" / ("stream-" + cache_dir.name)
    items = items.sort_values("index", kind="stable").reset_index(drop=True)
    return with_splits(items, list(manifest.labels), clips, split_dir, config.split.group_by)


def normalization_batches(manifest: StreamManifest, config: Config):
    """Training clips for the front-end's statistics, read through the stream: (B, n_samples) tensors."""
    from litdata import StreamingDataLoader

    dataset = streaming_dataset(manifest, "train", shuffle=False, seed=config.seed,
                                cache_dir=chunk_cache_dir(config, manifest.location) / "train", whole=True)
    seen = 0
    for waves, _, _ in StreamingDataLoader(dataset, batch_size=256, collate_fn=stack_clips):
        yield waves
        seen += len(waves)
        if seen >= NORMALIZATION_CLIPS:
            return


def _pair(batch):
    """collate_fn for training: (waves, targets), the index dropped."""
    waves, targets, _ = stack_clips(batch)
    return waves, targets


class StreamDataModule(AudioDataModule):
    """`AudioDataModule` whose train loader is LitData's `StreamingDataLoader` over the stream's train chunks.

    `prepared`: from `stream_prepared` (val/test in memory). Only the shuffle sampler: a weighted draw
    needs random access, which chunked streaming gives up.
    """

    def __init__(self, manifest: StreamManifest, prepared, config: Config) -> None:
        train = config.train
        if train.sampler != "shuffle":
            raise EarmarkError(f"train.sampler={train.sampler} needs random access to the clips; data.source=stream "
                               f"reads chunks in order: set train.sampler=shuffle")
        rows = {s: prepared.rows(s) for s in ("val", "test")}
        targets = {s: prepared.targets(s) for s in ("train", "val", "test")}
        super().__init__(prepared.cache.waves, rows, targets, batch_size=train.batch_size, seed=config.seed,
                         memory_budget_gb=train.memory_budget_gb, num_workers=train.num_workers)
        self.manifest, self.config = manifest, config

    def _loader(self, split: str, sampler: str = "sequential"):
        if split != "train":
            return super()._loader(split, sampler)
        from litdata import StreamingDataLoader

        dataset = streaming_dataset(self.manifest, "train", shuffle=True, seed=self.seed,
                                    cache_dir=chunk_cache_dir(self.config, self.manifest.location) / "train",
                                    drop_last=self._rank()[1] > 1)
        return StreamingDataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                   collate_fn=_pair)
