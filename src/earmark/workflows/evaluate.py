"""Score a run: predict the evaluated clips with checkpoints/best.ckpt, compute every metric and analysis,
write predictions.csv, the PNGs, report.md, metrics.json and report.html.

Also the step between training and evaluation, `fit_on_validation`: temperature scaling, an optional
rejection threshold and (two classes) the decision threshold, fitted on the validation split's logits,
written into best.ckpt's buffers and calibration.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from earmark.config import Config, EvaluationConfig, load_config
from earmark.errors import EarmarkError
from earmark.evaluate.calibrate import CALIBRATION_FILE, fit_calibration, read_calibration
from earmark.evaluate.personalization import personalization_summary
from earmark.evaluate.predictions import PREDICTIONS_FILE, predict_item_logits, predictions_table
from earmark.evaluate.run_metrics import add_analyses
from earmark.reports.run_plots import draw_plots
from earmark.rundir import METRICS_FILE, REPORT_MD, RunDir
from earmark.train.personalization import BASE_CHECKPOINT, base_checkpoint_of

# ---------------------------------------------------------------- fitted on validation


def store_calibration(path: Path, checkpoint: dict[str, Any], predictor, temperature: float,
                      reject_threshold: float) -> None:
    """Set the `temperature_` and `reject_threshold_` buffers on the loaded predictor's module and in its
    checkpoint dict (read from `path`), then write the checkpoint back once, atomically."""
    import torch

    from earmark.train.checkpoints import save_checkpoint_atomically

    predictor.module.temperature_.fill_(float(temperature))
    predictor.module.reject_threshold_.fill_(float(reject_threshold))
    predictor.reject_threshold = float(reject_threshold)
    checkpoint["state_dict"]["temperature_"] = torch.tensor(float(temperature))
    checkpoint["state_dict"]["reject_threshold_"] = torch.tensor(float(reject_threshold))
    save_checkpoint_atomically(checkpoint, path)


def fit_on_validation(run_dir: Path, val_items: pd.DataFrame, waves: np.ndarray, labels: Sequence[str],
                      settings: EvaluationConfig, predictor_type=None):
    """Fit calibration and thresholds on the validation clips' logits (`fit_calibration`), store T and the
    rejection threshold in best.ckpt (read once, written once) and write calibration.json.

    Returns best.ckpt's calibrated `Predictor`, for the evaluation that follows; None without validation
    clips (nothing is fitted and calibration.json says why). predictor_type: a `Predictor` subclass whose
    inputs are the rows of `waves` (a probe's cached embeddings instead of audio)."""
    import torch

    from earmark.data.labels import class_ids
    from earmark.predict.torch_predictor import Predictor
    from earmark.rundir import find_checkpoint
    from earmark.train.checkpoints import read_checkpoint

    run_dir = Path(run_dir)
    if len(val_items) == 0:
        fit: dict[str, Any] = {"fitted": False, "reason": "no validation split: calibration and thresholds "
                               "were not fitted (temperature 1, no rejection, binary threshold 0.5)"}
        (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
        return None
    path = find_checkpoint(run_dir, "best")
    checkpoint, module = read_checkpoint(path)
    predictor = (predictor_type or Predictor)(module, "cuda" if torch.cuda.is_available() else "cpu")
    logits, _ = predict_item_logits(predictor, val_items, waves)
    fit = fit_calibration(logits, class_ids(val_items["label"], labels), labels, settings)
    store_calibration(path, checkpoint, predictor, fit["temperature"], fit["reject_threshold"])
    (run_dir / CALIBRATION_FILE).write_text(json.dumps(fit, indent=1))
    return predictor


# ---------------------------------------------------------------- predictions.csv


# ---------------------------------------------------------------- evaluation


def _run_config(run_dir: Path, config: Config | None) -> Config:
    if config is not None:
        return config
    return RunDir(run_dir).load_config()


def _train_items(run_dir: Path) -> pd.DataFrame | None:
    from earmark.data.splits import load_splits

    try:
        items = load_splits(RunDir(run_dir).splits)
    except EarmarkError:  # a run copied without its splits/ folder: no leakage check possible
        return None
    return items[items["split"] == "train"]


def evaluate_run(run_dir: Path, test_items: pd.DataFrame, waves: np.ndarray, labels: list[str],
                 out_dir: Path | None = None, *, config: Config | None = None, group_by: Sequence[str] = (),
                 extra: dict[str, Any] | None = None, predictor=None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Score the run's best checkpoint on `test_items` (rows into `waves`) and write every artifact into
    `out_dir` (default: the run directory). `config`: the run's (default: its config.yaml); `group_by`:
    metadata columns analysed per group besides the defaults; `extra`: entries added to metrics.json;
    `predictor`: best.ckpt already loaded (default: loaded from the run); `warnings`: the caller's, said
    first (e.g. the listed files that could not be scored)."""
    from earmark.data.labels import class_ids
    from earmark.evaluate.analysis import analysed_columns
    from earmark.evaluate.calibration import softmax
    from earmark.evaluate.metrics import classification_metrics
    from earmark.predict.torch_predictor import Predictor
    from earmark.reports.markdown import markdown_report
    from earmark.reports.run import write_run_report

    run_dir = Path(run_dir)
    config = _run_config(run_dir, config)
    settings = config.evaluation
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = predictor if predictor is not None else Predictor.from_run(run_dir)
    if list(predictor.labels) != list(labels):
        raise EarmarkError(f"the data's classes {labels} differ from the run's {list(predictor.labels)}")
    test_items = test_items.reset_index(drop=True)
    group_columns = analysed_columns(test_items, config.split.group_by, [*group_by, *settings.group_by])
    logits, groups = predict_item_logits(predictor, test_items, waves)
    probabilities = softmax(logits, float(predictor.module.temperature_))  # what the predictor returns
    y_true = class_ids(test_items["label"], labels)
    metrics = classification_metrics(y_true, probabilities, labels, top_k=settings.top_k)
    metrics["notes"] = []
    reject_threshold = float(predictor.module.reject_threshold_)
    predictions_table(test_items, probabilities, labels, groups, reject_threshold).to_csv(
        out_dir / PREDICTIONS_FILE, index=False)
    if groups is not None:
        from earmark.workflows.evaluate import write_personalization

        write_personalization(run_dir, out_dir, predictor, waves[test_items["row"].to_numpy()], y_true,
                              probabilities, groups)
    plot_data = add_analyses(metrics, run_dir, config, test_items, y_true, logits, probabilities, labels,
                             group_columns, predictor, _train_items(run_dir), read_calibration(run_dir))
    metrics.update(extra or {})
    metrics["warnings"] = [*warnings, *metrics.get("warnings", [])]
    draw_plots(metrics, plot_data, probabilities, y_true, out_dir)
    context = {"run directory": run_dir, "checkpoint": "checkpoints/best.ckpt"}
    (out_dir / REPORT_MD).write_text(markdown_report(run_dir.name, metrics, context))
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    write_run_report(out_dir, run_dir)  # reads metrics.json and the PNGs just written
    # where the files went: returned to the caller, not saved (metrics.json stays free of paths)
    return {**metrics, "evaluation_dir": str(out_dir)}


def write_untested_metrics(run_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """metrics.json of a run whose test split was deliberately not evaluated (a tuning trial): the
    training facts in `extra` only; `earmark evaluate <run>` scores it later."""
    metrics = {"test_evaluated": False, **extra,
               "notes": ["the test split was not evaluated (tuning trial); `earmark evaluate` this run to score it"]}
    RunDir(run_dir).metrics_file.write_text(json.dumps(metrics, indent=1))
    return metrics


def write_personalization(run_dir: Path, out_dir: Path, predictor, waves: np.ndarray, y_true: np.ndarray,
                          personalized: np.ndarray, groups: Sequence[Optional[str]]) -> dict[str, Any]:
    """Score the phase-1 base model beside the personalized one; write personalization.json and .png."""
    from earmark.predict.torch_predictor import Predictor
    from earmark.reports.plots import plot_personalization

    base_path = base_checkpoint_of(run_dir)
    if base_path.is_file():
        base = Predictor.from_run(base_path, device=predictor.device)
        basic, basic_from = base.predict_waves(waves), f"checkpoints/{BASE_CHECKPOINT}"
    else:  # a frozen base is exactly the personalized model without groups
        basic, basic_from = predictor.predict_waves(waves), "checkpoints/best.ckpt without groups"
    from earmark.models.personalized import PersonalizedSettings

    model = predictor.module.model
    settings = {**PersonalizedSettings.from_params(dict(predictor.module.hparams["model_params"])).to_dict(),
                "basic_from": basic_from}
    summary = personalization_summary(y_true, basic, personalized, groups, model.groups_, model.group_column,
                                      settings)
    (out_dir / "personalization.json").write_text(json.dumps(summary, indent=1))
    plot_personalization(summary, out_dir / "personalization.png")
    return summary


def _evaluate_run(run_dir: Path, test_items: pd.DataFrame, waves: np.ndarray, labels: list[str],
                  out_dir: Path | None = None, *, config: Config | None = None, group_by: Sequence[str] = (),
                  extra: dict[str, Any] | None = None, predictor=None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Score the run's best checkpoint on `test_items` (rows into `waves`) and write every artifact
    (see `evaluate_run` above)."""
    from earmark.workflows.evaluate import evaluate_run

    return evaluate_run(run_dir, test_items, waves, labels, out_dir, config=config, group_by=group_by, extra=extra,
                        predictor=predictor, warnings=warnings)


def _data_overrides(overrides: Sequence[str], data: str | Path | None) -> list[str]:
    """`data.*` overrides for reading the data given with --data; anything else is refused, naming why."""
    if overrides and data is None:
        raise EarmarkError(f"overrides ({' '.join(overrides)}) only say how to read the data given with --data; "
                           "a run's own test split is read as it was trained")
    wrong = [text for text in overrides if not text.strip().startswith("data.")]
    if wrong:
        raise EarmarkError(f"evaluate takes data.* overrides only (e.g. data.columns.label=kind), to read --data; "
                           f"got {', '.join(wrong)}; the model, features and evaluation settings are the run's")
    return list(overrides)


def _keep_audio(config: Config, trained: Config, overrides: Sequence[str]) -> Config:
    """`config` reading audio exactly as the run was trained; an override that tries otherwise is refused."""
    changed = {k: v for k, v in config.data.audio_key().items() if v != trained.data.audio_key()[k]}
    explicit = [text for text in overrides if text.split("=", 1)[0].strip().split(".")[-1] in changed]
    if explicit:
        raise EarmarkError(f"{', '.join(explicit)}: the run's model hears audio as it was trained "
                           f"({trained.data.audio_key()}); evaluate cannot change that")
    return config.model_copy(update={"data": config.data.model_copy(update=trained.data.audio_key())})


def evaluate(run: str | Path, data: str | Path | None = None, out_dir: str | Path | None = None, *,
             group_by: Sequence[str] = (), overrides: Sequence[str] = (),
             trust_checkpoint: bool = False) -> dict[str, Any]:
    """Re-score a run: on its own test split, on another config's test split, or on every row of a CSV.

    group_by: metadata columns analysed per group (accuracy per value, the worst, per_group_<column>.png)
    besides split.group_by, `group` and the run's evaluation.group_by. overrides: `data.*` keys for
    reading `data` (a CSV: applied to the run's data settings, e.g. data.columns.label=kind; a config:
    applied to it); the audio settings stay the run's. Writes into `out_dir` (default
    runs/<name>/eval/<time>/) what training's evaluation writes; returns metrics.json's content.
    The best checkpoint is read (without running code from it, unless `trust_checkpoint`) before any data.
    """
    from earmark.config import apply_overrides
    from earmark.data.prepared import decode_listed, prepare_data
    from earmark.data.splits import load_splits
    from earmark.predict.torch_predictor import Predictor

    overrides = _data_overrides(overrides, data)
    run = RunDir(run)
    run_dir, config, labels = run.path, run.load_config(), run.labels()
    predictor = Predictor.from_run(run_dir, trust_checkpoint=trust_checkpoint)
    config = run.config_matching(predictor.contract, config)  # an edited config.yaml would change the scores
    if data is None and config.data.source == "stream":  # its test split, read through the stream
        from earmark.data.stream import open_stream, stream_location
        from earmark.data.stream_batches import stream_prepared

        streamed = stream_prepared(config, open_stream(stream_location(config.data.path)), held=("test",))
        out = Path(out_dir) if out_dir else run.new_eval_dir()
        return _evaluate_run(run_dir, streamed.items[streamed.items["split"] == "test"], streamed.cache.waves, labels,
                             out_dir=out, config=config, group_by=group_by, predictor=predictor)
    if data is None:
        items = load_splits(run.splits)
        items = items[items["split"] == "test"]
    elif str(data).lower().endswith((".yaml", ".yml")):
        prepared = prepare_data(_keep_audio(load_config(data, overrides), config, overrides), progress=True)
        items = prepared.items[prepared.items["split"] == "test"]
    ignored = None
    if data is not None and not str(data).lower().endswith((".yaml", ".yml")):
        from earmark.data.sources import load_source

        listed = config.model_copy(update={"data": config.data.model_copy(update={"source": "csv", "path": Path(data)})})
        items, source = load_source(_keep_audio(apply_overrides(listed, overrides), config, overrides).data,
                                    min_classes=1)
        ignored = source.ignored_table()
    test_items, cache = decode_listed(items, config.data, progress=True)
    if ignored is not None:
        cache.ignored_files = ignored
    unknown = sorted(set(test_items["label"].astype(str)) - set(labels))
    if unknown:
        raise EarmarkError(f"the evaluation data has classes the run never saw: {', '.join(unknown)}")
    out = Path(out_dir) if out_dir else run.new_eval_dir()
    unscored, warnings = _unscored(cache, items["path"].nunique(), out)
    return _evaluate_run(run_dir, test_items, cache.waves, labels, out_dir=out, config=config, group_by=group_by,
                         extra={"unscored": unscored}, predictor=predictor, warnings=warnings)


def _unscored(cache, n_listed: int, out: Path) -> tuple[dict[str, Any], list[str]]:
    """What could not be scored, as prepare reports it: bad_files.csv and ignored_files.csv in `out`, the
    counts by reason printed, and (metrics.json's `unscored`, its warning)."""
    from earmark.data.prepared import reason_counts, summary_lines

    out.mkdir(parents=True, exist_ok=True)
    cache.write_bad_files(out / "bad_files.csv")
    for line in summary_lines(cache, out):
        print(line, flush=True)
    reasons = {f"{name}: {reason}": n for name, counts in reason_counts(cache).items() for reason, n in counts.items()}
    n_bad, n_ignored = len(cache.bad_files), len(cache.ignored_files)
    unscored = {"bad_files": n_bad, "ignored": n_ignored, "by_reason": reasons,
                "listed_in": ["bad_files.csv", "ignored_files.csv"]}
    if not n_bad and not n_ignored:
        return unscored, []
    return unscored, [f"{n_bad} of {n_listed} listed file(s) could not be decoded and {n_ignored} input(s) were "
                      f"left out: they are not scored ({', '.join(f'{k} {v}' for k, v in reasons.items())}; "
                      f"listed in {out / 'bad_files.csv'} and {out / 'ignored_files.csv'})"]
