"""HTTP(S) downloads that survive bad networks and never clobber a file.

A download streams into `<key>.part` beside its target, hashing every byte as it arrives;
it resumes with a Range request when the server allows it (with If-Range, so a file
that changed meanwhile is fetched whole again), retries transient failures with
exponential backoff, and is renamed into place only when complete. `state.json` in the
same folder records every finished download (file, bytes, sha256), so a second run
skips it without the network.

Nothing a server sends can run on forever: a download larger than `max_download_mb`
(announced by Content-Length, or counted as it arrives) stops, its partial file is
deleted and the download fails; and a transfer averaging under MIN_SPEED_BYTES_PER_S over
any `timeout_s` window (a server dripping bytes, each read just inside the timeout) is
cut off and retried like a broken connection, so one attempt never stalls for longer
than `timeout_s` and a download gives up after its retries.
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
from typing import Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from earmark.errors import EarmarkError
from earmark.fetch.names import name_from_url, short_hash
from earmark.fetch.report import FetchError, unreachable
from earmark.fetch.state import DownloadState
from earmark.files import atomic_write_text, safe_name

USER_AGENT = "earmark-fetch/0.1 (+python urllib)"
CHUNK_BYTES = 1 << 20
PROGRESS_MIN_BYTES = 4 << 20  # smaller downloads finish before a bar is worth drawing
DEFAULT_MAX_DOWNLOAD_MB = 2048.0  # the largest preset archive (UrbanSound8K) is about 6 GB: raise it for those
MIN_SPEED_BYTES_PER_S = 1024  # slower than this over a whole timeout_s window counts as a stall


@dataclass(frozen=True)
class DownloadOptions:
    retries: int = 3  # extra attempts after the first one
    backoff_s: float = 1.0  # wait before retry k is backoff_s * 2 ** (k - 1)
    timeout_s: float = 30.0  # per connection and per read; also the window of the stall rule
    progress: bool = False  # a rich progress bar for downloads over PROGRESS_MIN_BYTES
    max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB  # MiB; a larger download fails and is deleted

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0 or self.max_download_mb <= 0:
            raise EarmarkError(f"retries ({self.retries}) and backoff_s ({self.backoff_s}) must be >= 0, "
                               f"timeout_s ({self.timeout_s}) and max_download_mb ({self.max_download_mb}) > 0")

    @property
    def max_download_bytes(self) -> int:
        return int(self.max_download_mb * (1 << 20))


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


@dataclass(frozen=True)
class _Body:
    """A complete body in `<key>.part`: the server's file name and the hex digests of every byte."""
    name: str
    digests: dict[str, str]


def fetch_url(url: str, folder: Path, options: DownloadOptions, state: DownloadState, *,
              key: Optional[str] = None, default_name: Optional[str] = None,
              extra_digests: tuple[str, ...] = ()) -> Path:
    """Download `url` into `folder` (named `<hash>-<name from the server>`); returns the file.

    `key` identifies the item in the state file (default: the URL); a finished key is
    returned at once. Its entry holds the sha256 (and each of `extra_digests`, e.g. 'md5')
    computed while the bytes arrived. Raises FetchError with the reason after the last attempt.
    """
    key = key or url
    finished = state.finished(key)
    if finished is not None:
        return finished
    folder.mkdir(parents=True, exist_ok=True)
    prefix = short_hash(key)
    part = folder / f"{prefix}.part"
    algorithms = ("sha256", *(a for a in extra_digests if a != "sha256"))
    reason = "no attempt made"
    for attempt in range(options.retries + 1):
        if attempt:
            time.sleep(options.backoff_s * 2 ** (attempt - 1))
        try:
            body = _stream(url, part, options, default_name, algorithms)
            break
        except _Retry as exc:
            reason = str(exc)
    else:
        raise FetchError(f"{reason} (gave up after {options.retries + 1} attempts)")
    final = folder / f"{prefix}-{body.name}"
    if final.exists():
        raise FetchError(f"{final} already exists but is not recorded as a finished download of this source; "
                         f"it is left untouched: delete or move it and run again")
    # Recorded, then renamed: a run stopped between the two leaves the whole .part, which the
    # next run finds complete (416) and renames; never a final file without its entry.
    state.record(key, final, n_bytes=part.stat().st_size, url=url, **body.digests)
    os.replace(part, final)
    _resume_file(part).unlink(missing_ok=True)
    return final


