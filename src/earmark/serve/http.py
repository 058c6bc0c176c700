"""The HTTP side of `earmark serve`: the upload cap, reading a request's audio, and one JSON error format.

Every refusal is `{"error": "<short>", "detail": <what was wrong and the fix>}` with a 4xx status
(503/504 when the server is busy or a request runs out of time); no traceback ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from earmark.serve.audio import AudioRequest, RequestError

LOG = logging.getLogger("earmark.serve")
SERVER_LOG = logging.getLogger("uvicorn.error")  # uvicorn's own log: shown from --log-level info
FILE_FIELD = "file"
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; larger is refused, however the bytes arrive


def error_response(status_code: int, error: str, detail: Any = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": error, "detail": detail}, status_code=status_code)


def header_bytes(scope) -> int:
    """The size of a request's line and headers as sent (`METHOD target HTTP/1.1`, `name: value` lines)."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"") + 1
    return len(scope["method"]) + target + 11 + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class UploadLimit:
    """ASGI middleware: refuses a body over `max_bytes` with 413 before reading it when Content-Length
    says so, and otherwise stops reading (RequestError 413) as soon as the streamed body passes the cap.

    It also refuses (431) a request line and headers over `max_header_bytes`: uvicorn's h11 option
    bounds only headers that arrive in pieces, not ones sent in one write."""

    def __init__(self, app, max_bytes: int, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    def _too_large(self, size: str) -> RequestError:
        return RequestError(413, "upload too large", f"{size}; the limit is {self.max_bytes} bytes "
                                                     f"({self.max_bytes / 2**20:g} MiB, the server's --max-upload-mb)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (size := header_bytes(scope)) > self.max_header_bytes:
            await error_response(431, "request headers too large",
                                 f"{size} bytes of request line and headers; the limit is "
                                 f"{self.max_header_bytes}")(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                declared_bytes = -1
            if declared_bytes < 0:
                await error_response(400, "bad Content-Length", declared.decode("latin-1"))(scope, receive, send)
                return
            if declared_bytes > self.max_bytes:
                refusal = self._too_large(f"Content-Length is {declared_bytes} bytes")
                await error_response(refusal.status_code, refusal.error, refusal.detail)(scope, receive, send)
                return
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"the body passed {self.max_bytes} bytes")
            return message

        await self.app(scope, capped_receive, send)


def install_error_handlers(app) -> None:
    """Every error the app can meet becomes the JSON error format."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def refused(_request, exc: RequestError):
        return error_response(exc.status_code, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(part) for part in problem.get("loc", ())[1:]) or "request",
                     "problem": problem.get("msg", "invalid")} for problem in exc.errors()]
        return error_response(422, "invalid request parameters", problems)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        LOG.exception("unexpected error while serving a request")
        return error_response(500, "internal server error", type(exc).__name__)


async def read_audio_request(request, rate_hz: Optional[int], sample_format: Optional[str],
                             channels: Optional[int]) -> AudioRequest:
    """The audio a request carries:

    - multipart/form-data: an encoded file (WAV/FLAC/OGG/MP3) in the field `file`;
    - application/octet-stream with ?rate_hz= (and format=s16le|s32le|f32le, channels=1): raw PCM;
    - application/octet-stream without rate_hz, or audio/*: an encoded file as the whole body.

    A client that goes away mid-upload is logged in one line (uvicorn's log, from --log-level info).
    """
    from starlette.requests import ClientDisconnect

    try:
        return await _read_audio(request, rate_hz, sample_format, channels)
    except ClientDisconnect:
        SERVER_LOG.info("%s %s: the client disconnected during the upload", request.method, request.url.path)
        raise RequestError(400, "client disconnected", "the body did not arrive in full") from None


async def _read_audio(request, rate_hz: Optional[int], sample_format: Optional[str],
                      channels: Optional[int]) -> AudioRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    pcm_asked = rate_hz is not None or sample_format is not None or channels is not None
    if content_type == "multipart/form-data":
        if pcm_asked:
            raise RequestError(422, "PCM parameters with a file upload",
                               "rate_hz/format/channels describe raw PCM sent as application/octet-stream; "
                               "an uploaded file carries its own")
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get(FILE_FIELD)
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "missing file field", f"send the audio as the multipart field '{FILE_FIELD}', "
                                                          f"e.g. curl -F {FILE_FIELD}=@clip.wav")
        return AudioRequest(await upload.read())
    if content_type == "application/octet-stream" or content_type.startswith("audio/"):
        data = await request.body()
        if not pcm_asked:
            return AudioRequest(data)
        if rate_hz is None:
            raise RequestError(422, "missing rate_hz", "raw PCM needs ?rate_hz= (and format=s16le|s32le|f32le, "
                                                       "channels=1 unless given)")
        return AudioRequest(data, pcm=True, rate_hz=rate_hz, sample_format=sample_format or "s16le",
                            channels=1 if channels is None else channels)
    shown = content_type or "(none)"
    raise RequestError(415, "unsupported Content-Type", f"got {shown}; send multipart/form-data with a '{FILE_FIELD}' "
                                                        f"field, audio/* or application/octet-stream")
