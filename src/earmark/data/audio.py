"""Audio front door: decode a file, mix to mono, resample, and cut it to fixed-length clips.

Pure functions in the style of whisper's audio.py: arrays in, arrays out, no globals.
Only `decode` and `load_segments` touch the disk. Shapes:

    decode(path)            -> (n_samples, n_channels) float32, rate
    to_mono(x)              -> (n_samples,) float32
    resample(x, a, b)       -> (about n_samples * b / a,) float32
    fit_length(x, n, mode)  -> (n_segments, n) float32
"""

from __future__ import annotations

import os
import stat

import numpy as np
import soundfile as sf
import soxr

from earmark.config import DataConfig
from earmark.files import AUDIO_EXTENSIONS

CLIP_MODES = ("pad", "crop", "chunk")
RESAMPLE_QUALITY = "HQ"  # soxr's high quality; "VHQ" is ~2x slower for no audible gain here
MIN_PARTIAL_FRACTION = 0.5  # chunk mode keeps a final partial window holding at least this much audio
# raw little-endian PCM a server or a stream may receive: numpy dtype and full scale
PCM_FORMATS = {"s16le": (np.dtype("<i2"), 32768.0), "s32le": (np.dtype("<i4"), 2147483648.0),
               "f32le": (np.dtype("<f4"), 1.0)}


