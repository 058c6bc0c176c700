"""Request audio for the HTTP server: bytes in (an encoded file or raw PCM), checked against the limits,
mono float32 at the model's rate out. Torch-free and web-framework-free; every refusal is a `RequestError`.

    decode_encoded(data, max_duration_s)                     -> (n_frames, n_channels) float32, rate_hz
    decode_pcm(data, rate_hz, sample_format, channels, ...)  -> (n_frames, n_channels) float32, rate_hz
    to_model_wave(samples, rate_hz, model_rate_hz)           -> (n,) float32
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from earmark.errors import EarmarkError

MIN_RATE_HZ = 1_000  # below this no classifier here has anything to hear
MAX_RATE_HZ = 384_000  # the highest rate real audio interfaces record
MAX_CHANNELS = 64
PCM_FORMATS = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2147483648.0), "f32le": ("<f4", 1.0)}
ENCODED_FORMATS = "WAV, FLAC, OGG or MP3"


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

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost; every field is a CLI option of `earmark serve` or has a safe default."""

    max_upload_bytes: int = 20 * 2**20
    max_duration_s: float = 600.0
    request_timeout_s: float = 30.0
    max_concurrent: int = 4  # requests decoded and predicted at once (threads of the inference pool)
    max_pending: int = 64  # requests in flight before new ones are refused with 503
    max_windows: int = 10_000  # windows one timeline may hold

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_duration_s", "request_timeout_s", "max_concurrent", "max_pending",
                     "max_windows"):
            value = getattr(self, name)
            if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise EarmarkError(f"serve limit {name} must be a positive number; got {value!r}")

    @classmethod
    def from_options(cls, max_upload_mb: float = 20.0, max_duration_s: float = 600.0,
                     request_timeout_s: float = 30.0, **others: int) -> "ServeLimits":
        """The CLI's units: megabytes (MiB) for the upload size."""
        if not max_upload_mb > 0:
            raise EarmarkError(f"--max-upload-mb must be positive; got {max_upload_mb!r}")
        return cls(max_upload_bytes=int(max_upload_mb * 2**20), max_duration_s=float(max_duration_s),
                   request_timeout_s=float(request_timeout_s), **others)


def check_rate(rate_hz: int | None, what: str) -> int:
    if rate_hz is None or not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
        raise RequestError(422, "unsupported sample rate",
                           f"{what} is {rate_hz} Hz; allowed: {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz")
    return int(rate_hz)


def _check_channels(channels: int | None, what: str) -> int:
    if channels is None or not 1 <= channels <= MAX_CHANNELS:
        raise RequestError(422, "unsupported channel count", f"{what} is {channels}; allowed: 1 to {MAX_CHANNELS}")
    return int(channels)


def _check_duration(n_frames: int, rate_hz: int, max_duration_s: float) -> None:
    duration_s = n_frames / rate_hz
    if duration_s > max_duration_s:
        raise RequestError(413, "audio too long", f"{duration_s:.1f} s of audio; the limit is {max_duration_s:g} s "
                                                  f"(the server's --max-duration-s); send a shorter excerpt")


def _check_samples(samples: np.ndarray) -> np.ndarray:
    if samples.shape[0] == 0:
        raise RequestError(400, "empty audio", "the audio holds 0 samples")
    if not np.isfinite(samples).all():
        raise RequestError(400, "invalid samples", "the audio contains NaN or infinite samples")
    return samples


def decode_encoded(data: bytes, max_duration_s: float) -> tuple[np.ndarray, int]:
    """An encoded file's bytes → (n_frames, n_channels) float32 and its rate in Hz.

    The header's length and rate are checked before anything is decoded, and at most `max_duration_s`
    (plus one frame) is ever read, so a header that lies about its length cannot exhaust memory.
    """
    import soundfile as sf

    if not data:
        raise RequestError(400, "empty body", f"send an audio file ({ENCODED_FORMATS}) or raw PCM with rate_hz")
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio_file:
            rate_hz = check_rate(audio_file.samplerate, "the file's sample rate")
            _check_channels(audio_file.channels, "the file's channel count")
            if audio_file.frames > 0:
                _check_duration(audio_file.frames, rate_hz, max_duration_s)
            max_frames = int(math.ceil(max_duration_s * rate_hz))
            samples = audio_file.read(frames=max_frames + 1, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise RequestError(415, "cannot decode the audio",
                           f"{exc.error_string.rstrip('.')}; send {ENCODED_FORMATS}, or raw PCM as "
                           f"application/octet-stream with ?rate_hz=&format=") from None
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise RequestError(400, "corrupt audio", f"decoding failed: {exc}") from None
    _check_duration(samples.shape[0], rate_hz, max_duration_s)
    return _check_samples(samples), rate_hz


def decode_pcm(data: bytes, rate_hz: int | None, sample_format: str, channels: int,
               max_duration_s: float) -> tuple[np.ndarray, int]:
    """Raw interleaved little-endian PCM → (n_frames, channels) float32 in [-1, 1] and `rate_hz`."""
    if sample_format not in PCM_FORMATS:
        raise RequestError(422, "unsupported PCM format",
                           f"format is {sample_format!r}; allowed: {', '.join(PCM_FORMATS)}")
    rate_hz = check_rate(rate_hz, "rate_hz")
    channels = _check_channels(channels, "channels")
    dtype, full_scale = PCM_FORMATS[sample_format]
    frame_bytes = np.dtype(dtype).itemsize * channels
    if not data:
        raise RequestError(400, "empty body", "the request body holds no PCM samples")
    if len(data) % frame_bytes:
        raise RequestError(400, "truncated PCM", f"the body has {len(data)} bytes, not a multiple of one frame "
                                                 f"({frame_bytes} bytes: {channels} channel(s) of {sample_format})")
    n_frames = len(data) // frame_bytes
    _check_duration(n_frames, rate_hz, max_duration_s)
    samples = np.frombuffer(data, dtype=dtype).reshape(n_frames, channels)  # (n_frames, channels)
    return _check_samples(samples.astype(np.float32) / np.float32(full_scale)), rate_hz


def to_model_wave(samples: np.ndarray, rate_hz: int, model_rate_hz: int) -> np.ndarray:
    """(n_frames, n_channels) at `rate_hz` → (n,) float32 mono at the model's rate."""
    from earmark.data.audio import resample, to_mono

    return np.ascontiguousarray(resample(to_mono(samples), rate_hz, model_rate_hz), dtype=np.float32)

