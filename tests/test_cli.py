"""The command line as a user runs it: real processes, exit codes, no tracebacks."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from conftest import tone_clip


def earmark(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "earmark", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})


def assert_clean_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:")
    for word in words:
        assert word in result.stderr, result.stderr


def test_help_lists_every_command_quickly(tmp_path):
    result = earmark("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("train", "prepare", "evaluate", "predict", "inspect", "clean", "models"):
        assert command in result.stdout
    check = subprocess.run([sys.executable, "-c", "import earmark.cli, sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == "False"  # heavy imports wait for the command that needs them


class NetworkCalled(BaseException):  # not an Exception: no retry loop catches it
    pass


def test_the_model_listing_asks_no_network(tmp_path, monkeypatch):
    import socket

    from earmark.models.registry import describe_models

    def refuse(*args, **kwargs):
        raise NetworkCalled(f"network asked for {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    rows = describe_models()
    assert {"simple_cnn", "clap_audio", "hf_audio", "timm:<name>"} <= {row["name"] for row in rows}
    monkeypatch.undo()
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    started = time.monotonic()
    listed = subprocess.run([sys.executable, "-m", "earmark", "models"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**env, "COLUMNS": "200"})
    wall_s = time.monotonic() - started
    assert listed.returncode == 0 and "clap_audio" in listed.stdout, listed.stderr[-2000:]
    assert "huggingface.co" not in listed.stderr and "Retrying" not in listed.stderr, listed.stderr[-2000:]
    assert wall_s < 20, f"{wall_s:.1f} s"  # the hub's retries alone took 46 s; a listing is an import of torch


def test_hub_offline_makes_a_hub_model_fail_at_once():
    from earmark.errors import EarmarkError
    from earmark.models.registry import create_model
    from earmark.models.weights import hub_offline

    started = time.monotonic()
    with hub_offline(), pytest.raises(EarmarkError, match="clap"):
        create_model("clap_audio", 10, (1, 48000))
    assert time.monotonic() - started < 15  # online retries: 23 s


@pytest.mark.slow
def test_models_command_lists_every_family_with_counts_and_weights(tmp_path):
    result = earmark("models", "--count", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("simple_cnn", "wave_cnn", "lite_cnn", "cnn14", "resnet18", "densenet121", "inception_v3",
                 "efficientnetv2_s", "timm:<name>", "cnn_gpt2", "wav2vec2", "ast", "personalized"):
        assert name in result.stdout, name
    assert "0.07 M" in result.stdout and "11.18 M" in result.stdout  # simple_cnn, resnet18 parameter counts
    assert "Hugging Face hub" in result.stdout


def test_unknown_key_and_missing_path_are_one_line_errors(tmp_path):
    assert_clean_error(earmark("train", "train.max_epoch=3", cwd=tmp_path), "train.max_epoch", "max_epochs")
    assert_clean_error(earmark("train", "data.source=folder", "data.path=/no/such/folder", cwd=tmp_path),
                       "/no/such/folder")
    assert_clean_error(earmark("train", "missing.yaml", cwd=tmp_path), "missing.yaml")


@pytest.mark.slow
def test_bad_data_gets_a_clear_message(tmp_path):
    corrupt = tmp_path / "corrupt"
    for label in ("a", "b"):
        (corrupt / label).mkdir(parents=True)
        for i in range(3):
            (corrupt / label / f"{i}.wav").write_bytes(b"RIFF garbage")
    common = [f"data.cache_dir={tmp_path / 'cache'}", f"workspace={tmp_path / 'ws'}"]
    assert_clean_error(earmark("prepare", "data.source=folder", f"data.path={corrupt}", *common, cwd=tmp_path), "bad_files.csv")
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    sf.write(single / "x.wav", tone_clip(440, 8000, 0.5, 0), 8000)
    assert_clean_error(earmark("prepare", "data.source=folder", f"data.path={single.parent}", *common, cwd=tmp_path), "class")
    csv = tmp_path / "meta.csv"
    csv.write_text("foo,bar\n1,2\n")
    assert_clean_error(earmark("prepare", "data.source=csv", f"data.path={csv}", *common, cwd=tmp_path),
                       "data.columns")


@pytest.mark.slow
def test_train_predict_evaluate_from_the_command_line(tone_config, tone_folder, tmp_path):
    trained = earmark("train", str(tone_config), "model.name=wave_cnn", "features.kind=waveform",
                      "train.max_epochs=2", "--strict", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "test accuracy:" in trained.stdout
    run = tmp_path / "runs" / "tones"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    predicted = earmark("predict", str(run), str(tone_folder / "low"), "--out", str(tmp_path / "p.csv"),
                        cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 13
    evaluated = earmark("evaluate", str(run), "--out", str(tmp_path / "eval"), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "accuracy" in evaluated.stdout and (tmp_path / "eval" / "metrics.json").is_file()


@pytest.mark.slow
def test_inspect_with_augmentation_preview(tone_config, tmp_path):
    result = earmark("inspect", str(tone_config), "augment.freq_masks=2", "augment.noise_snr_db=[5,15]",
                     "--augment", "--out", str(tmp_path / "look"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("spectrograms.png", "augment.png", "summary.json"):
        assert (tmp_path / "look" / name).stat().st_size > 0
    assert "augment" in result.stdout and "one batch" in result.stdout


def test_version_config_and_flags_in_help(tmp_path):
    from earmark import __version__

    version = earmark("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"earmark {__version__}"
    shown = earmark("config", "train.max_epochs=3", "split.test_fold=4", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    import yaml

    resolved = yaml.safe_load(shown.stdout)
    assert resolved["train"]["max_epochs"] == 3 and resolved["split"]["test_fold"] == "4"
    assert resolved["features"]["n_mels"] == 64  # the defaults are printed too
    assert_clean_error(earmark("config", "train.bach_size=3", cwd=tmp_path), "did you mean 'batch_size'")
    helped = earmark("train", "--help", cwd=tmp_path)
    assert "--no-strict" in helped.stdout and "<bool>" not in helped.stdout


def test_config_prints_what_train_runs_and_suggests_near_misses(tmp_path):
    import yaml

    # a pretrained backbone decides the rate and the front-end: `config` says so, as the run's config.yaml will
    shown = earmark("config", "model.name=aisfx", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    planned = yaml.safe_load(shown.stdout)
    assert planned["data"]["sample_rate_hz"] == 44100 and planned["features"]["kind"] == "waveform"
    assert planned["features"]["normalize"] is False
    assert_clean_error(earmark("config", "data.clip=chunck", cwd=tmp_path), "data.clip", "did you mean 'chunk'")
    from earmark import api
    from earmark.errors import EarmarkError

    with pytest.raises(EarmarkError, match="model.name 'simple_cn' \\(did you mean 'simple_cnn'\\?\\)"):
        api.planned_config(None, ["model.name=simple_cn"])  # what `earmark config` calls
