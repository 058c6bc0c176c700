"""Request audio for the HTTP server: bytes in (an encoded file or raw PCM), checked against the limits,
mono float32 at the model's rate out. Torch-free and web-framework-free; every refusal is a `RequestError`.

    decode_encoded(data, max_duration_s, model_rate_hz)                 -> (n,) float32, info
    decode_pcm(data, rate_hz, sample_format, channels, max_duration_s,
               model_rate_hz)                                            -> (n,) float32, info

info = {duration_s, sample_rate_hz, channels} of the audio as sent. Audio is mixed to mono and
resampled block by block as it is read, so a request never holds more than the model-rate result
and one block: a small FLAC of many channels at a high rate cannot make gigabytes of samples.

`keep_s` decodes only the first seconds, what a pad/crop model hears of a file (its clip, plus a few
milliseconds for the resampler), so a long file costs such a model no more than a short one. A decode
of more than LONG_DECODE_SAMPLES takes one of `DecodeSlots`' few slots, or is refused with 503 at
once: long decodes cannot occupy every inference thread, so short requests keep their latency.
"""

from __future__ import annotations

import io
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from earmark.data.audio import PCM_FORMATS, pcm_to_float
from earmark.errors import EarmarkError

MIN_RATE_HZ = 1_000  # below this no classifier here has anything to hear
MAX_RATE_HZ = 384_000  # the highest rate real audio interfaces record
MAX_CHANNELS = 64
DECODE_BLOCK_FRAMES = 65536  # frames read, mixed and resampled at a time
ENCODED_FORMATS = "WAV, FLAC, OGG or MP3"
KEEP_MARGIN_S = 0.05  # decoded past `keep_s`: the resampler's filter needs a little of what follows
LONG_DECODE_SAMPLES = 30 * 48_000  # frames x channels: more (30 s of 48 kHz mono) is a long decode


@dataclass(frozen=True)
class AudioRequest:
    """What a request sent: the body and, for raw PCM, how to read it."""

    data: bytes
    pcm: bool = False
    rate_hz: int | None = None
    sample_format: str = "s16le"
    channels: int = 1


class RequestError(Exception):
    """A request the server refuses: HTTP `status_code`, a short `error`, and a `detail` that says the fix."""

    def __init__(self, status_code: int, error: str, detail: Any = None):
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = error
        self.detail = detail


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost; every field is a CLI option of `earmark serve` or has a safe default."""

    max_upload_bytes: int = 20 * 2**20
    max_duration_s: float = 600.0
    request_timeout_s: float = 30.0
    max_concurrent: int = 4  # requests decoded and predicted at once (threads of the inference pool)
    max_pending: int = 64  # requests in flight before new ones are refused with 503
    max_windows: int = 10_000  # windows one timeline may hold
    # decoded samples (frames x channels) one request may cost, checked from the header before decoding:
    # a few MB of FLAC can hold ten minutes at 384 kHz. Default: 600 s of stereo at 48 kHz
    max_samples: int = 57_600_000
    max_long_decodes: int = 1  # decodes of more than LONG_DECODE_SAMPLES at once; one more gets 503
    upload_timeout_s: float = 10.0  # the body must arrive within this (408 after); uploading holds no slot
    header_timeout_s: float = 10.0  # request line and headers must arrive within this, or the connection closes

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_duration_s", "request_timeout_s", "max_concurrent", "max_pending",
                     "max_windows", "max_samples", "max_long_decodes", "upload_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise EarmarkError(f"serve limit {name} must be a positive number; got {value!r}")

    @classmethod
    def from_options(cls, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
                     request_timeout_s: float = 30.0, **others: float) -> "ServeLimits":
        """The CLI's units: megabytes (MiB) for the upload size."""
        if not max_upload_mb > 0:
            raise EarmarkError(f"--max-upload-mb must be positive; got {max_upload_mb!r}")
        return cls(max_upload_bytes=int(max_upload_mb * 2**20), max_duration_s=float(max_duration_s),
                   request_timeout_s=float(request_timeout_s), **others)


