"""Prepared data as LitData chunks, in a local folder or an S3-compatible bucket (`s3://bucket/prefix`).

Layout under the location (written by `write_stream`, read by `open_stream` / `stream_split_waves`):

    train/ val/ test/   LitData chunks (`litdata.optimize`), one record per clip:
                        wave (n_samples,) float32, target int (class id), index int (its line in items.csv)
    items.csv           path, label, split, index (+ group, segment, start_s, end_s where present)
    manifest.json       audio settings, input contract, labels, split counts; written LAST, so a location
                        without it is an unfinished prepare and is never read

Credentials and endpoint come from the usual AWS environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), read by boto3 and LitData.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from earmark.errors import EarmarkError
from earmark.files import atomic_write_text

MANIFEST = "manifest.json"
ITEMS = "items.csv"
FORMAT = "earmark-stream/1"
SPLITS = ("train", "val", "test")
CREDENTIALS_HINT = ("set AWS_ENDPOINT_URL (the S3-compatible server, e.g. http://127.0.0.1:9000), AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION where the server needs one)")


def stream_location(path: str | os.PathLike) -> str:
    """`data.path` / `--to` as LitData wants it: `s3://bucket/prefix` (pathlib folds `//` to `/`) or a folder."""
    import importlib.util

    missing = [name for name in ("litdata", "boto3") if importlib.util.find_spec(name) is None]
    if missing:
        raise EarmarkError(f"streamed data ({path}) needs {' and '.join(missing)}: pip install 'earmark[stream]' "
                           f"(or `pip install litdata boto3`)")
    text = str(path)
    fixed = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)", r"\1://", text)
    if "://" in fixed and not fixed.startswith("s3://"):
        raise EarmarkError(f"{text}: streamed data lives in a local folder or s3://bucket/prefix; "
                           f"got the scheme '{fixed.split('://')[0]}'")
    return fixed if fixed.startswith("s3://") else str(Path(fixed).expanduser().resolve())


def is_remote(location: str) -> bool:
    return location.startswith("s3://")


def allow_plain_http() -> None:
    """LitData's obstore uploads/downloads refuse an http:// endpoint (a local MinIO or moto server) unless
    the client may use plain HTTP; its S3 store takes no option for that, so set it in its client options.
    Called in every process that talks to the bucket (prepare's workers are spawned afresh)."""
    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        from litdata.streaming import downloader

        downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = "true"


def _s3_client():
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", config=BotoConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}))


def _bucket_key(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def _storage_error(url: str, error: Exception) -> EarmarkError:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "the AWS default endpoint")
    return EarmarkError(f"cannot use {url} (endpoint {endpoint}): {type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else 'no details'}; {CREDENTIALS_HINT}")


def _write_small(location: str, name: str, text: str) -> None:
    if not is_remote(location):
        atomic_write_text(Path(location) / name, text)
        return
    bucket, prefix = _bucket_key(location)
    try:
        _s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"), Body=text.encode())
    except Exception as error:  # botocore's connection, credential and client errors alike
        raise _storage_error(f"{location}/{name}", error) from error


def _read_small(location: str, name: str) -> str | None:
    """The file's text, or None when the location has no such file."""
    if not is_remote(location):
        path = Path(location) / name
        return path.read_text() if path.is_file() else None
    from botocore.exceptions import ClientError

    bucket, prefix = _bucket_key(location)
    try:
        body = _s3_client().get_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"))["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise _storage_error(f"{location}/{name}", error) from error
    except Exception as error:
        raise _storage_error(f"{location}/{name}", error) from error
    return body.decode()


def _remove_manifest(location: str) -> None:
    """Before writing chunks: a location being rewritten must not look complete."""
    if not is_remote(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        (Path(location) / MANIFEST).unlink(missing_ok=True)
        return
    bucket, prefix = _bucket_key(location)
    try:
        _s3_client().delete_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}".lstrip("/"))
    except Exception as error:
        raise _storage_error(location, error) from error


def check_writable(location: str) -> None:
    """Fail before any decoding when the bucket cannot be reached or written."""
    _remove_manifest(location)


class ClipRecords:
    """`litdata.optimize`'s fn: one cached clip as a record. Opens the cache's memmap in the worker."""

    def __init__(self, waves_file: Path, n_samples: int) -> None:
        self.waves_file, self.n_samples = waves_file, n_samples
        self._waves: np.ndarray | None = None

    def __call__(self, item: tuple[int, int, int]) -> dict[str, Any]:
        allow_plain_http()
        if self._waves is None:
            self._waves = np.memmap(self.waves_file, dtype=np.float32, mode="r").reshape(-1, self.n_samples)
        row, target, index = item
        return {"wave": np.array(self._waves[row], dtype=np.float32), "target": int(target), "index": int(index)}


@dataclass
class StreamManifest:
    location: str
    audio: dict[str, Any]
    n_samples: int
    labels: list[str]
    splits: dict[str, int]
    raw: dict[str, Any]

    def split_url(self, split: str) -> str:
        return f"{self.location.rstrip('/')}/{split}"


def write_stream(prepared, data, location: str, *, workers: int = 1, chunk_bytes: str = "64MB") -> StreamManifest:
    """Write `prepared` (a `PreparedData`) as LitData chunks per split to `location`, then items.csv, then
    the manifest (last). `data`: the DataConfig it was decoded with."""
    import litdata

    from earmark.data.cache import WAVES_FILE
    from earmark.data.labels import class_ids

    allow_plain_http()
    _remove_manifest(location)
    items = prepared.items.copy()
    items["index"] = np.arange(len(items))
    targets = class_ids(items["label"], prepared.labels)
    n_samples = int(prepared.cache.waves.shape[1])
    records = ClipRecords(prepared.cache.directory / WAVES_FILE, n_samples)
    splits: dict[str, int] = {}
    for split in SPLITS:
        chosen = np.flatnonzero((items["split"] == split).to_numpy())
        splits[split] = int(len(chosen))
        if not len(chosen):
            continue
        inputs = [(int(items["row"].iat[i]), int(targets[i]), int(i)) for i in chosen]
        # fork: a spawned worker re-imports torch (~8 s per split); the parent holds no obstore runtime yet
        litdata.optimize(fn=records, inputs=inputs, output_dir=f"{location.rstrip('/')}/{split}",
                         chunk_bytes=chunk_bytes, num_workers=min(workers, len(inputs)), mode="overwrite",
                         verbose=False, start_method="fork" if sys.platform.startswith("linux") else None)
    keep = [c for c in ("path", "label", "group", "split", "segment", "start_s", "end_s", "index") if c in items]
    _write_small(location, ITEMS, items[keep].to_csv(index=False))
    manifest = {"format": FORMAT, "audio": data.audio_key(), "n_samples": n_samples,
                "labels": list(prepared.labels), "splits": splits,
                "input_contract": {**data.audio_key(), "labels": list(prepared.labels)},
                "bad_files": int(len(prepared.cache.bad_files)), "ignored_files": int(len(prepared.cache.ignored_files)),
                "created_unix_s": time.time()}
    _write_small(location, MANIFEST, json.dumps(manifest, indent=2))
    return _manifest(location, manifest)


def _manifest(location: str, raw: dict[str, Any]) -> StreamManifest:
    return StreamManifest(location, raw["audio"], int(raw["n_samples"]), list(raw["labels"]),
                          {k: int(v) for k, v in raw["splits"].items()}, raw)


def open_stream(location: str) -> StreamManifest:
    """The manifest of a finished `prepare --to`; an error when it is missing (an unfinished prepare) or foreign."""
    text = _read_small(location, MANIFEST)
    if text is None:
        raise EarmarkError(f"{location} has no {MANIFEST}: it is not a finished `earmark prepare --to` (the manifest "
                           f"is written last); run `earmark prepare CONFIG --to {location}` again")
    raw = json.loads(text)
    if raw.get("format") != FORMAT:
        raise EarmarkError(f"{location}/{MANIFEST} is not an earmark stream manifest (format {raw.get('format')!r}, "
                           f"expected {FORMAT!r}); prepare it with `earmark prepare CONFIG --to {location}`")
    return _manifest(location, raw)


def stream_items(manifest: StreamManifest) -> pd.DataFrame:
    text = _read_small(manifest.location, ITEMS)
    if text is None:
        raise EarmarkError(f"{manifest.location} has a manifest but no {ITEMS}; prepare it again")
    return pd.read_csv(io.StringIO(text), keep_default_na=False, dtype={"label": str, "group": str, "path": str})


def streaming_dataset(manifest: StreamManifest, split: str, *, shuffle: bool, seed: int, cache_dir: Path,
                      drop_last: bool = False, whole: bool = False):
    """LitData's StreamingDataset over one split's chunks (downloaded on demand into `cache_dir`).

    Under DDP it yields this rank's share (LitData reads WORLD_SIZE / GLOBAL_RANK); `whole`: every clip
    in every process (the val/test clips every rank holds, the normalisation statistics every rank fits)."""
    from litdata import StreamingDataset
    from litdata.utilities.env import _DistributedEnv

    allow_plain_http()
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        dataset = StreamingDataset(manifest.split_url(split), shuffle=shuffle, seed=seed, drop_last=drop_last,
                                   cache_dir=str(cache_dir))
    except Exception as error:
        raise _storage_error(manifest.split_url(split), error) from error
    if whole:
        dataset.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
    return dataset


def stack_clips(records: list[dict[str, Any]]):
    """collate_fn: LitData records -> (waves (B, n_samples) float32, targets (B,) int64, index (B,) int64)."""
    import torch

    waves = torch.stack([torch.as_tensor(r["wave"], dtype=torch.float32) for r in records])
    targets = torch.as_tensor([int(r["target"]) for r in records], dtype=torch.long)
    return waves, targets, torch.as_tensor([int(r["index"]) for r in records], dtype=torch.long)


def stream_split_waves(manifest: StreamManifest, split: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All clips of `split`, read through the stream: (waves (n, n_samples) float32, index (n,) int64),
    in items.csv order."""
    from litdata import StreamingDataLoader

    n = manifest.splits.get(split, 0)
    if not n:
        return np.zeros((0, manifest.n_samples), dtype=np.float32), np.zeros(0, dtype=np.int64)
    dataset = streaming_dataset(manifest, split, shuffle=False, seed=0, cache_dir=cache_dir, whole=True)
    batches, filled = [], 0
    for batch_waves, _, batch_index in StreamingDataLoader(dataset, batch_size=256, num_workers=0,
                                                            collate_fn=stack_clips):
        batches.append((batch_index.numpy(), batch_waves.numpy()))
        filled += len(batch_index)
    order = np.concatenate([b[0] for b in batches])
    stacked = np.concatenate([b[1] for b in batches])
    sort = np.argsort(order, kind="stable")
    if filled != n:
        raise EarmarkError(f"{manifest.split_url(split)} yielded {filled} clips, its manifest says {n}; prepare again")
    return stacked[sort], order[sort]
