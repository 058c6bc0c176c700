"""Hyper-parameter search with Optuna: a YAML space of dotted config keys, pruned trials, a resumable study.

Layout of a tune folder, `runs_dir / <name>-tune`:

    config.yaml, space.yaml   the base config and the search space (what `--resume` reuses)
    study.db                  the Optuna study (SQLite): `--resume` continues it
    trial-NNN/                every trial's run directory, calibrated but not evaluated on the test split
                              (metrics.json: epochs and timing; pruned ones stop early, without metrics.json)
    trials.csv, optimization_history.png, best_config.yaml, tune_summary.json, tune_report.md/.html

The objective is the best value of the monitored *validation* metric (`train.monitor`) over a
trial's epochs: what its best.ckpt was chosen by. The test split never guides the search.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from earmark.config import Config
from earmark.config_messages import parse_yaml, read_text
from earmark.errors import EarmarkError

RANGE_KEYS = {"low", "high", "log", "step"}
RESERVED_KEYS = {"train.monitor": "it decides the objective; set it in the config",
                 "name": "trials are named trial-NNN", "runs_dir": "trials live in the tune folder",
                 "workspace": "it is where prepared splits live"}
# Keys that change the prepared clips or splits: each trial then prepares its own (decoding stays cached).
DATA_PREFIXES = ("data.", "split.", "seed")


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the space: a float or int range (optionally log-scaled or stepped) or a choice."""

    key: str  # dotted config key, e.g. train.lr
    kind: str  # float | int | categorical
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None

    def candidates(self) -> list[Any]:
        """Values checked against the config when the space is loaded: the ends, a middle, every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        middle = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high, middle]

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            if all(choice is None or isinstance(choice, (bool, int, float, str)) for choice in self.choices):
                return trial.suggest_categorical(self.key, list(self.choices))
            # lists/maps (e.g. augment.speed ranges) travel through Optuna as JSON text
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def parse_space(tree: Any, origin: str) -> list[SearchParam]:
    """The space from its YAML mapping `{dotted.key: {low, high[, log][, step]} | {choices: [...]}}`."""
    if not isinstance(tree, dict) or not tree:
        raise EarmarkError(f"{origin} must map dotted config keys to ranges, e.g. "
                           "`train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}` or `model.params.width: "
                           "{choices: [8, 16, 32]}`")
    return [_parse_param(str(key), spec, origin) for key, spec in tree.items()]


def _parse_param(key: str, spec: Any, origin: str) -> SearchParam:
    where = f"{origin}: {key}"
    if key in RESERVED_KEYS:
        raise EarmarkError(f"{where} cannot be searched: {RESERVED_KEYS[key]}")
    if not isinstance(spec, dict):
        raise EarmarkError(f"{where} must be {{low: .., high: ..[, log: true][, step: ..]}} or {{choices: [..]}}; "
                           f"got {spec!r}")
    fields = set(spec)
    if "choices" in fields:
        if fields != {"choices"}:
            raise EarmarkError(f"{where}: `choices` cannot be combined with {', '.join(sorted(fields - {'choices'}))}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise EarmarkError(f"{where}: choices must be a non-empty list; got {choices!r}")
        return SearchParam(key, "categorical", choices=tuple(choices))
    unknown = fields - RANGE_KEYS
    if unknown or not {"low", "high"} <= fields:
        raise EarmarkError(f"{where}: a range needs low and high (and optionally log, step); allowed fields: "
                           f"low, high, log, step, choices; got {', '.join(sorted(fields))}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EarmarkError(f"{where}: {name} must be a number; got {value!r}")
    if not isinstance(log, bool):
        raise EarmarkError(f"{where}: log must be true or false; got {log!r}")
    if not low < high:
        raise EarmarkError(f"{where}: low ({low}) must be below high ({high}); to fix a value set it in the config")
    if log and low <= 0:
        raise EarmarkError(f"{where}: a log range needs low > 0; got low={low}")
    if step is not None and (step <= 0 or log):
        raise EarmarkError(f"{where}: step must be above 0 and cannot be combined with log; got step={step}")
    is_int = all(isinstance(v, int) for v in (low, high) + ((step,) if step is not None else ()))
    return SearchParam(key, "int" if is_int else "float", low=low, high=high, log=log, step=step)


def load_space(path: Path, base: Config) -> list[SearchParam]:
    """Read and validate a space file (see `space_params`)."""
    return space_params(read_space_file(path), path, base)


def read_space_file(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise EarmarkError(f"search space file not found: {path}")
    return read_text(path, "search space file")


def space_params(text: str, origin: Path, base: Config) -> list[SearchParam]:
    """The space from a space file's text: YAML shape, ranges, and that every candidate value makes a
    valid config (unknown keys, types, bounds and model parameters are named with `origin`, the file)."""
    tree = parse_yaml(text, str(origin))
    params = parse_space(tree, str(origin))
    for param in params:
        for value in param.candidates():
            try:
                trial_config(base, {param.key: value})
            except EarmarkError as exc:
                raise EarmarkError(f"{origin}: {exc}") from None
    return params


def trial_config(base: Config, values: dict[str, Any], runs_dir: Optional[Path] = None,
                 name: Optional[str] = None) -> Config:
    """`base` with the sampled values set, validated like any config (and checked against the model)."""
    from earmark.config import apply_overrides
    from earmark.workflows.plan import plan_model

    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    if runs_dir is not None:
        overrides += [f"runs_dir={json.dumps(str(runs_dir))}", f"name={json.dumps(name)}"]
    try:
        config = apply_overrides(base, overrides)
        config = plan_model(config).config
    except EarmarkError as exc:  # the config's origin is a temporary file; name the values instead
        message = re.sub(r"^invalid configuration \([^)]*\):", "invalid configuration:", str(exc))
        raise EarmarkError(f"{_describe(values)}: {message}") from None
    return config


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def touches_data(params: Sequence[SearchParam]) -> bool:
    """Whether trials need their own prepared data (a data/split/seed key is searched)."""
    return any(param.key.startswith(DATA_PREFIXES) for param in params)


def direction_of(monitor: str) -> str:
    return "minimize" if monitor.endswith("loss") else "maximize"


def pruning_callback(trial, monitor: str):
    """A Lightning callback that reports the monitored validation metric to the Optuna trial after every
    validation epoch and stops the fit with `optuna.TrialPruned` when the pruner says the trial is not
    worth finishing. Its `values` keep every reported value; `best(direction)` is the trial's objective.

    (Built here so that importing this module does not import Lightning.)
    """
    import lightning as L

    class PruningCallback(L.Callback):
        def __init__(self) -> None:
            self.trial = trial
            self.monitor = monitor
            self.values: list[float] = []

        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            import optuna

            if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
                return
            value = float(trainer.callback_metrics[self.monitor])
            self.values.append(value)
            epoch = int(trainer.current_epoch)
            self.trial.report(value, step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.monitor} {value:.4f})")

        def best(self, direction: str) -> float:
            if not self.values:
                raise EarmarkError(f"the trial reported no {self.monitor}: tuning needs a validation split "
                                   "(split.val_fraction > 0, or a val split in the data)")
            return min(self.values) if direction == "minimize" else max(self.values)

    return PruningCallback()
