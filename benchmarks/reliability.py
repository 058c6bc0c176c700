"""Trust nothing that comes in: crafted checkpoints on every load path, and a server under slow-client
and compressed-audio attacks.

1. A tiny tone run is trained (about 30 s on a laptop CPU), then a crafted .ckpt (a pickle whose
   `__reduce__` creates a file) is put through every command that reads a checkpoint: predict (file,
   run dir, --stream), evaluate, export, serve, train --resume, and cnn14's checkpoint_path. Printed:
   how many executed its code (goal 0).
2. A real `earmark serve` on 127.0.0.1; good-request latency p50/p99 with no attack (the reference),
   under a slow-upload attack (70 uploads and 20 header lines dribbled a byte per 0.25 s, more than
   the 64 requests allowed in flight) and under a compressed-audio attack (FLACs of 600 s at 384 kHz,
   a few kB each, posted in a loop from 2 threads). Both attacks are bounded in sockets and time.

    python benchmarks/reliability.py [--requests 40]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from result_files import save_results  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"
sys.path.insert(0, str(ROOT / "tests"))


class RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def crafted_checkpoints(run_dir: Path, work: Path) -> dict:
    import shutil

    import soundfile as sf
    import torch

    clip = work / "clip.wav"
    sf.write(clip, np.zeros(4000, np.float32), 8000)
    marker = work / "executed"
    evil = work / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": RunsCode(marker)}, evil)
    copies = {}
    for name in ("best.ckpt", "last.ckpt"):
        copies[name] = work / f"run-{name}"
        shutil.copytree(run_dir, copies[name])
        shutil.copy(evil, copies[name] / "checkpoints" / name)
    paths = {"predict .ckpt": ["predict", evil, clip], "predict run dir": ["predict", copies["best.ckpt"], clip],
             "predict --stream": ["predict", evil, "--stream", clip], "evaluate": ["evaluate", copies["best.ckpt"]],
             "export": ["export", evil, "--out", work / "export"], "serve": ["serve", evil, "--port", "1"],
             "train --resume": ["train", "--resume", copies["last.ckpt"]]}
    executed = 0
    print(f"{'load path':<22} {'code ran':<9} exit  message")
    for what, args in paths.items():
        marker.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-m", "earmark", *map(str, args)], capture_output=True, text=True)
        ran = marker.exists()
        executed += ran
        print(f"{what:<22} {'YES' if ran else 'no':<9} {done.returncode:<5} {done.stderr.strip()[:90]}")
    marker.unlink(missing_ok=True)
    from earmark.errors import EarmarkError
    from earmark.models.registry import create_model

    try:
        create_model("cnn14", 2, (1, 32, 16), width_div=16, checkpoint_path=str(evil))
    except EarmarkError as exc:
        print(f"{'cnn14 checkpoint_path':<22} {'YES' if marker.exists() else 'no':<9} {'-':<5} {str(exc)[:90]}")
    executed += marker.exists()
    print(f"crafted checkpoints executed: {executed} of {len(paths) + 1} load paths (goal 0)\n")
    return {"executed": int(executed), "load_paths": len(paths) + 1}


def encoded(wave: np.ndarray, rate_hz: int, format: str) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, rate_hz, format=format)
    return buffer.getvalue()


def latencies(url: str, audio: bytes, n: int) -> tuple[list[float], int]:
    import httpx

    times, errors = [], 0
    with httpx.Client(timeout=30.0) as client:
        for _ in range(n):
            started = time.monotonic()
            answer = client.post(f"{url}/predict", files={"file": ("a.wav", audio)})
            times.append(time.monotonic() - started)
            errors += answer.status_code != 200
    return times, errors


def slow_attack(host: str, port: int, stop: threading.Event, seconds: float) -> None:
    socks = []
    for i in range(90):
        sock = socket.create_connection((host, port), timeout=5)
        body = b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" if i < 70 else b""
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + body)
        socks.append(sock)
    ends = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < ends:
        for sock in socks:
            try:
                sock.send(b"x")
            except OSError:
                pass
        time.sleep(0.25)
    for sock in socks:
        sock.close()


def compressed_attack(url: str, stop: threading.Event, seconds: float, counts: dict) -> None:
    import httpx

    flac = compressed_attack.flac
    ends = time.monotonic() + seconds
    with httpx.Client(timeout=30.0) as client:
        while not stop.is_set() and time.monotonic() < ends:
            status = client.post(f"{url}/predict", files={"file": ("long.flac", flac)}).status_code
            counts[status] = counts.get(status, 0) + 1


def server_figures(run_dir: Path, n_requests: int) -> dict:
    from earmark.serve.client import server_process

    good = encoded((0.3 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000)).astype(np.float32), 8000, "WAV")
    rate_hz = 384_000  # 600 s of silence at 384 kHz: 230 M samples
    compressed_attack.flac = encoded(np.zeros(rate_hz * 600, np.float32), rate_hz, "FLAC")
    print(f"compressed attack file: 600 s at {rate_hz} Hz in {len(compressed_attack.flac) / 1e6:.2f} MB")
    with server_process(run_dir, options=["--threads", "1", "--log-level", "warning"]) as url:
        host, port = url.removeprefix("http://").split(":")
        rows = []
        for scenario in ("no attack", "slow uploads", "compressed audio"):
            stop, counts = threading.Event(), {}
            attackers = []
            if scenario == "slow uploads":
                attackers = [threading.Thread(target=slow_attack, args=(host, int(port), stop, 60.0))]
            elif scenario == "compressed audio":
                attackers = [threading.Thread(target=compressed_attack, args=(url, stop, 60.0, counts))
                             for _ in range(2)]
            for thread in attackers:
                thread.start()
            time.sleep(0.5 if attackers else 0)
            times, errors = latencies(url, good, n_requests)
            stop.set()
            for thread in attackers:
                thread.join()
            p50, p99 = np.percentile(times, 50) * 1000, np.percentile(times, 99) * 1000
            rows.append((scenario, p50, p99, errors, counts))
        reference = rows[0][1]
        print(f"{'good requests':<18} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10} {'errors':>7}  attack answers")
        for scenario, p50, p99, errors, counts in rows:
            print(f"{scenario:<18} {p50:8.1f} {p99:8.1f} {p50 / reference:10.2f} {errors:7d}  {counts or ''}")
    return {"attack_file_mb": round(len(compressed_attack.flac) / 1e6, 2), "attack_rate_hz": rate_hz,
            "scenarios": [{"scenario": scenario, "p50_ms": p50, "p99_ms": p99, "errors": errors,
                           "attack_answers": {str(code): n for code, n in counts.items()}}
                          for scenario, p50, p99, errors, counts in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="good requests per scenario")
    parser.add_argument("--json", type=Path, default=RESULTS, help="the result file the Benchmarks page renders")
    args = parser.parse_args()
    from tiny_runs import train_tiny_run

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = train_tiny_run(work / "base", "reliability", max_epochs=1).run_dir
        checkpoints = crafted_checkpoints(run_dir, work)
        save_results(args.json, {"checkpoints": checkpoints, **server_figures(run_dir, args.requests)})


if __name__ == "__main__":
    main()
