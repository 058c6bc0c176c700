"""`model.name=auto` against each of its candidates, side by side in one run: test accuracy and wall time.

    python benchmarks/auto.py [--parts sample,fsdd,mridangam,fewshot] [--budget S] [--keep DIR]

- sample:    the bundled demo (speaker held out), `earmark train` as a new user runs it (its 60 s budget unless
             --budget).
- fsdd:      FSDD 6-fold speaker-grouped CV, auto inside each fold.
- mridangam: tonic-grouped 6-fold CV (each fold holds one tonic out), auto inside each fold.
- fewshot:   mridangam, 5 and 20 training clips per class from five tonics (one tonic of them validates), tested on
             the sixth (D#); built as benchmarks/transfer.py builds them.

auto chooses on validation and evaluates only its winner on the test split. Afterwards, and only here, every
candidate it trained (RUN/candidates/*) is evaluated on the same test split too, and so is the average of the
best three candidates' probabilities (what an ensemble predicts) — so the table shows what auto's pick gave
against what each choice would have given. Rows: per set, each candidate's validation score, test accuracy
and seconds, then `auto's pick` and `best single candidate`. Prints one line per row and updates
benchmarks/results/auto.json (sets not run are kept). Figures depend on the machine's load.
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
from transfer import fewshot_sets, mridangam_data  # benchmarks/ is on sys.path when a script here runs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RESULTS = Path(__file__).resolve().parent / "results" / "auto.json"
ENSEMBLE_MEMBERS = 3


def base(workspace: Path, name: str, budget: float | None, demo: bool = False) -> list[str]:
    """Overrides of one set; `demo`: model.name left unset, as `earmark train` runs the bundled sample (auto, 60 s)."""
    return ([f"workspace={workspace}", f"data.cache_dir={workspace}/cache", f"runs_dir={workspace}/runs",
             f"name={name}", "train.progress=false"] + ([] if demo else ["model.name=auto"])
            + ([f"train.time_budget_s={budget}"] if budget else []))


def candidate_rows(run_dir: Path) -> list[dict]:
    """Every candidate of one auto run with its test accuracy (the winner's from its own evaluation)."""
    summary = json.loads((run_dir / "leaderboard.json").read_text())
    rows = []
    for entry in summary["leaderboard"]:
        if entry["score"] is None:
            rows.append({**entry, "test_accuracy": None, "probabilities": None})
            continue
        folder = run_dir if entry["status"] == "chosen" else run_dir / "candidates" / entry["run"]
        if entry["status"] == "chosen":
            accuracy = json.loads((run_dir / "metrics.json").read_text())["accuracy"]
            predictions = pd.read_csv(run_dir / "predictions.csv")
        else:
            metrics = api.evaluate(folder, out_dir=folder / "bench-test")
            accuracy, predictions = metrics["accuracy"], pd.read_csv(folder / "bench-test" / "predictions.csv")
        rows.append({**entry, "test_accuracy": accuracy, "probabilities": predictions})
    return rows


def ensemble_accuracy(rows: list[dict]) -> tuple[float | None, list[str]]:
    """Test accuracy of the mean probabilities of the best members on validation (auto's ensemble rule)."""
    scored = [r for r in rows if r["probabilities"] is not None and r["kind"] != "ensemble"
              and r.get("val_accuracy") is not None]
    members = sorted(scored, key=lambda r: -r["val_accuracy"])[:ENSEMBLE_MEMBERS]
    if len(members) < 2:
        return None, []
    key = ["path"] + (["start_s"] if "start_s" in members[0]["probabilities"] else [])
    frames = [m["probabilities"].sort_values(key).reset_index(drop=True) for m in members]
    columns = [c for c in frames[0] if c.startswith("p_")]
    mean = np.mean([f[columns].to_numpy() for f in frames], axis=0)
    predicted = np.asarray([c[2:] for c in columns])[mean.argmax(axis=1)]
    return float((predicted == frames[0]["true"].astype(str).to_numpy()).mean()), [m["candidate"] for m in members]


def one_run(name: str, overrides: list[str], results: dict) -> None:
    started = time.perf_counter()
    config = load_config(overrides=overrides)
    assert config.model.name == "auto", config.model.name
    result = api.train(config)
    wall = time.perf_counter() - started
    rows = candidate_rows(result.run_dir)
    table = summarise(name, [rows], wall, [result.metrics["accuracy"]], [result.metrics["n_clips"]])
    results[name] = table
    show(name, table)


def cv_runs(name: str, overrides: list[str], group_by: str, results: dict) -> None:
    started = time.perf_counter()
    result = api.cv(load_config(overrides=overrides), folds=6, group_by=group_by)
    wall = time.perf_counter() - started
    folds = [candidate_rows(Path(row["run_dir"])) for row in result.summary["per_fold"]]
    table = summarise(name, folds, wall, [row["accuracy"] for row in result.summary["per_fold"]],
                      [row["n_test"] for row in result.summary["per_fold"]])
    results[name] = table
    show(name, table)


def summarise(name: str, folds: list[list[dict]], wall_s: float, picked: list[float], n_test: list[int]) -> dict:
    """Per candidate (by name, over folds): mean validation score, mean test accuracy, mean seconds, times chosen."""
    candidates: dict[str, dict] = {}
    for rows in folds:
        for row in rows:
            slot = candidates.setdefault(row["candidate"], {"val": [], "test": [], "seconds": [], "chosen": 0,
                                                            "skipped": 0})
            if row["test_accuracy"] is None:
                slot["skipped"] += 1
                continue
            slot["val"].append(row["score"])
            slot["test"].append(row["test_accuracy"])
            slot["seconds"].append(row["seconds"])
            slot["chosen"] += row["status"] == "chosen"
    table = {"candidates": {}, "n_folds": len(folds), "n_test": n_test, "wall_s": round(wall_s, 1)}
    for candidate, slot in candidates.items():
        table["candidates"][candidate] = {
            "val_score": _mean(slot["val"]), "test_accuracy": _mean(slot["test"]), "seconds": _mean(slot["seconds"]),
            "folds_run": len(slot["test"]), "folds_skipped": slot["skipped"], "chosen": slot["chosen"]}
    ensembles = [ensemble_accuracy(rows) for rows in folds]
    if all(accuracy is not None for accuracy, _ in ensembles):
        table["ensemble of the best 3 on validation"] = {"test_accuracy": _mean([a for a, _ in ensembles]),
                                                         "members": [m for _, m in ensembles]}
    complete = {c: v for c, v in table["candidates"].items() if v["folds_run"] == len(folds)}
    best = max(complete, key=lambda c: complete[c]["test_accuracy"]) if complete else None
    table["auto's pick"] = {"test_accuracy": _mean(picked), "std": float(np.std(picked)) if len(picked) > 1 else None}
    table["best single candidate"] = {"name": best, "test_accuracy": complete[best]["test_accuracy"] if best else None}
    return table


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def show(name: str, table: dict) -> None:
    for candidate, row in table["candidates"].items():
        test = "skipped" if row["test_accuracy"] is None else f"test {row['test_accuracy']:.4f}"
        val = "" if row["val_score"] is None else f"val {row['val_score']:.4f}"
        print(f"{name}: {candidate:<44} {val:<11} {test:<12} {row['seconds'] or 0:>7.1f} s  chosen {row['chosen']}"
              f"/{table['n_folds']}", flush=True)
    if "ensemble of the best 3 on validation" in table:
        print(f"{name}: {'ensemble of the best 3 on validation':<44} {'':<11} test "
              f"{table['ensemble of the best 3 on validation']['test_accuracy']:.4f}", flush=True)
    best, pick = table["best single candidate"], table["auto's pick"]
    print(f"{name}: auto's pick test {pick['test_accuracy']:.4f}; best single candidate "
          f"{best['name']} {best['test_accuracy']}; wall {table['wall_s']} s; test clips {table['n_test']}", flush=True)


def part_sample(workspace: Path, args, results: dict) -> None:
    name = "sample" if args.budget is None else f"sample (budget {args.budget:g} s)"
    one_run(name, base(workspace, "sample-auto", args.budget, demo=True), results)


def part_fsdd(workspace: Path, args, results: dict) -> None:
    fsdd = ["data.source=fsdd", f"data.path={SHARED / 'fsdd'}"]
    cv_runs("fsdd 6-fold speaker CV", base(workspace, "fsdd-auto", args.budget) + fsdd, "speaker", results)


def part_mridangam(workspace: Path, args, results: dict) -> None:
    cv_runs("mridangam 6-fold tonic CV", base(workspace, "m-auto", args.budget) + mridangam_data(), "tonic", results)


def part_fewshot(workspace: Path, args, results: dict) -> None:
    for shots, csv, n_train, n_clips in fewshot_sets(workspace):
        val_fraction = round(n_train / 5 / n_clips, 3)  # about one of the five training tonics validates
        data = ["data.source=csv", f"data.path={csv}", "data.duration_s=1.0", "split.group_by=tonic",
                f"split.val_fraction={val_fraction}"]
        one_run(f"mridangam {shots}-shot", base(workspace, f"fs{shots}-auto", args.budget) + data, results)


PARTS = {"sample": part_sample, "fsdd": part_fsdd, "mridangam": part_mridangam, "fewshot": part_fewshot}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="sample,fewshot,mridangam,fsdd")
    parser.add_argument("--budget", type=float, default=None, help="train.time_budget_s (default: the config's)")
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--note", default=None, help="saved with the results, e.g. the machine and its load")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # sets not re-run are kept
    with tempfile.TemporaryDirectory() as scratch_dir:
        workspace = args.keep or Path(scratch_dir)
        workspace.mkdir(parents=True, exist_ok=True)
        for part in args.parts.split(","):
            before = {name: id(table) for name, table in results.items()}
            PARTS[part](workspace, args, results)
            for name, table in results.items():  # the sets this part measured carry the note
                if args.note and before.get(name) != id(table):
                    table["note"] = args.note
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
