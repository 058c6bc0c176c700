"""An ensemble of an aisfx probe and a CNN trained from zero, against each member, on the bundled sample.

Trains (or takes with --runs) the two members the README names — `earmark train model.name=aisfx` and
`earmark train` (the default CNN) — on the bundled sample with its speaker held out for test, builds
`earmark ensemble` of them, exports all three to ONNX and prints, per model:

    test acc    on the held-out speaker's clips (n and the 95% CI from metrics.json)
    p50/p99 ms  one 1-s clip per call on ONE thread (`OnnxPredictor(threads=1).predict_waves`, the round
                of --calls calls with the lowest median of --rounds, the models' rounds interleaved;
                `inference_latency.latency_ms`), raw waveform in
    x members   the ensemble's p50 against the sum of its members' p50s measured in this run (1.0: the
                ensemble costs exactly its members; the resamplers and the average are the rest)

    python benchmarks/ensemble.py [--runs PROBE_RUN CNN_RUN] [--keep DIR] [--calls 200] [--rounds 5]
                                [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

from inference_latency import latency_ms
from result_files import save_results

RESULTS = Path(__file__).resolve().parent / "results" / "ensemble.json"


def train_members(workspace: Path) -> list[Path]:
    """The aisfx probe and the default CNN on the bundled sample (the demo config), under `workspace`."""
    from earmark import api

    runs = []
    for name, extra in (("probe-aisfx", ["model.name=aisfx"]), ("cnn", [])):
        started = time.perf_counter()
        result = api.train(None, [f"workspace={workspace}", f"runs_dir={workspace}/runs", f"name={name}",
                                  "train.progress=false", *extra])
        print(f"  trained {name}: test accuracy {result.metrics['accuracy']:.4f} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        runs.append(result.run_dir)
    return runs


def exported(run_dir: Path) -> dict:
    """Test accuracy (metrics.json), the export (parity-checked) and a 1-s test clip at the run's rate."""
    from earmark import api
    from earmark.export.onnx import load_classifier
    from earmark.export.parity import run_clips

    metrics = json.loads((run_dir / "metrics.json").read_text())
    started = time.perf_counter()
    export = api.export(run_dir, log=lambda text: None)
    export_s = time.perf_counter() - started
    module, _ = load_classifier(run_dir)
    return {"run": str(run_dir), "model": module.hparams["model_name"], "accuracy": metrics["accuracy"],
            "accuracy_ci95": metrics["accuracy_ci95"], "n_clips": metrics["n_clips"],
            "onnx": export.model_path, "onnx_mb": export.model_path.stat().st_size / 1e6, "export_s": export_s,
            "parity_max_abs_prob_diff": export.parity["fp32"]["max_abs_prob_diff"],
            "clip": run_clips(run_dir, module, "test", 1).waves[:1]}  # (1, n_samples)


def time_interleaved(rows: list[dict], calls: int, rounds: int) -> None:
    """p50/p99 of each export, one round of each in turn (so a busy spell of the machine hits all alike);
    the round with the lowest median is kept."""
    from earmark.predict.onnx_predictor import OnnxPredictor

    predictors = [OnnxPredictor(row["onnx"], threads=1) for row in rows]
    for _ in range(rounds):
        for row, predictor in zip(rows, predictors):
            p50, p99 = latency_ms(lambda wave, p=predictor: p.predict_waves(wave, batch_size=1), row["clip"], calls,
                                  rounds=1)
            if p50 < row.get("p50_ms", float("inf")):
                row.update(p50_ms=p50, p99_ms=p99)
    for row in rows:
        row["onnx"] = str(row["onnx"])
        del row["clip"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, type=Path, default=None, metavar=("PROBE_RUN", "CNN_RUN"),
                        help="members trained already (default: train both on the bundled sample)")
    parser.add_argument("--keep", type=Path, default=None, help="write runs and cache here (default: a temp folder)")
    parser.add_argument("--calls", type=int, default=200, help="single-clip calls per timing round")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per model, interleaved")
    parser.add_argument("--json", type=Path, default=None, help=f"also write the figures here (e.g. {RESULTS})")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from earmark import api

    with tempfile.TemporaryDirectory() as scratch:
        workspace = args.keep or Path(scratch)
        members = list(args.runs) if args.runs else train_members(workspace)
        started = time.perf_counter()
        ensemble = api.ensemble(members, workspace / "runs" / f"ensemble-{time.strftime('%Y%m%d-%H%M%S')}",
                                progress=False)
        ensemble_s = time.perf_counter() - started
        rows = [exported(run) for run in [*members, ensemble.run_dir]]
        time_interleaved(rows, args.calls, args.rounds)
    rows[-1]["build_and_test_s"] = ensemble_s
    ratio = rows[-1]["p50_ms"] / sum(row["p50_ms"] for row in rows[:-1])
    print(f"\nbundled sample, speaker held out ({rows[-1]['n_clips']} test clips); latency: one 1-s clip per call "
          f"on 1 thread, exported ONNX; ratio against the members measured in this run")
    print(f"{'model':12s} {'test acc':>8s} {'95% CI':>13s} {'p50 ms':>7s} {'p99 ms':>7s} {'ONNX MB':>8s}")
    for row in rows:
        low, high = row["accuracy_ci95"]
        print(f"{row['model']:12s} {row['accuracy']:8.4f} {low:6.3f}–{high:5.3f} {row['p50_ms']:7.2f} "
              f"{row['p99_ms']:7.2f} {row['onnx_mb']:8.2f}")
    print(f"ensemble p50 / sum of members' p50: {ratio:.2f}; built and tested in {ensemble_s:.0f} s")
    if args.json:
        save_results(args.json, {"rows": rows, "p50_ratio_to_members": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
