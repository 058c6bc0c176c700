"""Inference latency and throughput of exported models: FP32 vs INT8 ONNX, against PyTorch in the same run.

For each model (default: simple_cnn, wave_cnn, lite_cnn) a run on FSDD's official split (1 s clips at
16 kHz, the default config) is trained for --epochs (or taken from --run NAME=DIR), then exported:
FP32, INT8 dynamic and INT8 static (`earmark export --int8 ...`). For each variant it prints

    size        the .onnx file (the PyTorch row: the checkpoint's weights)
    p50/p99 ms  one 1-s clip per call on ONE thread (`OnnxPredictor(threads=1).predict_waves`); the
                best of 3 rounds of --calls calls
    clips/s     batches of --batch 1-s clips on --threads threads (default: every core); best of
                3 rounds of 2 s
    accuracy    on the run's whole test split, and the change against FP32 in points

The reference is the run's own PyTorch predictor under the same thread settings; the ratio columns
are ONNX / PyTorch (latency: lower is better, throughput: higher). Front-end included everywhere:
every figure is raw waveform in, probabilities out.

    python benchmarks/inference_latency.py [--data PATH] [--models simple_cnn lite_cnn] [--epochs 15]
                                           [--run lite_cnn=runs/x] [--keep DIR] [--calls 500]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from result_files import save_results  # benchmarks/ is on sys.path when a script here runs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd"
RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
FEATURES = {"wave_cnn": ["features.kind=waveform"]}
VARIANTS = ("fp32", "int8-dynamic", "int8-static")


def train_run(model: str, data: Path, workspace: Path, epochs: int) -> Path:
    from earmark import api
    from earmark.config import load_config

    overrides = ["data.source=fsdd", f"data.path={data}", f"workspace={workspace}", f"data.cache_dir={workspace}/cache",
                 f"runs_dir={workspace}/runs", f"name=latency-{model}", f"model.name={model}",
                 f"train.max_epochs={epochs}", "train.progress=false", *FEATURES.get(model, [])]
    started = time.perf_counter()
    result = api.train(load_config(overrides=overrides))
    print(f"  trained {model}: test accuracy {result.metrics['accuracy']:.4f} in {time.perf_counter() - started:.0f} s",
          flush=True)
    return result.run_dir


def export_variants(run_dir: Path) -> dict[str, Path]:
    """model.onnx and both INT8 models, each written by `earmark export` (parity checked, never refused)."""
    from earmark import api

    paths = {}
    for mode in ("dynamic", "static"):
        result = api.export(run_dir, run_dir / "export" / mode, int8=mode, force=True, log=lambda text: None)
        paths.setdefault("fp32", result.model_path)
        paths[f"int8-{mode}"] = result.int8_path
    return paths


def latency_ms(predict, clip: np.ndarray, calls: int, rounds: int = 3) -> tuple[float, float]:
    """(p50, p99) milliseconds of predict(clip): `rounds` rounds of `calls` calls after a warm-up; the
    round with the lowest median is reported (the others met more interference from the machine)."""
    for _ in range(max(10, calls // 20)):
        predict(clip)
    best = None
    for _ in range(rounds):
        times = np.empty(calls)
        for index in range(calls):
            started = time.perf_counter()
            predict(clip)
            times[index] = time.perf_counter() - started
        figures = (float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3))
        best = figures if best is None or figures[0] < best[0] else best
    return best


def throughput(predict, waves: np.ndarray, batch: int, seconds: float = 2.0, rounds: int = 3) -> float:
    """Clips per second of predict(batch of clips): the best of `rounds` rounds of at least `seconds`."""
    batch_waves = waves[np.arange(batch) % len(waves)]
    predict(batch_waves)
    best = 0.0
    for _ in range(rounds):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predict(batch_waves)
            done += batch
        best = max(best, done / (time.perf_counter() - started))
    return best


def measure_model(model: str, run_dir: Path, args) -> list[dict]:
    import torch

    from earmark.export.onnx import load_classifier
    from earmark.export.parity import run_clips
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.torch_predictor import Predictor

    module, _ = load_classifier(run_dir)
    test = run_clips(run_dir, module, "test")  # the whole test split
    waves, targets = test.waves, test.targets
    clip = waves[:1]
    rows = []

    torch_predictor = Predictor(module, "cpu")
    torch.set_num_threads(1)
    p50, p99 = latency_ms(lambda w: torch_predictor.predict_waves(w, batch_size=1), clip, args.calls)
    torch.set_num_threads(args.threads)
    rate = throughput(lambda w: torch_predictor.predict_waves(w, batch_size=args.batch), waves, args.batch)
    probabilities = torch_predictor.predict_waves(waves, batch_size=args.batch)
    size_mb = sum(t.numel() * t.element_size() for t in module.state_dict().values()) / 1e6
    reference = {"model": model, "variant": "pytorch", "size_mb": size_mb, "p50_ms": p50, "p99_ms": p99,
                 "clips_per_s": rate, "accuracy": float((probabilities.argmax(1) == targets).mean())}
    rows.append(reference)

    fp32_accuracy = None
    for variant, path in export_variants(run_dir).items():
        single = OnnxPredictor(path, threads=1)
        p50, p99 = latency_ms(lambda w, single=single: single.predict_waves(w, batch_size=1), clip, args.calls)
        batched = OnnxPredictor(path, threads=args.threads)
        rate = throughput(lambda w, batched=batched: batched.predict_waves(w, batch_size=args.batch), waves, args.batch)
        accuracy = float((batched.predict_waves(waves, batch_size=args.batch).argmax(1) == targets).mean())
        fp32_accuracy = accuracy if variant == "fp32" else fp32_accuracy
        rows.append({"model": model, "variant": variant, "size_mb": path.stat().st_size / 1e6, "p50_ms": p50,
                     "p99_ms": p99, "clips_per_s": rate, "accuracy": accuracy,
                     "change_points": 100 * (accuracy - fp32_accuracy),
                     "latency_ratio": p50 / reference["p50_ms"], "throughput_ratio": rate / reference["clips_per_s"]})
    print(f"  measured {model} on {len(waves)} test clips", flush=True)
    return rows


def print_table(rows: list[dict], args) -> None:
    print()
    print(f"1-s clips at 16 kHz, raw waveform in; latency on 1 thread, throughput on {args.threads} threads, "
          f"batch {args.batch}; ratios against PyTorch measured in this run")
    print(f"{'model':11s} {'variant':13s} {'size MB':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'x torch':>7s} "
          f"{'clips/s':>8s} {'x torch':>7s} {'test acc':>8s} {'Δ points':>8s}")
    for row in rows:
        ratio = f"{row['latency_ratio']:7.2f}" if "latency_ratio" in row else f"{'':7s}"
        speed = f"{row['throughput_ratio']:7.2f}" if "throughput_ratio" in row else f"{'':7s}"
        change = f"{row['change_points']:+8.2f}" if "change_points" in row else f"{'':8s}"
        print(f"{row['model']:11s} {row['variant']:13s} {row['size_mb']:8.3f} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} "
              f"{ratio} {row['clips_per_s']:8.0f} {speed} {row['accuracy']:8.4f} {change}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=["simple_cnn", "wave_cnn", "lite_cnn"])
    parser.add_argument("--run", action="append", default=[], metavar="MODEL=DIR",
                        help="use this trained run for MODEL instead of training one")
    parser.add_argument("--epochs", type=int, default=15, help="epochs for the runs trained here")
    parser.add_argument("--calls", type=int, default=300, help="single-clip calls per timing round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", type=Path, default=None, help="write runs and cache here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="the result file the Deployment page renders")
    args = parser.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.run)
    if set(args.models) - set(given) and not (args.data / "metadata.csv").is_file():
        parser.error(f"FSDD not found at {args.data}; pass --data, or --run MODEL=DIR for every model")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workspace = args.keep or Path(scratch)
        for model in args.models:
            run_dir = Path(given[model]) if model in given else train_run(model, args.data, workspace, args.epochs)
            rows += measure_model(model, run_dir, args)
    print_table(rows, args)
    save_results(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
