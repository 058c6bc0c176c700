"""prepare --to (LitData chunks + manifest), data.source=stream training and evaluation, locally and
through a real S3-compatible server (moto's ThreadedMotoServer on 127.0.0.1) started by the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from earmark.data.stream import MANIFEST, open_stream, stream_location
from earmark.errors import EarmarkError

BUCKET = "earmark-test"


def test_stream_location_keeps_the_url_that_pathlib_folds():
    assert stream_location(Path("s3://bucket/some/prefix")) == "s3://bucket/some/prefix"
    assert stream_location("s3://bucket/p") == "s3://bucket/p"
    assert stream_location("rel/folder") == str(Path("rel/folder").resolve())
    with pytest.raises(EarmarkError, match="gs"):
        stream_location("gs://bucket/p")


def test_a_location_without_its_manifest_is_never_read(tmp_path: Path):
    (tmp_path / "half" / "train").mkdir(parents=True)  # chunks started, the manifest never written
    with pytest.raises(EarmarkError, match=f"no {MANIFEST}.*earmark prepare CONFIG --to"):
        open_stream(str(tmp_path / "half"))


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A moto S3 server on 127.0.0.1 with one bucket; the AWS_* variables point at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train_and_compare(tone_config: Path, location: str, tmp_path: Path) -> None:
    """prepare --to `location`, then the same run from the local cache and from the stream."""
    from earmark import api
    from earmark.config import load_config
    from earmark.data.stream_batches import StreamDataModule, adopt_stream_audio, stream_prepared

    prepared = api.prepare(tone_config, ["data.workers=1"], progress=False, to=location)
    manifest = open_stream(location)
    assert manifest.splits == {s: int((prepared.items["split"] == s).sum()) for s in ("train", "val", "test")}
    assert manifest.labels == prepared.labels and manifest.audio["sample_rate_hz"] == 8000

    # one epoch of the streaming train loader sees every training clip once (same clips per epoch)
    stream_config, _ = adopt_stream_audio(load_config(tone_config, ["data.source=stream", f"data.path={location}"]))
    streamed = stream_prepared(stream_config, manifest)
    module = StreamDataModule(manifest, streamed, stream_config)
    targets = np.concatenate([batch[1].numpy() for batch in module.train_dataloader()])
    assert np.array_equal(np.bincount(targets, minlength=3), np.bincount(prepared.targets("train"), minlength=3))

    longer = "train.max_epochs=15"  # the fixture's 4 epochs leave the small CNN near chance
    local = api.train(tone_config, ["name=local", longer])
    stream = api.train(tone_config, ["name=stream", longer, "data.source=stream", f"data.path={location}"])
    print("test accuracy: local", local.metrics["accuracy"], "stream", stream.metrics["accuracy"])
    split_columns = ["path", "split"]
    local_split = pd.read_csv(local.run_dir / "splits" / "test.csv")[split_columns].sort_values("path")
    stream_split = pd.read_csv(stream.run_dir / "splits" / "test.csv")[split_columns].sort_values("path")
    assert local_split.reset_index(drop=True).equals(stream_split.reset_index(drop=True))
    assert abs(stream.metrics["accuracy"] - local.metrics["accuracy"]) <= 0.25  # a dozen test clips: noise
    assert stream.metrics["accuracy"] > 0.5  # three tones: far above chance (1/3)

    again = api.evaluate(stream.run_dir)  # re-scored from the stream's test split
    assert again["accuracy"] == pytest.approx(stream.metrics["accuracy"])
    assert "source: stream" in (stream.run_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_prepare_to_a_folder_then_train_and_evaluate_streaming(tone_config: Path, tmp_path: Path):
    _train_and_compare(tone_config, str(tmp_path / "chunks"), tmp_path)
    assert (tmp_path / "chunks" / "train" / "index.json").is_file()


@pytest.mark.slow
def test_prepare_to_s3_then_train_and_evaluate_streaming(s3_server: str, tone_config: Path, tmp_path: Path):
    import boto3

    _train_and_compare(tone_config, f"s3://{BUCKET}/tones", tmp_path)
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {"tones/manifest.json", "tones/items.csv", "tones/train/index.json"} <= keys


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "earmark", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_an_unreachable_server_is_one_error_line_naming_url_and_variables(tone_config: Path, tmp_path: Path):
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    done = _cli(["prepare", str(tone_config), "--to", f"s3://{BUCKET}/tones"], tmp_path, env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"s3://{BUCKET}/tones" in errors[0] and "AWS_ENDPOINT_URL" in errors[0]
    assert not (tmp_path / "ws" / "cache").exists()  # checked before anything was decoded


@pytest.mark.slow  # 16 s on the shared VM: boto3 walks its whole credential chain first
def test_missing_credentials_are_one_error_line(s3_server: str, tone_config: Path, tmp_path: Path):
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true"}
    done = _cli(["train", str(tone_config), "data.source=stream", f"data.path=s3://{BUCKET}/none"], tmp_path,
                {**{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}, **env})
    output = done.stderr + done.stdout
    assert done.returncode == 2 and "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"s3://{BUCKET}/none" in errors[0] and "AWS_ACCESS_KEY_ID" in errors[0]



@pytest.mark.slow
def test_ddp_on_two_cpu_processes_streams_each_rank_its_share_from_s3(s3_server: str, tone_config: Path,
                                                                       tmp_path: Path):
    import torch

    from earmark import api

    location = f"s3://{BUCKET}/tones"
    api.prepare(tone_config, ["data.workers=1"], progress=False, to=location)
    done = _cli(["train", str(tone_config), "data.source=stream", f"data.path={location}", "train.strategy=ddp",
                 "train.accelerator=cpu", "train.devices=2", "train.max_epochs=2"], tmp_path, {"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in done.stderr and done.stdout.count("test accuracy:") == 1  # two processes, one report
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["tones"]
    last = torch.load(tmp_path / "runs" / "tones" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    n_train, batch_size = open_stream(location).splits["train"], 8
    assert last["global_step"] == 2 * ((n_train // 2) // batch_size)  # each rank half the clips (last ones dropped)
