"""Streaming prediction: windows as they complete, equal to the offline timeline, bounded memory."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.predict.files import FilePredictor, Windows
from earmark.predict.streaming import AudioBlocks, StreamPrediction, WindowCutter, stdin_blocks
from onnx_runs import RATE_HZ, exported_model


class LoudnessPredictor(FilePredictor):
    """A stand-in model: class 1 when a window's RMS is above 0.1, else class 0 (no weights, no torch)."""

    def __init__(self, rate_hz: int = 8000, duration_s: float = 0.5) -> None:
        self.contract = InputContract(rate_hz, duration_s, "pad", ("quiet", "loud"), {})
        self.calls = 0

    def predict_waves(self, waves, groups=None, *, batch_size: int = 256):
        self.calls += len(waves)
        loud = np.sqrt((np.asarray(waves) ** 2).mean(axis=1)) > 0.1
        return np.stack([np.where(loud, 0.1, 0.9), np.where(loud, 0.9, 0.1)], axis=1).astype(np.float32)


def long_recording(seconds_per_part: float = 1.3):
    parts = ["low", "high", "mid", "low"]
    return np.concatenate([tone_clip(TONES_HZ[name], RATE_HZ, seconds_per_part, i) for i, name in enumerate(parts)])


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return exported_model(tmp_path_factory)


@pytest.mark.parametrize("chunk_s, hop_s", [(None, None), (0.5, 0.25), (0.4, 0.7)])
def test_a_streamed_file_gives_the_offline_timeline(onnx_model, tmp_path, chunk_s, hop_s):
    path = tmp_path / "long.flac"
    sf.write(path, long_recording(), RATE_HZ)
    offline_chunk = 0.5 if chunk_s is None else chunk_s
    offline = api.predict(onnx_model, [path], chunk_s=offline_chunk, hop_s=hop_s).timeline
    streamed = pd.DataFrame(list(api.predict_stream(onnx_model, path, chunk_s=chunk_s, hop_s=hop_s)))
    assert len(streamed) == len(offline) > 5
    assert list(streamed["start_s"]) == list(offline["start_s"])
    assert list(streamed["end_s"]) == list(offline["end_s"])
    assert list(streamed["label"]) == list(offline["label"])
    np.testing.assert_allclose(streamed["probability"], offline["probability"], atol=1e-4)


def test_a_resampled_stereo_stream_matches_the_offline_timeline(onnx_model, tmp_path):
    mono = np.concatenate([tone_clip(TONES_HZ[name], 22050, 1.0, i) for i, name in enumerate(["mid", "high"])])
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mono, mono * 0.5], axis=1), 22050)
    offline = api.predict(onnx_model, [path], chunk_s=0.5).timeline
    stream = api.predict_stream(onnx_model, path, chunk_s=0.5)
    streamed = pd.DataFrame(list(stream))
    assert list(streamed["label"]) == list(offline["label"]) == ["mid", "mid", "high", "high"]
    np.testing.assert_allclose(streamed["probability"], offline["probability"], atol=2e-3)
    assert stream.summary()["n_windows"] == 4


def test_rows_arrive_while_the_input_is_still_being_read():
    predictor = LoudnessPredictor()
    delivered = []

    def blocks():
        for index in range(20):  # 20 blocks of 0.25 s: quiet, then loud
            delivered.append(index)
            level = 0.0 if index < 10 else 0.5
            yield np.full(2000, level, dtype=np.float32)

    stream = iter(StreamPrediction(predictor, AudioBlocks(blocks(), 8000)))
    first = next(stream)
    assert first["start_s"] == 0.0 and first["label"] == "quiet"
    assert len(delivered) <= 3  # the first window came after 0.5 s of input, not after all of it
    rest = list(stream)
    assert [row["label"] for row in [first, *rest]] == ["quiet"] * 5 + ["loud"] * 5


def test_an_hour_long_stream_runs_in_bounded_memory():
    predictor = LoudnessPredictor(rate_hz=8000, duration_s=1.0)
    block = np.random.default_rng(0).normal(0, 0.3, (8000, 2)).astype(np.float32)  # 0.5 s stereo at 16 kHz
    n_blocks = 2 * 3600  # one hour: 230 MB of float32 samples in all

    tracemalloc.start()
    stream = StreamPrediction(predictor, AudioBlocks((block for _ in range(n_blocks)), 16000), hop_s=0.5)
    n_rows = sum(1 for _ in stream)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 1 s windows every 0.5 s over 3600 s, the last one half full (kept: at least half a window)
    assert n_rows == 2 * 3600 and predictor.calls == n_rows
    assert stream.summary()["label"] == "loud"
    assert peak < 5 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"


