"""Inputs a source leaves out are never dropped without a word: counted per reason, listed in
ignored_files.csv beside bad_files.csv, and fatal under --strict."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from conftest import tone_clip
from earmark.config import Config, DataConfig
from earmark.data import sources
from earmark.data.prepared import prepare_data
from earmark.data.sources import load_source
from earmark.errors import EarmarkError


def write_tone(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone_clip(300 + 40 * seed, 8000, 0.3, seed), 8000, format="WAV")
    return path


def tone_folder(root: Path) -> Path:
    for label in ("dog", "cat"):
        for take in range(6):
            write_tone(root / label / f"{label}_{take}.wav", take + (10 if label == "cat" else 0))
    return root


def config_for(tmp_path: Path, **data) -> Config:
    return Config(workspace=tmp_path / "ws", data=DataConfig(sample_rate_hz=8000, duration_s=0.3, workers=1,
                                                           cache_dir=tmp_path / "ws" / "cache", **data))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_folder_source_names_every_file_it_leaves_out(tmp_path):
    root = tone_folder(tmp_path / "data")
    write_tone(root / "stray.wav", 1)  # root of the folder source
    write_tone(root / "dog" / ".hidden.wav", 2)
    write_tone(root / "dog" / ".cache" / "x.wav", 3)
    (root / "cat" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    os.mkfifo(root / "cat" / "pipe.wav")
    write_tone(root / "cat" / "really_audio.json", 4)  # audio with a sidecar's extension

    table, info = load_source(DataConfig(source="folder", path=root))

    assert len(table) == 12
    ignored = info.ignored_table()
    by_name = dict(zip(ignored["path"].map(lambda p: Path(p).name), ignored["reason"]))
    assert by_name == {"stray.wav": sources.ROOT_FILES, ".hidden.wav": sources.HIDDEN, ".cache": sources.HIDDEN,
                       "gone.wav": sources.DANGLING_LINKS, "pipe.wav": sources.NOT_REGULAR,
                       "really_audio.json": sources.SIDECARS}


def test_csv_rows_without_path_or_label_and_repeats_are_listed_and_a_blank_label_does_not_crash(tmp_path):
    root = tone_folder(tmp_path / "data")
    rows = ["path,label"] + [f"{label}/{label}_{take}.wav,{label}" for label in ("dog", "cat") for take in range(6)]
    rows += [",dog", "dog/dog_0.wav,", "cat/cat_0.wav,   ", "   ,cat", "dog/dog_1.wav,dog"]
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    config = config_for(tmp_path, source="csv", path=root / "meta.csv")

    prepared = prepare_data(config, progress=False)  # the blank label raised a TypeError in split_stats

    assert sorted(prepared.labels) == ["cat", "dog"] and len(prepared.items) == 12
    ignored = pd.read_csv(prepared.split_dir / "ignored_files.csv")
    meta = str(root / "meta.csv")
    assert ignored.to_dict("list") == {
        "path": [f"{meta} line 14", f"{meta} line 17", f"{meta} line 15", f"{meta} line 16",
                 str(root / "dog" / "dog_1.wav")],
        "reason": [sources.NO_PATH, sources.NO_PATH, sources.NO_LABEL, sources.NO_LABEL, sources.REPEATED]}
    assert prepared.stats["ignored_files"] == 5


def test_prepare_prints_counts_per_reason_writes_the_list_and_strict_fails(tmp_path, capsys):
    root = tone_folder(tmp_path / "data")
    write_tone(root / "dog" / ".hidden.wav", 2)
    write_tone(root / "readme_stray.wav", 3)
    (root / "cat" / "broken.wav").write_bytes(b"not audio at all" * 50)
    config = config_for(tmp_path, source="folder", path=root)

    prepared = prepare_data(config, progress=True)

    out = capsys.readouterr().out
    assert "bad: 1  ignored: 2" in out
    assert f"ignored files (listed in {prepared.split_dir / 'ignored_files.csv'}):" in out
    assert f"1  {sources.HIDDEN}" in out and f"1  {sources.ROOT_FILES}" in out
    assert "1  cannot decode" in out
    assert (prepared.split_dir / "bad_files.csv").is_file()
    assert len(pd.read_csv(prepared.split_dir / "ignored_files.csv")) == 2

    (root / "cat" / "broken.wav").unlink()  # no bad file left: the ignored ones alone fail --strict
    with pytest.raises(EarmarkError, match=r"0 file\(s\) could not be used and 2 input\(s\) were left out"):
        prepare_data(config, strict=True, progress=False)


def test_train_says_how_many_files_were_bad_and_ignored(tmp_path, capsys):
    from tiny_runs import tone_dataset, train_tiny_run

    root = tone_dataset(tmp_path / "tones")
    (root / next(iter(os.listdir(root))) / "broken.wav").write_bytes(b"not audio at all" * 50)
    write_tone(root / "stray.wav", 1)
    train_tiny_run(tmp_path, "bad-count", extra=("train.progress=true",))
    assert "bad: 1  ignored: 1" in capsys.readouterr().out
