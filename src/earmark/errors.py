"""The one exception type a user sees: it names the file or field and the fix."""

from __future__ import annotations


class EarmarkError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The CLI prints the message and exits with status 2; the Python API raises it.
    """
