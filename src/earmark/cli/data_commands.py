"""Commands around the data: fetch and list public data sets, embed clips with a pretrained backbone, audit labels."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from earmark.cli.app import CONFIG_HELP, _split_config_args, app
from earmark.cli.output import make_console, print_datasets, print_fetch_result, print_table


@app.command()
def fetch(source: str = typer.Argument(..., help="a sources list (SOURCES.yaml / SOURCES.csv) or a preset name "
                                                  "(see `earmark datasets`)"),
          to: Path = typer.Option(..., "--to", help="folder to fill; nothing already in it is overwritten"),
          rate_hz: Optional[int] = typer.Option(None, "--rate-hz", min=1, show_default=False,
                                                help="sources list: sample rate of the WAV clips [default: 16000]"),
          clip_s: Optional[float] = typer.Option(None, "--clip-s", min=0.01,
                                                 help="sources list: cut each source into clips of this length"),
          retries: int = typer.Option(3, min=0, help="extra attempts per download after a transient failure"),
          timeout_s: float = typer.Option(30.0, "--timeout-s", min=0.1,
                                          help="seconds to wait for a server; a download averaging under 1 KiB/s "
                                               "over this long is cut off and retried"),
          max_download_mb: float = typer.Option(2048.0, "--max-download-mb", min=0.000001,
                                                help="MiB; a larger download fails and its partial file is deleted"),
          max_extract_gb: float = typer.Option(64.0, "--max-extract-gb", min=0.000001,
                                               help="refuse archives that expand beyond this size"),
          base_url: Optional[str] = typer.Option(None, "--base-url",
                                                 help="preset: download <BASE_URL>/<archive> from a mirror"),
          checksum: Optional[str] = typer.Option(None, help="preset: the archive's expected sha256:<hex> or md5:<hex>"),
          drive_base_url: Optional[str] = typer.Option(None, "--drive-base-url",
                                                       help="host answering Google Drive's uc?export=download "
                                                            "(a mirror or test server)")) -> None:
    """Download a sources list (video sites, Google Drive, HTTP files and archives) or a public data set."""
    from earmark import api

    console = make_console()
    result = api.fetch(source, to, rate_hz=rate_hz, clip_s=clip_s, retries=retries, timeout_s=timeout_s,
                       max_extract_gb=max_extract_gb, base_url=base_url, checksum=checksum,
                       drive_base_url=drive_base_url, progress=True, max_download_mb=max_download_mb,
                       say=lambda text: console.print(text, markup=False, highlight=False))
    if print_fetch_result(console, result):
        raise typer.Exit(1)


@app.command()
def embed(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
          out: Path = typer.Option(..., "--out", help="embeddings file: .npy (index CSV beside it), .csv or .parquet"),
          strict: bool = typer.Option(False, help="fail if any audio file cannot be used")) -> None:
    """Write a pretrained backbone's embedding of every clip (model.name=aisfx); computed once, then cached."""
    from earmark import api

    config, overrides = _split_config_args(args)
    result = api.embed(config, overrides, out=out, strict=strict)
    where = f"{result.out}" + (f" (index: {result.index})" if result.index else "")
    make_console().print(f"{result.n_clips} clips × {result.dim} dimensions ({result.embedded_now} embedded now, "
                         f"the rest from the cache) written to {where}")


@app.command()
def audit(args: Optional[List[str]] = typer.Argument(None, help=CONFIG_HELP, show_default=False),
          out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="default: runs/audit-<time>/"),
          folds: int = typer.Option(5, min=2, help="out-of-fold probes (grouped by split.group_by when set)")) -> None:
    """List training clips whose label disagrees with out-of-fold predictions (likely mislabels)."""
    from earmark import api

    config, overrides = _split_config_args(args)
    result = api.audit(config, overrides, out_dir=out_dir, folds=folds)
    console = make_console()
    if result.too_weak:
        console.print(f"warning: {result.too_weak}", markup=False, highlight=False)
        return
    console.print(f"{len(result.suspects)} of {result.n_audited} training clips look mislabelled (out-of-fold "
                  f"accuracy {result.oof_accuracy:.2f}); listed most suspicious first in "
                  f"{result.out_dir / 'suspect_labels.csv'}")
    if len(result.suspects):
        print_table(result.suspects.head(10))


@app.command()
def datasets() -> None:
    """List the data sets `earmark fetch NAME --to DIR` can download, with license, size and checksum."""
    from earmark import api

    print_datasets(api.datasets())
