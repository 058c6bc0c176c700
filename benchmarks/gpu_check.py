"""The one check a machine with a GPU runs (under 8 minutes on one GPU); writes one JSON under benchmarks/results/.

1. cuda_tests   the tests that need CUDA (`pytest -k cuda`, slow ones included), with their counts;
2. throughput   end-to-end training clips/s against the model-only ceiling, same model, batch 128, 5-s clips
                at 16 kHz, bf16 (benchmarks/train_throughput.py), for simple_cnn, lite_cnn, resnet18,
                efficientnetv2_s and cnn14;
3. train_export a short real training on CUDA (synthetic tones), then its ONNX export with parity.

On a machine without CUDA it says so and exits 0 without writing anything.

    python benchmarks/gpu_check.py [--out benchmarks/results] [--models ...] [--skip-tests]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
THROUGHPUT_MODELS = ("simple_cnn", "lite_cnn", "resnet18", "efficientnetv2_s", "cnn14")
BATCH, CLIP_S = 128, 5.0
CUDA_TESTS_TIMEOUT_S = 240
LEARNED_ACCURACY = 0.9  # three pure tones: the short training must separate them (chance: 0.33)
NO_CUDA_MESSAGE = "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was run"


def timed(section):
    """Run one section; its figures, or the error that stopped it, plus its seconds."""
    started = time.perf_counter()
    try:
        result = {"ok": True, **section()}
    except Exception as exc:  # one failed section must not lose the others' figures
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def cuda_tests() -> dict:
    """`pytest -k cuda` over the whole suite (slow tests too); counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "cuda.xml"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                               "-m", "", f"--junitxml={junit}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=CUDA_TESTS_TIMEOUT_S, env=env)
        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    if done.returncode not in (0, 5):  # 5: no test matched
        raise RuntimeError(f"pytest -k cuda exited {done.returncode}: {counts}\n{done.stdout[-3000:]}")
    if counts["tests"] == 0 or counts["skipped"]:
        raise RuntimeError(f"pytest -k cuda ran {counts['tests']} tests, {counts['skipped']} skipped: on a CUDA "
                           f"machine none may skip\n{done.stdout[-3000:]}")
    return {**counts, "summary": done.stdout.strip().splitlines()[-1]}


def throughput(models: list[str], steps: int, warmup: int) -> dict:
    """Per model: ceiling, resident and streaming clips/s and their ratios (train_throughput.py's method)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_throughput as bench

    device = torch.device("cuda")
    precision = "bf16-mixed"
    n_samples = int(round(CLIP_S * bench.SAMPLE_RATE_HZ))
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (2 * BATCH, n_samples)).astype(np.float32)
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "waves.f32"
        waves.tofile(path)
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=waves.shape)
        for model in models:
            def measure(model=model):
                top = bench.ceiling(model, BATCH, CLIP_S, steps, warmup, device, precision)
                resident = bench.through_lightning(model, waves, BATCH, steps, warmup, device, precision,
                                                   streaming=False, workers=0)
                streamed = bench.through_lightning(model, mapped, BATCH, steps, warmup, device, precision,
                                                   streaming=True, workers=max(1, (os.cpu_count() or 2) // 2))
                return {"ceiling_clips_s": round(top, 1), "resident_clips_s": round(resident, 1),
                        "streaming_clips_s": round(streamed, 1), "resident_over_ceiling": round(resident / top, 3),
                        "streaming_over_ceiling": round(streamed / top, 3)}

            rows[model] = timed(measure)
            print(f"  {model}: {json.dumps(rows[model])[:300]}", flush=True)
            torch.cuda.empty_cache()
    return {"batch": BATCH, "clip_s": CLIP_S, "sample_rate_hz": bench.SAMPLE_RATE_HZ, "precision": precision,
            "steps": steps, "warmup": warmup, "models": rows}


def train_and_export() -> dict:
    """15 epochs of simple_cnn on CUDA (bf16) on synthetic tones, then the ONNX export and its parity report."""
    import soundfile as sf

    from earmark import api
    from earmark.config import load_config

    rate_hz, rng = 16000, np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "tones"
        for label, frequency_hz in (("low", 300.0), ("mid", 900.0), ("high", 2400.0)):
            (root / label).mkdir(parents=True)
            for take in range(40):
                t = np.arange(rate_hz) / rate_hz
                clip = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * frequency_hz * t + rng.uniform(0, 6.3))
                sf.write(root / label / f"{label}_{take}.wav", (clip + rng.normal(0, 0.01, len(t))).astype(np.float32),
                         rate_hz)
        overrides = [f"runs_dir={scratch}/runs", f"workspace={scratch}/ws", "data.source=folder", f"data.path={root}",
                     f"data.sample_rate_hz={rate_hz}", "data.duration_s=1.0", f"data.cache_dir={scratch}/cache",
                     "model.name=simple_cnn", "train.max_epochs=15", "train.batch_size=32", "train.accelerator=cuda",
                     "train.devices=1", "train.precision=bf16-mixed", "train.progress=false", "name=gpu_check"]
        run = api.train(load_config(overrides=overrides))
        exported = api.export(run.run_dir, log=lambda text: None)
        metrics = run.metrics
        if metrics["accuracy"] < LEARNED_ACCURACY or not exported.parity["fp32"]["passed"]:
            raise RuntimeError(f"test accuracy {metrics['accuracy']:.3f} (needs {LEARNED_ACCURACY}; 15 epochs reach "
                               f"1.0 on a CPU), export parity {exported.parity['fp32']}")
        return {"test_accuracy": metrics["accuracy"],
                "fit_seconds": metrics.get("fit_seconds"), "device_resident": metrics.get("device_resident"),
                "export": exported.parity.get("export"),
                "fp32_parity": {key: exported.parity["fp32"].get(key)
                                for key in ("passed", "max_abs_prob_diff", "top1_agreement", "n_clips")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of the JSON (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=list(THROUGHPUT_MODELS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per throughput figure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--skip-tests", action="store_true", help="leave out `pytest -k cuda`")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE)
        return 0
    import logging

    import lightning  # noqa: F401  (sets its loggers' levels on import; quieten them after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = time.perf_counter()
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda, "torch": torch.__version__,
              "python": platform.python_version()}
    sections = [("cuda_tests", cuda_tests)] if not args.skip_tests else []
    sections += [("throughput", lambda: throughput(args.models, args.steps, args.warmup)),
                 ("train_export", train_and_export)]
    for name, section in sections:
        print(f"{name} ...", flush=True)
        report[name] = timed(section)
        print(f"{name}: {'ok' if report[name]['ok'] else 'FAILED ' + report[name]['error']} "
              f"({report[name]['seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    ok = all(report[name]["ok"] for name, _ in sections) and all(
        row["ok"] for row in report["throughput"].get("models", {}).values())
    report["ok"] = ok
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_check-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'all checks passed' if ok else 'some checks FAILED'} in {report['seconds']} s; wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
