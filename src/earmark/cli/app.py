"""The `earmark` command: thin typer commands that build a config and call the Python API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from earmark.cli.output import (
    make_console,
    print_comparison,
    print_cv,
    print_evaluation,
    print_metrics,
    print_model_source,
    print_plan_line,
    print_stream,
    print_table,
    print_tune,
)
from earmark.errors import EarmarkError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="earmark: labelled sound files in, a trustworthy audio classifier out.")

def _print_version(value: bool) -> None:
    if value:
        from earmark import __version__

        print(f"earmark {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print earmark's version and exit")) -> None:
    pass


CONFIG_HELP = "a YAML config, then dotted overrides such as train.max_epochs=5 (no config: the bundled demo)"
TRUST = typer.Option(False, "--trust-checkpoint", help="unpickle the .ckpt in full, which can run code from it: only "
                     "for a file you made or trust (default: tensors and plain values only, others refused)")


def _split_config_args(args: list[str] | None) -> tuple[Optional[str], list[str]]:
    """`[CONFIG] [key=value ...]`: the first argument is a config file unless it is an override."""
    args = list(args or [])
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


@app.command()
def train(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
          strict: bool = typer.Option(False, help="fail if any audio file cannot be used or any input was left out"),
          resume: Optional[Path] = typer.Option(None, help="continue runs/<name> from its last checkpoint "
                                                "(a config given too may only change train.max_epochs)"),
          overfit_batch: bool = typer.Option(False, "--overfit-batch",
                                             help="sanity check: train on one batch without augmentation and "
                                                  "report whether the loss reaches near zero"),
          auto: bool = typer.Option(False, "--auto", help="model.name=auto: try each view's probe, their fusion, a "
                                    "CNN from zero and fine-tuning within train.time_budget_s; keep the best"),
          trust_checkpoint: bool = TRUST) -> None:
    """Prepare the data (once), train, and evaluate the best checkpoint on the test split."""
    from earmark import api

    config, overrides = _split_config_args(args)
    overrides = [*overrides, "model.name=auto"] if auto else overrides
    result = api.train(config, overrides, strict=strict, resume=resume, overfit_batch=overfit_batch,
                       trust_checkpoint=trust_checkpoint, log=print_plan_line)
    if overfit_batch:
        check = result.metrics
        console = make_console()
        if check["steps"]:
            console.print(f"overfit check on one batch, {check['steps']} steps: first loss "
                          f"{check['first_loss']:.4f}, final loss {check['final_loss']:.4f}")
        console.print(("[bold green]" if check["passed"] else "[bold red]") + check["verdict"] + "[/]")
        if not check["passed"]:
            raise typer.Exit(1)
    elif result.metrics:  # empty in the processes of DDP ranks other than 0
        print_metrics(result)


@app.command()
def prepare(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
            strict: bool = typer.Option(False, help="fail if any audio file cannot be used or any input was "
                                                    "left out"),
            to: Optional[str] = typer.Option(None, "--to", help="also write the clips as LitData chunks to this "
                                             "folder or s3://bucket/prefix (AWS_* variables), for "
                                             "data.source=stream data.path=TO")) -> None:
    """Decode every file once into the cache and write train/val/test splits."""
    from earmark import api

    config, overrides = _split_config_args(args)
    prepared = api.prepare(config, overrides, strict=strict, to=to)  # prints the file counts, bad and ignored per reason
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines

    for line in split_plan_lines(prepared.stats, load_config(config, overrides).split):  # sizes, warnings once
        print_plan_line(line)
    make_console().print(f"splits, bad_files.csv and ignored_files.csv written to {prepared.split_dir}",
                         markup=False)
    if to is not None:
        counts = ", ".join(f"{split} {n}" for split, n in prepared.stream.splits.items())
        make_console().print(f"chunks, items.csv and manifest.json written to {prepared.stream.location} ({counts}); "
                             f"train from it with data.source=stream data.path={prepared.stream.location}", markup=False)


@app.command("config")
def show_config(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False)) -> None:
    """Print the config `train` will run as YAML: the defaults, then the YAML file, then the overrides, then
    what the model requires (e.g. a pretrained backbone's sample rate and front-end)."""
    from earmark import api

    config, overrides = _split_config_args(args)
    sys.stdout.write(api.planned_config(config, overrides).to_yaml())


@app.command()
def evaluate(run: Path = typer.Argument(..., help="a run directory, e.g. runs/<name>"),
             overrides: Optional[List[str]] = typer.Argument(None, help="data.* overrides for reading --data, e.g. "
                                                             "data.columns.label=kind", show_default=False),
             data: Optional[Path] = typer.Option(None, help="a config (its test split) or a CSV (all rows)"),
             out: Optional[Path] = typer.Option(None, help="where to write metrics, predictions and plots"),
             group_by: Optional[List[str]] = typer.Option(None, "--group-by", help="a metadata column to analyse "
                                                          "per group (repeatable), e.g. --group-by speaker"),
             trust_checkpoint: bool = TRUST) -> None:
    """Score a trained run on its test split or on other data: metrics, baselines, per-group analysis,
    calibration, warnings, plots and a report."""
    from earmark import api

    metrics = api.evaluate(run, data, out, group_by=group_by or (), overrides=overrides or (),
                           trust_checkpoint=trust_checkpoint)
    print_evaluation(metrics, "evaluated clips")
    make_console().print(f"accuracy {metrics['accuracy']:.4f}; report written to {metrics['evaluation_dir']}")


@app.command()
def predict(model: Path = typer.Argument(..., help="a run directory, a checkpoint, or an exported .onnx "
                                         "(predicted with onnxruntime only, no torch)"),
            inputs: Optional[List[str]] = typer.Argument(None, help="audio files, folders, CSV lists, or - to read "
                                                         "paths from stdin (one per line)", show_default=False),
            out: Optional[Path] = typer.Option(None, help="CSV to write (default: print a table)"),
            top_k: int = typer.Option(3, min=1, help="how many labels with probabilities per file"),
            chunk_s: Optional[float] = typer.Option(None, min=0.01, help="cut long files into windows of this length "
                                                    "and write a timeline (one row per window) beside --out"),
            timeline_out: Optional[Path] = typer.Option(None, help="CSV for the timeline [default with --chunk-s: "
                                                        "<out stem>_timeline.csv]"),
            hop_s: Optional[float] = typer.Option(None, min=0.01, help="hop between windows (default: chunk_s)"),
            batch_size: int = typer.Option(256, min=1, help="clips per model call"),
            threads: Optional[int] = typer.Option(None, min=1, help="CPU threads (default: all cores)"),
            device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda for runs when available)"),
            group: Optional[str] = typer.Option(None, help="personalized runs: the group (e.g. speaker) of every "
                                                "input; default: a CSV list's group column, else the base model"),
            stream: Optional[str] = typer.Option(None, help="read ONE recording incrementally (a file, or - for "
                                                 "stdin) and print a line per window as it completes"),
            stream_format: str = typer.Option("wav", help="--stream -: wav, or raw little-endian PCM s16le, "
                                              "s32le or f32le (give --stream-rate)"),
            stream_rate: Optional[int] = typer.Option(None, min=1, help="--stream - with raw PCM: its rate in Hz"),
            stream_channels: int = typer.Option(1, min=1, help="--stream - with raw PCM: interleaved channels"),
            trust_checkpoint: bool = TRUST,
            backend: str = typer.Option("auto", help="for a run: auto (its current ONNX export when the "
                                        "prediction runs on the CPU: no torch, fast start; else the checkpoint), "
                                        "torch (the checkpoint) or onnx (the export)")) -> None:
    """Predict labels for audio files with a trained run or an exported ONNX model."""
    from earmark import api

    if stream is not None:
        if inputs:
            raise EarmarkError("--stream reads one recording; give it as --stream FILE (or -), without other inputs")
        stream_prediction = api.predict_stream(model, stream, chunk_s=chunk_s, hop_s=hop_s,
                                               stream_format=stream_format, stream_rate_hz=stream_rate,
                                               stream_channels=stream_channels, threads=threads, device=device,
                                               trust_checkpoint=trust_checkpoint, backend=backend)
        print_model_source(model, stream_prediction.predictor.source)
        print_stream(stream_prediction, out)
        return
    if not inputs:
        raise EarmarkError("give audio files, folders, CSV lists or - (paths on stdin), or --stream FILE|-")
    result = api.predict(model, inputs, out, top_k=top_k, chunk_s=chunk_s, hop_s=hop_s, groups=group,
                         batch_size=batch_size, threads=threads, device=device, trust_checkpoint=trust_checkpoint,
                         timeline_out=timeline_out, backend=backend)
    print_model_source(model, result.source)
    console, failed = make_console(), len(result.bad_files) > 0 and len(result.files) == 0
    if out is None and not failed:
        print_table(result.files)
        if chunk_s is not None and result.timeline_path is None and len(result.timeline):
            print_table(result.timeline)
    elif not failed:
        console.print(f"{len(result.files)} predictions written to {out}", markup=False)
    if result.timeline_path is not None:
        console.print(f"timeline ({len(result.timeline)} windows) written to {result.timeline_path}", markup=False)
    for row in result.bad_files.itertuples(index=False):
        console.print(f"[bold yellow]skipped[/] {row.path}: {row.reason}")
    if failed:  # exit status 1 (README): every input failed, nothing was predicted or written
        print(f"no predictions: all {len(result.bad_files)} input(s) failed; nothing written", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
def inspect(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
            out: Optional[Path] = typer.Option(None, help="folder for the summary and spectrogram grid"),
            augment: bool = typer.Option(False, "--augment", help="also draw clean vs augmented spectrograms")) -> None:
    """Class counts, durations, rates, channels, bad files, example spectrograms and one batch's shapes."""
    from earmark import api

    config, overrides = _split_config_args(args)
    summary = api.inspect(config, overrides, out_dir=out, augment=augment)
    make_console().print(summary.text)


@app.command()
def clean(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
          everything: bool = typer.Option(False, "--all", help="every cache under data.cache_dir and every split "
                                          "folder under workspace/splits, not only the config's")) -> None:
    """Remove the decoded cache (with its embeddings) and splits a config uses; --all: all of them (runs are kept)."""
    from earmark import api

    config, overrides = _split_config_args(args)
    removed = api.clean(config, overrides, everything=everything)
    console = make_console()
    for folder, size in removed:
        console.print(f"removed {folder} ({size / 1e6:.1f} MB)", markup=False)
    total = sum(size for _, size in removed)
    console.print(f"{len(removed)} folder(s) removed, {total / 1e6:.1f} MB freed" if removed else
                  "nothing to remove" + ("" if everything else " for this config (--all: every cache and split)"))


@app.command()
def models(verbose: bool = typer.Option(False, "--verbose", "-v", help="also list each model's parameters"),
           count: bool = typer.Option(False, "--count", help="also build each model to count its parameters "
                                      "(seconds; offline: no network is asked)")) -> None:
    """List the registered models: input, pretrained weights (and parameter counts with --count)."""
    from rich.table import Table

    from earmark.models.registry import DEFAULT_INPUT_SHAPES, describe_models

    caption = ("parameters counted for 10 classes at " + ", ".join(f"{k} {v}" for k, v in DEFAULT_INPUT_SHAPES.items())
               if count else "--count adds each model's parameter count")
    table = Table(caption=caption)
    columns = ["name", "input"] + (["parameters"] if count else []) + ["pretrained weights", "description"]
    for column in columns + (["model.params"] if verbose else []):
        table.add_column(column)
    for row in describe_models(count_parameters=count):
        counted = [f"{row['parameters'] / 1e6:.2f} M" if row["parameters"] is not None else "-"] if count else []
        cells = [row["name"], row["input"], *counted, row["pretrained"], row["description"]]
        if verbose:
            cells.append(", ".join(f"{k}={v}" for k, v in row["params"].items()))
        table.add_row(*cells)
    make_console().print(table)


@app.command()
def serve(model: Path = typer.Argument(..., help="a run directory, a .ckpt or a model.onnx"),
          host: str = typer.Option("127.0.0.1", help="interface to listen on; 0.0.0.0 exposes the server to "
                                   "the network (it has no authentication)"),
          port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
          max_upload_mb: float = typer.Option(20.0, min=0.001, help="largest request body, MiB (413 above)"),
          max_duration_s: float = typer.Option(600.0, min=0.01, help="longest audio, seconds (413 above)"),
          request_timeout_s: float = typer.Option(30.0, min=0.01, help="per-request time limit (504 after)"),
          max_samples: int = typer.Option(57_600_000, min=1, help="most decoded samples (duration x rate x "
                                          "channels, from the header) per request (413 above)"),
          upload_timeout_s: float = typer.Option(10.0, min=0.01, help="time for a request body to arrive (408 after)"),
          header_timeout_s: float = typer.Option(10.0, min=0.01, help="time for a request's headers to arrive "
                                                 "(the connection is closed after)"),
          max_long_decodes: int = typer.Option(1, min=1, help="decodes of over 30 s of 48 kHz audio at once "
                                               "(503 for one more; a pad/crop model decodes only its clip)"),
          threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for inference (default: the "
                                                "runtime's)"),
          log_level: str = typer.Option("info", help="uvicorn's log level; warning drops the access log"),
          trust_checkpoint: bool = TRUST) -> None:
    """Serve a trained model over HTTP: POST /predict, POST /predict/timeline, GET /labels, GET /health."""
    from earmark import api

    api.serve(model, host=host, port=port, max_upload_mb=max_upload_mb, max_duration_s=max_duration_s,
              request_timeout_s=request_timeout_s, threads=threads, log_level=log_level,
              trust_checkpoint=trust_checkpoint, max_samples=max_samples, upload_timeout_s=upload_timeout_s,
              header_timeout_s=header_timeout_s, max_long_decodes=max_long_decodes)


@app.command()
def compare(runs: List[Path] = typer.Argument(..., help="two or more run directories (or evaluate folders) "
                                              "scored on the same test clips; the first is the reference"),
            out: Optional[Path] = typer.Option(None, help="folder for compare.json/.md/.html "
                                               "(default: a new compare-<timestamp> beside the first run)")) -> None:
    """Compare runs on the same test set: metrics, per-class differences, McNemar p and bootstrap CIs."""
    from earmark import api

    comparison = api.compare(runs, out)
    print_comparison(comparison)


@app.command()
def cv(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
       folds: Optional[int] = typer.Option(None, min=2, help="number of folds to compute [default: 5]"),
       group_by: Optional[str] = typer.Option(None, help="column whose values never straddle folds, nor "
                                              "train/val/test inside a fold, e.g. speaker [default: split.group_by]"),
       fold_column: Optional[str] = typer.Option(None, help="use the data's own folds from this column "
                                                 "(e.g. fold for esc50/urbansound8k) instead of computing them"),
       seed: Optional[int] = typer.Option(None, help="seed of the fold assignment [default: the config's seed]"),
       resume: Optional[Path] = typer.Option(None, help="continue runs/<name>-cv: finished folds are kept"),
       strict: bool = typer.Option(False, help="fail if any audio file cannot be used or any input was "
                                               "left out")) -> None:
    """Cross-validate: one run per held-out fold (decoded once), then mean ± std and a pooled confusion."""
    from earmark import api

    config, overrides = _split_config_args(args)
    console = make_console()
    result = api.cv(config, overrides, folds=folds, group_by=group_by, fold_column=fold_column, seed=seed,
                    resume=resume, strict=strict, log=lambda line: console.print(line, markup=False))
    print_cv(result)


@app.command()
def export(run: Path = typer.Argument(..., help="a run directory (or its .ckpt)"),
           out: Optional[Path] = typer.Option(None, help="output folder (default: <run>/export)"),
           int8: Optional[str] = typer.Option(None, help="also write model.int8.onnx: dynamic, or static "
                                              "(calibrated on training clips)"),
           opset: Optional[int] = typer.Option(None, min=7, help="ONNX opset (default: the exporter's)"),
           clips: Optional[List[Path]] = typer.Option(None, help="audio files/folders/CSV lists to check parity on "
                                                      "(default: the run's test split)"),
           max_int8_drop: float = typer.Option(2.0, min=0, help="most test accuracy INT8 may lose, in points"),
           force: bool = typer.Option(False, "--force", help="keep an INT8 model that loses more than that"),
           exporter: str = typer.Option("auto", help="auto, dynamo (torch.export) or torchscript (legacy)"),
           trust_checkpoint: bool = TRUST) -> None:
    """Export a run to ONNX (raw waveform in, probabilities out), optionally INT8, checked against PyTorch."""
    from earmark import api

    console = make_console()
    result = api.export(run, out, int8=int8, opset=opset, clips=clips, max_int8_drop=max_int8_drop, force=force,
                        exporter=exporter, log=console.print, trust_checkpoint=trust_checkpoint)
    for path in (result.model_path, result.int8_path):
        if path is not None:
            console.print(f"wrote {path}")
    console.print(f"parity figures: {result.out_dir / 'parity.json'}")


@app.command()
def tune(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
         space: Optional[Path] = typer.Option(None, help="YAML search space by dotted config keys, e.g. "
                                              "`train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}`"),
         trials: int = typer.Option(20, min=1, help="trials the study should hold in total"),
         seed: Optional[int] = typer.Option(None, help="sampler seed [default: the config's seed]"),
         timeout_s: Optional[float] = typer.Option(None, min=1, help="start no new trial after this many seconds"),
         resume: Optional[Path] = typer.Option(None, help="continue the study in runs/<name>-tune"),
         pruner: str = typer.Option("median", help="median (stop poor trials early) or none"),
         startup_trials: int = typer.Option(5, min=0, help="trials that run in full before pruning starts"),
         keep: str = typer.Option("all", help="trial run folders to keep: all or best")) -> None:
    """Search hyper-parameters with Optuna on the validation metric; writes best_config.yaml."""
    from earmark import api

    config, overrides = _split_config_args(args)
    console = make_console()
    result = api.tune(config, overrides, space=space, trials=trials, seed=seed, timeout_s=timeout_s, resume=resume,
                      pruner=pruner, startup_trials=startup_trials, keep=keep,
                      log=lambda line: console.print(line, markup=False))
    print_tune(result)



def _command():
    """The click command behind `app`, its flags shown as `--flag/--no-flag` without a `<bool>` value
    (typer's rich help prints one, as if they took a value)."""
    command = typer.main.get_command(app)
    for sub in [command, *getattr(command, "commands", {}).values()]:
        for param in sub.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        help_option = sub.get_help_option(typer.Context(sub))
        if help_option is not None:
            help_option.metavar = ""
    return command


# what the light install (README, *Deploy without PyTorch*) leaves out: a command that needs it says so
FULL_INSTALL_MODULES = {"torch", "torchaudio", "lightning", "transformers", "timm", "sklearn", "scipy", "matplotlib",
                        "onnx", "onnxscript", "safetensors", "optuna", "yt_dlp", "gdown", "tensorboard"}


def main() -> None:
    try:
        _command()(standalone_mode=True)
    except EarmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in FULL_INSTALL_MODULES:
            raise
        print(f"error: this command needs {exc.name}, which the light (predict and serve) install leaves out: "
              f"install the full earmark (`pip install .` in a clone) for it", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; everything already cached is kept", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
