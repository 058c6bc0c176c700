"""HTTP serving under load: a real `earmark serve` process, a fixed number of concurrent requests.

Starts `python -m earmark serve MODEL` on 127.0.0.1, waits for /health, then POSTs the same WAV clip
to /predict from one client (200 requests), then --requests times from --concurrency client threads,
and prints p50/p99 latency, throughput and errors. The reference, measured in the same run: the
identical decode + predict work done in-process, one request at a time (`ModelService.predict`, no
HTTP), so the ratios show what HTTP, multipart parsing and the thread pool add. With --onnx the run
is also exported and the ONNX model is served and measured the same way.

With --attack, good-request latency (one client, --attack-requests requests) is measured on one server
with no attack (the reference, in the same run), then while --attackers clients loop a FLAC of 149 s at
384 kHz (57 M samples, just under the default --max-samples) to /predict, then to /predict/timeline.

Without MODEL a tiny tone classifier is trained first (about 30 s on a laptop CPU).
Client and server share the machine's cores, so the figures are a floor, not a capacity plan.

    python benchmarks/serve_load.py [MODEL] [--requests 1000] [--concurrency 8] [--threads 1] [--onnx]
    python benchmarks/serve_load.py --attack [--attack-requests 200] [--attackers 4]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from result_files import save_results  # benchmarks/ is on sys.path when a script here runs

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
ATTACK_RESULTS = RESULTS.with_name("serve_attack.json")
RATE_HZ = 8000
TONES_HZ = {"low": 300.0, "mid": 900.0, "high": 2400.0}


def tone(frequency_hz: float, rate_hz: int, duration_s: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate_hz * duration_s)) / rate_hz
    wave = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * frequency_hz * t + rng.uniform(0, 2 * np.pi))
    return (wave + rng.normal(0, 0.01, len(t))).astype(np.float32)


def train_tiny_run(base: Path) -> Path:
    """3 tone classes × 10 clips of 0.5 s at 8 kHz, simple_cnn width 4, 8 epochs."""
    import soundfile as sf

    from earmark import api

    root = base / "tones"
    for index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(10):
            sf.write(root / label / f"{take}.wav", tone(frequency, RATE_HZ, 0.5, index * 100 + take), RATE_HZ)
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
                 f"data.sample_rate_hz={RATE_HZ}", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
                 "data.workers=1", "features.n_fft=256", "features.n_mels=32", "model.params.width=4",
                 "train.max_epochs=8", "train.batch_size=8", "train.lr=0.01", "train.scheduler=none",
                 "augment.enabled=false", "train.progress=false", "name=serve-bench"]
    return api.train(None, overrides).run_dir


def wav_bytes(rate_hz: int, duration_s: float) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, tone(TONES_HZ["mid"], rate_hz, duration_s, seed=1), rate_hz, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def in_process(model: Path, audio: bytes, threads: int | None, n: int) -> tuple[float, float]:
    """(p50 ms, requests/s) of decode + predict without HTTP, one at a time: the reference."""
    from earmark.serve.app import ModelService, load_model
    from earmark.serve.audio import AudioRequest, ServeLimits

    service = ModelService(load_model(model, threads), ServeLimits(), "reference", str(model))
    request = AudioRequest(audio)
    for _ in range(5):
        service.predict(request, 3)
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        service.predict(request, 3)
        latencies.append(time.perf_counter() - started)
    return float(np.percentile(latencies, 50) * 1000), n / sum(latencies)


def measure(model: Path, audio: bytes, args) -> dict:
    from earmark.serve.client import run_load, server_process

    reference_ms, reference_per_s = in_process(model, audio, args.threads, n=min(args.requests, 300))
    options = ["--threads", str(args.threads)] if args.threads else []
    with server_process(model, options=[*options, "--log-level", "warning"]) as url:  # no access log
        run_load(url, audio, n_requests=min(50, args.requests), concurrency=args.concurrency)  # warm-up
        single = run_load(url, audio, n_requests=min(200, args.requests), concurrency=1)
        report = run_load(url, audio, n_requests=args.requests, concurrency=args.concurrency)
    print(f"{model}: {len(audio) / 1024:.0f} KiB WAV ({args.audio_s:g} s at {args.rate_hz} Hz) to /predict")
    print(f"  in-process, sequential      p50 {reference_ms:6.1f} ms                {reference_per_s:6.1f} requests/s")
    for name, result in (("HTTP, 1 client", single), (f"HTTP, {args.concurrency} concurrent", report)):
        print(f"  {name + f' ({len(result.latencies_s) + len(result.errors)} req)':<31} "
              f"p50 {result.percentile_ms(50):6.1f} ms  p99 {result.percentile_ms(99):6.1f} ms  "
              f"{result.throughput_per_s:6.1f} requests/s  errors {len(result.errors)}")
    print(f"  HTTP overhead: 1-client p50 / in-process p50 = {single.percentile_ms(50) / reference_ms:.1f}x; "
          f"{args.concurrency}-client throughput / in-process = {report.throughput_per_s / reference_per_s:.2f}x")
    for error in sorted(set(report.errors + single.errors))[:5]:
        print(f"  error: {error}")
    return {"model": "model.onnx" if model.suffix == ".onnx" else "run (PyTorch)", "in_process_p50_ms": reference_ms,
            "single_p50_ms": single.percentile_ms(50), "single_p99_ms": single.percentile_ms(99),
            "concurrency": args.concurrency, "concurrent_p50_ms": report.percentile_ms(50),
            "concurrent_p99_ms": report.percentile_ms(99), "requests_per_s": report.throughput_per_s,
            "errors": len(report.errors) + len(single.errors),
            "requests": len(report.latencies_s) + len(report.errors) + len(single.latencies_s) + len(single.errors)}


ATTACK_S, ATTACK_RATE_HZ = 149.0, 384_000


def attack_flac() -> bytes:
    """149 s at 384 kHz: a second of tone, then silence (written in blocks: a few hundred kB)."""
    import soundfile as sf

    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", ATTACK_RATE_HZ, 1, format="FLAC") as out:
        out.write(tone(TONES_HZ["mid"], ATTACK_RATE_HZ, 1.0, seed=2))
        for _ in range(int(ATTACK_S) - 1):
            out.write(np.zeros(ATTACK_RATE_HZ, np.float32))
    return buffer.getvalue()


def attack_loop(url: str, path: str, flac: bytes, stop: threading.Event, answers: list) -> None:
    """POST `flac` to `path` until `stop`; (status, seconds) of each answer into `answers`."""
    import httpx

    with httpx.Client(base_url=url, timeout=60.0) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = client.post(path, files={"file": ("long.flac", flac, "audio/flac")}).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            answers.append((status, time.perf_counter() - started))


def attack_figures(model: Path, audio: bytes, args) -> dict:
    from earmark.serve.client import run_load, server_process

    flac = attack_flac()
    print(f"attack file: {ATTACK_S:g} s at {ATTACK_RATE_HZ} Hz FLAC, {len(flac) / 1e6:.2f} MB; {args.attackers} "
          f"clients loop it; good requests: {len(audio) / 1024:.0f} KiB WAV from 1 client")
    print(f"  {'scenario':<24} {'good p50 ms':>11} {'good p99 ms':>11} {'errors':>6}  attack answers (median s)")
    options = ["--threads", str(args.threads)] if args.threads else []
    with server_process(model, options=[*options, "--log-level", "warning"]) as url:
        run_load(url, audio, n_requests=20, concurrency=1)  # warm-up
        scenarios = {}
        for scenario, path in (("no attack", None), ("attack on /predict", "/predict"),
                               ("attack on /timeline", "/predict/timeline")):
            stop, answers = threading.Event(), []
            attackers = [threading.Thread(target=attack_loop, args=(url, path, flac, stop, answers))
                         for _ in range(args.attackers if path else 0)]
            for thread in attackers:
                thread.start()
            time.sleep(1.0 if attackers else 0.0)
            good = run_load(url, audio, n_requests=args.attack_requests, concurrency=1)
            stop.set()
            for thread in attackers:
                thread.join()
            counts: dict = {}
            for status, _ in answers:
                counts[status] = counts.get(status, 0) + 1
            median_s = np.median([seconds for _, seconds in answers]) if answers else float("nan")
            print(f"  {scenario:<24} {good.percentile_ms(50):11.1f} {good.percentile_ms(99):11.1f} "
                  f"{len(good.errors):6d}  {counts or '-'} ({median_s:.2f} s)")
            scenarios[scenario] = {"p50_ms": good.percentile_ms(50), "p99_ms": good.percentile_ms(99),
                                   "errors": len(good.errors), "answers": {str(k): n for k, n in counts.items()},
                                   "median_answer_s": None if np.isnan(median_s) else float(median_s)}
    return scenarios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="run directory, .ckpt or model.onnx (default: train one)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="the server's inference threads (--threads)")
    parser.add_argument("--audio-s", type=float, default=1.0, help="length of the clip sent")
    parser.add_argument("--rate-hz", type=int, default=16000, help="rate of the clip sent (resampled by the server)")
    parser.add_argument("--onnx", action="store_true", help="also export the run and serve model.onnx")
    parser.add_argument("--attack", action="store_true", help="good-request latency under a compressed-audio attack "
                                                              "(and with none), instead of the load figures")
    parser.add_argument("--attack-requests", type=int, default=200, help="good requests per attack scenario")
    parser.add_argument("--attackers", type=int, default=4, help="clients looping the attack FLAC")
    parser.add_argument("--json", type=Path, default=RESULTS, help="the result file the Deployment page renders "
                        "(default: serve.json; with --attack serve_attack.json)")
    parser.add_argument("--label", default="now", help="with --attack: the row's name (e.g. a commit)")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    audio = wav_bytes(args.rate_hz, args.audio_s)
    print(f"{os.cpu_count()} CPU cores shared by the server, the {args.concurrency} client threads and anything "
          f"else running")
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_tiny_run(Path(scratch))
        if args.attack:  # a row under --label; rows of other labels (other code versions) are kept
            path = args.json if args.json != RESULTS else ATTACK_RESULTS
            kept = [row for row in json.loads(path.read_text()).get("rows", [])
                    if row["label"] != args.label] if path.exists() else []
            save_results(path, {"rows": [*kept, {"label": args.label, **attack_figures(model, audio, args)}]})
            return
        rows = [measure(model, audio, args)]
        if args.onnx and model.suffix != ".onnx":
            from earmark import api

            onnx_model = api.export(model, Path(scratch) / "export", log=lambda *_: None).model_path
            rows.append(measure(onnx_model, audio, args))
    save_results(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
