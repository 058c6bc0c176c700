"""Any downloaded audio or video to mono WAV at one rate, optionally cut into clips.

soundfile reads WAV/FLAC/OGG/MP3 itself; other containers (mp4, m4a, webm, ...) go
through ffmpeg when it is installed. `clip_bounds` is pure: sample counts in, sample
ranges out.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np

from earmark.data.audio import AudioError, chunk_starts, decode, extension, resample, to_mono
from earmark.errors import EarmarkError
from earmark.fetch.report import FetchError
from earmark.files import AUDIO_EXTENSIONS, atomic_write_bytes

CONTAINER_FORMATS = (".m4a", ".mp4", ".webm", ".mkv", ".mov", ".aac", ".opus", ".oga", ".wma", ".avi", ".3gp",
                     ".flv", ".mka", ".aiff", ".aif")
FFMPEG_INSTALL = ("install ffmpeg and run again (Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: brew install "
                  "ffmpeg; conda: conda install -c conda-forge ffmpeg; Windows: winget install ffmpeg)")
WAV_SUBTYPE = "PCM_16"


def is_media(path: str | os.PathLike) -> bool:
    return extension(path) in AUDIO_EXTENSIONS + CONTAINER_FORMATS


def ffmpeg_path() -> Optional[str]:
    return shutil.which("ffmpeg")


def read_mono(path: Path, rate_hz: int) -> np.ndarray:
    """The file as `(n_samples,)` float32 mono at `rate_hz`."""
    if extension(path) in AUDIO_EXTENSIONS:
        try:
            audio, file_rate_hz = decode(path)
            return resample(to_mono(audio), file_rate_hz, rate_hz)
        except AudioError as exc:
            if ffmpeg_path() is None:
                raise FetchError(f"cannot decode {path.name}: {exc.reason}") from None
    return _ffmpeg_decode(path, rate_hz)  # containers, and what soundfile could not read


def _ffmpeg_decode(path: Path, rate_hz: int) -> np.ndarray:
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        raise FetchError(f"reading {extension(path) or 'this file'} ({path.name}) needs ffmpeg, which was not "
                         f"found: {FFMPEG_INSTALL}")
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate_hz),
               "-f", "f32le", "-"]
    result = subprocess.run(command, capture_output=True)
    wave = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    if result.returncode != 0 or wave.size == 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FetchError(f"ffmpeg cannot read {path.name}: {lines[-1] if lines else 'no audio stream'}")
    return wave


def clip_bounds(n_samples: int, rate_hz: int, start_s: Optional[float], end_s: Optional[float],
                clip_s: Optional[float]) -> list[tuple[int, int]]:
    """Sample ranges `[(first, stop), ...]` of the segment start_s..end_s, cut into clip_s clips.

    The rule of `data.clip: chunk`: a segment no longer than one clip is one (shorter) clip, which
    `earmark prepare` pads; of a longer segment, a final partial clip is kept when it holds at least
    half a clip (MIN_PARTIAL_FRACTION). An end past the audio is clipped to the audio.
    """
    first = int(round((start_s or 0.0) * rate_hz))
    stop = n_samples if end_s is None else min(n_samples, int(round(end_s * rate_hz)))
    if first >= n_samples:
        raise FetchError(f"start_s {start_s:g} is past the end of the audio ({n_samples / rate_hz:.2f} s)")
    if first >= stop:
        raise FetchError(f"the segment {start_s or 0:g}–{end_s:g} s holds no audio")
    if clip_s is None:
        return [(first, stop)]
    clip_samples = max(1, int(round(clip_s * rate_hz)))
    return [(first + int(start), min(first + int(start) + clip_samples, stop))
            for start in chunk_starts(stop - first, clip_samples, clip_samples)]


def write_wav(path: Path, wave: np.ndarray, rate_hz: int) -> bool:
    """Write `(n_samples,)` as 16-bit mono WAV; an existing file is kept (returns False), never overwritten.

    A full disk or an unwritable folder is an EarmarkError naming the file.
    """
    import soundfile as sf

    if path.exists():
        return False
    encoded = io.BytesIO()  # encoded in memory: the only disk write is the atomic one, with a clear error
    sf.write(encoded, np.clip(wave, -1.0, 1.0), rate_hz, subtype=WAV_SUBTYPE, format="WAV")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EarmarkError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    atomic_write_bytes(path, encoded.getvalue())
    return True
