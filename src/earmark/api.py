"""The public Python API: one short delegating function per verb (details in `earmark.workflows`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from earmark.config import Config, resumable_config

ConfigLike = Config | str | Path | None


def prepare(config: ConfigLike = None, overrides: Sequence[str] = (), *, strict: bool = False, progress: bool = True):
    """Decode (once), cache and split the data; returns `PreparedData`."""
    from earmark.workflows.prepare import prepare as delegate
    return delegate(config, overrides, strict=strict, progress=progress)


def train(config: ConfigLike = None, overrides: Sequence[str] = (), *, strict: bool = False,
          resume: str | Path | None = None, overfit_batch: bool = False, prepared=None,
          extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True, trust_checkpoint: bool = False,
          log=None):
    """Prepare, train, calibrate and evaluate one run; returns a `RunResult` (`earmark.workflows.train`). `log`:
    the split plan's lines. trust_checkpoint (every verb reading a .ckpt): a full unpickle, which can run code."""
    from earmark.workflows.train import train as delegate
    return delegate(config, overrides, strict=strict, resume=resume, overfit_batch=overfit_batch, prepared=prepared,
                    extra_callbacks=extra_callbacks, evaluate_test=evaluate_test, trust_checkpoint=trust_checkpoint,
                    log=log)


def evaluate(run: str | Path, data: str | Path | None = None, out_dir: str | Path | None = None, *,
             group_by: Sequence[str] = (), overrides: Sequence[str] = (), trust_checkpoint: bool = False) -> dict:
    """Re-score a run on its test split, a config's test split or every row of a CSV read with data.* overrides."""
    from earmark.workflows.evaluate import evaluate as delegate
    return delegate(run, data, out_dir, group_by=group_by, overrides=overrides, trust_checkpoint=trust_checkpoint)


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path | None = None, *, top_k: int = 3,
            chunk_s: float | None = None, hop_s: float | None = None, device: str | None = None,
            groups: str | Sequence[str | None] | None = None, batch_size: int = 256, threads: int | None = None,
            trust_checkpoint: bool = False, timeline_out: str | Path | None = None):
    """Predict files, folders, CSV lists or "-" with a run, a .ckpt or an exported .onnx."""
    from earmark.workflows.predict import predict as run_predict
    return run_predict(run, inputs, out, top_k=top_k, chunk_s=chunk_s, hop_s=hop_s, device=device, groups=groups,
                       batch_size=batch_size, threads=threads, trust_checkpoint=trust_checkpoint,
                       timeline_out=timeline_out)


def predict_stream(model: str | Path, source: str | Path = "-", *, chunk_s: float | None = None,
                   hop_s: float | None = None, stream_format: str = "wav", stream_rate_hz: int | None = None,
                   stream_channels: int = 1, threads: int | None = None, device: str | None = None,
                   trust_checkpoint: bool = False):
    """Predict a recording window by window as it is read; returns a `StreamPrediction`."""
    from earmark.workflows.predict import predict_stream as delegate
    return delegate(model, source, chunk_s=chunk_s, hop_s=hop_s, stream_format=stream_format,
               stream_rate_hz=stream_rate_hz, stream_channels=stream_channels, threads=threads, device=device,
               trust_checkpoint=trust_checkpoint)


def inspect(config: ConfigLike = None, overrides: Sequence[str] = (), out_dir: str | Path | None = None, augment=False):
    """Summarise the data and draw example (and, with `augment`, augmented) spectrograms."""
    from earmark.workflows.inspect import inspect_data
    return inspect_data(config, overrides, out_dir=Path(out_dir) if out_dir else None, augment=augment)


def clean(config: ConfigLike = None, overrides: Sequence[str] = ()) -> int:
    """Remove decoded caches and generated splits; returns bytes freed. Runs are never touched."""
    from earmark.workflows.prepare import clean as delegate
    return delegate(config, overrides)


def create_app(model: str | Path, *, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
               request_timeout_s: float = 30.0, threads: int | None = None, trust_checkpoint: bool = False):
    """The FastAPI app that serves `model`: POST /predict, /predict/timeline, GET /labels, /health."""
    from earmark.serve.app import create_app_for
    from earmark.serve.audio import ServeLimits
    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s)
    return create_app_for(model, limits, threads, trust_checkpoint=trust_checkpoint)


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          max_duration_s: float = 600.0, request_timeout_s: float = 30.0, threads: int | None = None,
          log_level: str = "info", trust_checkpoint: bool = False, max_samples: int = 57_600_000,
          upload_timeout_s: float = 10.0, header_timeout_s: float = 10.0) -> None:
    """Serve `model` over HTTP with uvicorn until interrupted (limits: `earmark.serve.audio.ServeLimits`)."""
    from earmark.serve.app import run_server
    from earmark.serve.audio import ServeLimits
    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s, max_samples=max_samples,
                                      upload_timeout_s=upload_timeout_s, header_timeout_s=header_timeout_s)
    run_server(model, host, port, limits, threads=threads, log_level=log_level, trust_checkpoint=trust_checkpoint)


