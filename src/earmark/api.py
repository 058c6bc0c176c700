"""The public Python API: one short delegating function per verb (details in `earmark.workflows`).

Each verb keeps its own typed signature and passes exactly its arguments to the function that does the work, imported
only when called (so `import earmark.api` and `earmark --help` stay fast); tests/test_api_facade.py checks that every
verb's parameters are its target's."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

from earmark.config import Config

ConfigLike = Config | str | Path | None


def _call(target: str, arguments: dict[str, Any]):
    """Call `module:function` with a verb's own arguments, by name."""
    module, function = target.split(":")
    return getattr(import_module(module), function)(**arguments)


def prepare(config: ConfigLike = None, overrides: Sequence[str] = (), *, strict: bool = False, progress: bool = True,
            to: str | Path | None = None):
    """Decode (once), cache and split the data; returns `PreparedData`. `to`: a folder or s3://bucket/prefix that
    also gets the clips as LitData chunks and a manifest, for data.source=stream data.path=TO."""
    return _call("earmark.workflows.prepare:prepare", locals())


def train(config: ConfigLike = None, overrides: Sequence[str] = (), *, strict: bool = False,
          resume: str | Path | None = None, overfit_batch: bool = False, prepared=None,
          extra_callbacks: Sequence[Any] = (), evaluate_test: bool = True, trust_checkpoint: bool = False,
          log=None):
    """Prepare, train, calibrate and evaluate one run; returns a `RunResult` (`earmark.workflows.train`). `log`:
    the split plan's lines. trust_checkpoint (every verb reading a .ckpt): a full unpickle, which can run code.
    model.name=auto tries the candidates within train.time_budget_s and keeps the best (`earmark.workflows.auto`)."""
    return _call("earmark.workflows.auto:train", locals())


def evaluate(run: str | Path, data: str | Path | None = None, out_dir: str | Path | None = None, *,
             group_by: Sequence[str] = (), overrides: Sequence[str] = (), trust_checkpoint: bool = False) -> dict:
    """Re-score a run on its test split, a config's test split or every row of a CSV read with data.* overrides."""
    return _call("earmark.workflows.evaluate:evaluate", locals())


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path | None = None, *, top_k: int = 3,
            chunk_s: float | None = None, hop_s: float | None = None, device: str | None = None,
            groups: str | Sequence[str | None] | None = None, batch_size: int = 256, threads: int | None = None,
            trust_checkpoint: bool = False, timeline_out: str | Path | None = None, backend: str = "auto"):
    """Predict files, folders, CSV lists or "-" with a run (its current ONNX export on a CPU, if it
    has one, unless backend="torch"), a .ckpt or an exported .onnx."""
    return _call("earmark.workflows.predict:predict", locals())


def predict_stream(model: str | Path, source: str | Path = "-", *, chunk_s: float | None = None,
                   hop_s: float | None = None, stream_format: str = "wav", stream_rate_hz: int | None = None,
                   stream_channels: int = 1, threads: int | None = None, device: str | None = None,
                   trust_checkpoint: bool = False, backend: str = "auto"):
    """Predict a recording window by window as it is read; returns a `StreamPrediction`."""
    return _call("earmark.workflows.predict:predict_stream", locals())


def planned_config(config: ConfigLike = None, overrides: Sequence[str] = ()) -> Config:
    """The config `train` runs with: the defaults, the file, the overrides, then the model's requirements."""
    return _call("earmark.workflows.plan:planned_config", locals())


def inspect(config: ConfigLike = None, overrides: Sequence[str] = (), out_dir: str | Path | None = None, augment=False):
    """Summarise the data and draw example (and, with `augment`, augmented) spectrograms."""
    return _call("earmark.workflows.inspect:inspect_data", locals())


def clean(config: ConfigLike = None, overrides: Sequence[str] = (), *, everything: bool = False) -> list:
    """Remove the decoded cache (and its embeddings) and split folder `config` uses, or with `everything`
    all of them; returns [(folder, bytes)] removed. Runs and the user's own files are never touched."""
    return _call("earmark.workflows.prepare:clean", locals())


