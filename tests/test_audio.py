"""Decode, mono mix, resample, pad/crop/chunk, and every bad-file reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earmark.config import DataConfig
from earmark.data.audio import AudioError, decode, fit_length, load_segments, resample, to_mono


def sine(frequency_hz: float, rate_hz: int, duration_s: float) -> np.ndarray:
    t = np.arange(round(rate_hz * duration_s)) / rate_hz
    return (0.5 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate_hz)[np.argmax(spectrum)])


def test_stereo_file_is_mixed_to_the_channel_mean(tmp_path: Path):
    left, right = sine(440, 8000, 0.5), sine(1000, 8000, 0.5)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    audio, rate_hz = decode(tmp_path / "stereo.wav")
    assert audio.shape == (4000, 2) and audio.dtype == np.float32 and rate_hz == 8000
    np.testing.assert_allclose(to_mono(audio), (left + right) / 2, atol=1e-6)


def test_resampling_keeps_frequency_and_gives_the_right_length():
    tone = sine(440, 8000, 1.0)
    upsampled = resample(tone, 8000, 16000)
    assert upsampled.shape == (16000,) and upsampled.dtype == np.float32
    assert abs(peak_hz(upsampled, 16000) - 440) <= 2
    assert resample(tone, 8000, 8000) is tone


def test_pad_and_crop_give_one_clip_from_the_start():
    x = np.arange(1, 11, dtype=np.float32)
    for mode in ("pad", "crop"):
        short = fit_length(x, 16, mode)
        assert short.shape == (1, 16)
        np.testing.assert_array_equal(short[0], np.concatenate([x, np.zeros(6, np.float32)]))
        long = fit_length(x, 4, mode)
        np.testing.assert_array_equal(long, [[1, 2, 3, 4]])


def test_chunk_keeps_a_final_window_only_when_it_is_at_least_half_full():
    x = np.arange(1, 26, dtype=np.float32)  # 25 samples, windows of 10
    clips = fit_length(x, 10, "chunk")  # starts 0, 10, 20: the last holds 5 samples = half
    assert clips.shape == (3, 10)
    np.testing.assert_array_equal(clips[2], [21, 22, 23, 24, 25, 0, 0, 0, 0, 0])
    assert fit_length(x[:24], 10, "chunk").shape == (2, 10)  # a 4-sample tail is dropped
    assert fit_length(x[:20], 10, "chunk").shape == (2, 10)  # exact fit: no empty window


def test_chunk_with_hop_overlaps_windows():
    x = np.arange(1, 21, dtype=np.float32)
    clips = fit_length(x, 10, "chunk", hop_samples=5)  # full starts 0, 5, 10; start 15 holds 5
    assert clips.shape == (4, 10)
    np.testing.assert_array_equal(clips[1], np.arange(6, 16))
    np.testing.assert_array_equal(clips[3], [16, 17, 18, 19, 20, 0, 0, 0, 0, 0])


def test_a_file_shorter_than_one_window_gives_one_padded_chunk():
    clips = fit_length(np.ones(3, np.float32), 10, "chunk")
    np.testing.assert_array_equal(clips, [[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]])


def test_unknown_clip_mode_names_the_field_and_choices():
    with pytest.raises(ValueError, match="data.clip must be one of pad, crop, chunk; got 'pads'"):
        fit_length(np.ones(3, np.float32), 10, "pads")


@pytest.mark.parametrize("suffix, subtype, tolerance", [(".flac", "PCM_16", 1e-4), (".ogg", "VORBIS", 0.05)])
def test_flac_and_ogg_round_trip(tmp_path: Path, suffix: str, subtype: str, tolerance: float):
    tone = sine(440, 16000, 0.5)
    sf.write(tmp_path / f"tone{suffix}", tone, 16000, subtype=subtype)
    clips, info = load_segments(tmp_path / f"tone{suffix}", DataConfig(sample_rate_hz=16000, duration_s=0.5))
    assert clips.shape == (1, 8000)
    assert info == {"orig_sample_rate_hz": 16000, "channels": 1, "duration_s": 0.5, "format": suffix}
    assert np.sqrt(np.mean((clips[0] - tone) ** 2)) < tolerance
    assert abs(peak_hz(clips[0], 16000) - 440) <= 2


def test_mp3_is_decoded_when_libsndfile_supports_it(tmp_path: Path):
    tone = sine(440, 16000, 1.0)
    try:
        sf.write(tmp_path / "tone.mp3", tone, 16000, format="MP3")
    except (sf.LibsndfileError, ValueError, TypeError) as exc:
        pytest.skip(f"this libsndfile cannot write MP3: {exc}")
    clips, info = load_segments(tmp_path / "tone.mp3", DataConfig(sample_rate_hz=16000))
    assert info["format"] == ".mp3" and clips.shape == (1, 16000)
    assert abs(peak_hz(clips[0], 16000) - 440) <= 2


def test_load_segments_resamples_and_chunks(tmp_path: Path):
    sf.write(tmp_path / "long.wav", sine(440, 8000, 2.5), 8000)
    data = DataConfig(sample_rate_hz=16000, duration_s=1.0, clip="chunk", chunk_hop_s=0.5)
    clips, info = load_segments(tmp_path / "long.wav", data)
    assert clips.shape == (5, 16000)  # starts 0, .5, 1, 1.5 s are full; 2.0 s holds half a window: kept
    assert info["duration_s"] == 2.5 and info["orig_sample_rate_hz"] == 8000


def bad_reason(path: Path, **settings) -> str:
    with pytest.raises(AudioError) as caught:
        load_segments(path, DataConfig(**settings))
    return caught.value.reason


def test_every_bad_file_gets_its_own_reason(tmp_path: Path):
    assert bad_reason(tmp_path / "missing.wav") == "file not found"

    (tmp_path / "garbage.wav").write_bytes(b"this is not audio" * 20)
    assert bad_reason(tmp_path / "garbage.wav").startswith("cannot decode: ")


def test_random_bytes_are_called_not_audio_naming_the_file(tmp_path: Path):
    for name in ("noise.mp3", "noise.wav", "noise.flac"):
        (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(3000))
        reason = bad_reason(tmp_path / name)
        assert reason.startswith(f"cannot decode: {name} is not a decodable audio file"), reason
        assert "pipe" not in reason

    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    assert bad_reason(tmp_path / "empty.wav") == "empty: 0 samples"

    (tmp_path / "notes.txt").write_text("hello")
    assert bad_reason(tmp_path / "notes.txt") == "unsupported format '.txt' (supported: .wav, .flac, .ogg, .mp3)"

    sf.write(tmp_path / "blip.wav", sine(440, 8000, 0.01), 8000)
    assert bad_reason(tmp_path / "blip.wav") == "too short: 0.010 s < data.min_duration_s 0.02"
    assert bad_reason(tmp_path / "blip.wav", min_duration_s=0.5) == "too short: 0.010 s < data.min_duration_s 0.5"

    broken = sine(440, 8000, 0.5)
    broken[100] = np.nan
    sf.write(tmp_path / "nan.wav", broken, 8000, subtype="FLOAT")
    assert bad_reason(tmp_path / "nan.wav") == "contains NaN or infinite samples"