class DecodeSlots:
    """At most `n_slots` long decodes (over LONG_DECODE_SAMPLES) at once, across all inference threads.

    One more is refused with 503 at once rather than queued: a waiting decode would hold an inference
    thread, and the point is that short requests always find one free."""

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self._slots = threading.BoundedSemaphore(n_slots)

    @contextmanager
    def hold(self, n_samples: float) -> Iterator[None]:
        if n_samples <= LONG_DECODE_SAMPLES:
            yield
            return
        if not self._slots.acquire(blocking=False):
            raise RequestError(503, "server busy", f"{self.n_slots} long decode(s) (over {LONG_DECODE_SAMPLES} "
                                                   f"samples) already running; retry shortly, or send a shorter "
                                                   f"excerpt or a lower sample rate")
        try:
            yield
        finally:
            self._slots.release()


def _keep_frames(keep_s: float | None, rate_hz: int) -> float:
    """Frames of the input that hold the first `keep_s` seconds, and the resampler's margin; inf for all."""
    return math.inf if keep_s is None else math.ceil((keep_s + KEEP_MARGIN_S) * rate_hz)


@contextmanager
def _slot(slots: DecodeSlots | None, n_samples: float) -> Iterator[None]:
    if slots is None:
        yield
    else:
        with slots.hold(n_samples):
            yield


def check_rate(rate_hz: int | None, what: str) -> int:
    if rate_hz is None or not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise RequestError(422, "unsupported sample rate",
                           f"{what} is {rate_hz} Hz; allowed: {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz")
    return int(rate_hz)


def _check_channels(channels: int | None, what: str) -> int:
    if channels is None or not 1 <= channels <= MAX_CHANNELS:
        raise RequestError(422, "unsupported channel count", f"{what} is {channels}; allowed: 1 to {MAX_CHANNELS}")
    return int(channels)


def _check_duration(n_frames: int, rate_hz: int, max_duration_s: float, channels: int = 1,
                    max_samples: float = math.inf) -> None:
    duration_s = n_frames / rate_hz
    if duration_s > max_duration_s:
        raise RequestError(413, "audio too long", f"{duration_s:.1f} s of audio; the limit is {max_duration_s:g} s "
                                                  f"(the server's --max-duration-s); send a shorter excerpt")
    if n_frames * channels > max_samples:
        raise RequestError(413, "audio too large to decode",
                           f"{duration_s:.1f} s x {rate_hz} Hz x {channels} channel(s) = {n_frames * channels} "
                           f"samples; the limit is {max_samples:g} per request: send less, or at a lower rate")


def _model_rate_mono(blocks: Iterable[np.ndarray], rate_hz: int, model_rate_hz: int,
                     deadline: float = math.inf) -> tuple[np.ndarray, int]:
    """Blocks (n_i, channels) at `rate_hz` → ((n,) float32 mono at `model_rate_hz`, frames read); stops
    between blocks once `deadline` (time.monotonic) has passed."""
    from earmark.predict.streaming import MonoResampler

    resampler = MonoResampler(rate_hz, model_rate_hz)
    pieces, n_frames = [], 0
    for block in blocks:
        if time.monotonic() > deadline:  # the client has had its 504: stop spending the pool on it
            raise RequestError(504, "request timed out", "decoding abandoned after the request timeout")
        if not np.isfinite(block).all():
            raise RequestError(400, "invalid samples", "the audio contains NaN or infinite samples")
        n_frames += len(block)
        pieces.append(resampler(block))
    pieces.append(resampler(np.zeros((0, 1), dtype=np.float32), last=True))
    if n_frames == 0:
        raise RequestError(400, "empty audio", "the audio holds 0 samples")
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32), n_frames


def _info(n_frames: int, rate_hz: int, channels: int) -> dict[str, Any]:
    return {"duration_s": round(n_frames / rate_hz, 4), "sample_rate_hz": rate_hz, "channels": channels}


