"""From-scratch vs pretrained probe vs fine-tune, side by side in one run: accuracy and wall time.

    python benchmarks/transfer.py [--parts sample,fsdd,mridangam,fewshot,export,fusion,...] [--keep DIR]
                                  [--scratch-epochs 15] [--finetune-epochs 5]

- sample:    the bundled demo (speaker-held-out split): simple_cnn from zero (library defaults), the aisfx
             probe (linear and MLP heads) and aisfx fine-tuned end to end.
- fsdd:      FSDD 6-fold speaker-grouped CV with the aisfx probe, then the same CV again (all embeddings
             cached). The from-scratch reference is the README's measured speaker_robust CV (0.922 ± 0.056,
             ~95 min); `benchmarks/fsdd_cv.py` re-runs it.
- mridangam: tonic-grouped 6-fold CV (each fold holds one tonic out), probe vs simple_cnn from zero.
- fewshot:   5 and 20 training clips per class from five tonics, tested on the sixth (D#), probe vs scratch.
- export:    the sample's probe exported to ONNX: parity and p50 latency per 1-s clip on one thread, for FP32
             and for INT8 (dynamic and static), with the INT8 models' test accuracy against FP32's.

Prints one line per result and updates benchmarks/results/transfer.json (rows of parts not run are kept).
Figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from earmark import api
from earmark.config import load_config
from result_files import save_results  # benchmarks/ is on sys.path when a script here runs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "transfer.json"
PROBE = ["model.name=aisfx"]
PROBE_MLP = ["model.name=aisfx", "model.params.head=mlp"]
FUSION_VIEWS = ("aisfx", "mfcc_stats")


def fusion_candidates() -> dict[str, list[str]]:
    """Each view's own probe, then the fusion of all of them both ways."""
    views = f"model.params.views=[{','.join(FUSION_VIEWS)}]"
    candidates = {f"probe {view}": [f"model.name={view}"] for view in FUSION_VIEWS}
    for combine in ("concat", "average"):
        candidates[f"fusion {combine}"] = ["model.name=fusion", views, f"model.params.combine={combine}"]
    return candidates


def finetune(epochs: int) -> list[str]:
    return ["model.name=aisfx", "model.params.freeze=false", f"train.max_epochs={epochs}", "train.lr=0.0003",
            "model.params.unfreeze_epochs=[0,1,2,3]"]


def scratch(epochs: int) -> list[str]:
    return [f"train.max_epochs={epochs}"]


def run(name: str, overrides: list[str], results: dict) -> dict:
    started = time.perf_counter()
    result = api.train(load_config(overrides=overrides))
    row = {"accuracy": result.metrics["accuracy"], "wall_s": round(time.perf_counter() - started, 1),
           "fit_s": round(result.fit_seconds, 1), "run_dir": str(result.run_dir)}
    if "probe" in result.metrics:
        row["embedded_now"] = result.metrics["probe"]["embedded_now"]
        row["embed_s"] = result.metrics["probe"]["embed_seconds"]
    results[name] = row
    print(f"{name:<34} accuracy {row['accuracy']:.4f}  wall {row['wall_s']:>7.1f} s  {row.get('embedded_now', '')}",
          flush=True)
    return row


def cv(name: str, overrides: list[str], group_by: str, results: dict) -> dict:
    started = time.perf_counter()
    result = api.cv(load_config(overrides=overrides), folds=6, group_by=group_by)
    summary = result.summary
    row = {"mean": summary["accuracy"]["mean"], "std": summary["accuracy"]["std"],
           "wall_s": round(time.perf_counter() - started, 1)}
    results[name] = row
    print(f"{name:<34} accuracy {row['mean']:.4f} ± {row['std']:.4f}  wall {row['wall_s']:>7.1f} s", flush=True)
    return row


def base(workspace: Path, name: str) -> list[str]:
    return [f"workspace={workspace}", f"data.cache_dir={workspace}/cache", f"runs_dir={workspace}/runs", f"name={name}",
            "train.progress=false"]


def part_sample(workspace: Path, args, results: dict) -> None:
    run("sample: scratch simple_cnn", base(workspace, "s-scratch"), results)
    run("sample: probe linear", base(workspace, "s-probe") + PROBE, results)
    run("sample: probe mlp (cached)", base(workspace, "s-mlp") + PROBE_MLP, results)
    run(f"sample: fine-tune {args.finetune_epochs} ep", base(workspace, "s-ft") + finetune(args.finetune_epochs),
        results)


def part_fsdd(workspace: Path, args, results: dict) -> None:
    fsdd = ["data.source=fsdd", f"data.path={SHARED / 'fsdd'}"]
    cv("fsdd 6-fold: probe (embeds 3,000 clips)", base(workspace, "f-probe") + fsdd + PROBE, "speaker", results)
    cv("fsdd 6-fold: probe (cached)", base(workspace, "f-probe2") + fsdd + PROBE, "speaker", results)


def mridangam_data() -> list[str]:
    return ["data.source=csv", f"data.path={SHARED / 'mridangam' / 'metadata.csv'}", "data.duration_s=1.0"]


def part_mridangam(workspace: Path, args, results: dict) -> None:
    data = mridangam_data()
    cv("mridangam 6-fold tonic: probe", base(workspace, "m-probe") + data + PROBE, "tonic", results)
    cv("mridangam 6-fold tonic: scratch", base(workspace, "m-scratch") + data + scratch(args.scratch_epochs),
       "tonic", results)


