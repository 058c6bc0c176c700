"""Cross-validation: one decode, then one ordinary run per held-out fold, then their summary.

Layout of a CV folder, `runs_dir / <name>-cv`:

    config.yaml      the resolved config every fold trains with
    cv_plan.json     folds, group key, fold column, seed: what `--resume` must match
    folds.csv        path, segment, label, group key, fold: the fold of every clip
    bad_files.csv    files that could not be decoded (left out of every fold)
    splits/fold-<f>/ each fold's train/val/test CSVs and split_stats.json
    fold-<f>/        each fold's complete run directory (checkpoints, metrics.json, predictions.csv, ...)
    cv_summary.json, cv_report.md, cv_report.html, cv_confusion.png   (see `earmark.reports.crossval`)

In fold f the test split is fold f; validation is whole groups carved from the other folds
(stratified, `split.val_fraction` of all clips); training is the rest. Decoding happens once:
every fold indexes the same decoded cache.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd

from earmark.config import Config, load_config, resumable_config
from earmark.config_diff import config_changes, describe_changes
from earmark.data.labels import natural_key
from earmark.errors import EarmarkError
from earmark.files import safe_name
from earmark.rundir import RunDir, new_output_dir
from earmark.workflows.auto_candidates import AUTO_MODEL

PLAN_FILE, FOLDS_FILE, CONFIG_FILE = "cv_plan.json", "folds.csv", "config.yaml"
DEFAULT_FOLDS = 5


@dataclass
class CVResult:
    cv_dir: Path
    summary: dict[str, Any]  # what cv_summary.json holds: per-fold rows, mean ± std, pooled metrics, warnings


@dataclass(frozen=True)
class CVPlan:
    """How the folds are made; saved as cv_plan.json so a resumed CV makes the same ones."""

    folds: Optional[int]  # computed folds; None with a fold column (its folds are used)
    group_by: Optional[str]  # never split across folds, nor across train/val/test inside a fold
    fold_column: Optional[str]
    seed: int

    def describe(self) -> str:
        if self.fold_column:
            return f"the data's own folds (column {self.fold_column!r})"
        grouping = f", grouped by {self.group_by!r}" if self.group_by else ""
        return f"{self.folds} stratified folds{grouping} (seed {self.seed})"


def make_plan(config: Config, folds: Optional[int] = None, group_by: Optional[str] = None,
              fold_column: Optional[str] = None, seed: Optional[int] = None) -> CVPlan:
    """The plan with its defaults: 5 folds (or the fold column's), grouped by `split.group_by`, `config.seed`."""
    if folds is not None and folds < 2:
        raise EarmarkError(f"--folds must be at least 2; got {folds}")
    return CVPlan(folds=folds if folds is not None or fold_column else DEFAULT_FOLDS,
                  group_by=group_by or config.split.group_by, fold_column=fold_column,
                  seed=config.seed if seed is None else seed)


def cv(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, folds: Optional[int] = None,
       group_by: Optional[str] = None, fold_column: Optional[str] = None, seed: Optional[int] = None,
       resume: str | Path | None = None, strict: bool = False, log: Optional[Callable[[str], None]] = None) -> CVResult:
    """`earmark.api.cv`: `cross_validate` of a config given as an object, a YAML path or overrides alone."""
    return cross_validate(resumable_config(config, overrides, resume), folds=folds, group_by=group_by,
                          fold_column=fold_column, seed=seed, resume=resume, strict=strict, log=log)


def cross_validate(config: Optional[Config], *, folds: Optional[int] = None, group_by: Optional[str] = None,
                   fold_column: Optional[str] = None, seed: Optional[int] = None, resume: Optional[Path] = None,
                   strict: bool = False, log: Optional[Callable[[str], None]] = None) -> CVResult:
    """Train and test one run per fold under one CV folder and write the summary; see the module doc
    and `make_plan` for the defaults.

    resume: an earlier CV folder; folds whose run finished (metrics.json) are kept, an interrupted
    one continues from its last checkpoint, the rest are trained. `config` and the fold options may
    then be left out (the saved ones are used); those given must equal the saved ones.
    """
    from earmark.data.prepared import decode_items, with_splits
    from earmark.data.split_plan import cv_plan_lines
    from earmark.data.splits import cv_folds, groups_in_several_folds
    from earmark.reports.crossval import write_cv_summary

    resume, log = Path(resume) if resume is not None else None, log or (lambda text: None)
    from earmark.workflows import train as training
    from earmark.workflows.plan import plan_model

    started = time.perf_counter()
    requested = {"folds": folds, "group_by": group_by, "fold_column": fold_column, "seed": seed}
    if resume is not None:
        cv_dir = Path(resume)
        config, plan = _resumed_plan(cv_dir, config, {k: v for k, v in requested.items() if v is not None})
    elif config is None:
        raise EarmarkError("cross_validate needs a config, or resume=<an earlier CV folder>")
    else:
        plan = make_plan(config, **requested)
    if config.model.name != AUTO_MODEL:  # auto plans each candidate inside each fold
        config = plan_model(config).config  # with the model's requirements (a backbone's sample rate)
    # a fresh CV folder is made only once the folds are known to work: until then no report is written
    items, labels, cache = decode_items(config, cv_dir if resume is not None else None, strict=strict,
                                        progress=config.train.progress)
    if plan.group_by and plan.group_by not in items.columns:
        raise EarmarkError(f"--group-by {plan.group_by!r} is not a column of the metadata; available columns: "
                           f"{', '.join(map(str, items.columns))}")
    folds = cv_folds(items, plan.folds, plan.group_by, plan.fold_column, plan.seed)  # checks before any writing
    fold_names = sorted(folds.unique(), key=natural_key)
    split_folds = {name: _feasible_fold(items, folds, name, plan, config, len(labels)) for name in fold_names}
    if resume is None:
        cv_dir = new_output_dir(config, "-cv")
        (cv_dir / CONFIG_FILE).write_text(config.to_yaml())
        (cv_dir / PLAN_FILE).write_text(json.dumps(plan.__dict__, indent=1))
        cache.write_bad_files(cv_dir / "bad_files.csv")  # a resumed CV's was written by decode_items
    log(f"decoded {cache.stats.n_decoded} file(s), reused {cache.stats.n_reused} from the cache; "
        f"{len(items)} clips, {len(labels)} classes; folds: {plan.describe()}; folder {cv_dir}")
    _save_or_check_folds(cv_dir, items, folds, plan.group_by, resumed=resume is not None)
    extra_warnings = []
    if plan.fold_column and plan.group_by:
        straddling = groups_in_several_folds(items, folds, plan.group_by)
        if straddling:
            extra_warnings.append(f"{len(straddling)} group(s) of {plan.group_by!r} sit in several of the data's "
                                  f"folds (e.g. {straddling[0]}): test scores may be optimistic")
    if plan.group_by != "group" and "group" in items and items["group"].notna().any():
        shared = groups_in_several_folds(items[items["group"].notna()], folds[items["group"].notna()], "group")
        if shared:  # e.g. clips of one source recording in several folds: a fold tests what another trained on
            extra_warnings.append(f"{len(shared)} value(s) of the 'group' column (e.g. {shared[0]}) sit in several "
                                  f"folds: test scores may be optimistic; use --group-by group")
            log(f"warning: {extra_warnings[-1]}")
    for line in cv_plan_lines(items, folds, labels):
        log(line)
    fold_config = _fold_config(config, plan)
    rows = []
    for number, name in enumerate(fold_names, start=1):
        fold_items = split_folds[name]
        folder = f"fold-{safe_name(name, 'fold')}"  # the fold's name, usable in a path
        prepared = with_splits(fold_items, labels, cache, cv_dir / "splits" / folder, plan.group_by)
        held_out = _held_out_groups(fold_items, plan.group_by)
        counts = {s: int((fold_items["split"] == s).sum()) for s in ("train", "val", "test")}
        prefix = f"fold {number}/{len(fold_names)} ({name})"
        log(f"{prefix}: train {counts['train']}, val {counts['val']}, test {counts['test']} clips"
            + (f"; held out: {_shorten(held_out)}" if held_out else ""))
        for warning in prepared.stats.get("warnings", []):
            log(f"{prefix}: warning: {warning}")
        run_dir = cv_dir / folder
        fold_started = time.perf_counter()
        metrics, how = _train_fold(training, fold_config, prepared, run_dir, strict)
        reused = how == "kept"
        log(f"{prefix}: " + ("finished earlier, kept; " if reused else "")
            + f"accuracy {metrics['accuracy']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}, "
              f"macro F1 {metrics['macro_f1']:.4f} ({time.perf_counter() - fold_started:.1f} s)")
        rows.append({"fold": name, "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"],
                     "accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
                     "macro_f1": metrics["macro_f1"], "epochs": metrics.get("epochs"),
                     "fit_seconds": metrics.get("fit_seconds"), "held_out_groups": held_out,
                     "warnings": list(metrics.get("warnings", [])), "run_dir": str(run_dir), "reused": reused,
                     "resumed": how == "resumed"})
    summary = write_cv_summary(cv_dir, rows, labels, config, plan.describe(), extra_warnings,
                               total_seconds=time.perf_counter() - started,
                               decoded={"n_decoded": cache.stats.n_decoded, "n_reused": cache.stats.n_reused})
    return CVResult(cv_dir, summary)


