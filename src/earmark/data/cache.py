"""Decode-once cache: every file is decoded, mixed, resampled and cut once per audio setting.

Layout of one cache folder, `data.cache_dir / <12-hex hash of data.audio_key()>`:

    meta.json   the audio key, n_samples and the layout version
    lock        held while a prepare writes (see cache_lock.py)
    free_rows.json  rows no index record points at, reused by the next prepare (see cache_rows.py)
    waves.f32   raw little-endian float32, shape (rows, n_samples), append-only
    index.csv   one line per file: path, size, mtime_ns, status, reason, first_row, n_rows, ...

A file whose (absolute path, size, mtime_ns) matches the index is never decoded again,
bad files included (they are retried only once the file changes). Changed files get new
rows; their old rows stay in waves.f32 unreferenced until `earmark clean` (`earmark.data.clean`)
removes the folder. Writes are crash-safe: rows are written and flushed before the index
that points at them is replaced atomically, so an interrupted prepare keeps all it had, and
the rows it wrote that nothing points at are reused by the next prepare (even after kill -9).
Concurrent prepares of one folder take turns (a file lock that a dead prepare never keeps:
its decode workers die with it); readers need no lock.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from earmark.config import DataConfig
from earmark.console import progress_bar
from earmark.data.audio import AudioError, clip_samples, extension, load_segments
from earmark.data.cache_index import (
    INDEX_COLUMNS,
    INDEX_DTYPES,
    WAVE_DTYPE,
    WAVES_FILE,
    checkpoint,
    open_folder,
    open_waves,
)
from earmark.data.cache_lock import folder_lock, parent_alive, worker_init
from earmark.data.cache_rows import free_rows, record_free_rows, rows_after_trim, unused
from earmark.errors import EarmarkError

IGNORED_FILES = "ignored_files.csv"
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
    ignored_files: path, reason of inputs the source left out before decoding (hidden files,
               CSV rows without a label, ...); set by whoever read the source, empty otherwise.
    """

    directory: Path
    waves: np.ndarray
    segments: pd.DataFrame
    files: pd.DataFrame
    bad_files: pd.DataFrame
    stats: PrepareStats
    ignored_files: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))

    def write_bad_files(self, path: str | os.PathLike) -> Path:
        """Write the bad-file report as CSV (header even when empty); a folder gets `bad_files.csv`.

        `ignored_files.csv` (path, reason) is written beside it.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "bad_files.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bad_files.to_csv(path, index=False, columns=["path", "reason"])
        self.ignored_files.to_csv(path.with_name(IGNORED_FILES), index=False, columns=["path", "reason"])
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
    with folder_lock(folder, _say) as lock_descriptor:
        index = open_folder(folder, data, n_samples)
        stale: dict[str, tuple[int, int]] = {}  # key -> (size, mtime_ns) of files to decode
        for key in dict.fromkeys(keys):
            stamp = _stamp(key)
            record = index.get(key)
            if record is None or (record["size"], record["mtime_ns"]) != stamp:
                stale[key] = stamp
        transient = _decode_into(folder, index, stale, data, n_samples, workers, progress, lock_descriptor)

    records = [transient.get(key) or index[key] for key in keys]
    files = pd.DataFrame([{**rec, "path": path} for rec, path in zip(records, requested)], columns=INDEX_COLUMNS)
    files = files.astype(INDEX_DTYPES)
    bad = files[files["status"] != "ok"]
    segments = _segment_table(files[files["status"] == "ok"], data, hop_samples)
    n_files = len(set(keys))
    stats = PrepareStats(n_files=n_files, n_decoded=len(stale), n_reused=n_files - len(stale), n_bad=len(bad),
                         n_segments=len(segments), seconds=time.perf_counter() - started)
    return DecodedCache(directory=folder, waves=open_waves(folder, n_samples), segments=segments, files=files,
                        bad_files=bad[["path", "reason"]].reset_index(drop=True), stats=stats)


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


def decode_to_rows(assignments: Sequence[tuple[str, int]], data: DataConfig, waves_path: str,
                   parent_pid: int | None = None) -> list[tuple[str, int, dict, str]]:
    """Decode one-clip files (clip pad/crop) straight into their reserved rows of the waves file.

    `assignments` are (path, row). Returns (path, rows written: 1 or 0, info, reason). Workers
    write in parallel into the page cache, so no clip is pickled back to the parent. A worker
    (`parent_pid` given) writes nothing once its prepare is gone: the rows are someone else's then.
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
            if not parent_alive(parent_pid):
                os._exit(1)
            waves.seek(row * n_samples * WAVE_DTYPE.itemsize)
            waves.write(np.ascontiguousarray(clips[:1], dtype=WAVE_DTYPE).tobytes())
            results.append((path, 1, info, ""))
    return results


