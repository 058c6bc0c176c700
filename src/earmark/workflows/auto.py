"""`model.name=auto` (`earmark train --auto`): try the candidates within `train.time_budget_s`, keep the best.

The data is prepared once; every candidate (`earmark.workflows.auto_candidates`) trains as an ordinary run on
the same splits, without its test split, and is scored on validation (`earmark.workflows.auto_scoring`); the
probes' best (by inner CV on small data) then meets the other candidates on the validation split (`_choose`).
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
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from earmark.config import Config, as_config
from earmark.errors import EarmarkError
from earmark.workflows.auto_candidates import (
    AUTO_MODEL,
    SplitData,
    candidate_config,
    fine_tune_candidate,
    from_zero_candidate,
    fusion_candidate,
    mlp_head_candidate,
    probe_candidates,
)
from earmark.workflows.auto_selection import (
    MIN_TRAIN_S,
    Entry,
    Selection,
    cheapest_first,
    ensemble,
    fine_tune,
    from_zero,
)

LEADERBOARD_CSV, LEADERBOARD_JSON = "leaderboard.csv", "leaderboard.json"


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


def select(config: Config, *, strict: bool = False, prepared=None, evaluate_test: bool = True, log=None):
    """Prepare once (unless `prepared` is given: a CV fold), try the candidates, keep the winner as the run and
    evaluate it alone on the test split; returns a `RunResult` whose metrics hold the leaderboard (`auto`)."""
    from earmark.rundir import new_output_dir
    from earmark.workflows.plan import plan_model
    from earmark.workflows.train import RunResult

    log = log or (lambda line: None)
    started = time.perf_counter()
    if config.model.params:
        raise EarmarkError(f"model.params ({', '.join(sorted(config.model.params))}) are one model's settings, and "
                           f"model.name=auto tries several: drop them, or set model.name to train that model")
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
    for candidate, estimate_s in cheapest_first(selection, probe_candidates()):
        if estimate_s != float("inf") and estimate_s > selection.remaining_s() and selection.scored():
            selection.skip(candidate, f"time budget: embedding needs ~{estimate_s:.0f} s, "
                                      f"{max(selection.remaining_s(), 0):.0f} s left")
        elif (entry := selection.run(candidate)) is not None:
            probes.append(entry)
    views = [entry.candidate.model for entry in probes]
    for view in views:  # the embeddings are cached now: another head costs seconds
        if (entry := selection.run(mlp_head_candidate(view))) is not None:
            probes.append(entry)
    fusion = fusion_candidate(views)
    if fusion is not None:
        selection.run(fusion)
    best_view = max(probes, key=lambda e: e.score.accuracy) if probes else None
    tuned = fine_tune_candidate(best_view.candidate.model) if best_view else None
    zero = from_zero_candidate()
    share = 0.5 if tuned is not None else 1.0
    seconds = selection.train_share_s(share)
    if seconds < MIN_TRAIN_S and selection.scored():
        selection.skip(zero, f"time budget spent ({seconds:.0f} s left)")
    else:
        from_zero(selection, zero, max(seconds, MIN_TRAIN_S))
    if tuned is not None:
        fine_tune(selection, tuned, best_view)
    ensemble(selection)


def _choose(selection: Selection) -> Entry:
    """Like against like: the probes' best by their own score (inner CV on small data), then that probe against
    the other candidates on the validation split, which all were scored on; ties go to the cheaper (earlier).
    An ensemble (built only when it beats every candidate on validation) wins over them."""
    scored = selection.scored()
    if not scored:
        reasons = "; ".join(f"{e.candidate.name}: {e.status}" for e in selection.entries)
        raise EarmarkError(f"model.name=auto: no candidate could be trained ({reasons}); raise "
                           f"train.time_budget_s or choose model.name yourself")
    ensembles = [e for e in scored if e.candidate.kind == "ensemble"]
    if ensembles:
        return ensembles[0]
    probes = [e for e in scored if e.candidate.kind == "probe"]
    finalists = ([max(probes, key=lambda e: e.score.accuracy)] if probes else []) + [
        e for e in scored if e.candidate.kind != "probe"]
    return max(finalists, key=lambda e: e.val.accuracy)


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


