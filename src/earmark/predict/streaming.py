"""Streaming prediction: audio read block by block, one (start_s, end_s, label, probability) per window.

Memory stays bounded however long the input is: blocks are mixed to mono and resampled
incrementally (`soxr.ResampleStream`), and only the samples of the window being filled are kept.
Windows follow the offline rule (`earmark.data.audio.chunk_starts`): `chunk_s` long every
`hop_s`, a final partial window kept (zero-padded) when it holds at least half a window, and a
recording shorter than one window gives one padded window; so a stream's rows equal the
`--chunk-s/--hop-s` timeline of the same file.

Sources: an audio file (`file_blocks`), standard input (`stdin_blocks`: a WAV stream, or raw
little-endian PCM with the rate and channels given), or any iterable of numpy blocks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from earmark.data.audio import MIN_PARTIAL_FRACTION, PCM_FORMATS, RESAMPLE_QUALITY, pcm_to_float
from earmark.errors import EarmarkError
from earmark.predict.files import FilePredictor, Windows

BLOCK_S = 0.1  # how much audio a source reads at a time
STREAM_FORMATS = ("wav",) + tuple(PCM_FORMATS)


@dataclass
class AudioBlocks:
    """An audio source: `blocks` yields (n,) or (n, channels) float32 at `rate_hz`."""

    blocks: Iterable[np.ndarray]
    rate_hz: int


class WindowCutter:
    """Mono samples in (any block sizes), complete windows out: (start sample, clip (n_samples,)).

    Holds at most one window plus one block; `finish()` gives the final partial window if due.
    """

    def __init__(self, windows: Windows) -> None:
        self.windows = windows
        self.pending = np.zeros(0, dtype=np.float32)  # samples from `next_start` on
        self.next_start = 0  # sample index (in the whole stream) of the next window
        self.skip = 0  # samples still to drop before `next_start` (when hop > window)
        self.n_total = 0
        self.n_emitted = 0

    def push(self, samples: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        self.n_total += len(samples)
        if self.skip:
            dropped = min(self.skip, len(samples))
            samples, self.skip = samples[dropped:], self.skip - dropped
        self.pending = np.concatenate([self.pending, samples]) if len(self.pending) else np.asarray(samples)
        window, hop = self.windows.window, self.windows.hop
        while len(self.pending) >= window:
            yield self.next_start, self.windows.fit(self.pending[:window])
            self.n_emitted += 1
            self.next_start += hop
            self.skip = max(0, hop - len(self.pending))
            self.pending = self.pending[hop:].copy()  # a copy, so the long array it came from is freed

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The last, zero-padded window, by `chunk_starts`' rule: a recording of at most one window is
        exactly one window; otherwise a tail holding at least MIN_PARTIAL_FRACTION of a window."""
        if self.n_total == 0:
            return
        if self.n_total <= self.windows.window:
            if self.n_emitted == 0:
                yield 0, self.windows.fit(self.pending)
                self.n_emitted += 1
            return
        remaining = self.n_total - self.next_start
        if remaining > 0 and remaining >= MIN_PARTIAL_FRACTION * self.windows.window:
            yield self.next_start, self.windows.fit(self.pending)
            self.n_emitted += 1


