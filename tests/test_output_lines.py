"""What earmark prints says each thing once, and says it as it is: progress in logs and pipes, the split
plan's sizes and warnings, the per-group analyses, the validation carve-out, the served model's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from conftest import TONES_HZ, tone_clip


def test_progress_in_a_pipe_is_a_line_at_intervals(capsys, monkeypatch):
    from earmark import console

    monkeypatch.setattr(console, "PIPED_PROGRESS_S", 0.0)  # a line at every step
    with console.progress_bar(True, 4, "embedding with aisfx") as advance:  # pytest's stdout is no terminal
        for _ in range(4):
            advance()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("embedding with aisfx: 1/4 (25%), 0 s, about 0 s left")
    assert lines[-1] == "embedding with aisfx: 4/4 (100%), 0 s" and len(lines) == 5
    monkeypatch.setattr(console, "PIPED_PROGRESS_S", 3600.0)
    with console.progress_bar(True, 4, "decoding audio") as advance:
        advance(4)
    assert capsys.readouterr().out.splitlines() == ["decoding audio: 4/4 (100%), 0 s"]  # the end only


def test_prepare_prints_split_sizes_and_each_warning_once(tmp_path: Path):
    for index, (label, frequency) in enumerate(TONES_HZ.items()):
        (tmp_path / "tones" / label).mkdir(parents=True)
        for take in range(10):
            sf.write(tmp_path / "tones" / label / f"{take}.wav", tone_clip(frequency, 8000, 0.3, index * 50 + take),
                     8000)
    overrides = ["data.source=folder", f"data.path={tmp_path / 'tones'}", f"workspace={tmp_path / 'ws'}",
                 f"data.cache_dir={tmp_path / 'ws' / 'cache'}", "data.sample_rate_hz=8000", "data.duration_s=0.3",
                 "data.workers=1", "split.val_fraction=0", "split.test_fraction=0.2"]  # no val: a warning
    result = subprocess.run([sys.executable, "-m", "earmark", "prepare", *overrides], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("split sizes:") for line in lines) == 1, result.stdout
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings and len(warnings) == len(set(warnings)), result.stdout
    assert any(line.startswith("decoding audio: 30/30 (100%)") for line in lines), result.stdout


def test_a_group_column_that_repeats_the_speaker_is_analysed_once():
    from earmark.evaluate.analysis import analysed_columns

    items = pd.DataFrame({"path": ["a", "b", "c"], "label": ["x", "y", "x"], "speaker": ["s1", "s2", "s1"]})
    items["group"] = items["speaker"]  # FSDD: `group` detected from `speaker`
    assert analysed_columns(items, "speaker", []) == ["speaker"]
    assert analysed_columns(items, None, ["speaker"]) == ["speaker"]
    items["group"] = ["g1", "g1", "g2"]
    assert analysed_columns(items, "speaker", []) == ["speaker", "group"]


def test_the_validation_carve_out_is_reported_as_it_is():
    from earmark.config import SplitConfig
    from earmark.data.splits import assign_splits

    rng = np.random.default_rng(0)
    n = 300
    items = pd.DataFrame({"path": [f"{i}.wav" for i in range(n)], "label": rng.choice(["a", "b", "c"], n),
                          "group": [f"g{i % 7}" for i in range(n)], "fold": np.nan,
                          "split": np.where(np.arange(n) < 240, "train", "test")})
    result = assign_splits(items, SplitConfig(val_fraction=0.1, group_by="group"), seed=0)
    n_val = int((result["split"] == "val").sum())
    strategy = result.attrs["split_strategy"]
    assert f"val carved from train ({n_val} of {n} clips, {n_val / n:.2f}; split.val_fraction=0.1 asked)" in strategy
    assert n_val != 30  # whole groups of about 43 clips: not the 10 % asked, and the line says so


def test_serve_names_an_export_by_its_run(tmp_path: Path):
    from earmark.serve.app import model_name

    run = tmp_path / "tones"
    (run / "export").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "export" / "model.onnx").write_bytes(b"")
    assert model_name(run / "export" / "model.onnx") == "export/model.onnx"  # not a run yet: no config.yaml
    (run / "config.yaml").write_text("{}")
    assert model_name(run / "export" / "model.onnx") == "tones/model.onnx"
    assert model_name(run / "checkpoints" / "best.ckpt") == "tones/best.ckpt" and model_name(run) == "tones"
