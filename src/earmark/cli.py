"""The `earmark` command: thin typer commands that build a config and call the Python API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from earmark.errors import EarmarkError

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="earmark: labelled sound files in, a trustworthy audio classifier out.")

CONFIG_HELP = "a YAML config, then dotted overrides such as train.max_epochs=5 (no config: the bundled demo)"


def _split_config_args(args: list[str] | None) -> tuple[Optional[str], list[str]]:
    """`[CONFIG] [key=value ...]`: the first argument is a config file unless it is an override."""
    args = list(args or [])
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _print_metrics(result) -> None:
    from rich.table import Table

    metrics = result.metrics
    baseline = metrics["majority_baseline"]
    table = Table(title=f"test split ({metrics['n_clips']} clips)")
    for column in ("metric", "model", "majority baseline"):
        table.add_column(column)
    low, high = metrics["accuracy_ci95"]
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}  (95% CI {low:.3f}–{high:.3f})", f"{baseline['accuracy']:.4f}")
    table.add_row("balanced accuracy", f"{metrics['balanced_accuracy']:.4f}", f"{baseline['balanced_accuracy']:.4f}")
    table.add_row("macro F1", f"{metrics['macro_f1']:.4f}", f"{baseline['macro_f1']:.4f}")
    console = _console()
    console.print(table)
    for warning in metrics.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")
    console.print(f"test accuracy: {metrics['accuracy']:.4f}")
    if result.personalization:
        _print_personalization(result.personalization)
    console.print(f"trained in {result.fit_seconds:.1f} s; run directory: {result.run_dir}")


MAX_GROUPS_PRINTED = 20


def _print_personalization(summary: dict) -> None:
    """Before/after in a few lines: overall, per group (the largest first), and the unseen groups."""
    console = _console()

    def share(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    improvement = summary["improvement"]
    console.print(f"personalization by '{summary['group_column']}': base model {share(summary['basic_accuracy'])} "
                  f"→ personalized {share(summary['personalized_accuracy'])}"
                  + ("" if improvement is None else f" ({improvement:+.4f})"))
    per_group = sorted(summary["per_group"].items(), key=lambda item: -item[1]["n_clips"])
    for name, row in per_group[:MAX_GROUPS_PRINTED]:
        console.print(f"  {name}: {share(row['basic_accuracy'])} → {share(row['personalized_accuracy'])} "
                      f"({row['n_clips']} clips{'' if row['seen_in_training'] else ', unseen: base model'})")
    if len(per_group) > MAX_GROUPS_PRINTED:
        console.print(f"  … {len(per_group) - MAX_GROUPS_PRINTED} more in personalization.json")
    if summary["unseen_groups"]:
        console.print(f"unseen in training (predicted by the base model): {', '.join(summary['unseen_groups'])}")


@app.command()
def train(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
          strict: bool = typer.Option(False, help="fail if any audio file cannot be used"),
          resume: Optional[Path] = typer.Option(None, help="continue runs/<name> from its last checkpoint "
                                                "(a config given too may only change train.max_epochs)"),
          overfit_batch: bool = typer.Option(False, "--overfit-batch",
                                             help="sanity check: train on one batch without augmentation and "
                                                  "report whether the loss reaches near zero")) -> None:
    """Prepare the data (once), train, and evaluate the best checkpoint on the test split."""
    from earmark import api

    config, overrides = _split_config_args(args)
    result = api.train(config, overrides, strict=strict, resume=resume, overfit_batch=overfit_batch)
    if overfit_batch:
        check = result.metrics
        console = _console()
        if check["steps"]:
            console.print(f"overfit check on one batch, {check['steps']} steps: first loss "
                          f"{check['first_loss']:.4f}, final loss {check['final_loss']:.4f}")
        console.print(("[bold green]" if check["passed"] else "[bold red]") + check["verdict"] + "[/]")
        if not check["passed"]:
            raise typer.Exit(1)
    elif result.metrics:  # empty in the processes of DDP ranks other than 0
        _print_metrics(result)


@app.command()
def prepare(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
            strict: bool = typer.Option(False, help="fail if any audio file cannot be used")) -> None:
    """Decode every file once into the cache and write train/val/test splits."""
    from earmark import api

    config, overrides = _split_config_args(args)
    prepared = api.prepare(config, overrides, strict=strict)
    stats = prepared.cache.stats
    console = _console()
    console.print(f"files: {stats.n_files}  decoded: {stats.n_decoded}  reused from cache: {stats.n_reused}  "
                  f"bad: {stats.n_bad}  clips: {stats.n_segments}  ({stats.seconds:.1f} s)")
    totals = prepared.stats.get("total", {})
    console.print("split sizes: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    console.print(f"splits and bad_files.csv written to {prepared.split_dir}")
    for warning in prepared.stats.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")


@app.command()
def evaluate(run: Path = typer.Argument(..., help="a run directory, e.g. runs/<name>"),
             data: Optional[Path] = typer.Option(None, help="a config (its test split) or a CSV (all rows)"),
             out: Optional[Path] = typer.Option(None, help="where to write metrics, predictions and plots")) -> None:
    """Score a trained run on its test split or on other data."""
    from earmark import api

    metrics = api.evaluate(run, data, out)
    console = _console()
    console.print(f"accuracy {metrics['accuracy']:.4f}  balanced accuracy {metrics['balanced_accuracy']:.4f}  "
                  f"macro F1 {metrics['macro_f1']:.4f}  ({metrics['n_clips']} clips)")
    for warning in metrics.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")


@app.command()
def predict(run: Path = typer.Argument(..., help="a run directory or checkpoint"),
            inputs: List[Path] = typer.Argument(..., help="audio files, folders or CSV lists"),
            out: Optional[Path] = typer.Option(None, help="CSV to write (default: print a table)"),
            top_k: int = typer.Option(3, min=1, help="how many labels with probabilities per file"),
            chunk_s: Optional[float] = typer.Option(None, min=0.01, help="cut long files into windows of this length"),
            hop_s: Optional[float] = typer.Option(None, min=0.01, help="hop between windows (default: chunk_s)"),
            group: Optional[str] = typer.Option(None, help="personalized runs: the group (e.g. speaker) of every "
                                                "input; default: a CSV list's group column, else the base model")
            ) -> None:
    """Predict labels for audio files with a trained run."""
    from earmark import api

    result = api.predict(run, inputs, out, top_k=top_k, chunk_s=chunk_s, hop_s=hop_s, groups=group)
    console = _console()
    if out is None:
        from rich.table import Table

        table = Table()
        for column in result.files.columns:
            table.add_column(str(column))
        for row in result.files.itertuples(index=False):
            table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
        console.print(table)
    else:
        console.print(f"{len(result.files)} predictions written to {out}")
    for row in result.bad_files.itertuples(index=False):
        console.print(f"[bold yellow]skipped[/] {row.path}: {row.reason}")


@app.command()
def inspect(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
            out: Optional[Path] = typer.Option(None, help="folder for the summary and spectrogram grid"),
            augment: bool = typer.Option(False, "--augment", help="also draw clean vs augmented spectrograms")) -> None:
    """Class counts, durations, rates, channels, bad files, example spectrograms and one batch's shapes."""
    from earmark import api

    config, overrides = _split_config_args(args)
    summary = api.inspect(config, overrides, out_dir=out, augment=augment)
    _console().print(summary.text)


