"""Removing what earmark generated: decoded caches and split folders, never anything a user put there.

A folder is removed only when it carries earmark's marker file (`earmark.files.GENERATED_MARKER`,
written when prepare creates it), or, for caches written before the marker existed, earmark's own
meta.json (its version, audio settings and clip length) beside index.csv. `clean_for` removes the
folders one config uses (its decoded cache, with that cache's embeddings, and its split folder);
`clean_cache` and `clean_splits` every such folder under a cache or splits directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from earmark.data.cache_index import INDEX_FILE, META_FILE
from earmark.files import is_generated

CACHE_META_KEYS = {"version", "audio_key", "n_samples"}


def is_cache_folder(folder: Path) -> bool:
    """A cache folder earmark wrote: marked, or (older caches) earmark's meta.json beside index.csv."""
    if is_generated(folder) and (folder / META_FILE).is_file():
        return True
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and CACHE_META_KEYS <= set(meta) and (folder / INDEX_FILE).is_file()


Removed = list[tuple[Path, int]]  # (folder, bytes it held), one per folder deleted


def _remove(folders: list[Path], parent: Path) -> Removed:
    """Delete `folders`, then `parent` if nothing else is left in it; what was removed."""
    removed = []
    for folder in folders:
        removed.append((folder, sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())))
        shutil.rmtree(folder)
    try:
        parent.rmdir()  # only succeeds when nothing else is left in it
    except OSError:
        pass
    return removed


def clean_cache(cache_dir: str | os.PathLike) -> Removed:
    """Remove the cache folders under `cache_dir` (or `cache_dir` itself if it is one)."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    folders = [cache_dir] if is_cache_folder(cache_dir) else [p for p in cache_dir.iterdir()
                                                              if p.is_dir() and is_cache_folder(p)]
    return _remove(folders, cache_dir)


def clean_splits(splits_dir: str | os.PathLike) -> Removed:
    """Remove the marked split folders under `splits_dir` (workspace/splits); a user's own files stay."""
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        return []
    return _remove([p for p in splits_dir.iterdir() if p.is_dir() and is_generated(p)], splits_dir)


def clean_for(cache: Path, split_folder: Path) -> Removed:
    """Remove one config's decoded cache folder `cache` (its embeddings live inside it) and its split
    folder `split_folder`, each only if earmark made it; other configs' folders stay."""
    removed = []
    for folder, is_ours in ((cache, is_cache_folder), (split_folder, is_generated)):
        if folder.is_dir() and is_ours(folder):
            removed += _remove([folder], folder.parent)
    return removed
