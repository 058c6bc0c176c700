"""Run an Optuna study over ordinary earmark runs and write what it found (see `earmark.workflows.search_space`)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd
import yaml

from earmark.config import Config, load_config, resumable_config
from earmark.config_diff import config_changes, describe_changes
from earmark.errors import EarmarkError
from earmark.rundir import new_output_dir
from earmark.workflows.search_space import (
    SearchParam,
    direction_of,
    pruning_callback,
    read_space_file,
    space_params,
    touches_data,
    trial_config,
)

STUDY_NAME = "earmark"
CONFIG_FILE, SPACE_FILE, STUDY_FILE = "config.yaml", "space.yaml", "study.db"
TRIALS_FILE, PLOT_FILE, BEST_FILE, SUMMARY_FILE = ("trials.csv", "optimization_history.png", "best_config.yaml",
                                                   "tune_summary.json")
WARMUP_EPOCHS = 1  # the median pruner never stops a trial before its second validated epoch


@dataclass
class TuneResult:
    tune_dir: Path
    best_value: float
    best_params: dict[str, Any]
    best_config: Path  # best_config.yaml: `earmark train` on it reproduces the best trial
    best_run_dir: Path
    trials: pd.DataFrame  # what trials.csv holds
    summary: dict[str, Any]


def tune(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, space: str | Path | None = None,
         trials: int = 20, seed: Optional[int] = None, timeout_s: Optional[float] = None,
         resume: str | Path | None = None, pruner: Any = "median", startup_trials: int = 5, keep: str = "all",
         evaluate_trials: bool = False, log: Optional[Callable[[str], None]] = None) -> TuneResult:
    """`earmark.api.tune`: `run_study` of a config given as an object, a YAML path or overrides alone."""
    return run_study(resumable_config(config, overrides, resume), space, trials=trials, seed=seed,
                     timeout_s=timeout_s, resume=resume, pruner=pruner, startup_trials=startup_trials, keep=keep,
                     evaluate_trials=evaluate_trials, log=log)


def run_study(config: Optional[Config], space: Optional[Path], *, trials: int, seed: Optional[int] = None,
              timeout_s: Optional[float] = None, resume: Optional[Path] = None,
              pruner: Union[str, Any] = "median", startup_trials: int = 5, keep: str = "all",
              evaluate_trials: bool = False, log: Optional[Callable[[str], None]] = None) -> TuneResult:
    """Search until the study holds `trials` finished trials (or `timeout_s` passed), then write
    trials.csv, the history plot, best_config.yaml and the summary. `resume`: an earlier tune folder,
    whose config and space are used when none are given (given ones must be the same). keep: "all"
    trial run folders, or only the "best" one. evaluate_trials: also evaluate each trial on the test
    split (metrics.json, plots, report.html); the search never uses it, so by default it is skipped."""
    import optuna

    from earmark.workflows import train as training
    from earmark.workflows.auto_candidates import AUTO_MODEL
    from earmark.workflows.prepare import prepare

    space, log = Path(space) if space is not None else None, log or (lambda text: None)
    resume = Path(resume) if resume is not None else None

    started = time.perf_counter()
    if trials < 1:
        raise EarmarkError(f"--trials must be at least 1; got {trials}")
    if keep not in ("all", "best"):
        raise EarmarkError(f"--keep must be all or best; got {keep!r}")
    if config is not None and config.model.name == AUTO_MODEL:  # auto (the demo's default) chooses among models
        raise EarmarkError("earmark tune searches the settings of one model, and model.name=auto chooses among "
                           "models: set model.name (e.g. model.name=simple_cnn)")
    if resume is not None:
        tune_dir = Path(resume)
        config, space_text = _resumed_inputs(tune_dir, config, space)
        space_origin = tune_dir / SPACE_FILE
    else:
        if config is None or space is None:
            raise EarmarkError("tuning needs a config and a search space (--space space.yaml), or --resume")
        tune_dir, space_origin = None, Path(space)
        space_text = read_space_file(space_origin)
    params = space_params(space_text, space_origin, config)
    monitor, direction = config.train.monitor, direction_of(config.train.monitor)
    prepared = None if touches_data(params) else prepare(config, progress=config.train.progress)
    if prepared is not None and not len(prepared.rows("val")):
        raise EarmarkError("tuning needs a validation split to score trials (the test split never guides the "
                           "search): set split.val_fraction above 0, or give the data a val split")
    if tune_dir is None:
        tune_dir = new_output_dir(config, "-tune")
        (tune_dir / CONFIG_FILE).write_text(config.to_yaml())
        (tune_dir / SPACE_FILE).write_text(space_text)
    seed = config.seed if seed is None else seed
    storage = f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # earmark prints its own line per trial, failures too
    try:
        existing = _finished(optuna.load_study(study_name=STUDY_NAME, storage=storage)) if resume else 0
        # a resumed study draws from a seed advanced by its trials, not the first trials' draws again
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction,
                                    sampler=optuna.samplers.TPESampler(seed=seed + existing),
                                    pruner=_pruner(pruner, startup_trials), load_if_exists=resume is not None)
        remaining = trials - existing
        log(f"tuning {', '.join(p.key for p in params)}: {max(0, remaining)} trial(s) to run ({existing} done), "
            f"objective: {direction} validation {monitor}; folder {tune_dir}")
        objective = _objective(training, config, params, tune_dir, prepared, monitor, direction, evaluate_trials, log)
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=timeout_s, catch=(EarmarkError,),
                           callbacks=[_progress(log, monitor)])
    finally:
        optuna.logging.set_verbosity(previous)
    result = _write_outputs(study, config, params, tune_dir, monitor, direction, seed, time.perf_counter() - started)
    if keep == "best":
        remove_trial_runs(tune_dir, result.best_run_dir)
    return result


def _objective(training, config: Config, params: list[SearchParam], tune_dir: Path, prepared, monitor: str,
               direction: str, evaluate_trials: bool, log: Callable[[str], None]):
    def objective(trial) -> float:
        values = {param.key: param.suggest(trial) for param in params}
        name = f"trial-{trial.number:03d}"
        log(f"{name}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        callback = pruning_callback(trial, monitor)
        trial.set_user_attr("run_dir", str(tune_dir / name))
        trial.set_user_attr("values", values)
        try:
            result = training.train(trial_config(config, values, tune_dir, name), prepared=prepared,
                               extra_callbacks=[callback], evaluate_test=evaluate_trials)
            trial.set_user_attr("run_dir", str(result.run_dir))
            return callback.best(direction)
        except EarmarkError as exc:
            trial.set_user_attr("error", str(exc))
            log(f"{name} failed: {exc}")
            raise
        finally:
            trial.set_user_attr("epochs", len(callback.values))

    return objective


def _progress(log: Callable[[str], None], monitor: str):
    def report(study, trial) -> None:
        name = f"trial-{trial.number:03d}"
        if trial.state.name == "COMPLETE":
            best = study.best_trial
            log(f"{name}: {monitor} {trial.value:.4f} after {trial.user_attrs.get('epochs')} epoch(s); "
                f"best so far {best.value:.4f} (trial-{best.number:03d})")
        elif trial.state.name == "PRUNED":
            log(f"{name}: pruned after {trial.user_attrs.get('epochs')} epoch(s)")

    return report


def _pruner(pruner: Union[str, Any], startup_trials: int):
    import optuna

    if not isinstance(pruner, str):
        return pruner  # an optuna pruner object, from the Python API
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=WARMUP_EPOCHS)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise EarmarkError(f"--pruner must be median or none; got {pruner!r}")


def _finished(study) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.trials)


def _resumed_inputs(tune_dir: Path, config: Optional[Config], space: Optional[Path]) -> tuple[Config, str]:
    for name in (CONFIG_FILE, SPACE_FILE, STUDY_FILE):
        if not (tune_dir / name).is_file():
            raise EarmarkError(f"cannot resume {tune_dir}: it is not a tune folder (no {name}); give "
                               "runs/<name>-tune of an earlier `earmark tune`")
    saved = load_config(tune_dir / CONFIG_FILE)
    changes = config_changes(saved, config) if config is not None else {}
    if changes:
        raise EarmarkError(f"cannot resume {tune_dir}: the config differs from its {CONFIG_FILE} in "
                           f"{describe_changes(changes)}; resume with the same config (or none)")
    saved_space = (tune_dir / SPACE_FILE).read_text()
    if space is not None and yaml.safe_load(read_space_file(space)) != yaml.safe_load(saved_space):
        raise EarmarkError(f"cannot resume {tune_dir}: {space} differs from its {SPACE_FILE}; a study keeps one "
                           "search space (resume without --space, or start a new search)")
    return saved, saved_space


def _write_outputs(study, config: Config, params: list[SearchParam], tune_dir: Path, monitor: str, direction: str,
                   seed: int, seconds: float) -> TuneResult:
    from earmark.reports.tuning import plot_history, write_tune_reports

    table = trials_table(study, params)
    table.to_csv(tune_dir / TRIALS_FILE, index=False)
    plot_history(table, monitor, direction, tune_dir / PLOT_FILE)
    complete = table[table["state"] == "COMPLETE"]
    if complete.empty:
        errors = [e for e in table.get("error", pd.Series(dtype=str)).dropna() if e]
        raise EarmarkError(f"no trial of {tune_dir} completed ({len(table)} ran: "
                           f"{', '.join(f'{s} {n}' for s, n in table['state'].value_counts().items())})"
                           + (f"; first error: {errors[0]}" if errors else "") + "; see trials.csv")
    best = study.best_trial
    best_run = Path(best.user_attrs["run_dir"])
    best_values = best.user_attrs["values"]
    best_config = trial_config(config, best_values, config.runs_dir, f"{config.name or 'tuned'}-best")
    best_config = _with_absolute_data_paths(best_config)
    (tune_dir / BEST_FILE).write_text(best_config.to_yaml())
    summary = {
        "objective": f"best validation {monitor} over a trial's epochs ({direction}); the test split is never used",
        "monitor": monitor, "direction": direction, "best_value": best.value, "best_trial": best.number,
        "best_params": best_values, "best_run_dir": str(best_run), "best_config": str(tune_dir / BEST_FILE),
        "n_trials": {state: int(n) for state, n in table["state"].value_counts().items()},
        "space": [param.key for param in params], "seed": seed, "seconds": seconds,
    }
    (tune_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str))
    write_tune_reports(tune_dir, summary, table, config)
    return TuneResult(tune_dir, best.value, best_values, tune_dir / BEST_FILE, best_run, table, summary)


def trials_table(study, params: list[SearchParam]) -> pd.DataFrame:
    """One row per trial: number, state, value (the objective), each parameter, epochs, seconds, run, error."""
    rows = []
    for trial in study.trials:
        values = trial.user_attrs.get("values", {})
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        row = {"number": trial.number, "state": trial.state.name, "value": trial.value}
        row.update({param.key: _short(values[param.key]) if param.key in values else None for param in params})
        intermediate = trial.intermediate_values
        row.update({"epochs": trial.user_attrs.get("epochs"),
                    "last_reported": intermediate[max(intermediate)] if intermediate else None,
                    "seconds": duration, "run_dir": trial.user_attrs.get("run_dir"),
                    "error": trial.user_attrs.get("error", "")})
        rows.append(row)
    return pd.DataFrame(rows)


def _with_absolute_data_paths(config: Config) -> Config:
    """best_config.yaml lives in the tune folder: data paths that only resolve from here become absolute."""
    updates = {field: Path(getattr(config.data, field)).resolve() for field in ("path", "audio_root")
               if getattr(config.data, field) is not None and Path(getattr(config.data, field)).exists()}
    return config.model_copy(update={"data": config.data.model_copy(update=updates)}) if updates else config


def _short(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else (json.dumps(value) if isinstance(value, (list, dict))
                                                              else value)


def remove_trial_runs(tune_dir: Path, keep: Path) -> None:
    """Delete every trial-NNN run folder but `keep` (the best one)."""
    for run in Path(tune_dir).glob("trial-*"):
        if run.is_dir() and run.resolve() != Path(keep).resolve():
            shutil.rmtree(run)
