"""Train: one run from a config — resume, DDP rank, module assembly, the fit (two phases for personalized models), calibration and the test evaluation."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, apply_overrides, as_config
from earmark.config_diff import config_changes, describe_changes
from earmark.errors import EarmarkError
from earmark.rundir import RunDir, new_output_dir
from earmark.workflows.evaluate import _evaluate_run
from earmark.workflows.plan import RunPlan, plan_model, plan_run


@dataclass
class RunResult:
    run_dir: Path | None  # None for an --overfit-batch check, which writes nothing
    metrics: dict[str, Any]  # empty in the processes of DDP ranks other than 0
    fit_seconds: float
    personalization: dict[str, Any] | None = None  # personalization.json of a model that takes groups


def _is_launch_rank_zero() -> bool:
    """False in processes that a launcher (Lightning's DDP re-run, torchrun, SLURM) started for another
    rank: they train but never create or write the run directory (rank 0's checkpoints and logs hold all)."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                                                          "SLURM_PROCID"))


RESUME_MAY_CHANGE = ("train.max_epochs",)


def _resume_config(run: str | Path, config: Config | str | Path | None, overrides: Sequence[str],
                   trust_checkpoint: bool = False) -> tuple[Config, Path, Path]:
    """(config, run_dir, last checkpoint) for `--resume`; the run's own config unless one is given,
    and then it may differ from the run's config.yaml only in `RESUME_MAY_CHANGE`. The checkpoint is
    checked (read without running code, unless `trust_checkpoint`) before anything is decoded."""
    from earmark.train.checkpoint_file import MODULE_KEYS, RESUME_KEYS, load_checkpoint_dict

    run_dir = Path(run)
    if not RunDir(run_dir).is_run():
        raise EarmarkError(f"cannot resume {run_dir}: it is not a run directory (no config.yaml); "
                           f"give runs/<name> of an earlier `earmark train`")
    saved = RunDir(run_dir).load_config()
    if config is None:
        new = apply_overrides(saved, overrides)
    else:
        new = as_config(config, overrides)
    changes = config_changes(saved, new, RESUME_MAY_CHANGE)
    if changes:
        raise EarmarkError(f"cannot resume {run_dir}: the config differs from its config.yaml in "
                           f"{describe_changes(changes)}; only {', '.join(RESUME_MAY_CHANGE)} may change on resume "
                           f"(start a new run instead)")
    checkpoint = RunDir(run_dir).last_checkpoint
    if not checkpoint.is_file():
        raise EarmarkError(f"cannot resume {run_dir}: there is no checkpoints/last.ckpt yet (a run writes it at the "
                           f"end of each epoch, or every train.checkpoint_every_n_steps steps); start it again")
    load_checkpoint_dict(checkpoint, trust=trust_checkpoint, need=MODULE_KEYS + RESUME_KEYS)
    return new, run_dir, checkpoint


def train(config: Config | str | Path | None = None, overrides: Sequence[str] = (), *, strict: bool = False,
          resume: str | Path | None = None, overfit_batch: bool = False, prepared=None,
          extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True, trust_checkpoint: bool = False,
          log=None) -> RunResult:
    """Prepare, train with Lightning, evaluate the best checkpoint on the test split, write the run directory.

    resume: a run directory; training continues from its checkpoints/last.ckpt (mid-epoch too) and ends
        as the uninterrupted run would have. `config`/`overrides` may then only change train.max_epochs.
        Its checkpoints are read without running code from them; `trust_checkpoint` (--trust-checkpoint)
        unpickles them in full, for files you trust.
    overfit_batch: train on one fixed batch without augmentation and report whether the loss reached
        near zero (metrics: first_loss, final_loss, passed, verdict); writes no run directory.

    A model that takes groups (model.name=personalized) trains in two phases, base then group
    embeddings (see `earmark.train.personalization`), and the run also holds personalization.json/.png;
    resumed after its phase 1 finished, it runs phase 2 again.

    prepared: data already decoded and split by the caller (`PreparedData`, e.g. one cross-validation
        fold from `earmark.workflows.crossval`); its split is used as is. extra_callbacks: more Lightning callbacks
        for the fit (e.g. `earmark.workflows.search_space`'s pruning callback). evaluate_test: False skips the test
        split's evaluation (a tuning trial): calibration is still fitted, metrics.json then holds only
        the training facts, and `evaluate` can score the run later.
    log: called with each line of the split plan (which split is test, sizes, missing classes, advice)
        before training, when this call prepares the data.
    """
    from earmark.evaluate.binary import check_positive_label
    from earmark.train.optim import check_schedule

    if resume is not None and overfit_batch:
        raise EarmarkError("--overfit-batch is a fresh one-batch check; it cannot be combined with --resume")
    checkpoint = None
    if resume is not None:
        config, run_dir, checkpoint = _resume_config(resume, config, overrides, trust_checkpoint)
    else:
        config = as_config(config, overrides)
    manifest = None
    if config.data.source == "stream":  # the stream's manifest decides the audio settings
        from earmark.data.stream_batches import adopt_stream_audio

        config, manifest = adopt_stream_audio(config)
    check_schedule(config.train)
    model_plan = plan_model(config)  # checks the config before any file is decoded
    config = model_plan.config
    if prepared is None and config.data.source == "stream":
        from earmark.data.stream_batches import stream_prepared

        if model_plan.uses_groups or overfit_batch:
            raise EarmarkError("data.source=stream trains plain classifiers; a model that takes groups and "
                               "--overfit-batch read the local cache (prepare without --to)")
        prepared = stream_prepared(config, manifest)
        prepared.stream = manifest
    elif prepared is None:
        from earmark.data.prepared import prepare_data
        from earmark.data.split_plan import split_plan_lines

        prepared = prepare_data(config, strict=strict, progress=config.train.progress)
        for line in split_plan_lines(prepared.stats, config.split) if log is not None else ():
            log(line)
    plan = plan_run(model_plan, prepared, overfit=overfit_batch)
    if not len(prepared.rows("train")):
        raise EarmarkError("the train split is empty; check split.* settings and the data's split/fold column")
    check_positive_label(prepared.labels, config.evaluation.positive_label)  # before training, not after
    if resume is not None:
        _check_same_data(run_dir, prepared)
    module, datamodule = _build_training(plan, prepared, overfit_batch, fit_normalization=resume is None)
    if overfit_batch:
        return _overfit_one_batch(config, module, datamodule)
    primary = _is_launch_rank_zero()
    if resume is None:
        # other ranks never write; Lightning hands them rank 0's checkpoint folder
        run_dir = new_output_dir(config) if primary else config.runs_dir / "(set by rank 0)"
        if primary:
            RunDir(run_dir).write_labels(prepared.labels)
            shutil.copytree(prepared.split_dir, RunDir(run_dir).splits)
    if primary:
        RunDir(run_dir).config_file.write_text(config.to_yaml())  # on resume: the possibly longer max_epochs
    return _fit_and_evaluate(plan, prepared, module, datamodule, run_dir, checkpoint, extra_callbacks,
                             evaluate_test, trust_checkpoint)


def _check_same_data(run_dir: Path, prepared) -> None:
    """A resume must see the clips and splits the run started with."""
    from earmark.data.splits import load_splits

    if RunDir(run_dir).labels() != list(prepared.labels):
        raise EarmarkError(f"cannot resume {run_dir}: the data's classes {prepared.labels} differ from the run's "
                           f"labels.json; the data changed since the run started (start a new run)")
    saved = load_splits(RunDir(run_dir).splits)
    keys = ["path", "split"] + (["segment"] if "segment" in saved and "segment" in prepared.items else [])

    def clips(table: pd.DataFrame) -> list[tuple]:
        return sorted(table[keys].astype(str).itertuples(index=False, name=None))

    if clips(saved) != clips(prepared.items):
        raise EarmarkError(f"cannot resume {run_dir}: the clips or their splits differ from the run's splits/ "
                           f"folder; the data changed since the run started (start a new run)")


def _build_training(plan: RunPlan, prepared, overfit: bool, fit_normalization: bool = True):
    """The LightningModule (normalisation fitted on the training split, unless a checkpoint will
    restore it) and the DataModule."""
    import lightning as L
    import torch

    from earmark.data.batches import AudioDataModule
    from earmark.train.module import AudioClassifier
    from earmark.train.trainer import monitor_metric

    config = plan.config
    splits = ("train", "val", "test")
    if prepared.stream is not None:
        from earmark.data.stream_batches import StreamDataModule, normalization_batches

        datamodule = StreamDataModule(prepared.stream, prepared, config)
    else:
        datamodule = AudioDataModule(prepared.cache.waves, {s: prepared.rows(s) for s in splits},
                                     {s: prepared.targets(s) for s in splits}, batch_size=config.train.batch_size,
                                     seed=config.seed, memory_budget_gb=config.train.memory_budget_gb,
                                     num_workers=config.train.num_workers, sampler=config.train.sampler,
                                     labels=prepared.labels, overfit=overfit, groups=plan.group_ids)
    train_cfg, augment = config.train, config.augment
    if overfit:  # the plain objective on clean clips: its minimum is 0
        train_cfg = train_cfg.model_copy(update={"label_smoothing": 0.0})
        augment = augment.model_copy(update={"enabled": False})
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = AudioClassifier.create(plan.contract, config.model, train_cfg, augment, config.seed, plan.class_weights,
                                    monitor_metric(config, plan.has_validation), groups=plan.groups)
    if fit_normalization and prepared.stream is not None:
        module.frontend.fit_normalization(normalization_batches(prepared.stream, config))
    elif fit_normalization:
        waves, train_rows = prepared.cache.waves, prepared.rows("train")
        module.frontend.fit_normalization(torch.from_numpy(np.asarray(waves[train_rows[i:i + 256]]))
                                          for i in range(0, len(train_rows), 256))
    return module, datamodule


def _overfit_one_batch(config: Config, module, datamodule) -> RunResult:
    from earmark.train.trainer import LossHistory, build_trainer, overfit_verdict, quiet_fit

    history = LossHistory()
    trainer = build_trainer(config, None, has_validation=False, steps_per_epoch=1, overfit=True,
                            extra_callbacks=[history])
    started = time.perf_counter()
    with quiet_fit(r".*(overfit|does not have many workers).*"):
        trainer.fit(module, datamodule=datamodule)
    return RunResult(None, overfit_verdict(history.losses), time.perf_counter() - started)


def _fit_and_evaluate(plan: RunPlan, prepared, module, datamodule, run_dir: Path, checkpoint: Path | None,
                      extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True,
                      trust_checkpoint: bool = False) -> RunResult:
    from earmark.train.personalization import base_checkpoint_of
    from earmark.train.trainer import build_trainer, quiet_fit

    config, has_validation, steps_per_epoch = plan.config, plan.has_validation, plan.steps_per_epoch
    uses_groups = plan.model.uses_groups
    from earmark.workflows.probe import fit_probe, is_probe

    if is_probe(module) and prepared.stream is not None:
        raise EarmarkError(f"model.name={config.model.name} embeds the training clips once from the local cache; "
                           f"data.source=stream trains models end to end (prepare without --to for it)")
    if is_probe(module):  # a frozen pretrained backbone: embed once (cached), fit the head, no Lightning loop
        metrics, fit_seconds = fit_probe(plan, prepared, module, run_dir, evaluate_test, _evaluate_run)
        return RunResult(run_dir, metrics, fit_seconds)
    trainer = build_trainer(config, run_dir, has_validation, steps_per_epoch, extra_callbacks=list(extra_callbacks))
    # a model that takes groups, resumed after its phase 1 finished, only runs phase 2 again
    phase_one_done = uses_groups and checkpoint is not None and base_checkpoint_of(run_dir).is_file()
    started = time.perf_counter()
    with quiet_fit():
        if not phase_one_done:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(checkpoint) if checkpoint else None,
                        weights_only=not trust_checkpoint)
    fit_seconds = time.perf_counter() - started
    extra: dict[str, Any] = {}
    if uses_groups:  # phase 2: adapt the group embeddings from phase 1's best weights
        from earmark.train.personalization import adapt

        run_dir, adapt_seconds, extra["adapt_epochs"] = adapt(config, plan.model.personalization, module,
                                                              datamodule, trainer, run_dir, phase_one_done,
                                                              has_validation, steps_per_epoch, trust_checkpoint)
        fit_seconds += adapt_seconds
    if not trainer.is_global_zero:  # rank 0 evaluates and writes; the other ranks are done
        return RunResult(run_dir, {}, fit_seconds)
    if not run_dir.is_dir():  # a launcher's environment misled _is_launch_rank_zero: use rank 0's folder
        run_dir = Path(trainer.checkpoint_callback.dirpath).parent
    from earmark.workflows.evaluate import fit_on_validation, write_untested_metrics

    items = prepared.items
    # temperature and thresholds into best.ckpt and calibration.json; the calibrated best.ckpt is kept loaded
    predictor = fit_on_validation(run_dir, items[items["split"] == "val"], prepared.cache.waves, prepared.labels,
                                  config.evaluation)
    extra = {"fit_seconds": fit_seconds,
             "epochs": _phase_one_epochs(checkpoint, trust_checkpoint) if phase_one_done else int(trainer.current_epoch),
             **extra, "device_resident": datamodule.device_resident}
    if not evaluate_test:
        return RunResult(run_dir, write_untested_metrics(run_dir, extra), fit_seconds)
    metrics = _evaluate_run(run_dir, items[items["split"] == "test"], prepared.cache.waves, prepared.labels,
                            config=config, extra=extra, predictor=predictor)
    personalization = run_dir / "personalization.json"
    return RunResult(run_dir, metrics, fit_seconds,
                     json.loads(personalization.read_text()) if uses_groups else None)


def _phase_one_epochs(checkpoint: Path, trust_checkpoint: bool = False) -> int:
    """Epochs a finished phase 1 ran, from its last checkpoint (saved at the end of its last epoch)."""
    from earmark.train.checkpoints import load_checkpoint_dict

    return int(load_checkpoint_dict(checkpoint, trust=trust_checkpoint, need=("epoch",))["epoch"]) + 1

