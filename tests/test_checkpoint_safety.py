"""Checkpoints cannot run code: a crafted, corrupt or foreign .ckpt through every load path is one
`error:` line naming the file (and, for a pickle with code in it, the --trust-checkpoint opt-in)."""

import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from earmark.cli.app import main
from earmark.errors import EarmarkError
from earmark.serve.client import free_port
from tiny_runs import train_tiny_run

MARKER_NAME = "pwned"


class RunsCode:
    """A pickle whose loading runs a command: it creates the file `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def crafted(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": RunsCode(marker), "epoch": 0}, path)
    return path


def raw_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("ckpt"), "safe", max_epochs=1).run_dir


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(4000, dtype=np.float32), 8000)
    return path


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["earmark", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def run_with(run_dir: Path, tmp_path: Path, name: str, content: Path) -> Path:
    """A copy of the run whose checkpoints/<name> is `content`."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.copy(content, copy / "checkpoints" / name)
    return copy


def load_paths(run_dir: Path, tmp_path: Path, bad: Path, clip: Path) -> dict[str, list[str]]:
    """Every command line that reads a checkpoint, aimed at `bad`."""
    best = run_with(run_dir, tmp_path / "best", "best.ckpt", bad)
    last = run_with(run_dir, tmp_path / "last", "last.ckpt", bad)
    return {"predict file": ["predict", str(bad), str(clip)],
            "predict run": ["predict", str(best), str(clip)],
            "predict stream": ["predict", str(bad), "--stream", str(clip)],
            "evaluate": ["evaluate", str(best)],
            "export": ["export", str(bad), "--out", str(tmp_path / "export")],
            "serve": ["serve", str(bad), "--port", str(free_port())],
            "resume": ["train", "--resume", str(last)]}


@pytest.mark.parametrize("make", [crafted, raw_pickle])
def test_a_crafted_checkpoint_runs_no_code_on_any_load_path(run_dir, tmp_path, clip, monkeypatch, capsys, make):
    marker = tmp_path / MARKER_NAME
    bad = make(tmp_path / "model.ckpt", marker)
    for what, args in load_paths(run_dir, tmp_path, bad, clip).items():
        code, err = cli(monkeypatch, capsys, *args)
        assert not marker.exists(), f"{what}: the checkpoint's code ran"
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, f"{what}: {err}"
        assert "--trust-checkpoint" in err and ".ckpt" in err, f"{what}: {err}"


def test_cnn14_checkpoint_path_runs_no_code(tmp_path):
    from earmark.models.registry import create_model

    marker = tmp_path / MARKER_NAME
    bad = crafted(tmp_path / "panns.pth", marker)
    with pytest.raises(EarmarkError, match="model.params.trust_checkpoint=true"):
        create_model("cnn14", 2, (1, 32, 16), width_div=16, checkpoint_path=str(bad))
    assert not marker.exists()


@pytest.mark.parametrize("content, words", [
    (np.random.default_rng(0).bytes(4096), "not loaded"),  # fixed bytes: os.urandom can also parse as a zip
    (b"", "not a readable PyTorch checkpoint"),
    ("foreign", "not an earmark checkpoint"),
])
def test_corrupt_and_foreign_checkpoints_are_one_error_line(run_dir, tmp_path, clip, monkeypatch, capsys, content,
                                                           words):
    bad = tmp_path / "model.ckpt"
    if content == "foreign":
        torch.save({"a": 1}, bad)
    else:
        bad.write_bytes(content)
    for what, args in load_paths(run_dir, tmp_path, bad, clip).items():
        code, err = cli(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, f"{what}: {err}"
        assert words in err and ".ckpt" in err, f"{what}: {err}"


def test_a_real_run_still_loads_and_trust_is_an_explicit_opt_in(run_dir, tmp_path, clip):
    from earmark import api
    from earmark.train.checkpoints import load_checkpoint_dict

    assert len(api.predict(run_dir, [clip]).files) == 1
    for name in ("best.ckpt", "last.ckpt"):  # the allow-list covers everything a real run writes
        load_checkpoint_dict(run_dir / "checkpoints" / name)
    marker = tmp_path / MARKER_NAME
    bad = crafted(tmp_path / "model.ckpt", marker)
    with pytest.raises(EarmarkError):
        api.predict(bad, [clip])
    assert not marker.exists()
    with pytest.raises(EarmarkError, match="not an earmark checkpoint"):
        api.predict(bad, [clip], trust_checkpoint=True)  # the user vouched for it: it is unpickled
    assert marker.exists()