def compare(runs: Sequence[str | Path], out_dir: str | Path | None = None):
    """Compare runs scored on the same test clips (McNemar, paired bootstrap); returns the `Comparison`."""
    from earmark.workflows.compare import compare as delegate
    return delegate(runs, out_dir)


def cv(config: ConfigLike = None, overrides: Sequence[str] = (), *, folds: int | None = None,
       group_by: str | None = None, fold_column: str | None = None, seed: int | None = None,
       resume: str | Path | None = None, strict: bool = False, log=None):
    """K-fold cross-validation, one ordinary run per held-out fold; returns a `CVResult`."""
    from earmark.workflows.crossval import cross_validate
    return cross_validate(resumable_config(config, overrides, resume), folds=folds, group_by=group_by,
                          fold_column=fold_column, seed=seed, resume=resume, strict=strict, log=log)


def export(run: str | Path, out_dir: str | Path | None = None, *, int8: str | None = None, opset: int | None = None,
           clips: Sequence[str | Path] | None = None, max_int8_drop: float = 2.0, force: bool = False,
           exporter: str = "auto", log=print, trust_checkpoint: bool = False):
    """Export a run to ONNX (front-end inside), parity-checked; INT8 optional. Returns an `ExportResult`."""
    from earmark.export.onnx import export_run
    return export_run(run, out_dir, int8=int8, opset=opset, clips=clips, max_int8_drop=max_int8_drop, force=force,
                      exporter=exporter, log=log, trust_checkpoint=trust_checkpoint)


def tune(config: ConfigLike = None, overrides: Sequence[str] = (), *, space: str | Path | None = None,
         trials: int = 20, seed: int | None = None, timeout_s: float | None = None, resume: str | Path | None = None,
         pruner: Any = "median", startup_trials: int = 5, keep: str = "all", evaluate_trials: bool = False, log=None):
    """Hyper-parameter search with Optuna over a YAML space of dotted keys; returns a `TuneResult`."""
    from earmark.workflows.tune import run_study
    return run_study(resumable_config(config, overrides, resume), space, trials=trials, seed=seed, timeout_s=timeout_s,
                     resume=resume, pruner=pruner, startup_trials=startup_trials, keep=keep,
                     evaluate_trials=evaluate_trials, log=log)


def fetch(source: str | Path, to: str | Path, *, rate_hz: int | None = None, clip_s: float | None = None,
          retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30.0, max_extract_gb: float = 64.0,
          base_url: str | None = None, checksum: str | None = None, drive_base_url: str | None = None,
          progress: bool = False, say=None, max_download_mb: float = 2048.0):
    """Get data (a sources list or a preset) into the folder `to`; returns a `FetchResult`."""
    from earmark.fetch.entry import fetch as fetch_data
    return fetch_data(source, to, rate_hz=rate_hz, clip_s=clip_s, retries=retries, backoff_s=backoff_s,
                      timeout_s=timeout_s, max_extract_gb=max_extract_gb, base_url=base_url, checksum=checksum,
                      drive_base_url=drive_base_url, progress=progress, say=say, max_download_mb=max_download_mb)


def embed(config: ConfigLike = None, overrides: Sequence[str] = (), *, out: str | Path, strict: bool = False):
    """One pretrained-backbone embedding per clip into `out` (.npy + index CSV, .csv, .parquet); cached."""
    from earmark.workflows.embed import embed as delegate
    return delegate(config, overrides, out, strict=strict)


def audit(config: ConfigLike = None, overrides: Sequence[str] = (), *, out_dir: str | Path | None = None, folds=5):
    """Likely mislabels: training clips whose label out-of-fold probes disagree with (suspect_labels.csv)."""
    from earmark.workflows.embed import audit as delegate
    return delegate(config, overrides, out_dir, folds=folds)


def datasets() -> list[dict[str, str]]:
    """The presets `fetch` knows: name, title, license, size, url, archive, checksum, checksum_source."""
    from earmark.fetch.presets import describe_presets
    return describe_presets()