def fewshot_sets(workspace: Path, shots_per_class: tuple[int, ...] = (5, 20)) -> list[tuple[int, Path, int, int]]:
    """(shots, CSV, training clips, all clips) per few-shot set: `shots` training clips per class from the five
    tonics other than D#, tested on every D# clip; the samples drawn in that order from one seeded generator, so
    every benchmark that builds them (this one, benchmarks/auto.py) sees the same clips."""
    table = pd.read_csv(SHARED / "mridangam" / "metadata.csv")
    table["path"] = [str(SHARED / "mridangam" / p) for p in table["path"]]
    rng = np.random.default_rng(0)
    sets = []
    for shots in shots_per_class:
        train = table[table["tonic"] != "D#"].groupby("label").sample(n=shots, random_state=int(rng.integers(1 << 30)))
        test = table[table["tonic"] == "D#"]
        subset = pd.concat([train.assign(split="train"), test.assign(split="test")])
        csv = workspace / f"fewshot-{shots}.csv"
        subset.to_csv(csv, index=False)
        sets.append((shots, csv, len(train), len(subset)))
    return sets


def part_fewshot(workspace: Path, args, results: dict) -> None:
    for shots, csv, _, _ in fewshot_sets(workspace):
        data = ["data.source=csv", f"data.path={csv}", "data.duration_s=1.0", "split.val_fraction=0"]
        run(f"mridangam {shots}-shot: probe", base(workspace, f"fs{shots}-probe") + data + PROBE, results)
        run(f"mridangam {shots}-shot: scratch", base(workspace, f"fs{shots}-scratch") + data +
            scratch(args.scratch_epochs), results)


def part_export(workspace: Path, args, results: dict) -> None:
    run_dir = results.get("sample: probe linear", {}).get("run_dir")
    if run_dir is None or not Path(run_dir).is_dir():  # a row kept from an earlier invocation whose run is gone
        run_dir = run("sample: probe linear", base(workspace, "s-probe") + PROBE, results)["run_dir"]
    exported = api.export(run_dir, Path(run_dir) / "export", log=lambda text: None)
    fp32 = exported.parity["fp32"]
    results["export probe"] = {"p50_ms": p50_ms(exported.model_path), "max_abs_prob_diff": fp32["max_abs_prob_diff"],
                               "top1_agreement": fp32["top1_agreement"]}
    print(f"{'export probe (1 thread, 1-s clip)':<34} p50 {results['export probe']['p50_ms']} ms, parity "
          f"max |Δp| {fp32['max_abs_prob_diff']:.2e}, top-1 agreement {fp32['top1_agreement']}", flush=True)
    for mode in ("dynamic", "static"):
        int8 = api.export(run_dir, Path(run_dir) / f"export-{mode}", int8=mode, force=True, log=lambda text: None)
        figures = int8.parity["int8"]
        row = {"p50_ms": p50_ms(int8.int8_path), "size_mb": figures["size_mb"],
               "fp32_accuracy": figures["fp32_accuracy"], "int8_accuracy": figures["int8_accuracy"],
               "max_abs_prob_diff": figures["max_abs_prob_diff"], "top1_agreement": figures["top1_agreement"]}
        results[f"export probe int8 {mode}"] = row
        print(f"{'export probe int8 ' + mode:<34} p50 {row['p50_ms']} ms, accuracy {row['fp32_accuracy']:.4f} → "
              f"{row['int8_accuracy']:.4f}, top-1 agreement {row['top1_agreement']}, {row['size_mb']} MB", flush=True)


def part_fusion(workspace: Path, args, results: dict) -> None:
    for name, overrides in fusion_candidates().items():
        row = run(f"sample: {name}", base(workspace, f"s-{name.replace(' ', '-')}") + overrides, results)
    exported = api.export(row["run_dir"], Path(row["run_dir"]) / "export", log=lambda text: None)  # the average
    fp32 = exported.parity["fp32"]
    results["export fusion average"] = {"p50_ms": p50_ms(exported.model_path),
                                        "max_abs_prob_diff": fp32["max_abs_prob_diff"],
                                        "top1_agreement": fp32["top1_agreement"]}
    print(f"{'export fusion average (1-s clip)':<34} p50 {results['export fusion average']['p50_ms']} ms, parity "
          f"max |Δp| {fp32['max_abs_prob_diff']:.2e}, top-1 agreement {fp32['top1_agreement']}", flush=True)


def part_fusion_cv(data: list[str], group_by: str, tag: str):
    def part(workspace: Path, args, results: dict) -> None:
        for name, overrides in fusion_candidates().items():
            cv(f"{tag} 6-fold: {name}", base(workspace, f"{tag}-{name.replace(' ', '-')}") + data + overrides,
               group_by, results)
    return part


def p50_ms(model_path: Path) -> float:
    """Median wall time of one 1-s clip through an exported model on one thread (30 runs, 5 warm-up)."""
    from earmark.predict.onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(model_path, threads=1)
    clip = np.random.default_rng(0).standard_normal((1, 44100)).astype(np.float32) * 0.1
    times = []
    for _ in range(30):
        started = time.perf_counter()
        predictor.predict_waves(clip)
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.median(times[5:])), 2)


PARTS = {"sample": part_sample, "fsdd": part_fsdd, "mridangam": part_mridangam, "fewshot": part_fewshot,
         "export": part_export, "fusion": part_fusion,
         "fusion-fsdd": part_fusion_cv(["data.source=fsdd", f"data.path={SHARED / 'fsdd'}"], "speaker", "fsdd"),
         "fusion-mridangam": part_fusion_cv(mridangam_data(), "tonic", "mridangam")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="sample,export,fsdd,fewshot,mridangam")
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--scratch-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # parts not re-run are kept
    with tempfile.TemporaryDirectory() as scratch_dir:
        workspace = args.keep or Path(scratch_dir)
        workspace.mkdir(parents=True, exist_ok=True)
        for part in args.parts.split(","):
            PARTS[part](workspace, args, results)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            save_results(RESULTS, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
