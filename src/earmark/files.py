"""Files replaced whole or not at all: a reader (or a crash) never sees half of one.

The data goes to a temporary file beside the target (same folder, so the same file
system), is flushed to disk, then `os.replace`d over the target in one step.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from pathlib import Path

from earmark.errors import EarmarkError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # what earmark decodes, everywhere
MAX_RUN_NAME_BYTES = 200  # a run folder's name: file systems allow 255, the rest is for -cv, -tune, -1 suffixes


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


GENERATED_MARKER = ".earmark-generated"  # in every folder earmark creates for itself (caches, splits)


def mark_generated(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and mark it as earmark's: `earmark clean` deletes only marked folders."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / GENERATED_MARKER
    if not marker.exists():
        marker.write_text("made by earmark; `earmark clean` may delete this folder\n")
    return folder


def is_generated(folder: str | os.PathLike) -> bool:
    return (Path(folder) / GENERATED_MARKER).is_file()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The file's hash (hashlib's `algorithm`) as hex, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")
