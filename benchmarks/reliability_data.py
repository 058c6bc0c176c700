"""Data-side reliability from real runs: kill -9 of `earmark prepare` mid-decode, and a messy folder.

    python benchmarks/reliability_data.py [--kill-runs 8] [--files 1200]

- kill -9: each round starts `earmark prepare` with two decode workers on FILES links to long recordings,
  kills it with SIGKILL once its first index checkpoint is on disk, then runs prepare again with a 240 s
  limit. Prints how many re-runs hung (goal 0), their times, orphan workers left, and the cache's size
  against one clean run's.
- messy folder: a folder source with hidden files, files at its root, a dangling symlink, a FIFO, a text
  file named .wav, a non-audio extension and an empty class folder. Prints the files on disk that earmark
  neither used nor reported as bad or ignored with a reason (goal 0).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SRC = str(Path(__file__).resolve().parents[1] / "src")
RATE_HZ = 44100


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _many_files(root: Path, n_files: int) -> Path:
    t = np.arange(30 * RATE_HZ) / RATE_HZ
    sources = []
    for i in range(4):
        sources.append(root / f"source_{i}.wav")
        sf.write(sources[-1], (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), RATE_HZ)
    (root / "links").mkdir()
    lines = ["path,label"]
    for i in range(n_files):
        (root / "links" / f"clip_{i:04d}.wav").symlink_to(sources[i % 4])
        lines.append(f"links/clip_{i:04d}.wav,{'low' if i % 4 < 2 else 'high'}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "metadata.csv"


def kill_rounds(n_rounds: int, n_files: int) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    hangs, times, orphans, sizes = 0, [], 0, []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        metadata = _many_files(root, n_files)
        for round_number in range(n_rounds):
            cache_dir, workspace = root / f"cache{round_number}", root / f"ws{round_number}"
            command = [sys.executable, "-m", "earmark", "prepare", "data.source=csv", f"data.path={metadata}",
                       f"data.cache_dir={cache_dir}", f"workspace={workspace}", "data.workers=2",
                       "data.sample_rate_hz=16000", "data.duration_s=1.0"]
            victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 180
            while victim.poll() is None and time.monotonic() < deadline and not list(cache_dir.glob("*/index.csv")):
                time.sleep(0.02)
            workers = _children(victim.pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            time.sleep(2)
            orphans += sum(_alive(pid) for pid in workers)
            started = time.perf_counter()
            try:
                subprocess.run(command, env=env, capture_output=True, timeout=240, check=True)
                times.append(time.perf_counter() - started)
            except subprocess.TimeoutExpired:
                hangs += 1
            sizes.append(sum(f.stat().st_size for f in cache_dir.glob("*/waves.f32")))
    clean_size = n_files * 16000 * 4
    print(f"kill -9 prepare, then again: {hangs} of {n_rounds} re-runs hung (goal 0); re-run "
          f"{min(times, default=0):.1f}–{max(times, default=0):.1f} s; orphan workers after the kill: {orphans}; "
          f"cache {max(sizes, default=0):,} bytes at most vs {clean_size:,} for one clean run")


def messy_folder() -> None:
    from earmark import api
    from earmark.config import load_config

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "messy"
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
        for label in ("a", "b"):
            (root / label).mkdir(parents=True)
            for i in range(6):
                sf.write(root / label / f"{label}{i}.wav", tone * (i + 1) / 7, 8000)
        sf.write(root / "a" / ".hidden.wav", tone, 8000)
        sf.write(root / "at_the_root.wav", tone, 8000)
        (root / "b" / "dangling.wav").symlink_to(root / "nowhere.wav")
        os.mkfifo(root / "b" / "pipe.wav")
        (root / "a" / "notes.wav").write_text("not audio")
        sf.write(root / "b" / "tone.aiff", tone, 8000, format="AIFF")
        (root / "empty").mkdir()
        on_disk = {str(p) for p in root.rglob("*") if not p.is_dir()}
        config = load_config(overrides=["data.source=folder", f"data.path={root}", "data.sample_rate_hz=8000",
                                        f"workspace={Path(scratch) / 'ws'}", f"data.cache_dir={Path(scratch) / 'c'}",
                                        "split.test_fraction=0.25"])
        prepared = api.prepare(config, progress=False)
        used = set(prepared.items["path"].astype(str))
        reported = set()
        for name in ("bad_files.csv", "ignored_files.csv"):
            table = pd.read_csv(prepared.split_dir / name) if (prepared.split_dir / name).is_file() else None
            if table is not None:
                reported |= {str(p).split(" line ")[0] for p in table["path"]}
        silent = sorted(p for p in on_disk if p not in used and p not in reported)
    print(f"messy folder: {len(on_disk)} files on disk, {len(used)} used, {len(on_disk) - len(used) - len(silent)} "
          f"reported with a reason, {len(silent)} dropped without one (goal 0){': ' + ', '.join(silent) if silent else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill-runs", type=int, default=8)
    parser.add_argument("--files", type=int, default=1200)
    args = parser.parse_args()
    messy_folder()
    if args.kill_runs:
        kill_rounds(args.kill_runs, args.files)


if __name__ == "__main__":
    main()