# ---------------------------------------------------------------- folds


def _fold_items(items: pd.DataFrame, folds: pd.Series, name: str, plan: CVPlan, config: Config) -> pd.DataFrame:
    """A copy of `items` split for fold `name`: test = that fold, val carved (grouped) from the others."""
    from earmark.data.splits import carved_note, cv_split

    fold_items = items.copy()
    fold_items["split"] = pd.Series(cv_split(items, folds, name, plan.group_by, config.split.val_fraction,
                                             plan.seed), index=items.index, dtype="str")
    n_val = int((fold_items["split"] == "val").sum())
    val = f", val carved from the other folds {carved_note(n_val, len(items), config.split.val_fraction)}"
    fold_items.attrs["split_strategy"] = (f"cross-validation, {plan.describe()}: test = fold {name}"
                                          + (val if config.split.val_fraction > 0 else ""))
    return fold_items


def _feasible_fold(items: pd.DataFrame, folds: pd.Series, name: str, plan: CVPlan, config: Config,
                   n_classes: int) -> pd.DataFrame:
    """`_fold_items` for fold `name`, made for every fold before any trains: a fold whose split cannot be
    made (or leaves nothing to train on) fails at once, named, with advice that can work."""
    if plan.fold_column:
        fewer = (f"merge small folds in the {plan.fold_column!r} column, or use --folds K (computed folds) "
                 f"instead of --fold-column")
    else:
        fewer = f"use fewer folds (--folds {max(2, (plan.folds or DEFAULT_FOLDS) - 1)} or less)"
    size = f"fold {name} holds {int((folds == name).sum())} of {len(items)} clips, {n_classes} classes"
    try:
        fold_items = _fold_items(items, folds, name, plan, config)
    except EarmarkError as exc:
        raise EarmarkError(f"cross-validation cannot split fold {name} ({size}): {exc}. Checked before any fold "
                           f"trains: set split.val_fraction=0 (no validation split: every other group trains), "
                           f"or {fewer}") from None
    train_labels = fold_items.loc[fold_items["split"] == "train", "label"].astype("str")
    if train_labels.empty:
        raise EarmarkError(f"cross-validation: fold {name} leaves no clip to train on ({size}); lower "
                           f"split.val_fraction (0: no validation split), or {fewer}")
    absent = sorted(set(items["label"].astype("str")) - set(train_labels), key=natural_key)
    if absent:
        # a model that never saw these classes scores 0 on them: its fold's score says nothing about the method
        in_val = fold_items.loc[fold_items["split"] == "val", "label"].astype("str")
        val_fix = (" (some sit only in the validation carve-out: lower split.val_fraction)"
                   if set(absent) & set(in_val) else "")
        raise EarmarkError(f"cross-validation: {size}; its training part, {len(train_labels)} clips, lacks "
                           f"{len(absent)} of {n_classes} classes ({', '.join(absent[:10])}"
                           f"{', …' if len(absent) > 10 else ''}){val_fix}: a model trained on them cannot predict "
                           f"those classes, so the fold's score would mislead. Checked before any fold trains: "
                           f"{fewer}, or add clips of those classes (or drop them from the metadata)")
    return fold_items


