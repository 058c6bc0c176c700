"""Commands that make a run from trained runs: ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from earmark.cli.app import app
from earmark.cli.output import make_console, print_evaluation
from earmark.errors import EarmarkError


def parse_weights(text: Optional[str]) -> Optional[list[float]]:
    """--weights "0.5,0.5" → [0.5, 0.5]; None stays None (equal weights)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise EarmarkError(f"--weights takes numbers separated by commas, one per run (e.g. 0.5,0.5); "
                           f"got {text!r}") from None


@app.command()
def ensemble(runs: List[Path] = typer.Argument(..., help="two or more run directories trained on the same data "
                                               "and splits (e.g. an aisfx probe and a CNN)"),
             out: Optional[Path] = typer.Option(None, help="the new run folder (default: a new "
                                                "<source>-ensemble-<time> beside the first run)"),
             weights: Optional[str] = typer.Option(None, help="one weight per run, comma-separated, e.g. 0.7,0.3 "
                                                   "(default: equal)")) -> None:
    """Average the calibrated probabilities of trained runs into a new run (predict, evaluate, export, serve it)."""
    from earmark import api

    result = api.ensemble(runs, out, weights=parse_weights(weights))
    console = make_console()
    for member in result.metrics["ensemble"]["members"]:
        accuracy = member["test_accuracy"]
        console.print(f"member {member['run']} ({member['model']}, {member['sample_rate_hz']} Hz, temperature "
                      f"{member['temperature']:.3g}): weight {member['weight']:.3g}, test accuracy "
                      f"{'n/a' if accuracy is None else f'{accuracy:.4f}'}", markup=False)
    print_evaluation(result.metrics)
    console.print(f"ensemble test accuracy: {result.metrics['accuracy']:.4f}; run directory: {result.run_dir}",
                  markup=False)
    console.print(f"next: earmark predict {result.run_dir} AUDIO...; earmark export {result.run_dir} makes one ONNX "
                  f"model holding every member", markup=False)
