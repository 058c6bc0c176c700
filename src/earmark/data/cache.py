"""Decode-once cache: every file is decoded, mixed, resampled and cut once per audio setting.

Layout of one cache folder, `data.cache_dir / <12-hex hash of data.audio_key()>`:

    meta.json   the audio key, n_samples and the layout version
    lock        held while a prepare writes
    waves.f32   raw little-endian float32, shape (rows, n_samples), append-only
    index.csv   one line per file: path, size, mtime_ns, status, reason, first_row, n_rows, ...

A file whose (absolute path, size, mtime_ns) matches the index is never decoded again,
bad files included (they are retried only once the file changes). Changed files get new
rows; their old rows stay in waves.f32 unreferenced until `earmark clean` (`clean_cache`)
removes the folder. Writes are crash-safe: rows are appended and flushed before the index
that points at them is replaced atomically, so an interrupted prepare keeps all it had.
Concurrent prepares of one folder take turns (a POSIX file lock); readers need no lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from earmark.config import DataConfig
from earmark.data.audio import AudioError, clip_samples, extension, load_segments
from earmark.errors import EarmarkError

CACHE_VERSION = 1
WAVES_FILE, INDEX_FILE, META_FILE, LOCK_FILE = "waves.f32", "index.csv", "meta.json", "lock"
WAVE_DTYPE = np.dtype("<f4")
INDEX_DTYPES = {
    "path": str, "size": "int64", "mtime_ns": "int64", "status": str, "reason": str,
    "first_row": "int64", "n_rows": "int64", "orig_sample_rate_hz": "Int64", "channels": "Int64",
    "duration_s": "float64", "format": str,
}
INDEX_COLUMNS = list(INDEX_DTYPES)
SEGMENT_COLUMNS = ["path", "row", "segment", "start_s", "end_s"]
IN_PROCESS_BELOW = 32  # always decoded in-process; also times the files to choose pool or not
POOL_MIN_WORK_S = 1.0  # appending (chunk) path: pool only for more estimated serial decoding than this
DIRECT_POOL_MIN_WORK_S = 0.1  # direct-write (pad/crop) path: nothing is shipped back, pool sooner
MAX_FILES_PER_TASK = 32  # files per pool task: amortises pickling/IPC, still balances load
CHECKPOINT_EVERY_S = 5.0  # during a long prepare, make progress durable this often


@dataclass(frozen=True)
class PrepareStats:
    n_files: int  # distinct paths requested
    n_decoded: int  # decoded in this call (new or changed files, good or bad)
    n_reused: int  # taken from the index without decoding
    n_bad: int  # distinct requested paths that are bad
    n_segments: int
    seconds: float


@dataclass
class DecodedCache:
    """What `prepare_cache` hands on: clips of the requested files and their bookkeeping.

    waves:     (rows, n_samples) float32 read-only memmap; may hold rows of other files.
    segments:  path, row, segment, start_s, end_s; one line per clip of the requested ok
               files, in the order the paths were given; `path` is as the caller spelled it.
    files:     one line per requested path (repeats once) with the index columns.
    bad_files: path, reason.
    """

    directory: Path
    waves: np.ndarray
    segments: pd.DataFrame
    files: pd.DataFrame
    bad_files: pd.DataFrame
    stats: PrepareStats

    def write_bad_files(self, path: str | os.PathLike) -> Path:
        """Write the bad-file report as CSV (header even when empty); a folder gets `bad_files.csv`."""
        path = Path(path)
        if path.is_dir():
            path = path / "bad_files.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bad_files.to_csv(path, index=False, columns=["path", "reason"])
        return path


def cache_folder(data: DataConfig) -> Path:
    """Where clips for these audio settings live; feature or model settings never change it."""
    key = json.dumps(data.audio_key(), sort_keys=True)
    return Path(data.cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:12]


def prepare_cache(
    paths: Sequence[str | os.PathLike], data: DataConfig, *, workers: int | None = None, progress: bool = True
) -> DecodedCache:
    """Decode the files not cached yet (in parallel), append their clips, and return the cache view."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # a spawned worker re-running a script
        raise EarmarkError("prepare_cache ran while a decode worker imported your script; "
                           "put the call under `if __name__ == \"__main__\":`")
    started = time.perf_counter()
    folder = cache_folder(data)
    n_samples, hop_samples = clip_samples(data)
    requested = list(dict.fromkeys(os.fspath(p) for p in paths))  # repeats are listed once
    keys = [os.path.abspath(p) for p in requested]  # the index is keyed on absolute paths
    workers = workers or data.workers or os.cpu_count() or 1
    with _folder_lock(folder):
        index = _open_folder(folder, data, n_samples)
        stale: dict[str, tuple[int, int]] = {}  # key -> (size, mtime_ns) of files to decode
        for key in dict.fromkeys(keys):
            stamp = _stamp(key)
            record = index.get(key)
            if record is None or (record["size"], record["mtime_ns"]) != stamp:
                stale[key] = stamp
        transient = _decode_into(folder, index, stale, data, n_samples, workers, progress)

    records = [transient.get(key) or index[key] for key in keys]
    files = pd.DataFrame([{**rec, "path": path} for rec, path in zip(records, requested)], columns=INDEX_COLUMNS)
    files = files.astype(INDEX_DTYPES)
    bad = files[files["status"] != "ok"]
    segments = _segment_table(files[files["status"] == "ok"], data, hop_samples)
    n_files = len(set(keys))
    stats = PrepareStats(n_files=n_files, n_decoded=len(stale), n_reused=n_files - len(stale), n_bad=len(bad),
                         n_segments=len(segments), seconds=time.perf_counter() - started)
    return DecodedCache(directory=folder, waves=_open_waves(folder, n_samples), segments=segments, files=files,
                        bad_files=bad[["path", "reason"]].reset_index(drop=True), stats=stats)


