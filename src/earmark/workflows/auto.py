"""`model.name=auto` (`earmark train --auto`): try the candidates within `train.time_budget_s`, keep the best.

The data is prepared once; every candidate (`earmark.workflows.auto_candidates`) trains as an ordinary run on
the same splits, without its test split, and is scored on validation (`earmark.workflows.auto_scoring`).
The order is cheapest first: each view's probe, their fusion, the CNN from zero, fine-tuning the best view.
A candidate starts only while budget is left; the Lightning-trained ones stop at their share of it
(`train.max_time_s`). The ensemble of the best members is built when it beats every one of them on the
validation split. The winner becomes the run, and only it is evaluated on the test split:

    RUN/                 the winner's run files (config.yaml names the winner's model): evaluate, predict,
                         export, serve and compare treat it like any other run
    RUN/leaderboard.csv  every candidate: its score with a 95% interval, what it was scored on, seconds,
    RUN/leaderboard.json   chosen / ran / skipped (and why); also in metrics.json and the report
    RUN/candidates/      the other candidates' runs (untested; `earmark evaluate` scores one)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, as_config
from earmark.errors import EarmarkError
from earmark.workflows.auto_candidates import (
    AUTO_MODEL,
    FINE_TUNE_COST_FACTOR,
    FINE_TUNE_MAX_EPOCHS,
    Candidate,
    SplitData,
    candidate_config,
    fine_tune_candidate,
    from_zero_candidate,
    fusion_candidate,
    probe_candidates,
)
from earmark.workflows.auto_scoring import Score

LEADERBOARD_CSV, LEADERBOARD_JSON, CANDIDATES_DIR = "leaderboard.csv", "leaderboard.json", "candidates"
RESERVE_S = 5.0  # kept back from the budget for the winner's test evaluation
MIN_TRAIN_S = 10.0  # a Lightning-trained candidate given less time than this is skipped
ENSEMBLE_MAX_MEMBERS = 3


def train(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
          resume: str | Path | None = None, overfit_batch: bool = False, prepared=None,
          extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True, trust_checkpoint: bool = False,
          log=None):
    """`earmark.workflows.train.train`, except that `model.name=auto` selects the model first (`select`)."""
    from earmark.workflows import train as training

    chosen = None if resume is not None else as_config(config, overrides)
    if chosen is None or chosen.model.name != AUTO_MODEL:
        return training.train(config, overrides, strict=strict, resume=resume, overfit_batch=overfit_batch,
                              prepared=prepared, extra_callbacks=extra_callbacks, evaluate_test=evaluate_test,
                              trust_checkpoint=trust_checkpoint, log=log)
    if overfit_batch or extra_callbacks:
        raise EarmarkError("model.name=auto trains several models; --overfit-batch and extra callbacks check one: "
                           "set model.name (e.g. simple_cnn)")
    return select(chosen, strict=strict, prepared=prepared, evaluate_test=evaluate_test, log=log)


@dataclass
class Entry:
    """One leaderboard row: a candidate, what became of it, its scores and its scratch run."""

    candidate: Candidate
    status: str  # "chosen", "ran", "skipped: <why>", "failed: <why>"
    seconds: float = 0.0
    score: Score | None = None  # what ranks it (inner CV for probes on small data, else the validation split)
    val: Score | None = None  # on the validation split: what the ensemble is compared on
    run_dir: Path | None = None
    val_probabilities: np.ndarray | None = None

    def row(self) -> dict[str, Any]:
        score = self.score
        return {"candidate": self.candidate.name, "kind": self.candidate.kind, "model": self.candidate.model,
                "status": self.status, "score": None if score is None else round(score.accuracy, 4),
                "ci95_low": None if score is None else round(score.low, 4),
                "ci95_high": None if score is None else round(score.high, 4),
                "macro_f1": None if score is None else round(score.macro_f1, 4),
                "scored_on": None if score is None else f"{score.on}, {score.n_clips} clips",
                "val_accuracy": None if self.val is None else round(self.val.accuracy, 4),
                "seconds": round(self.seconds, 1),
                "run": None if self.run_dir is None else self.run_dir.name}


class Selection:
    """The candidates tried so far, against one clock."""

    def __init__(self, config: Config, data: SplitData, run_dir: Path, strict: bool, log: Callable[[str], None]):
        self.config, self.data, self.run_dir, self.strict, self.log = config, data, run_dir, strict, log
        self.started, self.budget_s = time.perf_counter(), float(config.train.time_budget_s)
        self.entries: list[Entry] = []
        self.small = _is_small(data.base)

    def remaining_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started) - RESERVE_S

    def skip(self, candidate: Candidate, why: str) -> None:
        self.entries.append(Entry(candidate, f"skipped: {why}"))
        self.log(f"auto: {candidate.name}: skipped ({why})")

    def run(self, candidate: Candidate, extra: Sequence[str] = ()) -> Entry | None:
        """Train `candidate` under RUN/candidates (no test split) and score it; None if it could not run."""
        from earmark.workflows import train as training
        from earmark.workflows.plan import plan_model

        if self.remaining_s() <= 0 and self.scored():  # the first candidate always runs: there is a model
            self.skip(candidate, "time budget spent")
            return None
        started = time.perf_counter()
        try:
            cand_config = plan_model(candidate_config(self.config, candidate, self.run_dir / CANDIDATES_DIR,
                                                      extra)).config
            prepared = self.data.at(cand_config)
            result = training.train(cand_config, prepared=prepared, strict=self.strict, evaluate_test=False)
            entry = Entry(candidate, "ran", run_dir=result.run_dir)
            self._score(entry, prepared)
        except EarmarkError as exc:  # a candidate that cannot run here (e.g. a view's missing extra) is reported
            self.entries.append(Entry(candidate, f"failed: {exc}", time.perf_counter() - started))
            self.log(f"auto: {candidate.name}: failed: {exc}")
            return None
        entry.seconds = time.perf_counter() - started
        self.entries.append(entry)
        self.log(f"auto: {candidate.name}: {_describe(entry.score)} ({entry.seconds:.1f} s)")
        return entry

    def _score(self, entry: Entry, prepared) -> None:
        from earmark.workflows.auto_scoring import (
            inner_cv_probabilities,
            predictor_and_inputs,
            score_of,
            split_probabilities,
        )

        predictor, inputs = predictor_and_inputs(entry.run_dir, prepared)
        if len(prepared.rows("val")):
            entry.val_probabilities = split_probabilities(predictor, inputs, prepared, "val")
            entry.val = score_of(prepared.targets("val"), entry.val_probabilities, "validation split")
        entry.score = entry.val
        if self.small and entry.candidate.kind == "probe":
            inner = inner_cv_probabilities(predictor, inputs, prepared, self.config.split.group_by, self.config.seed,
                                           self.config.train.class_weights)
            if inner is not None:
                entry.score = score_of(inner[1], inner[0], inner[2])

    def scored(self) -> list[Entry]:
        return [e for e in self.entries if e.score is not None]

    def train_share_s(self, share: float) -> float:
        return max(0.0, self.remaining_s()) * share


def select(config: Config, *, strict: bool = False, prepared=None, evaluate_test: bool = True, log=None):
    """Prepare once (unless `prepared` is given: a CV fold), try the candidates, keep the winner as the run and
    evaluate it alone on the test split; returns a `RunResult` whose metrics hold the leaderboard (`auto`)."""
    from earmark.rundir import new_output_dir
    from earmark.workflows.plan import plan_model
    from earmark.workflows.train import RunResult

    log = log or (lambda line: None)
    started = time.perf_counter()
    base = plan_model(candidate_config(config, from_zero_candidate(), config.runs_dir)).config
    if prepared is None:
        from earmark.data.prepared import prepare_data
        from earmark.data.split_plan import split_plan_lines

        prepared = prepare_data(base, strict=strict, progress=config.train.progress)
        for line in split_plan_lines(prepared.stats, config.split):
            log(line)
    if not len(prepared.rows("train")) or not len(prepared.rows("val")):
        raise EarmarkError("model.name=auto chooses on the validation split, and needs train and validation clips: "
                           "check split.* settings (split.val_fraction above 0), or choose model.name yourself")
    run_dir = new_output_dir(config)
    data = SplitData(prepared, base.data.sample_rate_hz, config.split.group_by, config.train.progress)
    selection = Selection(config, data, run_dir, strict, log)
    log(f"auto: trying candidates for up to {selection.budget_s:.0f} s (train.time_budget_s), scored on "
        + ("inner CV of train+val for probes (small data), the validation split otherwise" if selection.small
           else "the validation split"))
    _try_candidates(selection)
    winner = _choose(selection)
    winner.status = "chosen"
    _adopt(winner.run_dir, run_dir, config)
    winner.run_dir = run_dir  # the run itself
    leaderboard = [entry.row() for entry in selection.entries]
    pd.DataFrame(leaderboard).to_csv(run_dir / LEADERBOARD_CSV, index=False)
    summary = {"winner": winner.candidate.name, "budget_s": selection.budget_s,
               "selection_seconds": round(time.perf_counter() - started, 1), "leaderboard": leaderboard}
    (run_dir / LEADERBOARD_JSON).write_text(json.dumps(summary, indent=1))
    metrics = _evaluate_winner(run_dir, data, summary, evaluate_test)
    return RunResult(run_dir, metrics, time.perf_counter() - started)


def _try_candidates(selection: Selection) -> None:
    """Probes, fusion, from zero, fine-tuning: each while the budget lasts; then the ensemble."""
    probes = []
    for candidate, estimate_s in _cheapest_first(selection, probe_candidates()):
        if estimate_s != float("inf") and estimate_s > selection.remaining_s() and selection.scored():
            selection.skip(candidate, f"time budget: embedding needs ~{estimate_s:.0f} s, "
                                      f"{max(selection.remaining_s(), 0):.0f} s left")
        elif (entry := selection.run(candidate)) is not None:
            probes.append(entry)
    fusion = fusion_candidate([entry.candidate.model for entry in probes])
    if fusion is not None:
        selection.run(fusion)
    best_view = max(probes, key=lambda e: e.score.accuracy) if probes else None
    fine_tune = fine_tune_candidate(best_view.candidate.model) if best_view else None
    zero = from_zero_candidate()
    share = 0.5 if fine_tune is not None else 1.0
    seconds = selection.train_share_s(share)
    if seconds < MIN_TRAIN_S and selection.scored():
        selection.skip(zero, f"time budget spent ({seconds:.0f} s left)")
    else:
        selection.run(zero, [f"train.max_time_s={max(seconds, MIN_TRAIN_S):.0f}"])
    if fine_tune is not None:
        _fine_tune(selection, fine_tune, best_view)
    _ensemble(selection)


def _cheapest_first(selection: Selection, candidates: list[Candidate]) -> list[tuple[Candidate, float]]:
    """The views with the seconds their embeddings will take (cached ones: 0), cheapest first; a view that
    cannot be built here keeps an infinite estimate and fails, reported, when it is tried."""
    from earmark.models.registry import create_model
    from earmark.workflows.auto_scoring import embedding_seconds
    from earmark.workflows.plan import plan_model

    estimates = []
    for candidate in candidates:
        try:
            config = plan_model(candidate_config(selection.config, candidate, selection.run_dir)).config
            prepared = selection.data.at(config)
            model = create_model(candidate.model, len(prepared.labels), (1, prepared.cache.waves.shape[1]),
                                 **config.model.params)
            estimates.append((candidate, embedding_seconds(model, prepared)))
        except EarmarkError:
            estimates.append((candidate, float("inf")))
    return sorted(estimates, key=lambda pair: pair[1])


def _fine_tune(selection: Selection, candidate: Candidate, probe: Entry) -> None:
    """Fine-tune the best view when at least two epochs fit in what is left (an estimate from its forward pass)."""
    epoch_s = _forward_seconds_per_clip(probe.run_dir, selection.data) * FINE_TUNE_COST_FACTOR \
        * len(selection.data.base.rows("train"))
    seconds = selection.train_share_s(1.0)
    if seconds < max(MIN_TRAIN_S, 2 * epoch_s):
        selection.skip(candidate, f"time budget: 2 epochs need ~{2 * epoch_s:.0f} s, {max(seconds, 0):.0f} s left")
        return
    epochs = int(min(FINE_TUNE_MAX_EPOCHS, seconds // max(epoch_s, 1e-9)))
    selection.run(candidate, [f"train.max_epochs={epochs}", f"train.max_time_s={seconds:.0f}"])


def _forward_seconds_per_clip(run_dir: Path, data: SplitData) -> float:
    """Seconds one clip takes through a probe run's whole model (backbone included), timed on a few clips."""
    from earmark.predict.torch_predictor import Predictor
    from earmark.rundir import RunDir

    prepared = data.at(RunDir(run_dir).load_config())
    predictor = Predictor.from_run(run_dir)
    waves = prepared.cache.waves[prepared.rows("train")[:8]]
    predictor.predict_logits(waves[:1])  # warm-up
    started = time.perf_counter()
    predictor.predict_logits(waves)
    return (time.perf_counter() - started) / max(len(waves), 1)


