"""Streaming from an S3-compatible bucket against the local cache, in one run on this machine.

Starts a moto S3 server on 127.0.0.1 and, for the bundled sample (or --config), prints

    prepare clips/s   decoding into a fresh local cache; then writing LitData chunks to a local folder
                      and to the bucket (the --to step alone), same --workers
    bytes             the clips in the local cache against the objects on the bucket
    first batch s     a StreamingDataLoader over the bucket with an empty chunk cache: time to its first batch
    train clips/s     `earmark train` fit throughput (--epochs, 1 process) from the local cache and streaming from
                      the bucket (fit_seconds: training and validation), and their ratio

    python benchmarks/stream.py [--config cfg.yaml] [--epochs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

from earmark import api
from earmark.config import load_config


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bucket_bytes(bucket: str, prefix: str) -> int:
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sum(item["Size"] for item in listed.get("Contents", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from earmark.data.prepared import prepare_data
    from earmark.data.stream import open_stream, stack_clips, streaming_dataset, write_stream

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import boto3

    boto3.client("s3").create_bucket(Bucket="earmark-bench")
    work = Path(tempfile.mkdtemp(prefix="earmark-stream-bench-"))
    base = [f"workspace={work / 'ws'}", f"data.cache_dir={work / 'cache'}", f"runs_dir={work / 'runs'}",
            f"data.workers={args.workers}", "train.progress=false", f"train.max_epochs={args.epochs}",
            "train.early_stopping_patience=null"]
    config = load_config(args.config, base)

    started = time.perf_counter()
    prepared = prepare_data(config, progress=False)
    decode_s = time.perf_counter() - started
    n_clips = len(prepared.items)
    rates = {"decode to the local cache": n_clips / decode_s}
    for name, location in (("chunks to a local folder", str(work / "chunks")),
                           ("chunks to the bucket", "s3://earmark-bench/sample")):
        started = time.perf_counter()
        write_stream(prepared, config.data, location, workers=args.workers)
        rates[name] = n_clips / (time.perf_counter() - started)
    print(f"prepare, {n_clips} clips, {args.workers} workers:")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:8.1f} clips/s")
    cache_bytes = n_clips * prepared.cache.waves.shape[1] * 4
    print(f"bytes: local cache {cache_bytes / 1e6:.2f} MB (the clips' rows), bucket "
          f"{_bucket_bytes('earmark-bench', 'sample') / 1e6:.2f} MB")

    from litdata import StreamingDataLoader

    manifest = open_stream("s3://earmark-bench/sample")
    started = time.perf_counter()
    dataset = streaming_dataset(manifest, "train", shuffle=True, seed=0, cache_dir=work / "first-batch")
    next(iter(StreamingDataLoader(dataset, batch_size=config.train.batch_size, collate_fn=stack_clips)))
    print(f"first batch from the bucket (empty chunk cache): {time.perf_counter() - started:.2f} s")

    n_train = manifest.splits["train"]
    local = api.train(args.config, base + ["name=local"])
    stream = api.train(args.config, base + ["name=stream", "data.source=stream",
                                            "data.path=s3://earmark-bench/sample"])
    local_rate = n_train * args.epochs / local.fit_seconds
    stream_rate = n_train * args.epochs / stream.fit_seconds
    print(f"train, 1 process, {args.epochs} epochs of {n_train} clips: local cache {local_rate:.1f} clips/s, "
          f"streaming from the bucket {stream_rate:.1f} clips/s (ratio {stream_rate / local_rate:.2f}); "
          f"test accuracy {local.metrics['accuracy']:.3f} vs {stream.metrics['accuracy']:.3f}")
    server.stop()


if __name__ == "__main__":
    main()