def _fold_config(config: Config, plan: CVPlan) -> Config:
    """What every fold trains with: `config` grouped by the plan's key, so each fold's config.yaml, group
    analysis and leakage check use the grouping its folds were made with (e.g. `cv --group-by speaker`)."""
    return config.model_copy(update={"split": config.split.model_copy(update={"group_by": plan.group_by})})


def _train_fold(training, config: Config, prepared, run_dir: Path, strict: bool) -> tuple[dict, str]:
    """(metrics, how): how is "kept" (a finished fold's metrics.json), "resumed" (an interrupted one,
    from its last.ckpt) or "trained"."""
    metrics_path = RunDir(run_dir).metrics_file
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text()), "kept"
    if RunDir(run_dir).last_checkpoint.is_file() and RunDir(run_dir).is_run():
        return training.train(resume=run_dir, prepared=prepared, strict=strict).metrics, "resumed"
    if run_dir.exists():  # started but never reached a checkpoint: nothing worth keeping
        shutil.rmtree(run_dir)
    fold_config = config.model_copy(update={"runs_dir": run_dir.parent, "name": run_dir.name})
    if config.model.name == AUTO_MODEL:  # the selection runs inside the fold: its test clips never choose
        from earmark.workflows.auto import select

        return select(fold_config, prepared=prepared, strict=strict).metrics, "trained"
    return training.train(fold_config, prepared=prepared, strict=strict).metrics, "trained"