def _decode_into(folder, index, stale, data, n_samples, workers, progress, lock_descriptor) -> dict[str, dict]:
    """Decode `stale` files, store their clips and update `index` in place and on disk.

    One clip per file (pad/crop): rows are reserved up front (free rows first, see cache_rows.py)
    and decoders write them directly. Chunked files have an unknown number of clips: they are
    decoded, sent back and appended. Returns records of files whose decoder process died:
    reported bad, but not cached, so they are retried next time.
    """
    transient: dict[str, dict] = {}
    if not stale:
        return transient
    waves_path = folder / WAVES_FILE
    row_bytes = n_samples * WAVE_DTYPE.itemsize
    with open(waves_path, "r+b" if waves_path.exists() else "w+b") as waves:
        rows = os.fstat(waves.fileno()).st_size // row_bytes  # a half-written last row is dropped
        free = free_rows(folder, index, rows)
        rows = rows_after_trim(free, rows)  # free rows at the end: cut off
        free = free[free < rows].tolist()
        waves.truncate(rows * row_bytes)
        last_checkpoint = time.monotonic()
        one_clip = data.clip != "chunk"
        pool_args = (os.getpid(), lock_descriptor)
        if one_clip:  # a row per file, free ones first; listed before any is written
            new_rows = list(range(rows, rows + max(0, len(stale) - len(free))))
            reserved = free + new_rows
            record_free_rows(folder, reserved)
            waves.truncate((rows + len(new_rows)) * row_bytes)
            row_of = dict(zip(stale, reserved))
            results = _run_tasks(list(row_of.items()), decode_to_rows, (data, str(waves_path)), workers,
                                 lambda task, reason: (task[0], 0, {}, reason), DIRECT_POOL_MIN_WORK_S, pool_args)
        else:
            reserved = free
            record_free_rows(folder, free, from_row=rows)
            results = _run_tasks(list(stale), decode_batch, (data,), workers,
                                 lambda path, reason: (path, None, {}, reason), POOL_MIN_WORK_S, pool_args)
        waves.seek(rows * row_bytes)
        with progress_bar(progress, len(stale), "decoding audio") as advance:
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
                    checkpoint(waves, folder, index)
                    last_checkpoint = time.monotonic()
        checkpoint(waves, folder, index)
    record_free_rows(folder, unused(reserved, index))  # bad files' rows, and free rows left over
    return transient


def _run_tasks(tasks: list, work: Callable[..., list], args: tuple, workers: int,
               failed: Callable[[Any, str], tuple], pool_min_work_s: float, pool_args: tuple = (None, None)):
    """Yield (result, cacheable) for every task; `cacheable` is False when a worker died, not the file.

    In-process, or from a process pool when the work is worth it: the first IN_PROCESS_BELOW
    tasks run here and are timed; the pool takes the rest only if they would need
    `pool_min_work_s` alone. Shipping clips back costs about as much as decoding short 8 kHz
    WAVs, so the appending path (chunk mode) only pools slow decodes; the direct-write path
    ships nothing back and pools much sooner. `pool_args` (this process's pid, the lock's
    descriptor) go to `worker_init`: workers never hold the lock and die with this process.
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
    parent_pid, lock_descriptor = pool_args
    context = _pool_context()
    if context.get_start_method() != "fork":
        lock_descriptor = None  # only a fork inherits it; elsewhere that number may be another file
    executor = ProcessPoolExecutor(min(workers, len(batches)), mp_context=context,
                                   initializer=worker_init, initargs=(parent_pid or os.getpid(), lock_descriptor))
    worker_args = (*args, parent_pid) if work is decode_to_rows else args
    try:
        futures = {executor.submit(work, batch, *worker_args): batch for batch in batches}
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


def _say(line: str) -> None:
    print(f"earmark: {line}", file=sys.stderr, flush=True)


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime_ns) identifying a file's version; (-1, -1) when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


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