def decode_encoded(data: bytes, max_duration_s: float, model_rate_hz: int, max_samples: float = math.inf,
                   deadline: float = math.inf, keep_s: float | None = None,
                   slots: DecodeSlots | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """An encoded file's bytes → (n,) float32 mono at `model_rate_hz`, and what was sent (see the module).

    The header's length and rate are checked before anything is decoded, and at most `max_duration_s`
    (plus one frame) is ever read, so a header that lies about its length cannot exhaust memory; nor more
    than `max_samples` (frames x channels), so a small, highly compressed file cannot cost seconds of CPU;
    with `keep_s`, only its first `keep_s` seconds are read.
    """
    import soundfile as sf

    if not data:
        raise RequestError(400, "empty body", f"send an audio file ({ENCODED_FORMATS}) or raw PCM with rate_hz")
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio_file:
            rate_hz = check_rate(audio_file.samplerate, "the file's sample rate")
            channels = _check_channels(audio_file.channels, "the file's channel count")
            if audio_file.frames > 0:
                _check_duration(audio_file.frames, rate_hz, max_duration_s, channels, max_samples)
            max_frames = int(min(math.ceil(max_duration_s * rate_hz), max_samples // channels))
            kept = _keep_frames(keep_s, rate_hz)
            n_read = int(min(max_frames + 1, kept))  # one frame over the cap shows a header that lied
            with _slot(slots, min(n_read, audio_file.frames if audio_file.frames > 0 else math.inf) * channels):
                blocks = audio_file.blocks(DECODE_BLOCK_FRAMES, frames=n_read, dtype="float32", always_2d=True)
                wave, n_frames = _model_rate_mono(blocks, rate_hz, model_rate_hz, deadline)
            if n_frames >= kept and audio_file.frames > n_frames:  # the rest was not read: its length is the header's
                n_frames = audio_file.frames
    except sf.LibsndfileError as exc:
        raise RequestError(415, "cannot decode the audio",
                           f"{exc.error_string.rstrip('.')}; send {ENCODED_FORMATS}, or raw PCM as "
                           f"application/octet-stream with ?rate_hz=&format=") from None
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise RequestError(400, "corrupt audio", f"decoding failed: {exc}") from None
    _check_duration(n_frames, rate_hz, max_duration_s, channels, max_samples)
    return wave, _info(n_frames, rate_hz, channels)


def decode_pcm(data: bytes, rate_hz: int | None, sample_format: str, channels: int, max_duration_s: float,
               model_rate_hz: int, max_samples: float = math.inf, deadline: float = math.inf,
               keep_s: float | None = None, slots: DecodeSlots | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw interleaved little-endian PCM → (n,) float32 mono at `model_rate_hz`, and what was sent
    (with `keep_s`: its first `keep_s` seconds only)."""
    if sample_format not in PCM_FORMATS:
        raise RequestError(422, "unsupported PCM format",
                           f"format is {sample_format!r}; allowed: {', '.join(PCM_FORMATS)}")
    rate_hz = check_rate(rate_hz, "rate_hz")
    channels = _check_channels(channels, "channels")
    frame_bytes = PCM_FORMATS[sample_format][0].itemsize * channels
    if not data:
        raise RequestError(400, "empty body", "the request body holds no PCM samples")
    if len(data) % frame_bytes:
        raise RequestError(400, "truncated PCM", f"the body has {len(data)} bytes, not a multiple of one frame "
                                                 f"({frame_bytes} bytes: {channels} channel(s) of {sample_format})")
    n_frames = len(data) // frame_bytes
    _check_duration(n_frames, rate_hz, max_duration_s, channels, max_samples)
    step = DECODE_BLOCK_FRAMES * frame_bytes
    n_read = int(min(n_frames, _keep_frames(keep_s, rate_hz)))
    used = data[:n_read * frame_bytes]
    blocks = (pcm_to_float(used[start:start + step], sample_format, channels) for start in range(0, len(used), step))
    with _slot(slots, n_read * channels):
        wave, _ = _model_rate_mono(blocks, rate_hz, model_rate_hz, deadline)
    return wave, _info(n_frames, rate_hz, channels)