def _held_out_groups(fold_items: pd.DataFrame, group_by: Optional[str]) -> list[str]:
    if not group_by:
        return []
    test = fold_items.loc[fold_items["split"] == "test", group_by].dropna().astype("str")
    return sorted(test.unique(), key=natural_key)


def _shorten(names: list[str], limit: int = 8) -> str:
    return ", ".join(names) if len(names) <= limit else ", ".join(names[:limit]) + f", … ({len(names)} in all)"


def _resumed_plan(cv_dir: Path, config: Optional[Config], requested: dict[str, Any]) -> tuple[Config, CVPlan]:
    if not (cv_dir / PLAN_FILE).is_file() or not (cv_dir / CONFIG_FILE).is_file():
        raise EarmarkError(f"cannot resume {cv_dir}: it is not a CV folder (no {PLAN_FILE} and {CONFIG_FILE}); "
                           "give runs/<name>-cv of an earlier `earmark cv`")
    saved_config = load_config(cv_dir / CONFIG_FILE)
    saved_plan = CVPlan(**json.loads((cv_dir / PLAN_FILE).read_text()))
    changes = config_changes(saved_config, config) if config is not None else {}
    if changes:
        raise EarmarkError(f"cannot resume {cv_dir}: the config differs from its {CONFIG_FILE} in "
                           f"{describe_changes(changes)}; resume with the same config (or none), or start a new "
                           f"cross-validation")
    differing = {k: v for k, v in requested.items() if getattr(saved_plan, k) != v}
    if differing:
        details = ", ".join(f"{k}={v!r} (saved: {getattr(saved_plan, k)!r})" for k, v in differing.items())
        raise EarmarkError(f"cannot resume {cv_dir}: it was made with {saved_plan.describe()} ({PLAN_FILE}); "
                           f"got {details}. Drop those options or start a new cross-validation")
    return saved_config, saved_plan


def _save_or_check_folds(cv_dir: Path, items: pd.DataFrame, folds: pd.Series, group_by: Optional[str],
                         resumed: bool) -> None:
    """folds.csv on the first run; a resumed run must find the same clips in the same folds."""
    columns = ["path", "segment", "label"] + ([group_by] if group_by and group_by in items else [])
    table = items[columns].assign(fold=folds.to_numpy()).astype("str")
    path = cv_dir / FOLDS_FILE
    if resumed and path.is_file():
        saved = pd.read_csv(path, dtype="str", keep_default_na=False)
        key = ["path", "segment", "fold"]
        if sorted(saved[key].itertuples(index=False)) != sorted(table[key].itertuples(index=False)):
            raise EarmarkError(f"cannot resume {cv_dir}: the clips or their folds differ from {path}; the data "
                               "changed since the cross-validation started (start a new one)")
        return
    table.to_csv(path, index=False)
