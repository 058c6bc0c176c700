"""The HTTP server: a FastAPI app around one predictor shared by all request threads.

    POST /predict            an audio file (multipart field `file`, or the body) or raw PCM → label, top-k
    POST /predict/timeline   long audio → one row per window, plus the aggregated label
    GET  /labels, /health

Request audio is decoded and checked in `earmark.serve_audio`; the upload cap, body reading and the
JSON error format `{"error": "...", "detail": ...}` live in `earmark.serve_http`; here: the model
service, the routes, request time and requests in flight.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations, and those name
# classes imported inside `create_app`, so they must be evaluated where the routes are defined
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from earmark.errors import EarmarkError
from earmark.predict.files import UNKNOWN, Windows, top_labels, window_probabilities
from earmark.rundir import CHECKPOINTS_DIR, EXPORT_DIR, RunDir
from earmark.serve.audio import AudioRequest, DecodeSlots, RequestError, ServeLimits, decode_encoded, decode_pcm
from earmark.serve.http import MAX_HEADER_BYTES

WINDOW_BATCH = 64  # windows predicted at once: bounds memory for long recordings
KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


@dataclass
class ModelService:
    """The predictor and what /health reports about it; `predict_*` run in the inference threads."""

    predictor: Any  # .labels, .contract, .predict_waves(waves (N, n_samples)) -> (N, C), .reject_threshold
    limits: ServeLimits
    model_name: str
    model_path: str
    started_s: float = field(default_factory=time.monotonic)
    decode_slots: Optional[DecodeSlots] = None  # made from limits.max_long_decodes

    def __post_init__(self) -> None:
        self.decode_slots = self.decode_slots or DecodeSlots(self.limits.max_long_decodes)

    @property
    def reject_threshold(self) -> float:
        return float(getattr(self.predictor, "reject_threshold", 0.0) or 0.0)

    def decode(self, request: AudioRequest, deadline: float = float("inf"),
               keep_s: Optional[float] = None) -> tuple[np.ndarray, dict[str, Any]]:
        """(n,) float32 at the model's rate (only the first `keep_s` seconds when given), and what the
        response says about the input; at most `limits.max_samples` decoded, a long decode only in one
        of the decode slots, and decoding stops once `deadline` has passed."""
        limits, model_rate_hz = self.limits, self.predictor.contract.sample_rate_hz
        if request.pcm:
            return decode_pcm(request.data, request.rate_hz, request.sample_format, request.channels,
                              limits.max_duration_s, model_rate_hz, limits.max_samples, deadline, keep_s,
                              self.decode_slots)
        return decode_encoded(request.data, limits.max_duration_s, model_rate_hz, limits.max_samples, deadline,
                              keep_s, self.decode_slots)

    def _window_probabilities(self, wave: np.ndarray, windows: Windows, deadline: float) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
        """(n_windows,) start samples and (n_windows, C) probabilities of the windows over `wave (n,)`; refuses
        more than `limits.max_windows` windows, and stops between batches once `deadline` has passed."""
        from earmark.data.audio import chunk_starts

        n_windows = len(chunk_starts(len(wave), windows.window, windows.hop))
        if n_windows > self.limits.max_windows:
            raise RequestError(422, "too many windows", f"{n_windows} windows; at most {self.limits.max_windows} "
                                                        f"per request: use a larger hop_s or a shorter excerpt")

        def check_deadline() -> None:
            if time.monotonic() > deadline:  # the client has had its 504; stop spending the pool on it
                raise RequestError(504, "request timed out", "abandoned after the request timeout")

        starts, probabilities = window_probabilities(self.predictor, wave, windows, WINDOW_BATCH,
                                                     before_batch=check_deadline)
        return starts, probabilities.astype(np.float64)

    def _top(self, probabilities: np.ndarray, top_k: int) -> dict[str, Any]:
        """(C,) probabilities → label ('unknown' below the reject threshold), probability, top_k."""
        labels = self.predictor.labels
        order = np.argsort(-probabilities)[:max(1, min(top_k, len(labels)))]
        (label,), _ = top_labels(probabilities[None, :], labels, self.reject_threshold)
        best = float(probabilities[order[0]])
        return {"label": label, "probability": round(best, 6),
                "rejected": bool(self.reject_threshold > 0 and best < self.reject_threshold),
                "top_k": [{"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in order]}

    def predict(self, request: AudioRequest, top_k: int, deadline: float = float("inf")) -> dict[str, Any]:
        """One label for the whole input, fitted to the model's clip as `earmark predict` does: padded or
        cropped, or (a model trained with data.clip=chunk) the mean over its windows."""
        from earmark.data.audio import fit_length

        contract = self.predictor.contract
        windows = Windows.for_contract(contract, None, None)
        # a pad/crop model hears the first clip of a file: decode only that
        wave, info = self.decode(request, deadline, keep_s=contract.duration_s if windows is None else None)
        if windows is None:
            clip = fit_length(wave, contract.n_samples, contract.clip)  # (1, n_samples)
            probabilities = np.asarray(self.predictor.predict_waves(clip), dtype=np.float64)
        else:
            _, probabilities = self._window_probabilities(wave, windows, deadline)
        return {**self._top(probabilities.mean(axis=0), top_k), **info, "n_windows": len(probabilities),
                "model": self.model_name}

    def timeline(self, request: AudioRequest, top_k: int, chunk_s: Optional[float], hop_s: Optional[float],
                 deadline: float = float("inf")) -> dict[str, Any]:
        """A row per window of `chunk_s` every `hop_s` (default: the model's clip, and its chunk hop), and
        the label of the whole input from the mean of the windows' probabilities."""
        contract = self.predictor.contract
        if chunk_s is None:
            chunk_s, hop_s = contract.duration_s, hop_s or contract.chunk_hop_s
        hop_s = hop_s or chunk_s
        try:
            windows = Windows.for_contract(contract, chunk_s, hop_s)
        except EarmarkError as exc:
            raise RequestError(422, "invalid window", str(exc)) from None
        wave, info = self.decode(request, deadline)
        starts, probabilities = self._window_probabilities(wave, windows, deadline)
        names, top = top_labels(probabilities, self.predictor.labels, self.reject_threshold)
        rows = []
        for start, name, probability in zip(starts, names, top):
            start_s, end_s = windows.row_times(int(start), len(wave))
            rows.append({"start_s": start_s, "end_s": end_s, "label": name,
                         "probability": round(float(probability), 6)})
        return {**self._top(probabilities.mean(axis=0), top_k), **info, "chunk_s": chunk_s, "hop_s": hop_s,
                "n_windows": len(rows), "windows": rows, "model": self.model_name}

    def health(self) -> dict[str, Any]:
        contract = self.predictor.contract
        limits = self.limits
        return {"status": "ok", "model": self.model_name, "model_path": self.model_path,
                "backend": "onnx" if self.model_path.endswith(".onnx") else "torch",
                "sample_rate_hz": contract.sample_rate_hz, "clip_s": contract.duration_s, "clip": contract.clip,
                "n_labels": len(self.predictor.labels), "reject_threshold": self.reject_threshold,
                "uptime_s": round(time.monotonic() - self.started_s, 3),
                "limits": {"max_upload_bytes": limits.max_upload_bytes, "max_duration_s": limits.max_duration_s,
                           "request_timeout_s": limits.request_timeout_s, "max_concurrent": limits.max_concurrent,
                           "max_pending": limits.max_pending, "max_windows": limits.max_windows,
                           "max_samples": limits.max_samples, "max_long_decodes": limits.max_long_decodes,
                           "upload_timeout_s": limits.upload_timeout_s,
                           "header_timeout_s": limits.header_timeout_s}}


def load_model(model: str | Path, threads: Optional[int] = None, trust_checkpoint: bool = False):
    """A run directory or .ckpt (torch) or a model.onnx (onnxruntime) → its predictor."""
    from earmark.predict.torch_predictor import load_predictor

    model = Path(model)
    if not model.exists():
        raise EarmarkError(f"model not found: {model} (give a run directory such as runs/<name>, a .ckpt or a "
                           f"model.onnx from `earmark export`)")
    # a run is served with its checkpoint, as named: the export's fast start matters little to a server
    backend = "auto" if model.suffix.lower() == ".onnx" else "torch"
    return load_predictor(model, threads=threads, trust_checkpoint=trust_checkpoint, backend=backend)


def create_app(predictor, limits: ServeLimits = ServeLimits(), *, model_name: str = "model",
               model_path: str = ""):
    """The FastAPI app for `predictor` (anything with .labels, .contract and .predict_waves)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Query, Request

    from earmark.serve.http import UploadLimit, install_error_handlers, read_audio_request

    service = ModelService(predictor, limits, model_name, model_path)
    executor = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="earmark-inference")
    in_flight = [0]  # requests between arrival and response; only the event loop's thread touches it

    @asynccontextmanager
    async def lifespan(_app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="earmark", summary=f"audio classifier {model_name}", lifespan=lifespan)
    app.add_middleware(UploadLimit, max_bytes=limits.max_upload_bytes)
    install_error_handlers(app)
    app.state.service = service

    async def run_limited(request: Request, job: Callable[[AudioRequest, float], dict], *pcm_query) -> dict:
        """Read the body (within upload_timeout_s), then decode and predict in the inference pool within
        request_timeout_s.

        Only a request whose body has arrived counts against max_pending: slow uploads hold no slot, so
        clients dribbling bytes cannot make good requests wait or get 503; each is cut off with 408.
        A request counts as in flight until its work has really finished: after a 504 the work already
        running goes on (it stops at its next decode block or window batch), and it keeps its place."""
        try:
            audio = await asyncio.wait_for(read_audio_request(request, *pcm_query), limits.upload_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(408, "upload too slow", f"the body did not arrive within "
                                                       f"{limits.upload_timeout_s:g} s") from None
        if in_flight[0] >= limits.max_pending:
            raise RequestError(503, "server busy", f"{in_flight[0]} requests in flight; retry shortly")
        in_flight[0] += 1
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + limits.request_timeout_s
        work = None

        def release() -> None:
            in_flight[0] -= 1

        try:
            work = executor.submit(job, audio, deadline)
            work.add_done_callback(lambda _: _call_soon(loop, release))
            try:  # on timeout the waiting is cancelled, and with it the work if it has not started
                return await asyncio.wait_for(asyncio.wrap_future(work), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise RequestError(504, "request timed out", f"decoding and prediction took longer than "
                                   f"{limits.request_timeout_s:g} s (the server's --request-timeout-s)") from None
        finally:
            if work is None:
                release()

    @app.post("/predict", summary="label one audio file or PCM buffer")
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=1000), rate_hz: Optional[int] = None,
                      sample_format: Optional[str] = Query(None, alias="format"),
                      channels: Optional[int] = None) -> dict:
        return await run_limited(request, lambda audio, deadline: service.predict(audio, top_k, deadline), rate_hz,
                                 sample_format, channels)

    @app.post("/predict/timeline", summary="label each window of long audio")
    async def timeline(request: Request, top_k: int = Query(3, ge=1, le=1000),
                       chunk_s: Optional[float] = Query(None, gt=0, le=3600),
                       hop_s: Optional[float] = Query(None, gt=0, le=3600), rate_hz: Optional[int] = None,
                       sample_format: Optional[str] = Query(None, alias="format"),
                       channels: Optional[int] = None) -> dict:
        return await run_limited(request, lambda audio, deadline: service.timeline(audio, top_k, chunk_s, hop_s,
                                                                                   deadline),
                                 rate_hz, sample_format, channels)

    @app.get("/labels", summary="the labels the model predicts")
    async def labels() -> dict:
        return {"labels": list(predictor.labels), "reject_label": UNKNOWN if service.reject_threshold else None}

    @app.get("/health", summary="model, input contract, limits, uptime")
    async def health() -> dict:
        return service.health()

    return app


def _call_soon(loop, callback) -> None:
    """Run `callback` on the event loop's thread, from any thread; nothing once the loop has closed."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def model_name(model: str | Path) -> str:
    """runs/tones → 'tones'; runs/tones/model.onnx and runs/tones/export/model.onnx → 'tones/model.onnx';
    runs/tones/checkpoints/best.ckpt → 'tones/best.ckpt': the run's name, then the file served (a file
    outside a run: its folder's name, then the file)."""
    model = Path(model).resolve()
    if model.is_dir():
        return model.name
    in_run = model.parent.name == CHECKPOINTS_DIR or (model.parent.name == EXPORT_DIR
                                                      and RunDir(model.parent.parent).is_run())
    run_dir = model.parent.parent if in_run else model.parent
    return f"{run_dir.name}/{model.name}"


def create_app_for(model: str | Path, limits: ServeLimits, threads: Optional[int] = None,
                   trust_checkpoint: bool = False):
    """The app serving the run, checkpoint or .onnx at `model`."""
    return create_app(load_model(model, threads, trust_checkpoint), limits, model_name=model_name(model),
                      model_path=str(model))


def create_app_from_options(model: str | Path, *, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
                            request_timeout_s: float = 30.0, threads: Optional[int] = None,
                            trust_checkpoint: bool = False):
    """`earmark.api.create_app`: the app serving `model`, its limits given in the CLI's units."""
    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s)
    return create_app_for(model, limits, threads, trust_checkpoint)


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 20.0,
          max_duration_s: float = 600.0, request_timeout_s: float = 30.0, threads: Optional[int] = None,
          log_level: str = "info", trust_checkpoint: bool = False, max_samples: int = 57_600_000,
          upload_timeout_s: float = 10.0, header_timeout_s: float = 10.0, max_long_decodes: int = 1) -> None:
    """`earmark.api.serve`: serve `model` with uvicorn until interrupted, its limits given in the CLI's units."""
    limits = ServeLimits.from_options(max_upload_mb, max_duration_s, request_timeout_s, max_samples=max_samples,
                                      upload_timeout_s=upload_timeout_s, header_timeout_s=header_timeout_s,
                                      max_long_decodes=max_long_decodes)
    run_server(model, host, port, limits, threads=threads, log_level=log_level, trust_checkpoint=trust_checkpoint)


def check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except OSError as exc:
        raise EarmarkError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port or --host") from None


def run_server(model: str | Path, host: str, port: int, limits: ServeLimits, threads: Optional[int] = None,
               log_level: str = "info", trust_checkpoint: bool = False) -> None:
    """Load the model and serve it with uvicorn until interrupted."""
    import uvicorn

    if log_level not in LOG_LEVELS:
        raise EarmarkError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {log_level!r}")
    check_port_free(host, port)
    app = create_app_for(model, limits, threads, trust_checkpoint)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                http=header_deadline_protocol(limits.header_timeout_s), timeout_keep_alive=KEEP_ALIVE_S,
                h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def header_deadline_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all arrived
    within `header_timeout_s` of it opening (or of its previous response). uvicorn's own keep-alive timer
    is reset by every byte, so a client trickling a header a byte at a time would hold it open forever;
    this deadline is not. It also closes a connection still sending a body after its 408."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            waiting_since = self.cycle  # a new request's headers replace the cycle

            def expire() -> None:
                if self.cycle is waiting_since and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(header_timeout_s, expire)

    return HeaderDeadline
