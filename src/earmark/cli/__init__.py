"""The command line: a typer app whose commands are thin calls into `earmark.api`."""

from earmark.cli.app import app, main

__all__ = ["app", "main"]