@app.command()
def clean(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False)) -> None:
    """Remove decoded caches and generated splits (runs are kept)."""
    from earmark import api

    config, overrides = _split_config_args(args)
    freed = api.clean(config, overrides)
    _console().print(f"removed caches and splits ({freed / 1e6:.1f} MB)")


@app.command()
def models(verbose: bool = typer.Option(False, "--verbose", "-v", help="also list each model's parameters")) -> None:
    """List the registered models: input, parameter count, pretrained weights."""
    from rich.table import Table

    from earmark.models.registry import DEFAULT_INPUT_SHAPES, describe_models

    table = Table(caption="parameters counted for 10 classes at "
                          + ", ".join(f"{k} {v}" for k, v in DEFAULT_INPUT_SHAPES.items()))
    columns = ["name", "input", "parameters", "pretrained weights", "description"]
    for column in columns + (["model.params"] if verbose else []):
        table.add_column(column)
    for row in describe_models():
        count = f"{row['parameters'] / 1e6:.2f} M" if row["parameters"] is not None else "-"
        cells = [row["name"], row["input"], count, row["pretrained"], row["description"]]
        if verbose:
            cells.append(", ".join(f"{k}={v}" for k, v in row["params"].items()))
        table.add_row(*cells)
    _console().print(table)


def main() -> None:
    try:
        app()
    except EarmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; everything already cached is kept", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