def test_the_window_cutter_holds_at_most_a_window_and_a_block():
    windows = Windows(window=800, hop=300, n_samples=800, sample_rate_hz=8000)
    cutter = WindowCutter(windows)
    longest = 0
    starts = []
    for _ in range(500):
        starts += [start for start, _ in cutter.push(np.ones(137, dtype=np.float32))]
        longest = max(longest, len(cutter.pending))
    starts += [start for start, _ in cutter.finish()]
    assert longest < 800 + 137
    assert starts == list(range(0, 500 * 137 - 400 + 1, 300))[: len(starts)] and len(starts) >= 226


@pytest.mark.parametrize("n_total", [1, 799, 800, 801, 1000, 1199, 1200, 5000])
def test_stream_windows_follow_the_offline_rule_at_every_length(n_total):
    from earmark.data.audio import chunk_starts

    windows = Windows(window=800, hop=400, n_samples=800, sample_rate_hz=8000)
    cutter = WindowCutter(windows)
    starts = [start for start, _ in cutter.push(np.ones(n_total, dtype=np.float32))]
    starts += [start for start, _ in cutter.finish()]
    assert starts == chunk_starts(n_total, 800, 400).tolist()


def test_raw_pcm_and_wav_on_stdin_from_the_command_line(onnx_model, tmp_path):
    wave = long_recording(1.0)
    pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()
    done = subprocess.run([sys.executable, "-m", "earmark", "predict", str(onnx_model), "--stream", "-",
                           "--stream-format", "s16le", "--stream-rate", str(RATE_HZ), "--chunk-s", "0.5", "--hop-s", "1",
                           "--out", str(tmp_path / "raw.csv")], input=pcm, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "start_s,end_s,label,probability"
    assert [line.split(",")[2] for line in lines[1:]] == ["low", "high", "mid", "low"]
    assert "recording label" in done.stderr.decode()
    assert pd.read_csv(tmp_path / "raw.csv")["label"].tolist() == ["low", "high", "mid", "low"]

    buffer = io.BytesIO()
    sf.write(buffer, wave, RATE_HZ, format="WAV", subtype="PCM_16")
    done = subprocess.run([sys.executable, "-m", "earmark", "predict", str(onnx_model), "--stream", "-",
                           "--chunk-s", "0.5", "--hop-s", "1"], input=buffer.getvalue(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert [line.split(",")[2] for line in done.stdout.decode().splitlines()[1:]] == ["low", "high", "mid", "low"]


def test_bad_stream_options_are_named():
    with pytest.raises(EarmarkError, match="--stream-rate"):
        stdin_blocks("s16le", None, 1, stream=io.BytesIO(b"\0\0"))
    with pytest.raises(EarmarkError, match="--stream-format must be one of"):
        stdin_blocks("mp3", 8000, 1, stream=io.BytesIO(b""))
    with pytest.raises(EarmarkError, match="cannot read a WAV stream"):
        list(stdin_blocks("wav", stream=io.BytesIO(b"garbage bytes, not a wav")).blocks)


def test_nan_or_infinite_stream_samples_are_refused():
    def blocks(bad: float):
        yield np.zeros(4000, dtype=np.float32)
        yield np.full(4000, bad, dtype=np.float32)

    for bad in (np.nan, np.inf):
        with pytest.raises(EarmarkError, match="NaN or infinite samples .* at 0.50 s"):
            list(StreamPrediction(LoudnessPredictor(), AudioBlocks(blocks(bad), 8000), path="x.wav"))


def test_the_command_line_refuses_a_nan_stream_and_fails_when_every_input_failed(onnx_model, tmp_path):
    pcm = np.full(RATE_HZ, np.nan, dtype="<f4").tobytes()
    done = subprocess.run([sys.executable, "-m", "earmark", "predict", str(onnx_model), "--stream", "-",
                           "--stream-format", "f32le", "--stream-rate", str(RATE_HZ)], input=pcm, capture_output=True,
                          timeout=300)
    assert done.returncode == 2 and b"nan" not in done.stdout.lower()
    assert done.stderr.decode().startswith("error:") and "NaN or infinite" in done.stderr.decode()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "out.csv"
    done = subprocess.run([sys.executable, "-m", "earmark", "predict", str(onnx_model), str(bad), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "no predictions: all 1 input(s) failed" in done.stderr, done.stderr
    assert "skipped" in done.stdout and not out.exists()
