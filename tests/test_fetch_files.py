"""Files replaced whole or not at all (earmark.files), and the WAV writer's disk errors."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from earmark.errors import EarmarkError
from earmark.fetch.clips import write_wav
from earmark.fetch.report import FetchError
from earmark.files import atomic_write_bytes, atomic_write_text


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_writes_replace_the_whole_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "metadata.csv"
    target.write_text("old")
    atomic_write_text(target, "path,label\r\na.wav,x\r\n")
    assert target.read_bytes() == b"path,label\r\na.wav,x\r\n"  # no newline translation
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["metadata.csv"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would create it, not 0600


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("{}")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(EarmarkError, match=f"cannot write {target}: No space left on device; free some disk"):
        atomic_write_text(target, '{"downloads": {}}')
    assert target.read_text() == "{}" and os.listdir(tmp_path) == ["state.json"]
    with pytest.raises(EarmarkError, match="cannot write .*missing.*check that the folder exists"):
        atomic_write_bytes(tmp_path / "missing" / "a.bin", b"x")


def test_the_wav_writer_reports_a_full_disk_as_one_error_naming_the_clip(tmp_path, monkeypatch):
    clip = tmp_path / "audio" / "dog" / "bark-1234.wav"
    wave = np.zeros(800, dtype=np.float32)
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(EarmarkError, match=f"cannot write {clip}: No space left on device") as caught:
        write_wav(clip, wave, 8000)
    assert not isinstance(caught.value, FetchError)  # stops the run: every later clip would fail the same way
    assert not clip.exists() and os.listdir(clip.parent) == []
    monkeypatch.undo()
    assert write_wav(clip, wave, 8000) and not write_wav(clip, wave + 0.5, 8000)  # an existing clip is kept


def test_fetch_errors_are_earmark_errors():
    """So the CLI prints any of them as one `error:` line (exit 2) instead of a traceback."""
    assert issubclass(FetchError, EarmarkError) and FetchError("why").reason == "why"
