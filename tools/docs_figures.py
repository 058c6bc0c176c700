"""Every figure on the docs pages, rendered from its result file in benchmarks/results/ (tools/docs_pages.py puts
each between its page's `<!-- generated: NAME -->` markers).

Each result file carries `_meta`: {"machine": ..., "date": "YYYY-MM-DD", "command": ...} (benchmarks/result_files.py
writes it), and each figure ends with that line, so a number never appears without where and when it was measured.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _load(results: Path, name: str) -> tuple[dict, str]:
    path = results / name
    if not path.is_file():
        return {}, ""
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = data.get("_meta") or {key: data.get(key) for key in ("machine", "date", "command")}  # demo.json: top level
    if not meta or not all(meta.get(key) for key in ("machine", "date", "command")):
        raise SystemExit(f"error: benchmarks/results/{name} has no _meta with machine, date and command; "
                         "write it with benchmarks/result_files.py save_results")
    return data, f"*Measured {meta['date']} on {meta['machine']}: `{meta['command']}` (`benchmarks/results/{name}`).*"


def _missing(name: str, how: str) -> str:
    return f"*Not measured yet: `{how}` writes `benchmarks/results/{name}`, then `python tools/docs_pages.py`.*"


def _ci(row: dict) -> str:
    low, high = row["ci95"] if "ci95" in row else row["accuracy_ci95"]
    return f"{low:.3f}–{high:.3f}"


def demo(results: Path) -> str:
    """`earmark train` over several seeds (benchmarks/demo_seeds.py): each seed's test accuracy with its 95%
    interval, then mean, min and max."""
    data, measured = _load(results, "demo.json")
    if not data:
        return _missing("demo.json", "python benchmarks/demo_seeds.py")
    runs = data["seeds"]
    accuracies = [run["accuracy"] for run in runs]
    lines = ["| seed | model | test accuracy | 95% interval | wall time |", "|---|---|---|---|---|"]
    lines += [f"| {run['seed']} | {run.get('model') or ''} | {run['accuracy']:.3f} | {_ci(run)} | {run['wall_s']:.0f} s |"
              for run in runs]
    widths = [run["accuracy_ci95"][1] - run["accuracy_ci95"][0] for run in runs]
    seeds = "1 seed" if len(runs) == 1 else f"{len(runs)} seeds"
    lines += ["", f"Over {seeds}: mean **{statistics.mean(accuracies):.3f}**, min {min(accuracies):.3f}, "
              f"max {max(accuracies):.3f}, on {runs[0]['n_test']} test clips each. One run's 95% interval is "
              f"{statistics.mean(widths):.2f} wide, so runs inside it are the same result.", "", measured]
    return "\n".join(lines)


def startup(results: Path) -> str:
    """Wall time of fresh processes: `earmark --help`, predict with a checkpoint and with an export."""
    data, measured = _load(results, "startup.json")
    if not data:
        return _missing("startup.json", "python benchmarks/startup.py")
    shown = {"import torch": '`python -c "import torch"`', "earmark --help": "`earmark --help`",
             "predict RUN --backend torch": "`earmark predict RUN clip.wav --backend torch`",
             "predict RUN (its export)": "`earmark predict RUN clip.wav` (exported run)",
             "predict model.onnx": "`earmark predict RUN/export/model.onnx clip.wav`"}
    lines = ["| command | min / median / max wall s |", "|---|---|"]
    lines += [f"| {label} | {data[key]['min_s']:.2f} / {data[key]['median_s']:.2f} / {data[key]['max_s']:.2f} |"
              for key, label in shown.items() if key in data]
    lines += ["", f"An exported run starts {data['export_vs_checkpoint_speedup']:.1f}× sooner than its checkpoint.",
              "", measured]
    return "\n".join(lines)


def ensemble(results: Path) -> str:
    """The ensemble benchmark's members and their ensemble: accuracy with its interval, ONNX latency and size."""
    data, measured = _load(results, "ensemble.json")
    if not data:
        return _missing("ensemble.json", "python benchmarks/ensemble.py")
    names = {"aisfx": "aisfx probe", "simple_cnn": "simple_cnn (default, from zero)", "ensemble": "their ensemble"}
    lines = ["| model | test accuracy (95% CI) | exported p50 / p99 per 1-s clip, 1 thread | ONNX |", "|---|---|---|---|"]
    lines += [f"| {names.get(row['model'], row['model'])} | {row['accuracy']:.3f} ({_ci(row)}) | "
              f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f} ms | {row['onnx_mb']:.1f} MB |" for row in data["rows"]]
    lines += ["", f"{data['rows'][0]['n_clips']} test clips; the ensemble's p50 is "
              f"{data['p50_ratio_to_members']:.2f} × its members' sum.", "", measured]
    return "\n".join(lines)


