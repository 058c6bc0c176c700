"""File names that came from the network, made safe to put on disk.

A name from a URL, a Content-Disposition header, a video title or an archive member
may hold separators, `..`, control characters or a Windows device name; nothing here
lets such a name leave the target folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from earmark.errors import EarmarkError

MAX_NAME_CHARS = 80
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
WINDOWS_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                                  *(f"lpt{i}" for i in range(1, 10))})


def safe_name(text: str, default: str = "file") -> str:
    """'../../etc/passwd' -> 'etc_passwd'; 'Drone über Feld.mp4' -> 'Drone_uber_Feld.mp4'.

    ASCII letters, digits, '.', '_' and '-' only, no leading dot, at most `MAX_NAME_CHARS`
    characters (the extension kept), never empty and never a Windows device name.
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    name = UNSAFE_CHARACTERS.sub("_", ascii_text)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")
    if not name:
        return default
    stem, suffix = os.path.splitext(name)
    if len(suffix) > 10:  # not an extension, just a dot in a title
        stem, suffix = name, ""
    stem = stem[:MAX_NAME_CHARS - len(suffix)].rstrip("._-") or default
    if stem.lower() in WINDOWS_DEVICE_NAMES:
        stem = f"_{stem}"
    return stem + suffix


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