class MonoResampler:
    """Blocks (n,) or (n, channels) at `rate_in_hz` → mono float32 blocks at `rate_out_hz`, incrementally."""

    def __init__(self, rate_in_hz: int, rate_out_hz: int) -> None:
        import soxr

        self.stream = None if rate_in_hz == rate_out_hz else soxr.ResampleStream(
            rate_in_hz, rate_out_hz, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
        if self.stream is None:
            return mono
        return self.stream.resample_chunk(mono, last=last)


class StreamPrediction:
    """Iterate for one timeline row {path, start_s, end_s, label, probability} per window, as soon as it
    completes; then `summary()` gives the recording's label from the mean over its windows.

    chunk_s defaults to the model's clip length; hop_s to the model's chunk hop, else chunk_s.
    """

    def __init__(self, predictor: FilePredictor, source: AudioBlocks, chunk_s: float | None = None,
                 hop_s: float | None = None, path: str = "-") -> None:
        contract = predictor.contract
        if chunk_s is None:
            chunk_s = contract.duration_s
            hop_s = hop_s if hop_s is not None else contract.chunk_hop_s
        self.predictor, self.source, self.path = predictor, source, path
        self.windows = Windows.for_contract(contract, chunk_s, hop_s)
        self.total = np.zeros(len(predictor.labels), dtype=np.float64)  # summed window probabilities
        self.n_windows = 0

    def __iter__(self) -> Iterator[dict]:
        windows = self.windows
        cutter = WindowCutter(windows)
        resampler = MonoResampler(int(self.source.rate_hz), self.predictor.contract.sample_rate_hz)
        max_block = max(1, windows.hop)  # big blocks go in hop-sized pieces: the buffer stays bounded
        frames_read = 0
        for block in self.source.blocks:
            if not np.isfinite(block).all():  # refused, as batch predict and the server refuse it
                raise EarmarkError(f"{self.path}: the audio contains NaN or infinite samples (in the block at "
                                   f"{frames_read / self.source.rate_hz:.2f} s); nothing after it is predicted")
            frames_read += len(block)
            samples = resampler(block)
            for first in range(0, len(samples), max_block):
                yield from self._rows(cutter.push(samples[first:first + max_block]), cutter)
        yield from self._rows(cutter.push(resampler(np.zeros(0, dtype=np.float32), last=True)), cutter)
        yield from self._rows(cutter.finish(), cutter)  # its end_s is where the recording ends

    def _rows(self, found: Iterable[tuple[int, np.ndarray]], cutter: WindowCutter) -> Iterator[dict]:
        for start, clip in found:
            probabilities = self.predictor.predict_waves(clip[None, :], batch_size=1)  # (1, C)
            self.total += probabilities[0]
            self.n_windows += 1
            yield from self.predictor.timeline_rows(self.path, np.array([start]), probabilities, self.windows,
                                                    max(cutter.n_total, start + 1))

    def summary(self) -> dict:
        """{label, probability, n_windows} of the windows so far; label None before the first window."""
        if not self.n_windows:
            return {"label": None, "probability": None, "n_windows": 0}
        mean = self.total / self.n_windows
        (label,), (top,) = self.predictor.label_rows(mean[None, :])
        return {"label": label, "probability": float(top), "n_windows": self.n_windows}


def file_blocks(path: str | Path, block_s: float = BLOCK_S) -> AudioBlocks:
    """Read an audio file block by block (`soundfile.SoundFile.blocks`), never whole."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise EarmarkError(f"stream input not found: {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise EarmarkError(f"cannot stream {path}: {exc}") from None

    def blocks() -> Iterator[np.ndarray]:
        with sf.SoundFile(str(path)) as audio:
            yield from audio.blocks(max(1, int(block_s * audio.samplerate)), dtype="float32", always_2d=True)

    return AudioBlocks(blocks(), int(info.samplerate))


def stdin_blocks(stream_format: str = "wav", rate_hz: int | None = None, channels: int = 1,
                 stream: BinaryIO | None = None, block_s: float = BLOCK_S) -> AudioBlocks:
    """Audio from a byte stream (default: standard input): a WAV stream (rate and channels from its
    header), or raw little-endian PCM (`s16le`, `s32le`, `f32le`) at `rate_hz` with `channels` interleaved."""
    if stream_format not in STREAM_FORMATS:
        raise EarmarkError(f"--stream-format must be one of {', '.join(STREAM_FORMATS)}; got {stream_format!r}")
    stream = stream if stream is not None else sys.stdin.buffer
    if stream_format == "wav":
        return _wav_blocks(stream, block_s)
    if rate_hz is None:
        raise EarmarkError(f"raw PCM ({stream_format}) on stdin carries no rate: give --stream-rate, e.g. 16000")
    if channels < 1:
        raise EarmarkError(f"--stream-channels must be at least 1; got {channels}")
    frame_bytes = PCM_FORMATS[stream_format][0].itemsize * channels

    def blocks() -> Iterator[np.ndarray]:
        want = max(1, int(block_s * rate_hz)) * frame_bytes
        carry = b""
        while True:
            data = stream.read(want)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % frame_bytes  # a frame split across reads waits for its rest
            carry = data[usable:]
            if usable:
                yield pcm_to_float(data[:usable], stream_format, channels)

    return AudioBlocks(blocks(), int(rate_hz))


def _wav_blocks(stream: BinaryIO, block_s: float) -> AudioBlocks:
    import soundfile as sf

    try:  # a file descriptor lets libsndfile read a pipe (WAV only; FLAC/OGG need seeking)
        audio = sf.SoundFile(stream.fileno(), closefd=False) if hasattr(stream, "fileno") else sf.SoundFile(stream)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise EarmarkError(f"cannot read a WAV stream from stdin ({exc}); send WAV, or raw PCM with "
                           f"--stream-format s16le --stream-rate RATE") from None

    def blocks() -> Iterator[np.ndarray]:
        with audio:
            size = max(1, int(block_s * audio.samplerate))
            while True:
                block = audio.read(size, dtype="float32", always_2d=True)
                if not len(block):
                    break
                yield block

    return AudioBlocks(blocks(), int(audio.samplerate))