def transfer_sample(results: Path) -> str:
    """From zero, probed and fine-tuned on the bundled sample."""
    data, measured = _load(results, "transfer.json")
    if not data:
        return _missing("transfer.json", "python benchmarks/transfer.py")
    rows = {"sample: scratch simple_cnn": "`simple_cnn` from zero (library defaults)",
            "sample: probe linear": "aisfx probe, logistic regression (embeds all 420 clips)",
            "sample: probe mlp (cached)": "aisfx probe, MLP head (embeddings from the cache)",
            "sample: fine-tune 5 ep": "aisfx fine-tuned, 5 epochs, top block first"}
    lines = ["| | test accuracy | wall time |", "|---|---|---|"]
    lines += [f"| {label} | {data[key]['accuracy']:.3f} | {data[key]['wall_s']:.1f} s |"
              for key, label in rows.items() if key in data]
    return "\n".join([*lines, "", measured])


def transfer_shared(results: Path) -> str:
    """The aisfx probe against a CNN from zero on the shared FSDD and mridangam sets."""
    data, measured = _load(results, "transfer.json")
    if not data:
        return _missing("transfer.json", "python benchmarks/transfer.py")

    def cv(key: str) -> str:
        row = data.get(key)
        return f"{row['mean']:.3f} ± {row['std']:.3f} ({row['wall_s']:.0f} s)" if row else "not run"

    def shot(key: str) -> str:
        row = data.get(key)
        return f"{row['accuracy']:.3f} ({row['wall_s']:.0f} s)" if row else "not run"

    lines = ["| data, protocol | aisfx probe | `simple_cnn` from zero |", "|---|---|---|",
             f"| FSDD, 6-fold speaker-grouped CV (3,000 clips) | {cv('fsdd 6-fold: probe (embeds 3,000 clips)')}; "
             f"from the cache {cv('fsdd 6-fold: probe (cached)')} | see `benchmarks/fsdd_cv.py` |",
             f"| mridangam, 6-fold CV, one tonic held out per fold | {cv('mridangam 6-fold tonic: probe')} | "
             f"{cv('mridangam 6-fold tonic: scratch')} |"]
    for shots in (5, 20):
        lines.append(f"| mridangam, {shots} clips per class, tested on one held-out tonic | "
                     f"{shot(f'mridangam {shots}-shot: probe')} | {shot(f'mridangam {shots}-shot: scratch')} |")
    return "\n".join([*lines, "", measured])


def transfer_export(results: Path) -> str:
    """The exported probe: FP32 and INT8 latency, size, parity and accuracy."""
    data, measured = _load(results, "transfer.json")
    if "export probe" not in data:
        return _missing("transfer.json", "python benchmarks/transfer.py --parts export")
    fp32 = data["export probe"]
    lines = ["| ONNX | p50 per 1-s clip, 1 thread | size | test accuracy | top-1 agreement with PyTorch | max \\|Δprob\\| |",
             "|---|---|---|---|---|---|",
             f"| FP32 | {fp32['p50_ms']:.1f} ms | | {data['sample: probe linear']['accuracy']:.3f} | "
             f"{fp32['top1_agreement']:.2f} | {fp32['max_abs_prob_diff']:.1e} |"]
    for mode in ("dynamic", "static"):
        row = data.get(f"export probe int8 {mode}")
        if row:
            lines.append(f"| INT8 {mode} | {row['p50_ms']:.1f} ms | {row['size_mb']:.1f} MB | "
                         f"{row['fp32_accuracy']:.3f} → {row['int8_accuracy']:.3f} | {row['top1_agreement']:.2f} | "
                         f"{row['max_abs_prob_diff']:.1e} |")
    return "\n".join([*lines, "", measured])


def latency(results: Path) -> str:
    """PyTorch against its ONNX exports (FP32, INT8 dynamic and static) per model: size, latency, throughput."""
    data, measured = _load(results, "latency.json")
    if not data:
        return _missing("latency.json", "python benchmarks/inference_latency.py")
    variants = {"pytorch": "PyTorch", "fp32": "ONNX FP32", "int8-dynamic": "INT8 dynamic", "int8-static": "INT8 static"}
    lines = ["| model | variant | size MB | p50 / p99 ms | clips/s | test accuracy |", "|---|---|---|---|---|---|"]
    previous = None
    for row in data["rows"]:
        model = f"`{row['model']}`" if row["model"] != previous else ""
        previous = row["model"]
        lines.append(f"| {model} | {variants.get(row['variant'], row['variant'])} | {row['size_mb']:.2f} | "
                     f"{row['p50_ms']:.2f} / {row['p99_ms']:.2f} | {row['clips_per_s']:,.0f} | {row['accuracy']:.4f} |")
    return "\n".join([*lines, "", measured])


