"""Files a careless user hands earmark: each is one EarmarkError (one `error:` line from the CLI) or a
reported reason, never a traceback or a silent wrong answer."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from earmark.config import load_config
from earmark.errors import EarmarkError


def test_a_garbage_labels_json_is_one_error_naming_it(tmp_path: Path):
    from earmark.rundir import RunDir

    run = RunDir(tmp_path)
    for content in (os.urandom(64) + b"\xff", b'{"a": 1}', b"[]", b"not json"):
        run.labels_file.write_bytes(content)
        with pytest.raises(EarmarkError, match="labels.json"):
            run.labels()
    run.labels_file.unlink()
    with pytest.raises(EarmarkError, match="missing"):
        run.labels()
    run.write_labels(["dog", "cat"])
    assert run.labels() == ["dog", "cat"]


def test_a_config_that_is_not_utf8_or_repeats_a_key_is_refused(tmp_path: Path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data:\n  source: folder\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(EarmarkError, match="not UTF-8.*save it as UTF-8"):
        load_config(latin)
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text("train:\n  max_epochs: 3\n  lr: 0.01\n  max_epochs: 30\n")
    with pytest.raises(EarmarkError, match=r"duplicate key 'max_epochs' \(first given on line 2\)"):
        load_config(repeated)
    top = tmp_path / "top.yaml"
    top.write_text("data:\n  source: folder\ndata:\n  source: csv\n")
    with pytest.raises(EarmarkError, match="duplicate key 'data'"):
        load_config(top)
    bom = tmp_path / "bom.yaml"  # a UTF-8 byte-order mark (Windows editors) is fine
    bom.write_bytes("\ufefftrain:\n  max_epochs: 3\n".encode("utf-8"))
    assert load_config(bom).train.max_epochs == 3


def test_a_search_space_file_repeating_a_key_is_refused(tmp_path: Path):
    from earmark.workflows.search_space import read_space_file, space_params

    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.001, high: 0.1}\ntrain.lr: {low: 0.01, high: 0.2}\n")
    with pytest.raises(EarmarkError, match="duplicate key 'train.lr'"):
        space_params(read_space_file(space), space, load_config())


def test_a_run_name_too_long_for_a_folder_is_refused_when_the_config_is_read():
    with pytest.raises(EarmarkError, match="name: is 300 bytes; at most 200"):
        load_config(overrides=["name=" + "x" * 300])
    assert load_config(overrides=["name=" + "x" * 200]).name == "x" * 200


def test_a_whitespace_folder_is_no_class(tmp_path: Path):
    from earmark.config import DataConfig
    from earmark.data.sources import BLANK_FOLDERS, load_source

    for folder in ("dog", "cat", "   "):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.wav").write_bytes(b"")
    table, info = load_source(DataConfig(source="folder", path=tmp_path))
    assert sorted(table["label"].unique()) == ["cat", "dog"]
    assert info.ignored[BLANK_FOLDERS] == [str(tmp_path / "   ")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_a_fifo_listed_in_a_csv_is_reported_as_a_fifo(tmp_path: Path):
    from earmark.data.audio import AudioError, decode

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError) as refused:
        decode(fifo)  # and it does not block reading the pipe
    assert refused.value.reason == "a FIFO (named pipe), not a regular file"
    with pytest.raises(AudioError) as missing:
        decode(tmp_path / "gone.wav")
    assert missing.value.reason == "file not found"
    (tmp_path / "link.wav").symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(AudioError, match="dangling symlink"):
        decode(tmp_path / "link.wav")


def test_csv_rows_left_out_are_named_by_their_line_in_the_file(tmp_path: Path):
    from earmark.config import DataConfig
    from earmark.data.sources import NO_LABEL, NO_PATH, load_source

    csv = tmp_path / "list.csv"
    lines = ["path,label", "a.wav,dog", "", "b.wav,cat", "   ", "", "c.wav,", ",dog", "d.wav,cat"]
    csv.write_text("\n".join(lines) + "\n")
    _, info = load_source(DataConfig(source="csv", path=csv))
    assert info.ignored[NO_LABEL] == [f"{csv} line 7"] and lines[6] == "c.wav,"
    assert info.ignored[NO_PATH] == [f"{csv} line 8"] and lines[7] == ",dog"


def test_the_bad_files_summary_keeps_a_reason_whole():
    from earmark.data.prepared import summary_lines

    reasons = ["unsupported format '(no extension)' (supported: .wav, .flac, .ogg, .mp3)",
               "unsupported format '.txt' (supported: .wav, .flac, .ogg, .mp3)",
               "cannot decode: x.wav is not a decodable audio file (its 5 bytes are no WAV audio)",
               "cannot decode: y.wav is not a decodable audio file (its 9 bytes are no WAV audio)"]
    bad = pd.DataFrame({"path": ["README", "a.txt", "x.wav", "y.wav"], "reason": reasons})
    stats = SimpleNamespace(n_files=4, n_decoded=0, n_reused=0, n_bad=4, n_segments=0, seconds=0.0)
    cache = SimpleNamespace(stats=stats, bad_files=bad, ignored_files=bad.iloc[:0])
    lines = summary_lines(cache, None)
    assert "       1  unsupported format '(no extension)'" in lines
    assert "       1  unsupported format '.txt'" in lines and "       2  cannot decode" in lines
