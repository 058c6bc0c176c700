"""Prepare: check a config before any work, decode once, cache and split; clean what prepare made."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from earmark.config import Config, as_config
from earmark.workflows.plan import check_groups, plan_model


def prepare(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
            progress: bool = True):
    """Decode (once), cache and split the data; returns `PreparedData`."""
    from earmark.data.prepared import prepare_data

    plan = plan_model(as_config(config, overrides))
    prepared = prepare_data(plan.config, strict=strict, progress=progress)
    check_groups(plan, prepared.items)
    return prepared


def clean(config: Config | str | Path | None = None, overrides: Sequence[str] = ()) -> int:
    """Remove decoded caches and generated splits; returns bytes freed. Runs are never touched."""
    from earmark.data.cache import clean_cache

    config = as_config(config, overrides)
    freed = clean_cache(config.data.cache_dir)
    splits = config.workspace / "splits"
    if splits.exists():
        freed += sum(p.stat().st_size for p in splits.rglob("*") if p.is_file())
        shutil.rmtree(splits)
    return freed