def _ensemble(selection: Selection) -> None:
    """The average of the best members' calibrated probabilities, built as a run when it beats each on validation."""
    from earmark.workflows.auto_scoring import score_of

    members = sorted([e for e in selection.scored() if e.val is not None], key=lambda e: -e.val.accuracy)
    members = members[:ENSEMBLE_MAX_MEMBERS]
    candidate = Candidate(f"ensemble ({' + '.join(e.candidate.name for e in members)})", "ensemble", "ensemble")
    if len(members) < 2:
        return
    val = score_of(selection.data.base.targets("val"), np.mean([e.val_probabilities for e in members], axis=0),
                   "validation split")
    if val.accuracy <= members[0].val.accuracy:
        selection.skip(candidate, f"validation accuracy {val.accuracy:.4f} does not beat its best member's "
                                  f"{members[0].val.accuracy:.4f}")
        return
    try:
        from earmark.workflows.ensemble import ensemble_runs
    except ImportError:
        selection.skip(candidate, "ensembles are not available in this version (earmark.workflows.ensemble)")
        return
    started = time.perf_counter()
    out = selection.run_dir / CANDIDATES_DIR / candidate.folder
    result = ensemble_runs([e.run_dir for e in members], out, evaluate_test=False, progress=False)
    entry = Entry(candidate, "ran", time.perf_counter() - started, val, val, Path(result.run_dir))
    selection.entries.append(entry)
    selection.log(f"auto: {candidate.name}: {_describe(val)} ({entry.seconds:.1f} s)")


