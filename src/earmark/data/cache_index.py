"""The files of one cache folder: meta.json (checked), index.csv (atomic), waves.f32 (memmapped).

See cache.py for the layout; the lock and the free rows have their own modules.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from earmark.config import DataConfig
from earmark.errors import EarmarkError
from earmark.files import mark_generated

CACHE_VERSION = 1
WAVES_FILE, INDEX_FILE, META_FILE = "waves.f32", "index.csv", "meta.json"
WAVE_DTYPE = np.dtype("<f4")
INDEX_DTYPES = {
    "path": str, "size": "int64", "mtime_ns": "int64", "status": str, "reason": str,
    "first_row": "int64", "n_rows": "int64", "orig_sample_rate_hz": "Int64", "channels": "Int64",
    "duration_s": "float64", "format": str,
}
INDEX_COLUMNS = list(INDEX_DTYPES)

def checkpoint(waves, folder: Path, index: dict[str, dict]) -> None:
    """Make appended rows durable, then point the index at them (never the other way round)."""
    waves.flush()
    os.fsync(waves.fileno())
    _write_index(folder, index)


def _write_index(folder: Path, index: dict[str, dict]) -> None:
    tmp = folder / (INDEX_FILE + ".tmp")
    with open(tmp, "w", newline="") as f:
        pd.DataFrame(list(index.values()), columns=INDEX_COLUMNS).astype(INDEX_DTYPES).to_csv(f, index=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / INDEX_FILE)


def open_folder(folder: Path, data: DataConfig, n_samples: int) -> dict[str, dict]:
    """Create or check the cache folder; return its index as {absolute path: record}."""
    meta = {"version": CACHE_VERSION, "audio_key": data.audio_key(), "n_samples": n_samples}
    meta_path = folder / META_FILE
    if meta_path.is_file():
        found = json.loads(meta_path.read_text())
        if found != json.loads(json.dumps(meta)):
            raise EarmarkError(
                f"cache folder {folder} was written with other settings ({found}); "
                "remove it with `earmark clean` and prepare again"
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        mark_generated(folder)  # `earmark clean` removes only folders that carry the marker
        for leftover in (WAVES_FILE, INDEX_FILE):  # without meta.json these cannot be trusted
            (folder / leftover).unlink(missing_ok=True)
        tmp = folder / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_path)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        return {}
    try:
        table = pd.read_csv(
            index_path, dtype=INDEX_DTYPES, keep_default_na=False,
            na_values={"orig_sample_rate_hz": [""], "channels": [""], "duration_s": ["", "nan"]},
        )
    except (ValueError, pd.errors.ParserError) as exc:
        warnings.warn(f"cache index {index_path} is unreadable ({exc}); its files will be decoded again",
                      stacklevel=2)
        return {}
    rows_on_disk = _rows_on_disk(folder, n_samples)
    table = table[table["first_row"] + table["n_rows"] <= rows_on_disk]  # never point past the data
    return {rec["path"]: rec for rec in table.to_dict("records")}


def _rows_on_disk(folder: Path, n_samples: int) -> int:
    waves_path = folder / WAVES_FILE
    size = waves_path.stat().st_size if waves_path.exists() else 0
    return size // (n_samples * WAVE_DTYPE.itemsize)


def open_waves(folder: Path, n_samples: int) -> np.ndarray:
    rows = _rows_on_disk(folder, n_samples)
    if rows == 0:  # np.memmap cannot map an empty file
        waves = np.zeros((0, n_samples), dtype=WAVE_DTYPE)
        waves.flags.writeable = False
        return waves
    return np.memmap(folder / WAVES_FILE, dtype=WAVE_DTYPE, mode="r", shape=(rows, n_samples))
