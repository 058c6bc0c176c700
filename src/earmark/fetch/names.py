"""File names that came from the network, made safe to put on disk.

A name from a URL, a Content-Disposition header, a video title or an archive member
may hold separators, `..`, control characters or a Windows device name; nothing here
lets such a name leave the target folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from earmark.errors import EarmarkError
from earmark.files import safe_name


def name_from_url(url: str, default: str = "download") -> str:
    """The last path segment of a URL, decoded and made safe."""
    segment = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return safe_name(segment, default)


def short_hash(*parts: object, n_chars: int = 10) -> str:
    """A stable short id for a source (URL, member, times): same input, same name, every run."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:n_chars]


def inside(root: Path, relative: str | os.PathLike) -> Path:
    """`root / relative`, refusing anything that would resolve outside `root` (.., absolute, links)."""
    root_real = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root_real, relative))
    if target != root_real and not target.startswith(root_real + os.sep):
        raise EarmarkError(f"refusing to write {relative!r}: it would land outside {root}")
    return Path(target)
