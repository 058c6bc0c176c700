"""The selection's state and steps for `earmark.workflows.auto`: the leaderboard entries, the clock, and the
candidates that need more than one line to try (views cheapest first, fine-tuning, the ensemble)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from earmark.config import Config
from earmark.errors import EarmarkError
from earmark.workflows.auto_candidates import (
    FINE_TUNE_COST_FACTOR,
    FINE_TUNE_MAX_EPOCHS,
    Candidate,
    SplitData,
    candidate_config,
)
from earmark.workflows.auto_scoring import Score, is_small

CANDIDATES_DIR = "candidates"
RESERVE_S = 5.0  # kept back from the budget for the winner's test evaluation
MIN_TRAIN_S = 10.0  # a Lightning-trained candidate given less time than this is skipped
ENSEMBLE_MAX_MEMBERS = 3
MIN_EPOCHS = 3
EPOCH_OVERHEAD = 1.5  # an epoch beyond its training steps: augmentation, validation, checkpoints (measured: sample)


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
        self.small = is_small(data.base)

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
        self.log(f"auto: {candidate.name}: {describe(entry.score)} ({entry.seconds:.1f} s)")
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


def cheapest_first(selection: Selection, candidates: list[Candidate]) -> list[tuple[Candidate, float]]:
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


def from_zero(selection: Selection, candidate: Candidate, seconds: float) -> None:
    """Train from zero in `seconds`: max_epochs sized to what fits (timed on a batch), so the learning-rate
    schedule runs its whole course instead of being cut off while it is still warming up."""
    config = candidate_config(selection.config, candidate, selection.run_dir)
    epoch_s = training_step_seconds(config, selection.data.base) * EPOCH_OVERHEAD \
        * -(-len(selection.data.base.rows("train")) // config.train.batch_size)
    epochs = int(min(config.train.max_epochs, max(MIN_EPOCHS, seconds // max(epoch_s, 1e-9))))
    selection.run(candidate, [f"train.max_epochs={epochs}", f"train.max_time_s={seconds:.0f}"])


def training_step_seconds(config: Config, prepared) -> float:
    """Seconds of one training step (front-end, forward, backward) of `config`'s model on a batch of training clips."""
    import torch

    from earmark.features import build_frontend
    from earmark.models.registry import create_model

    frontend = build_frontend(config.features, config.data.sample_rate_hz)
    waves = prepared.cache.waves[prepared.rows("train")[:config.train.batch_size]]
    clips = torch.from_numpy(np.asarray(waves, dtype=np.float32))
    model = create_model(config.model.name, len(prepared.labels), frontend.output_shape(clips.shape[1]),
                         **config.model.params)
    seconds = []
    for _ in range(2):  # the first step warms up
        started = time.perf_counter()
        model(frontend(clips)).sum().backward()
        seconds.append(time.perf_counter() - started)
    return seconds[-1]


def fine_tune(selection: Selection, candidate: Candidate, probe: Entry) -> None:
    """Fine-tune the best view when at least two epochs fit in what is left (an estimate from its forward pass)."""
    epoch_s = forward_seconds_per_clip(probe.run_dir, selection.data) * FINE_TUNE_COST_FACTOR \
        * len(selection.data.base.rows("train"))
    seconds = selection.train_share_s(1.0)
    if seconds < max(MIN_TRAIN_S, 2 * epoch_s):
        selection.skip(candidate, f"time budget: 2 epochs need ~{2 * epoch_s:.0f} s, {max(seconds, 0):.0f} s left")
        return
    epochs = int(min(FINE_TUNE_MAX_EPOCHS, seconds // max(epoch_s, 1e-9)))
    selection.run(candidate, [f"train.max_epochs={epochs}", f"train.max_time_s={seconds:.0f}"])


def forward_seconds_per_clip(run_dir: Path, data: SplitData) -> float:
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


def ensemble(selection: Selection) -> None:
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
    try:
        result = ensemble_runs([e.run_dir for e in members], out, evaluate_test=False, progress=False)
    except EarmarkError as exc:  # reported, and the best single candidate stays the winner
        selection.skip(candidate, f"the ensemble could not be built: {exc}")
        return
    entry = Entry(candidate, "ran", time.perf_counter() - started, val, val, Path(result.run_dir))
    selection.entries.append(entry)
    selection.log(f"auto: {candidate.name}: {describe(val)} ({entry.seconds:.1f} s)")


def describe(score: Score | None) -> str:
    if score is None:
        return "not scored"
    return (f"accuracy {score.accuracy:.4f} (95% CI {score.low:.3f}–{score.high:.3f}), macro F1 "
            f"{score.macro_f1:.4f} on {score.on}, {score.n_clips} clips")
