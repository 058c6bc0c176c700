"""Drive `earmark serve` from outside: start it as a real server process, and put a bounded load on it.

Used by tests/test_serve.py and benchmarks/serve_load.py:

    with server_process("runs/tones") as url:
        report = run_load(url, wav_bytes, n_requests=200, concurrency=8)
        print(report.summary())
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from earmark.errors import EarmarkError

POLL_INTERVAL_S = 0.2


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def server_process(model: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                   options: Sequence[str] = (), startup_timeout_s: float = 120.0,
                   log_path: str | Path | None = None) -> Iterator[str]:
    """`python -m earmark serve MODEL` in a subprocess; yields its base URL once /health answers, and
    always stops it afterwards (terminate, then kill after 10 s). Its output goes to `log_path` when
    given, else to a temporary file."""
    import httpx

    port = port or free_port(host)
    command = [sys.executable, "-m", "earmark", "serve", str(model), "--host", host, "--port", str(port), *options]
    # a file, not a pipe: a chatty server can never block on it
    with (open(log_path, "w+") if log_path else tempfile.TemporaryFile("w+")) as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://{host}:{port}"
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise EarmarkError(f"`{' '.join(command)}` exited with {process.returncode}:\n{log.read()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise EarmarkError(f"the server at {url} did not answer /health within {startup_timeout_s:g} s")
                time.sleep(POLL_INTERVAL_S)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class LoadReport:
    """Latencies of the successful requests and what went wrong with the others."""

    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "HTTP 503: ..." or the exception's name and text
    wall_s: float = 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    @property
    def throughput_per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s if self.wall_s else 0.0

    def summary(self) -> str:
        return (f"{len(self.latencies_s)} ok, {len(self.errors)} errors in {self.wall_s:.2f} s: "
                f"p50 {self.percentile_ms(50):.1f} ms, p99 {self.percentile_ms(99):.1f} ms, "
                f"{self.throughput_per_s:.1f} requests/s")


def run_load(url: str, audio: bytes, *, n_requests: int = 200, concurrency: int = 8, path: str = "/predict",
             filename: str = "clip.wav", timeout_s: float = 60.0) -> LoadReport:
    """POST `audio` as the multipart field `file` to `url + path`, `n_requests` times from `concurrency`
    threads (each with its own connection); stops when all have answered."""
    import httpx

    report = LoadReport()
    lock = threading.Lock()
    local = threading.local()
    clients: list = []

    def one(_index: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=timeout_s)
            with lock:
                clients.append(local.client)
        started = time.perf_counter()
        try:
            response = local.client.post(path, files={"file": (filename, audio, "audio/wav")})
            problem = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        with lock:
            (report.errors.append(problem) if problem else report.latencies_s.append(elapsed))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(n_requests)))
    report.wall_s = time.perf_counter() - started
    for client in clients:
        client.close()
    return report