def _choose(selection: Selection) -> Entry:
    """The best score; an ensemble (built only when it beats its members on validation) wins over them."""
    scored = selection.scored()
    if not scored:
        reasons = "; ".join(f"{e.candidate.name}: {e.status}" for e in selection.entries)
        raise EarmarkError(f"model.name=auto: no candidate could be trained ({reasons}); raise "
                           f"train.time_budget_s or choose model.name yourself")
    ensembles = [e for e in scored if e.candidate.kind == "ensemble"]
    return ensembles[0] if ensembles else max(scored, key=lambda e: e.score.accuracy)


def _adopt(winner_dir: Path, run_dir: Path, config: Config) -> None:
    """Move the winner's run files into the run folder; its config.yaml keeps the user's runs_dir and name."""
    from earmark.rundir import RunDir

    for path in Path(winner_dir).iterdir():
        shutil.move(str(path), str(run_dir / path.name))
    Path(winner_dir).rmdir()
    winner_config = RunDir(run_dir).load_config()
    adopted = winner_config.model_copy(update={"runs_dir": config.runs_dir, "name": config.name})
    RunDir(run_dir).config_file.write_text(adopted.to_yaml())


def _evaluate_winner(run_dir: Path, data: SplitData, summary: dict, evaluate_test: bool) -> dict[str, Any]:
    """The test split, once, for the winner: metrics.json holds its training facts and the leaderboard."""
    from earmark.rundir import RunDir
    from earmark.workflows.auto_scoring import predictor_and_inputs
    from earmark.workflows.evaluate import evaluate_run, write_untested_metrics

    run = RunDir(run_dir)
    facts = json.loads(run.metrics_file.read_text()) if run.metrics_file.is_file() else {}
    extra = {k: v for k, v in facts.items() if k not in ("test_evaluated", "notes")}
    extra["auto"] = summary
    if not evaluate_test:
        return write_untested_metrics(run_dir, extra)
    config = run.load_config()
    prepared = data.at(config)
    predictor, inputs = predictor_and_inputs(run_dir, prepared)
    test_items = prepared.items[prepared.items["split"] == "test"]
    return evaluate_run(run_dir, test_items, inputs, prepared.labels, config=config, extra=extra, predictor=predictor)


def _is_small(prepared) -> bool:
    from earmark.workflows.auto_scoring import is_small

    return is_small(prepared)


def _describe(score: Score | None) -> str:
    if score is None:
        return "not scored"
    return (f"accuracy {score.accuracy:.4f} (95% CI {score.low:.3f}–{score.high:.3f}), macro F1 "
            f"{score.macro_f1:.4f} on {score.on}, {score.n_clips} clips")
