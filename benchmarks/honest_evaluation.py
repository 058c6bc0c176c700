"""Evaluation that does not mislead (issue 28, items 1, 2, 5, 6, 7): figures from one run, on synthetic data.

    python benchmarks/honest_evaluation.py [--cases 48]

- ESC-50-shaped split: 50 classes, 1-5 source recordings of 3 clips each (like ESC-50's `src_file`), predefined
  folds by recording. Prints, per split setting, the source recordings found in several splits (goal 0 unless
  asked to split by clip), whether the split plan reports them, and whether the setting errors.
- compare's paired bootstrap: on CASES synthetic pairs of predictions (2-50 classes, 20-400 clips, plus 1-2
  clips per class for 50-100 classes) the intervals that miss their own estimate, earmark's against
  scipy.stats.bootstrap's percentile interval (the method of the hand-written bootstrap earmark had), and the
  time of one comparison of 3,000 clips × 50 classes.
- cv: folds of 11, 1, 400 and 2 clips (50 classes) with split.val_fraction=0: refused before training?
- evaluate: a 100-row CSV with 4 empty WAVs (scored, reported), and a run whose config.yaml says 44100 Hz
  instead of the 8000 it was trained at (refused?).
Writes benchmarks/results/honest_evaluation.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import TONES_HZ, tone, train_tiny_run  # noqa: E402

RATE_HZ = 8000
RESULTS = Path(__file__).resolve().parent / "results" / "honest_evaluation.json"


def esc50_shaped(root: Path, n_classes: int = 50, seed: int = 0) -> Path:
    """audio/{fold}-{src_file}-{take}-{target}.wav (0.2 s tones) and meta/esc50.csv; fold 5 is one recording."""
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for target in range(n_classes):
        for recording in range(int(rng.integers(1, 6))):
            src_file = 1000 * (target + 1) + recording
            fold = 5 if (target, recording) == (0, 0) else 1 + recording % 4
            for take in "ABC":
                name = f"{fold}-{src_file}-{take}-{target}.wav"
                sf.write(root / "audio" / name, tone(200.0 + 60 * target, RATE_HZ, 0.2, src_file * 3 + ord(take)),
                         RATE_HZ)
                rows.append({"filename": name, "fold": fold, "target": target, "category": f"class{target:02d}",
                             "esc10": False, "src_file": src_file, "take": take})
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    return root


def split_figures(base: Path) -> list[dict]:
    from earmark import api
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines
    from earmark.errors import EarmarkError

    root = esc50_shaped(base / "esc50")
    common = ["data.source=esc50", f"data.path={root}", f"data.sample_rate_hz={RATE_HZ}", "data.duration_s=0.2",
              f"data.cache_dir={base / 'cache'}", f"workspace={base / 'ws'}", "data.workers=1"]
    rows = []
    for setting in ([], ["split.use_predefined=false"], ["split.use_predefined=false", "split.group_by=null"],
                    ["split.use_predefined=false", "split.group_by=group"]):
        config = load_config(overrides=common + setting)
        row = {"setting": " ".join(setting) or "(defaults)", "group_by": config.split.group_by}
        try:
            prepared = api.prepare(config, progress=False)
        except EarmarkError as error:
            rows.append({**row, "error": str(error)[:120]})
            continue
        items = prepared.items
        plan = split_plan_lines(prepared.stats, config.split)
        rows.append({**row, "recordings": int(items["src_file"].nunique()),
                     "in_several_splits": int((items.groupby("src_file")["split"].nunique() > 1).sum()),
                     "plan_reports_overlap": any("'group' column" in line or "several splits" in line
                                                 for line in plan),
                     "classes_in_test": int(items.loc[items["split"] == "test", "label"].nunique()),
                     "error": None})
    return rows


def noisy_model(y: np.ndarray, n_classes: int, accuracy: float, rng) -> np.ndarray:
    """Predictions right on about `accuracy` of the clips, another class elsewhere."""
    wrong = (y + rng.integers(1, n_classes, len(y))) % n_classes
    return np.where(rng.random(len(y)) < accuracy, y, wrong)


def f1_difference(t: np.ndarray, p: np.ndarray, q: np.ndarray, axis: int = -1, *, n_classes: int) -> np.ndarray:
    from earmark.evaluate.paired_stats import macro_f1_batched

    return macro_f1_batched(t, q, n_classes) - macro_f1_batched(t, p, n_classes)


def bootstrap_figures(n_cases: int) -> dict:
    from scipy.stats import bootstrap

    from earmark.evaluate.paired_stats import paired_bootstrap

    rng = np.random.default_rng(0)
    missed = {"earmark": 0, "scipy_percentile": 0}
    methods: dict[str, int] = {}
    cases = [((2, 5, 10, 50)[i % 4], (20, 60, 150, 400)[(i // 4) % 4], None) for i in range(n_cases)]
    cases += [(50, None, 1), (100, None, 2), (60, None, 2)]
    for n_classes, n_clips, per_class in cases:
        y = rng.integers(0, n_classes, n_clips) if per_class is None else np.repeat(np.arange(n_classes), per_class)
        a, b = noisy_model(y, n_classes, rng.uniform(0.1, 0.7), rng), noisy_model(y, n_classes, rng.uniform(0.6, 1), rng)
        ours = paired_bootstrap(y, a, b, n_classes, n_resamples=1000, seed=1)["macro_f1"]
        method = ours["method"].split(" (")[0]
        methods[method] = methods.get(method, 0) + 1
        missed["earmark"] += not ours["ci95"][0] <= ours["difference"] <= ours["ci95"][1]
        reference = bootstrap((y, a, b), functools.partial(f1_difference, n_classes=n_classes), paired=True,
                              vectorized=True, n_resamples=1000, method="percentile",
                              random_state=np.random.default_rng(1)).confidence_interval
        missed["scipy_percentile"] += not reference.low <= ours["difference"] <= reference.high
    y = rng.integers(0, 50, 3000)
    a, b = np.where(rng.random(3000) < 0.7, y, (y + 1) % 50), np.where(rng.random(3000) < 0.8, y, (y + 1) % 50)
    started = time.perf_counter()
    paired_bootstrap(y, a, b, 50)
    return {"cases": len(cases), "macro_f1_intervals_missing_their_estimate": missed, "methods": methods,
            "seconds_3000_clips_50_classes_2000_resamples": round(time.perf_counter() - started, 2)}


def cv_figure(base: Path) -> dict:
    """Folds of 11, 1, 400 and 2 clips over 50 classes, as in the issue: refused before any fold trains?"""
    from earmark import api
    from earmark.errors import EarmarkError

    root = base / "cvdata"
    root.mkdir()
    rows, sizes = [], (11, 1, 400, 2)
    index = 0
    for fold, size in enumerate(sizes, start=1):
        for _ in range(size):
            label = f"class{index % 50:02d}" if fold == 3 else f"class{index % 7:02d}"
            name = f"clip{index:04d}.wav"
            sf.write(root / name, tone(200.0 + 60 * int(label[5:]), RATE_HZ, 0.2, index), RATE_HZ)
            rows.append({"path": name, "label": label, "fold": fold})
            index += 1
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    overrides = ["data.source=csv", f"data.path={root / 'metadata.csv'}", f"data.sample_rate_hz={RATE_HZ}",
                 "data.duration_s=0.2", f"data.cache_dir={base / 'cache'}", f"workspace={base / 'ws'}",
                 f"runs_dir={base / 'runs'}", "data.workers=1", "split.val_fraction=0", "train.progress=false"]
    started = time.perf_counter()
    try:
        api.cv(None, overrides, fold_column="fold")
        return {"refused": False}
    except EarmarkError as error:
        return {"refused": True, "seconds": round(time.perf_counter() - started, 2), "message": str(error)[:160],
                "folds_trained": len(list((base / "runs").glob("*-cv/fold-*")))}


def evaluate_figures(base: Path) -> dict:
    from earmark import api
    from earmark.errors import EarmarkError

    run_dir = train_tiny_run(base)
    listing, rows = base / "hundred.csv", []
    for i in range(100):
        label = list(TONES_HZ)[i % 3]
        path = base / "listed" / f"{label}_{i}.wav"
        path.parent.mkdir(exist_ok=True)
        if i % 25 == 7:
            path.write_bytes(b"")  # 4 empty WAVs
        else:
            sf.write(path, tone(TONES_HZ[label], RATE_HZ, 0.5, 1000 + i), RATE_HZ)
        rows.append({"path": str(path), "label": label})
    pd.DataFrame(rows).to_csv(listing, index=False)
    metrics = api.evaluate(run_dir, data=listing, out_dir=base / "eval_csv")
    edited = base / "edited"
    shutil.copytree(run_dir, edited)
    config = (edited / "config.yaml").read_text()
    (edited / "config.yaml").write_text(config.replace(f"sample_rate_hz: {RATE_HZ}", "sample_rate_hz: 44100"))
    try:
        api.evaluate(edited, out_dir=base / "eval_edited")
        refused = None
    except EarmarkError as error:
        refused = str(error)[-260:]
    return {"csv_rows": 100, "scored": metrics["n_clips"], "unscored": metrics["unscored"],
            "bad_files_csv_rows": len(pd.read_csv(base / "eval_csv" / "bad_files.csv")),
            "edited_config_refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        figures = {"bootstrap": bootstrap_figures(args.cases)}
        print(json.dumps(figures["bootstrap"], indent=1), flush=True)
        (base / "s").mkdir()
        figures["esc50_split"] = split_figures(base / "s")
        print(pd.DataFrame(figures["esc50_split"]).to_string(index=False), flush=True)
        (base / "c").mkdir()
        figures["cv"] = cv_figure(base / "c")
        print(json.dumps(figures["cv"], indent=1), flush=True)
        (base / "e").mkdir()
        figures["evaluate"] = evaluate_figures(base / "e")
        print(json.dumps(figures["evaluate"], indent=1), flush=True)
    figures["evaluate"]["edited_config_refused"] = bool(figures["evaluate"]["edited_config_refused"])
    RESULTS.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