def _stream(url: str, part: Path, options: DownloadOptions, default_name: Optional[str],
            algorithms: tuple[str, ...]) -> _Body:
    """One attempt: append to (or restart) `part`, hashing as it goes."""
    offset = part.stat().st_size if part.exists() else 0
    resume = _read_resume(part) if offset else {}
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if resume.get("validator"):  # the server sends the whole new file if this one changed
            headers["If-Range"] = resume["validator"]
    try:
        response = urlopen(Request(url, headers=headers), timeout=options.timeout_s)
    except HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part may be whole already
            total = exc.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return _Body(_name(exc.headers, url, default_name), _part_digests(part, algorithms).hexdigests())
            _discard(part)
            raise _Retry("the server refused to resume; starting over") from None
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except URLError as exc:
        raise _connection_failure(url, exc.reason, options) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _connection_failure(url, exc, options) from None
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            start, _, size = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")
            size = size.rpartition("/")[2]
            if start != str(offset) or (resume.get("total") and size != str(resume["total"])):
                _discard(part)
                raise _Retry(f"the server resumed at byte {start} of {size}, not {offset} of the file the "
                             f"partial download came from; starting over")
            digests = _part_digests(part, algorithms)
        else:  # 200: the server ignored the Range header (or the file changed), so the whole body follows
            offset = 0
            digests = _Digests(algorithms)
            _write_resume(part, response.headers, length)
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and total > options.max_download_bytes:
            _discard(part)
            raise FetchError(f"the server announces {total} bytes, more than --max-download-mb "
                             f"{options.max_download_mb:g} MiB; nothing was kept (raise the limit to fetch it)")
        name = _name(response.headers, response.geturl() or url, default_name)
        written = _copy_body(response, part, offset, total, name, options, digests)
    if total is not None and written < total:
        raise _Retry(f"the connection closed after {written} of {total} bytes")
    return _Body(name, digests.hexdigests())


class _Digests:
    """Several hashes of one stream, fed block by block."""

    def __init__(self, algorithms: tuple[str, ...]):
        self._hashes = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}

    def update(self, block: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(block)

    def hexdigests(self) -> dict[str, str]:
        return {algorithm: digest.hexdigest() for algorithm, digest in self._hashes.items()}


def _part_digests(part: Path, algorithms: tuple[str, ...]) -> _Digests:
    """The digests of what `part` already holds (read once, when resuming)."""
    digests = _Digests(algorithms)
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digests.update(block)
    return digests


def _resume_file(part: Path) -> Path:
    """`<key>.resume.json` beside `<key>.part`: what identifies the file the part belongs to."""
    return part.with_suffix(".resume.json")


def _write_resume(part: Path, headers: Message, length: Optional[str]) -> None:
    """The server's validator for If-Range: a strong ETag, else Last-Modified; plus the total size."""
    etag = headers.get("ETag", "")
    validator = etag if etag.startswith('"') else headers.get("Last-Modified", "")  # weak (W/) ETags may not
    atomic_write_text(_resume_file(part), json.dumps({"validator": validator, "total": int(length) if length
                                                      and length.isdigit() else None}))


def _read_resume(part: Path) -> dict:
    try:
        return json.loads(_resume_file(part).read_text())
    except (OSError, ValueError):  # none (an older part) or damaged: resume on the Range header alone
        return {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _resume_file(part).unlink(missing_ok=True)


def _copy_body(response, part: Path, offset: int, total: Optional[int], name: str, options: DownloadOptions,
               digests: _Digests) -> int:
    """Stream the body to `part` (appending after `offset`), hashing it; returns the bytes now in `part`."""
    bar = task = None
    if options.progress and (total is None or total >= PROGRESS_MIN_BYTES):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       transient=True)
        task = bar.add_task(name, total=total, completed=offset)
        bar.start()
    written = offset
    window_start_s, window_start_bytes = time.monotonic(), written
    try:
        with open(part, "ab" if offset else "wb") as handle:
            while True:
                try:  # read1: what has arrived, so a drip cannot keep one read waiting for a full chunk
                    block = response.read1(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    if isinstance(exc, (TimeoutError, socket.timeout)):
                        raise _Retry(f"the server sent nothing for {options.timeout_s:g} s after {written} "
                                     f"bytes") from None
                    raise _Retry(f"the connection broke after {written} bytes ({type(exc).__name__})") from None
                if not block:
                    return written
                if written + len(block) > options.max_download_bytes:
                    handle.close()
                    _discard(part)
                    raise FetchError(f"larger than --max-download-mb {options.max_download_mb:g} MiB (stopped "
                                     f"after {written + len(block)} bytes); the partial file was deleted "
                                     f"(raise the limit to fetch it)")
                try:
                    handle.write(block)
                except OSError as exc:
                    raise FetchError(f"cannot write {part}: {exc.strerror}") from None
                digests.update(block)
                written += len(block)
                elapsed_s = time.monotonic() - window_start_s
                if elapsed_s >= options.timeout_s:
                    if (written - window_start_bytes) / elapsed_s < MIN_SPEED_BYTES_PER_S:
                        raise _Retry(f"too slow: {written - window_start_bytes} bytes in {elapsed_s:.1f} s, under "
                                     f"{MIN_SPEED_BYTES_PER_S} bytes/s for --timeout-s {options.timeout_s:g} s "
                                     f"(stalled after {written} bytes)")
                    window_start_s, window_start_bytes = time.monotonic(), written
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
