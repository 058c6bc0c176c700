"""HTTP(S) downloads that survive bad networks and never clobber a file.

A download streams into `<key>.part` beside its target, resumes with a Range request
when the server allows it, retries transient failures with exponential backoff, and is
renamed into place only when complete. `state.json` in the same folder records every
finished download (file, bytes, sha256), so a second run skips it without the network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from earmark.errors import EarmarkError
from earmark.fetch.names import name_from_url, safe_name, short_hash
from earmark.fetch.report import FetchError, unreachable

USER_AGENT = "earmark-fetch/0.1 (+python urllib)"
CHUNK_BYTES = 1 << 20
PROGRESS_MIN_BYTES = 4 << 20  # smaller downloads finish before a bar is worth drawing
STATE_FILE = "state.json"


@dataclass(frozen=True)
class DownloadOptions:
    retries: int = 3  # extra attempts after the first one
    backoff_s: float = 1.0  # wait before retry k is backoff_s * 2 ** (k - 1)
    timeout_s: float = 30.0  # per connection and per read
    progress: bool = False  # a rich progress bar for downloads over PROGRESS_MIN_BYTES

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise EarmarkError(f"retries ({self.retries}) and backoff_s ({self.backoff_s}) must be >= 0 and "
                               f"timeout_s ({self.timeout_s}) > 0")


class DownloadState:
    """`<folder>/state.json`: finished downloads by key, plus free-form entries such as settings."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EarmarkError(f"{self.path} is damaged; delete it (finished downloads are then fetched again, "
                               f"files already there are never overwritten)") from None
        self.data.setdefault("downloads", {})

    def finished(self, key: str) -> Optional[Path]:
        """The file of a finished download, if it is still there with its recorded size."""
        entry = self.data["downloads"].get(key)
        if entry is None or "file" not in entry:
            return None
        path = self.folder / entry["file"]
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            return path
        return None

    def forget(self, key: str) -> None:
        self.data["downloads"].pop(key, None)
        self.save()

    def entry(self, key: str) -> Optional[dict]:
        return self.data["downloads"].get(key)

    def record(self, key: str, path: Path, **extra: Any) -> None:
        entry = {"file": os.path.relpath(path, self.folder), "bytes": path.stat().st_size, **extra}
        self.data["downloads"][key] = entry
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(STATE_FILE + ".part")
        partial.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(partial, self.path)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def check_reachable(url: str) -> None:
    """Fail fast, with one clear reason, when the host's name cannot be looked up (offline)."""
    parts = urlsplit(url)
    try:
        socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                           type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise unreachable(parts.hostname or url, f"name lookup failed: {exc.strerror or exc}") from None


class _Retry(Exception):
    """A failure worth another attempt (5xx, reset, timeout, short body)."""


def fetch_url(url: str, folder: Path, options: DownloadOptions, state: DownloadState, *,
              key: Optional[str] = None, default_name: Optional[str] = None) -> Path:
    """Download `url` into `folder` (named `<hash>-<name from the server>`); returns the file.

    `key` identifies the item in the state file (default: the URL); a finished key is
    returned at once. Raises FetchError with the reason after the last attempt.
    """
    key = key or url
    finished = state.finished(key)
    if finished is not None:
        return finished
    folder.mkdir(parents=True, exist_ok=True)
    prefix = short_hash(key)
    part = folder / f"{prefix}.part"
    reason = "no attempt made"
    for attempt in range(options.retries + 1):
        if attempt:
            time.sleep(options.backoff_s * 2 ** (attempt - 1))
        try:
            name = _stream(url, part, options, default_name)
            break
        except _Retry as exc:
            reason = str(exc)
    else:
        raise FetchError(f"{reason} (gave up after {options.retries + 1} attempts)")
    final = folder / f"{prefix}-{name}"
    if final.exists():
        raise FetchError(f"{final} already exists but is not recorded as a finished download of this source; "
                         f"it is left untouched: delete or move it and run again")
    os.replace(part, final)
    state.record(key, final, url=url, sha256=file_digest(final))
    return final


def _stream(url: str, part: Path, options: DownloadOptions, default_name: Optional[str]) -> str:
    """One attempt: append to (or restart) `part`; returns the file name the server gave."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=options.timeout_s)
    except HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part may be whole already
            total = exc.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return _name(exc.headers, url, default_name)
            part.unlink()
            raise _Retry("the server refused to resume; starting over") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except URLError as exc:
        raise _connection_failure(url, exc.reason, options) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _connection_failure(url, exc, options) from None
    with response:
        if response.status == 206:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
            if start != str(offset):
                part.unlink()
                raise _Retry(f"the server resumed at byte {start}, not {offset}; starting over")
        else:  # 200: the server ignored the Range header, so the whole body follows
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        name = _name(response.headers, response.geturl() or url, default_name)
        written = _copy_body(response, part, offset, total, name, options)
    if total is not None and written < total:
        raise _Retry(f"the connection closed after {written} of {total} bytes")
    return name


def _copy_body(response, part: Path, offset: int, total: Optional[int], name: str, options: DownloadOptions) -> int:
    """Stream the body to `part` (appending after `offset`); returns the bytes now in `part`."""
    bar = task = None
    if options.progress and (total is None or total >= PROGRESS_MIN_BYTES):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       transient=True)
        task = bar.add_task(name, total=total, completed=offset)
        bar.start()
    written = offset
    try:
        with open(part, "ab" if offset else "wb") as handle:
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retry(f"the connection broke after {written} bytes ({type(exc).__name__})") from None
                if not block:
                    return written
                try:
                    handle.write(block)
                except OSError as exc:
                    raise FetchError(f"cannot write {part}: {exc.strerror}") from None
                written += len(block)
                if bar is not None:
                    bar.update(task, completed=written)
    finally:
        if bar is not None:
            bar.stop()


def _connection_failure(url: str, reason: object, options: DownloadOptions) -> Exception:
    host = urlsplit(url).hostname or url
    if isinstance(reason, socket.gaierror):
        return unreachable(host, f"name lookup failed: {reason.strerror or reason}")
    if isinstance(reason, ConnectionRefusedError):
        return _Retry(f"connection refused by {urlsplit(url).netloc}")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _Retry(f"no answer from {host} within {options.timeout_s:g} s")
    text = getattr(reason, "strerror", None) or str(reason)
    if "CERTIFICATE" in text.upper():
        return FetchError(f"TLS certificate check failed for {host}: {text}")
    return _Retry(f"cannot connect to {host}: {text}")


def _name(headers: Message, url: str, default_name: Optional[str]) -> str:
    """The server's file name (Content-Disposition, else the URL's last segment), made safe."""
    disposition = headers.get("Content-Disposition")
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        filename = message.get_filename()
        if filename:
            return safe_name(os.path.basename(filename.replace("\\", "/")), default_name or "download")
    return name_from_url(url, default_name or "download")
