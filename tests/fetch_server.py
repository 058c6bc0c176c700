"""A local HTTP server for the fetch tests: files with Range support, flaky and truncating routes,
and a stand-in for Google Drive's download URLs. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile as sf

DRIVE_UUID = "3f2a-test-uuid"


def wav_bytes(frequency_hz: float, duration_s: float, rate_hz: int = 8000, fmt: str = "WAV") -> bytes:
    """A sine tone encoded as WAV (or FLAC/OGG via fmt)."""
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    buffer = io.BytesIO()
    sf.write(buffer, (0.4 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32), rate_hz, format=fmt)
    return buffer.getvalue()


class LocalServer:
    """`files[path] = bytes` serves them, with an ETag from their content (so replacing the bytes
    between runs changes it) and Range/If-Range support; `headers[path]` adds response headers;
    `flaky[path] = n` answers 503 n times first; `truncate_once` paths (files or /drive/uc) send half
    their body once then hang up; `no_range` paths ignore Range headers; `drive[id] = (name, bytes,
    mode)` with mode direct | confirm | private answers /drive/uc. `endless` paths send zeros without
    a Content-Length until the client hangs up (ENDLESS_CAP_BYTES at most); `drip[path] = s` sends
    one byte every s seconds, with a Content-Length it never reaches (DRIP_MAX_S at most)."""

    ENDLESS_CAP_BYTES = 64 << 20
    DRIP_MAX_S = 60.0

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.flaky: dict[str, int] = {}
        self.truncate_once: set[str] = set()
        self.no_range: set[str] = set()
        self.endless: set[str] = set()
        self.drip: dict[str, float] = {}
        self.drive: dict[str, tuple[str, bytes, str]] = {}
        self.hits: Counter = Counter()
        self.range_requests: list[tuple[str, str]] = []
        self.if_range_requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                owner._answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------ request handling

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.hits[path] += 1
        if request.headers.get("Range"):
            self.range_requests.append((path, request.headers["Range"]))
        if request.headers.get("If-Range"):
            self.if_range_requests.append((path, request.headers["If-Range"]))
        if self.flaky.get(path, 0) > 0:
            self.flaky[path] -= 1
            request.send_error(503, "try again")
            return
        if path == "/drive/uc":
            self._drive_page(request, query)
            return
        if path in self.endless or path in self.drip:
            self._stream_forever(request, path)
            return
        if path == "/usercontent/download":
            entry = self.drive.get(query.get("id", ""))
            if entry is None or query.get("confirm") != "t" or query.get("uuid") != DRIVE_UUID:
                request.send_error(403, "missing confirmation")
                return
            self._send(request, path, entry[1], "application/octet-stream",
                       {"Content-Disposition": f'attachment; filename="{entry[0]}"'})
            return
        if path not in self.files:
            request.send_error(404, "Not Found")
            return
        body = self.files[path]
        content_type = self.content_types.get(path, "application/octet-stream")
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        headers = {"ETag": etag, **self.headers.get(path, {})}
        wanted = request.headers.get("Range", "")
        same_file = request.headers.get("If-Range", etag) == etag  # a changed file: the whole of it, with 200
        if wanted.startswith("bytes=") and path not in self.no_range and same_file:
            start = int(wanted[6:].split("-")[0])
            if start >= len(body):
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(body)}")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            request.send_header("Content-Type", content_type)
            request.send_header("Content-Length", str(len(body) - start))
            for key, value in headers.items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(body[start:])
            return
        self._send(request, path, body, content_type, headers)

    def _stream_forever(self, request: BaseHTTPRequestHandler, path: str) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "audio/wav")
        if path in self.drip:
            request.send_header("Content-Length", "1000000")
        request.end_headers()
        request.close_connection = True
        started, sent = time.monotonic(), 0
        try:
            while sent < self.ENDLESS_CAP_BYTES and time.monotonic() - started < self.DRIP_MAX_S:
                block = b"\0" if path in self.drip else b"\0" * 65536
                request.wfile.write(block)
                request.wfile.flush()
                sent += len(block)
                if path in self.drip:
                    time.sleep(self.drip[path])
        except OSError:  # the client hung up
            pass

    def _drive_page(self, request: BaseHTTPRequestHandler, query: dict) -> None:
        entry = self.drive.get(query.get("id", ""))
        if entry is None:
            request.send_error(404, "Not Found")
            return
        name, body, mode = entry
        if mode == "direct":
            self._send(request, "/drive/uc", body, "application/zip" if name.endswith(".zip") else "audio/wav",
                       {"Content-Disposition": f'attachment; filename="{name}"'})
        elif mode == "confirm":
            page = (f'<html><body><p>Google Drive can\'t scan this file for viruses.</p>'
                    f'<form id="download-form" action="{self.base}/usercontent/download" method="get">'
                    f'<input type="submit" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{query["id"]}">'
                    f'<input type="hidden" name="export" value="download">'
                    f'<input type="hidden" name="confirm" value="t">'
                    f'<input type="hidden" name="uuid" value="{DRIVE_UUID}"></form></body></html>')
            self._send(request, "/drive/uc", page.encode(), "text/html; charset=utf-8")
        else:  # private: the sign-in page
            self._send(request, "/drive/uc", b"<!DOCTYPE html><html><body>Sign in to continue</body></html>",
                       "text/html; charset=utf-8")

    def _send(self, request: BaseHTTPRequestHandler, path: str, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        """200 with the whole body; or, once for a `truncate_once` path, half of it and a hang-up."""
        truncated = path in self.truncate_once
        self.truncate_once.discard(path)
        request.send_response(200)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(body[:len(body) // 2] if truncated else body)
        if truncated:
            request.wfile.flush()
            request.close_connection = True


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive holding `members` (name -> data), as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A .tar.gz archive holding `members` (name -> data), as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
