"""A `prepare` killed with SIGKILL mid-decode: nothing it leaves may block, break or bloat the next one.

Runs the real command line in a subprocess with two decode workers; every subprocess is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earmark.config import DataConfig
from earmark.data.audio import load_segments
from earmark.data.cache import cache_folder, prepare_cache
from earmark.data.cache_lock import folder_lock

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; kill -9 semantics")

SRC = str(Path(__file__).resolve().parents[1] / "src")
N_FILES = 1200  # links to a few long recordings: ~10 ms each to decode and resample, so the run lasts seconds


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def many_files(tmp_path: Path) -> Path:
    """metadata.csv listing N_FILES links to four distinct 30 s, 44.1 kHz tones, two classes."""
    rate_hz = 44100
    t = np.arange(30 * rate_hz) / rate_hz
    sources = []
    for i in range(4):
        path = tmp_path / f"source_{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), rate_hz)
        sources.append(path)
    (tmp_path / "links").mkdir()
    lines = ["path,label"]
    for i in range(N_FILES):
        link = tmp_path / "links" / f"clip_{i:04d}.wav"
        link.symlink_to(sources[i % 4])
        lines.append(f"links/{link.name},{'low' if i % 4 < 2 else 'high'}")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "metadata.csv"


def prepare_command(metadata: Path, cache_dir: Path, workspace: Path) -> list[str]:
    return [sys.executable, "-m", "earmark", "prepare", "data.source=csv", f"data.path={metadata}",
            f"data.cache_dir={cache_dir}", f"workspace={workspace}", "data.workers=2",
            "data.sample_rate_hz=16000", "data.duration_s=1.0"]


def test_a_killed_prepare_blocks_nothing_leaves_no_workers_and_does_not_grow_the_cache(many_files, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "120"}
    cache_dir = tmp_path / "cache"
    data = DataConfig(sample_rate_hz=16000, duration_s=1.0, cache_dir=cache_dir)
    folder = cache_folder(data)
    command = prepare_command(many_files, cache_dir, tmp_path / "ws")
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(children_of(victim.pid)) >= 2 or victim.poll() is not None, 120, "decode workers")
        wait_for(lambda: (folder / "index.csv").exists() or victim.poll() is not None, 120, "a checkpoint")
        assert victim.poll() is None, "prepare finished before it could be killed: raise N_FILES"
        workers = children_of(victim.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=30)
    assert len(workers) >= 2
    try:
        wait_for(lambda: not any(running(pid) for pid in workers), 10, f"workers {workers} to die with their parent")
    except AssertionError:
        for pid in filter(running, workers):  # leave no orphans behind a failing test
            os.kill(pid, signal.SIGKILL)
        raise
    indexed_before = sum(1 for _ in open(folder / "index.csv")) - 1
    assert 0 < indexed_before < N_FILES

    started = time.monotonic()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    rerun_s = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "was interrupted" in rerun.stderr
    print(f"\nkilled after {indexed_before} of {N_FILES} files were indexed; re-run took {rerun_s:.1f} s")

    paths = [str(many_files.parent / "links" / f"clip_{i:04d}.wav") for i in range(N_FILES)]
    after = prepare_cache(paths, data, progress=False)
    assert after.stats.n_decoded == 0 and after.stats.n_bad == 0
    clean = {i: load_segments(many_files.parent / f"source_{i}.wav", data)[0] for i in range(4)}  # a clean decode
    for i in range(len(paths)):
        np.testing.assert_array_equal(np.asarray(after.waves[after.segments.loc[i, "row"]]), clean[i % 4][0])
    size = (after.directory / "waves.f32").stat().st_size
    print(f"waves.f32 after kill + re-run: {size} bytes; one clean run: {N_FILES * 16000 * 4} bytes")
    assert size == N_FILES * 16000 * 4  # one row per file: the killed run's rows were reused, not added to


def test_a_lock_held_by_leftovers_of_a_dead_prepare_is_taken_over(tmp_path, capsys):
    """An older earmark's workers kept the lock after their prepare died: the holder named in the
    lock file is gone, so the next prepare takes the lock over instead of waiting forever."""
    folder = tmp_path / "cache" / "abc"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=30)
    dead_pid = int(dead.stdout)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(folder / 'lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        f"os.pwrite(fd, b'pid {dead_pid}@{socket.gethostname()}\\n', 0)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        messages: list[str] = []
        started = time.monotonic()
        with folder_lock(folder, messages.append):
            taken_s = time.monotonic() - started
        assert taken_s < 5 and any("taking it over" in m and str(dead_pid) in m for m in messages), messages
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_waiting_prepare_names_the_live_holder(tmp_path):
    folder = tmp_path / "cache" / "abc"
    messages: list[str] = []
    with folder_lock(folder, messages.append):
        waiter = subprocess.Popen([sys.executable, "-c", (
            "import sys; from pathlib import Path\n"
            "from earmark.data.cache_lock import folder_lock\n"
            f"with folder_lock(Path({str(folder)!r}), lambda line: print(line, flush=True)):\n"
            "    print('got it', flush=True)\n")], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": SRC})
        first = waiter.stdout.readline()
        assert "waiting for another prepare" in first and f"pid {os.getpid()}@" in first
    out, _ = waiter.communicate(timeout=30)
    assert "got it" in out and "interrupted" not in out