def serve(results: Path) -> str:
    """HTTP serving under load: in-process reference, one client, N concurrent clients."""
    data, measured = _load(results, "serve.json")
    if not data:
        return _missing("serve.json", "python benchmarks/serve_load.py --onnx")
    n = data["rows"][0]["concurrency"]
    lines = [f"| model served | in-process decode + predict | HTTP, 1 client p50 / p99 | HTTP, {n} concurrent p50 / p99 "
             f"| requests/s ({n} clients) | errors |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['in_process_p50_ms']:.1f} ms | {row['single_p50_ms']:.1f} / "
              f"{row['single_p99_ms']:.1f} ms | {row['concurrent_p50_ms']:.1f} / {row['concurrent_p99_ms']:.1f} ms | "
              f"{row['requests_per_s']:.0f} | {row['errors']} / {row['requests']:,} |" for row in data["rows"]]
    return "\n".join([*lines, "", measured])


def reliability(results: Path) -> str:
    """Crafted checkpoints per load path, and good requests' latency while the server is attacked."""
    data, measured = _load(results, "reliability.json")
    if not data:
        return _missing("reliability.json", "python benchmarks/reliability.py")
    checkpoints = data["checkpoints"]
    lines = [f"Crafted checkpoints that ran code: **{checkpoints['executed']} of {checkpoints['load_paths']}** load "
             f"paths (goal 0). Compressed attack file: 600 s at {data['attack_rate_hz']:,} Hz in "
             f"{data['attack_file_mb']:.2f} MB.", "",
             "| good requests while | p50 ms | p99 ms | p50 ratio | errors | attack answers |", "|---|---|---|---|---|---|"]
    reference = data["scenarios"][0]["p50_ms"]
    for row in data["scenarios"]:
        answers = ", ".join(f"{code}: {n}" for code, n in row["attack_answers"].items())
        lines.append(f"| {row['scenario']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{row['p50_ms'] / reference:.2f} | {row['errors']} | {answers} |")
    return "\n".join([*lines, "", measured])


def fsdd_cv(results: Path) -> str:
    """6-fold speaker-grouped cross-validation on FSDD: one held-out speaker per fold, mean ± std."""
    data, measured = _load(results, "fsdd_cv.json")
    if not data:
        return _missing("fsdd_cv.json", "python benchmarks/fsdd_cv.py")
    folds, summary = data["folds"], data["summary"]
    lines = ["| held-out speaker | " + " | ".join(fold["held_out"] for fold in folds) + " | mean ± std |",
             "|---|" + "---|" * (len(folds) + 1),
             f"| test accuracy ({folds[0]['n_test']} clips) | " + " | ".join(f"{fold['accuracy']:.3f}" for fold in folds)
             + f" | **{summary['accuracy']['mean']:.3f} ± {summary['accuracy']['std']:.3f}** |", "",
             f"Macro-F1 {summary['macro_f1']['mean']:.3f} ± {summary['macro_f1']['std']:.3f} (std over folds, ddof=1); "
             f"majority baseline {data['majority_baseline']:.2f}; training {data['fit_s_per_fold'][0]:,}–"
             f"{data['fit_s_per_fold'][1]:,} s per fold (recipe `{data['recipe']}`)."]
    return "\n".join([*lines, "", measured])


def serve_attack(results: Path) -> str:
    """Good requests' latency under a compressed-audio attack on /predict and on /predict/timeline."""
    data, measured = _load(results, "serve_attack.json")
    if not data:
        return _missing("serve_attack.json", "python benchmarks/serve_load.py --attack")

    def ms(value: float) -> str:
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

    def answered(row: dict) -> str:
        counts = " + ".join(f"{n} × {code}" for code, n in row["answers"].items())
        median = row["median_answer_s"]
        return f"{counts}, median {median:.2f} s" if counts and median < 1 else \
            f"{counts}, median {median:.1f} s" if counts else "-"

    lines = ["| good requests | no attack p50 / p99 | attack on `/predict` p50 / p99 | attack answered | "
             "attack on `/predict/timeline` p50 / p99 | attack answered |", "|---|---|---|---|---|---|"]
    for row in data["rows"]:
        cells = [f"{ms(row[name]['p50_ms'])} / {ms(row[name]['p99_ms'])} ms" for name in
                 ("no attack", "attack on /predict", "attack on /timeline")]
        lines.append(f"| {row['label']} | {cells[0]} | {cells[1]} | {answered(row['attack on /predict'])} | {cells[2]} | "
                     f"{answered(row['attack on /timeline'])} |")
    return "\n".join([*lines, "", measured])


FIGURES = {"demo": demo, "startup": startup, "ensemble": ensemble, "transfer-sample": transfer_sample,
           "transfer-shared": transfer_shared, "transfer-export": transfer_export,
           "latency": latency, "serve": serve,
           "reliability": reliability, "fsdd-cv": fsdd_cv,
           "serve-attack": serve_attack}


def render_figure(name: str, results: Path) -> str:
    return FIGURES[name](results)