class AudioError(Exception):
    """A file that cannot become clips; `reason` is the short text of the bad-file report.

    `info` holds what was learned about the file before it failed (e.g. its rate when too short).
    """

    def __init__(self, reason: str, info: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.info = info or {}


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC/OGG/MP3 file as float32 `(n_samples, n_channels)` (nominally in [-1, 1]) and its rate in Hz."""
    path = os.fspath(path)  # os.path, not pathlib: this runs for every file of a data set
    if not os.path.isfile(path):
        raise AudioError(_not_a_file(path))
    suffix = extension(path)
    if suffix not in AUDIO_EXTENSIONS:
        shown = suffix or "(no extension)"
        raise AudioError(f"unsupported format '{shown}' (supported: {', '.join(AUDIO_EXTENSIONS)})")
    try:
        audio, rate_hz = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise AudioError(f"cannot decode: {_decode_failure(path, suffix, exc.error_string)}") from None
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"cannot decode: {exc}") from None
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise AudioError("empty: 0 samples")
    if not np.isfinite(audio).all():
        raise AudioError("contains NaN or infinite samples")
    return audio, int(rate_hz)


def _not_a_file(path: str) -> str:
    """Why `path` (not a regular file) cannot be read: missing, a link to nothing, a folder, a FIFO, ..."""
    if not os.path.lexists(path):
        return "file not found"
    if not os.path.exists(path):
        return "dangling symlink (the target does not exist)"
    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "special file")
    return f"{kind}, not a regular file"


def _decode_failure(path: str, suffix: str, error: str) -> str:
    """libsndfile's reason, said plainly: its "possibly a pipe?" means bytes it cannot read as audio."""
    not_audio = "possibly a pipe" in error or "not recognised" in error.lower()
    if not_audio and os.path.isfile(path):
        return (f"{os.path.basename(path)} is not a decodable audio file (its {os.path.getsize(path)} bytes "
                f"are no {suffix.lstrip('.').upper()} audio libsndfile can read)")
    return f"{os.path.basename(path)}: {error}"


def extension(path: str | os.PathLike) -> str:
    """'.../Dog.WAV' -> '.wav'."""
    return os.path.splitext(os.fspath(path))[1].lower()


def pcm_to_float(data: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Whole frames of interleaved little-endian PCM (`PCM_FORMATS`) -> `(n_frames, channels)` float32 in [-1, 1]."""
    dtype, full_scale = PCM_FORMATS[sample_format]
    return (np.frombuffer(data, dtype=dtype).astype(np.float32) / np.float32(full_scale)).reshape(-1, channels)


def to_mono(x: np.ndarray) -> np.ndarray:
    """`(n_samples, n_channels)` -> `(n_samples,)`, the mean over channels; 1-D input passes through."""
    if x.ndim == 1:
        return x
    return x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, rate_in_hz: int, rate_out_hz: int) -> np.ndarray:
    """Resample `(n_samples,)` or `(n_samples, n_channels)` along axis 0 with soxr; a no-op for equal rates."""
    if rate_in_hz == rate_out_hz:
        return x
    return soxr.resample(x, rate_in_hz, rate_out_hz, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def chunk_starts(n_total: int, n_samples: int, hop_samples: int) -> np.ndarray:
    """Start sample of each chunk window over `n_total` samples (see `fit_length`'s chunk rule)."""
    if n_total <= n_samples:
        return np.zeros(1, dtype=np.int64)
    n_full = (n_total - n_samples) // hop_samples + 1
    starts = np.arange(n_full, dtype=np.int64) * hop_samples
    next_start = n_full * hop_samples
    if next_start < n_total and n_total - next_start >= MIN_PARTIAL_FRACTION * n_samples:
        starts = np.append(starts, next_start)
    return starts


def fit_length(x: np.ndarray, n_samples: int, mode: str, hop_samples: int | None = None) -> np.ndarray:
    """Cut mono audio `(n,)` into fixed-length clips `(n_segments, n_samples)`.

    pad:   one clip; zero-padded at the end, or cut to the first n_samples.
    crop:  the same as pad (short files are padded, long ones keep their start).
    chunk: windows of n_samples every hop_samples (default n_samples). A final partial
           window is kept, zero-padded, when it holds at least half a window; a file
           shorter than one window gives exactly one padded clip.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"data.clip must be one of {', '.join(CLIP_MODES)}; got {mode!r}")
    if n_samples < 1:
        raise ValueError(f"clip length must be at least one sample; got {n_samples}")
    if mode == "chunk":
        hop_samples = n_samples if hop_samples is None else hop_samples
        if hop_samples < 1:
            raise ValueError(f"chunk hop must be at least one sample; got {hop_samples}")
        starts = chunk_starts(len(x), n_samples, hop_samples)
    else:
        starts = np.zeros(1, dtype=np.int64)
    clips = np.zeros((len(starts), n_samples), dtype=np.float32)  # (n_segments, n_samples)
    for i, start in enumerate(starts):
        piece = x[start : start + n_samples]
        clips[i, : len(piece)] = piece
    return clips


def clip_samples(data: DataConfig) -> tuple[int, int]:
    """(samples per clip, samples between chunk starts) at the target rate."""
    n_samples = max(1, round(data.duration_s * data.sample_rate_hz))
    hop_s = data.chunk_hop_s if data.chunk_hop_s is not None else data.duration_s
    hop_samples = max(1, round(hop_s * data.sample_rate_hz))
    return n_samples, hop_samples


def load_segments(path: str | os.PathLike, data: DataConfig) -> tuple[np.ndarray, dict]:
    """Decode one file into clips `(n_segments, n_samples)` float32 per `data`, plus per-file info.

    The info dict: orig_sample_rate_hz, channels, duration_s (of the original file), format
    (the lower-case extension). Raises AudioError with the report's reason.
    """
    audio, rate_hz = decode(path)  # (n, channels)
    info = {
        "orig_sample_rate_hz": rate_hz,
        "channels": int(audio.shape[1]),
        "duration_s": audio.shape[0] / rate_hz,
        "format": extension(path),
    }
    if info["duration_s"] < data.min_duration_s:
        raise AudioError(f"too short: {info['duration_s']:.3f} s < data.min_duration_s {data.min_duration_s:g}", info)
    mono = resample(to_mono(audio), rate_hz, data.sample_rate_hz)  # (n * sample_rate_hz / rate_hz,)
    n_samples, hop_samples = clip_samples(data)
    return fit_length(mono, n_samples, data.clip, hop_samples), info
