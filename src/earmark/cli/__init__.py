"""The command line: a typer app whose commands are thin calls into `earmark.api`.

Every module that adds commands is listed here, so `earmark --help` is complete without relying on
who imported what.
"""

from earmark.cli import (
    data_commands,  # noqa: F401 (fetch, datasets, embed, audit)
    run_commands,  # noqa: F401 (ensemble)
)
from earmark.cli.app import app, main

__all__ = ["app", "main"]
