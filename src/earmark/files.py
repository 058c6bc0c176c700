"""Files replaced whole or not at all: a reader (or a crash) never sees half of one.

The data goes to a temporary file beside the target (same folder, so the same file
system), is flushed to disk, then `os.replace`d over the target in one step.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from earmark.errors import EarmarkError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically; the parent folder must exist.

    An OSError (a full disk, a read-only folder) becomes an EarmarkError naming the file,
    and leaves neither a temporary file nor a changed target behind.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # unique: writers never share one
    try:  # 0o666 less the umask, as open() would give; O_EXCL: never someone else's file
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise EarmarkError(f"cannot write {path}: {exc.strerror or exc}; check that the folder exists and is "
                           f"writable") from exc
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise EarmarkError(f"cannot write {path}: {exc.strerror or exc}; free some disk space (or check the "
                               f"folder's permissions) and run again") from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically, byte for byte: no newline translation, so CSV line ends survive."""
    atomic_write_bytes(path, text.encode(encoding))
