"""Prepare: check a config before any work, decode once, cache and split; clean what prepare made."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from earmark.config import Config, as_config
from earmark.workflows.plan import check_groups, plan_model


def prepare(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
            progress: bool = True, to: str | Path | None = None):
    """Decode (once), cache and split the data; returns `PreparedData`.

    to: a folder or `s3://bucket/prefix`; the decoded clips, labels, groups and split are also written
    there as LitData chunks, with items.csv and manifest.json last (`earmark.data.stream`), for
    `data.source=stream data.path=TO`. The bucket is checked before anything is decoded."""
    from earmark.data.prepared import prepare_data
    from earmark.workflows.auto_candidates import single_model_config

    plan = plan_model(single_model_config(as_config(config, overrides)))
    location = None
    if to is not None:
        from earmark.data.stream import check_writable, stream_location

        location = stream_location(to)
        check_writable(location)
    prepared = prepare_data(plan.config, strict=strict, progress=progress)
    check_groups(plan, prepared.items)
    if location is not None:
        import os

        from earmark.data.stream import write_stream

        data = plan.config.data
        prepared.stream = write_stream(prepared, data, location, workers=data.workers or os.cpu_count() or 1)
    return prepared


def clean(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *,
          everything: bool = False) -> list[tuple[Path, int]]:
    """Remove what `config` uses: its decoded cache (with the embeddings cached beside it) and its split
    folder; with `everything`, every cache under data.cache_dir and every split folder under
    workspace/splits. Returns (folder, bytes) per folder removed. Runs are never touched, and only
    folders earmark marked as its own are deleted (see `earmark.data.clean`)."""
    from earmark.data.cache import cache_folder
    from earmark.data.clean import clean_cache, clean_for, clean_splits
    from earmark.data.prepared import split_folder

    config = as_config(config, overrides)
    if everything:
        return clean_cache(config.data.cache_dir) + clean_splits(config.workspace / "splits")
    return clean_for(cache_folder(config.data), split_folder(config))