def create_app(model: str | Path, *, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
               request_timeout_s: float = 30.0, threads: int | None = None, trust_checkpoint: bool = False):
    """The FastAPI app that serves `model`: POST /predict, /predict/timeline, GET /labels, /health."""
    return _call("earmark.serve.app:create_app_from_options", locals())


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          max_duration_s: float = 600.0, request_timeout_s: float = 30.0, threads: int | None = None,
          log_level: str = "info", trust_checkpoint: bool = False, max_samples: int = 57_600_000,
          upload_timeout_s: float = 10.0, header_timeout_s: float = 10.0, max_long_decodes: int = 1) -> None:
    """Serve `model` over HTTP with uvicorn until interrupted (limits: `earmark.serve.audio.ServeLimits`)."""
    return _call("earmark.serve.app:serve", locals())


def compare(runs: Sequence[str | Path], out_dir: str | Path | None = None):
    """Compare runs scored on the same test clips (McNemar, paired bootstrap); returns the `Comparison`."""
    return _call("earmark.workflows.compare:compare", locals())


def cv(config: ConfigLike = None, overrides: Sequence[str] = (), *, folds: int | None = None,
       group_by: str | None = None, fold_column: str | None = None, seed: int | None = None,
       resume: str | Path | None = None, strict: bool = False, log=None):
    """K-fold cross-validation, one ordinary run per held-out fold; returns a `CVResult`."""
    return _call("earmark.workflows.crossval:cv", locals())


def export(run: str | Path, out_dir: str | Path | None = None, *, int8: str | None = None, opset: int | None = None,
           clips: Sequence[str | Path] | None = None, max_int8_drop: float = 2.0, force: bool = False,
           exporter: str = "auto", log=print, trust_checkpoint: bool = False):
    """Export a run to ONNX (front-end inside), parity-checked; INT8 optional. Returns an `ExportResult`."""
    return _call("earmark.export.onnx:export_run", locals())


def ensemble(runs: Sequence[str | Path], out: str | Path | None = None, *, weights: Sequence[float] | None = None,
             evaluate_test: bool = True, progress: bool = True):
    """Average trained runs' calibrated probabilities into a new run (same labels and splits); returns a `RunResult`."""
    return _call("earmark.workflows.ensemble:ensemble_runs", locals())


def tune(config: ConfigLike = None, overrides: Sequence[str] = (), *, space: str | Path | None = None,
         trials: int = 20, seed: int | None = None, timeout_s: float | None = None, resume: str | Path | None = None,
         pruner: Any = "median", startup_trials: int = 5, keep: str = "all", evaluate_trials: bool = False, log=None):
    """Hyper-parameter search with Optuna over a YAML space of dotted keys; returns a `TuneResult`."""
    return _call("earmark.workflows.tune:tune", locals())


def fetch(source: str | Path, to: str | Path, *, rate_hz: int | None = None, clip_s: float | None = None,
          retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30.0, max_extract_gb: float = 64.0,
          base_url: str | None = None, checksum: str | None = None, drive_base_url: str | None = None,
          progress: bool = False, say=None, max_download_mb: float = 2048.0):
    """Get data (a sources list or a preset) into the folder `to`; returns a `FetchResult`."""
    return _call("earmark.fetch.entry:fetch", locals())


def embed(config: ConfigLike = None, overrides: Sequence[str] = (), *, out: str | Path, strict: bool = False):
    """One pretrained-backbone embedding per clip into `out` (.npy + index CSV, .csv, .parquet); cached."""
    return _call("earmark.workflows.embed:embed", locals())


def audit(config: ConfigLike = None, overrides: Sequence[str] = (), *, out_dir: str | Path | None = None, folds=5):
    """Likely mislabels: training clips whose label out-of-fold probes disagree with (suspect_labels.csv)."""
    return _call("earmark.workflows.embed:audit", locals())


def datasets() -> list[dict[str, str]]:
    """The presets `fetch` knows: name, title, license, size, url, archive, checksum, checksum_source."""
    return _call("earmark.fetch.presets:describe_presets", locals())