def clean_cache(cache_dir: str | os.PathLike) -> int:
    """Remove the cache folders under `cache_dir` (or `cache_dir` itself if it is one); bytes freed.

    Only folders holding an earmark meta.json are removed, so a mistyped path cannot wipe other data.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return 0
    is_cache = (cache_dir / META_FILE).is_file()
    folders = [cache_dir] if is_cache else [p for p in cache_dir.iterdir() if (p / META_FILE).is_file()]
    freed = 0
    for folder in folders:
        freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
    try:
        cache_dir.rmdir()  # only succeeds when nothing else is left in it
    except OSError:
        pass
    return freed


def decode_batch(paths: Sequence[str], data: DataConfig) -> list[tuple[str, np.ndarray | None, dict, str]]:
    """Decode files into (path, clips or None, info, reason); one file's failure never stops the rest.

    Top-level so a process pool can pickle it.
    """
    results = []
    for path in paths:
        try:
            clips, info = load_segments(path, data)
            results.append((path, clips, info, ""))
        except AudioError as exc:
            results.append((path, None, exc.info, exc.reason))
        except Exception as exc:  # noqa: BLE001 - any failure of one file goes to the report
            results.append((path, None, {}, f"unexpected error: {type(exc).__name__}: {exc}"))
    return results


def decode_to_rows(assignments: Sequence[tuple[str, int]], data: DataConfig,
                   waves_path: str) -> list[tuple[str, int, dict, str]]:
    """Decode one-clip files (clip pad/crop) straight into their reserved rows of the waves file.

    `assignments` are (path, row). Returns (path, rows written: 1 or 0, info, reason). Workers
    write in parallel into the page cache, so no clip is pickled back to the parent.
    Top-level so a process pool can pickle it.
    """
    n_samples, _ = clip_samples(data)
    decoded = decode_batch([path for path, _ in assignments], data)
    results = []
    with open(waves_path, "r+b") as waves:
        for (path, row), (_, clips, info, reason) in zip(assignments, decoded):
            if clips is None:
                results.append((path, 0, info, reason))
                continue
            waves.seek(row * n_samples * WAVE_DTYPE.itemsize)
            waves.write(np.ascontiguousarray(clips[:1], dtype=WAVE_DTYPE).tobytes())
            results.append((path, 1, info, ""))
    return results


def _decode_into(folder, index, stale, data, n_samples, workers, progress) -> dict[str, dict]:
    """Decode `stale` files, store their clips and update `index` in place and on disk.

    One clip per file (pad/crop): rows are reserved up front and decoders write them directly.
    Chunked files have an unknown number of clips: they are decoded, sent back and appended.
    Returns records of files whose decoder process died: reported bad, but not cached, so
    they are retried next time.
    """
    transient: dict[str, dict] = {}
    if not stale:
        return transient
    waves_path = folder / WAVES_FILE
    row_bytes = n_samples * WAVE_DTYPE.itemsize
    with open(waves_path, "r+b" if waves_path.exists() else "w+b") as waves:
        rows = os.fstat(waves.fileno()).st_size // row_bytes
        waves.truncate(rows * row_bytes)  # drop a half-written row left by a crash; nothing points at it
        waves.seek(0, os.SEEK_END)
        last_checkpoint = time.monotonic()
        one_clip = data.clip != "chunk"
        if one_clip:  # reserve a row per file; a bad file leaves its row unused
            waves.truncate((rows + len(stale)) * row_bytes)
            row_of = {path: rows + i for i, path in enumerate(stale)}
            results = _run_tasks(list(row_of.items()), decode_to_rows, (data, str(waves_path)), workers,
                                 lambda task, reason: (task[0], 0, {}, reason), DIRECT_POOL_MIN_WORK_S)
        else:
            results = _run_tasks(list(stale), decode_batch, (data,), workers,
                                 lambda path, reason: (path, None, {}, reason), POOL_MIN_WORK_S)
        with _progress_bar(progress, len(stale)) as advance:
            for result, cacheable in results:
                if one_clip:
                    path, n_rows, info, reason = result
                    first_row = row_of[path] if n_rows else -1
                else:
                    path, clips, info, reason = result
                    n_rows, first_row = (len(clips), rows) if clips is not None else (0, -1)
                    if clips is not None:
                        waves.write(np.ascontiguousarray(clips, dtype=WAVE_DTYPE).tobytes())
                        rows += n_rows
                if n_rows:
                    index[path] = _record(path, stale[path], "ok", "", first_row, n_rows, info)
                else:
                    (index if cacheable else transient)[path] = _record(path, stale[path], "bad", reason, -1, 0, info)
                advance()
                if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_S:
                    _checkpoint(waves, folder, index)
                    last_checkpoint = time.monotonic()
        _checkpoint(waves, folder, index)
    return transient


def _run_tasks(tasks: list, work: Callable[..., list], args: tuple, workers: int,
               failed: Callable[[Any, str], tuple], pool_min_work_s: float):
    """Yield (result, cacheable) for every task; `cacheable` is False when a worker died, not the file.

    In-process, or from a process pool when the work is worth it: the first IN_PROCESS_BELOW
    tasks run here and are timed; the pool takes the rest only if they would need
    `pool_min_work_s` alone. Shipping clips back costs about as much as decoding short 8 kHz
    WAVs, so the appending path (chunk mode) only pools slow decodes; the direct-write path
    ships nothing back and pools much sooner.
    """
    head, rest = tasks[:IN_PROCESS_BELOW], tasks[IN_PROCESS_BELOW:]
    started = time.perf_counter()
    head_results = work(head, *args) if head else []
    per_task_s = (time.perf_counter() - started) / max(1, len(head))
    yield from ((result, True) for result in head_results)
    if workers <= 1 or per_task_s * len(rest) < pool_min_work_s:
        for task in rest:
            yield work([task], *args)[0], True
        return
    per_batch = max(1, min(MAX_FILES_PER_TASK, math.ceil(len(rest) / (workers * 4))))
    batches = [rest[i : i + per_batch] for i in range(0, len(rest), per_batch)]
    executor = ProcessPoolExecutor(min(workers, len(batches)), mp_context=_pool_context())
    try:
        futures = {executor.submit(work, batch, *args): batch for batch in batches}
        for future in as_completed(futures):
            try:
                yield from ((result, True) for result in future.result())
            except Exception as exc:  # noqa: BLE001 - a dead worker must not lose the whole run
                reason = f"decoder process failed: {type(exc).__name__}: {exc} (not cached; retried next run)"
                yield from ((failed(task, reason), False) for task in futures[future])
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _pool_context():
    """fork on Linux, as torch's DataLoader does: workers start in milliseconds and never re-run
    the caller's script (spawn re-imports it, which needs an `if __name__ == "__main__":` guard).
    Workers only run soundfile, soxr and numpy, none of which a fork of a threaded parent upsets.
    """
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def _record(path, stamp, status, reason, first_row, n_rows, info) -> dict[str, Any]:
    return {
        "path": path, "size": stamp[0], "mtime_ns": stamp[1], "status": status, "reason": reason,
        "first_row": first_row, "n_rows": n_rows,
        "orig_sample_rate_hz": info.get("orig_sample_rate_hz"), "channels": info.get("channels"),
        "duration_s": info.get("duration_s", math.nan), "format": info.get("format", extension(path)),
    }


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One prepare per cache folder at a time: a second one waits, then reuses what the first wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, concurrent prepares of one folder are unsafe there
        yield
        return
    with open(folder / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, also by a crash
        yield


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime_ns) identifying a file's version; (-1, -1) when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _checkpoint(waves, folder: Path, index: dict[str, dict]) -> None:
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


def _open_folder(folder: Path, data: DataConfig, n_samples: int) -> dict[str, dict]:
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
        warnings.warn(f"cache index {index_path} is unreadable ({exc}); its files are decoded again", stacklevel=2)
        return {}
    rows_on_disk = _rows_on_disk(folder, n_samples)
    table = table[table["first_row"] + table["n_rows"] <= rows_on_disk]  # never point past the data
    return {rec["path"]: rec for rec in table.to_dict("records")}


def _rows_on_disk(folder: Path, n_samples: int) -> int:
    waves_path = folder / WAVES_FILE
    size = waves_path.stat().st_size if waves_path.exists() else 0
    return size // (n_samples * WAVE_DTYPE.itemsize)


def _open_waves(folder: Path, n_samples: int) -> np.ndarray:
    rows = _rows_on_disk(folder, n_samples)
    if rows == 0:  # np.memmap cannot map an empty file
        waves = np.zeros((0, n_samples), dtype=WAVE_DTYPE)
        waves.flags.writeable = False
        return waves
    return np.memmap(folder / WAVES_FILE, dtype=WAVE_DTYPE, mode="r", shape=(rows, n_samples))


def _segment_table(ok_files: pd.DataFrame, data: DataConfig, hop_samples: int) -> pd.DataFrame:
    """One line per clip: row in waves, clip number in its file, and its time span in the file."""
    n_rows = ok_files["n_rows"].to_numpy()
    segment = np.arange(n_rows.sum()) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    hop_s = hop_samples / data.sample_rate_hz if data.clip == "chunk" else 0.0
    start_s = segment * hop_s
    duration_s = np.repeat(ok_files["duration_s"].to_numpy(), n_rows)
    return pd.DataFrame({
        "path": np.repeat(ok_files["path"].to_numpy(), n_rows),
        "row": np.repeat(ok_files["first_row"].to_numpy(), n_rows) + segment,
        "segment": segment,
        "start_s": start_s,
        "end_s": np.minimum(start_s + data.duration_s, duration_s),
    }, columns=SEGMENT_COLUMNS)


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable: one step per file, drawn as a rich bar when enabled."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("decoding audio"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("decoding", total=total)
        yield lambda: bar.advance(task)
