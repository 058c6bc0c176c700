"""The decode-once cache: reuse, invalidation, bad files, parallel decoding, crash safety."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from earmark.config import DataConfig
from earmark.data import cache as cache_module
from earmark.data import cache_index
from earmark.data.audio import load_segments
from earmark.data.cache import prepare_cache
from earmark.data.clean import clean_cache


def write_tone(path: Path, frequency_hz: float, duration_s: float, rate_hz: int = 8000) -> str:
    t = np.arange(round(rate_hz * duration_s)) / rate_hz
    sf.write(path, (0.4 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32), rate_hz)
    return str(path)


@pytest.fixture
def tones(tmp_path: Path) -> list[str]:
    """Six short 8 kHz tones, 0.3 to 1.3 s."""
    (tmp_path / "audio").mkdir()
    return [write_tone(tmp_path / "audio" / f"tone_{i}.wav", 200 + 150 * i, 0.3 + 0.2 * i) for i in range(6)]


@pytest.fixture
def data(tmp_path: Path) -> DataConfig:
    return DataConfig(sample_rate_hz=16000, duration_s=1.0, cache_dir=tmp_path / "cache")


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """Records every path the cache decodes in-process, so 'nothing was decoded' can fail."""
    seen: list[str] = []

    def counting_load_segments(path, data):
        seen.append(str(path))
        return load_segments(path, data)

    monkeypatch.setattr(cache_module, "load_segments", counting_load_segments)
    return seen


def clips_of(cache, path: str) -> np.ndarray:
    rows = cache.segments.loc[cache.segments["path"] == path, "row"].to_numpy()
    return np.asarray(cache.waves[rows])


def test_second_prepare_decodes_nothing(tones, data, decoded):
    first = prepare_cache(tones, data, progress=False)
    assert first.stats.n_decoded == 6 and len(decoded) == 6
    decoded.clear()
    second = prepare_cache(tones, data, progress=False)
    assert (second.stats.n_decoded, second.stats.n_reused, decoded) == (0, 6, [])
    assert second.directory == first.directory
    pd.testing.assert_frame_equal(second.segments, first.segments)


def test_waves_equal_what_load_segments_returns(tones, data):
    cache = prepare_cache(tones, data, progress=False)
    assert cache.waves.shape == (6, 16000) and cache.waves.dtype == np.float32
    assert not cache.waves.flags.writeable
    assert cache.segments["path"].tolist() == tones  # in the order given
    for path in tones:
        np.testing.assert_array_equal(clips_of(cache, path), load_segments(path, data)[0])
    assert cache.files.loc[0, "orig_sample_rate_hz"] == 8000 and cache.files.loc[0, "format"] == ".wav"


def test_a_touched_or_rewritten_file_is_decoded_again_alone(tones, data, decoded):
    prepare_cache(tones, data, progress=False)
    decoded.clear()
    stat = os.stat(tones[2])
    os.utime(tones[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    cache = prepare_cache(tones, data, progress=False)
    assert decoded == [tones[2]] and cache.stats.n_decoded == 1

    decoded.clear()
    write_tone(Path(tones[4]), 3000, 0.5)  # new content, new size
    cache = prepare_cache(tones, data, progress=False)
    assert decoded == [tones[4]]
    np.testing.assert_array_equal(clips_of(cache, tones[4]), load_segments(tones[4], data)[0])


def test_a_new_file_is_decoded_alone(tones, data, decoded, tmp_path):
    prepare_cache(tones, data, progress=False)
    decoded.clear()
    extra = write_tone(tmp_path / "audio" / "extra.wav", 700, 0.4)
    cache = prepare_cache(tones + [extra], data, progress=False)
    assert decoded == [extra] and (cache.stats.n_decoded, cache.stats.n_reused) == (1, 6)
    np.testing.assert_array_equal(clips_of(cache, extra), load_segments(extra, data)[0])


def test_audio_settings_pick_the_folder_and_other_settings_do_not(tones, data):
    first = prepare_cache(tones, data, progress=False)
    other_rate = prepare_cache(tones, data.model_copy(update={"sample_rate_hz": 8000}), progress=False)
    assert other_rate.directory != first.directory and other_rate.stats.n_decoded == 6
    assert other_rate.waves.shape == (6, 8000)
    same_audio = prepare_cache(tones, data.model_copy(update={"workers": 3, "extensions": [".wav"]}), progress=False)
    assert same_audio.directory == first.directory and same_audio.stats.n_decoded == 0


def test_bad_files_are_reported_counted_and_not_retried(tones, data, decoded, tmp_path):
    garbage = tmp_path / "audio" / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 40)
    blip = write_tone(tmp_path / "audio" / "blip.wav", 440, 0.01)
    missing = str(tmp_path / "audio" / "missing.flac")
    paths = [tones[0], str(garbage), blip, tones[1], missing]
    cache = prepare_cache(paths, data, progress=False)
    assert cache.stats.n_bad == 3 and cache.segments["path"].tolist() == [tones[0], tones[1]]
    reasons = dict(zip(cache.bad_files["path"], cache.bad_files["reason"]))
    assert reasons[str(garbage)].startswith("cannot decode: ")
    assert reasons[blip] == "too short: 0.010 s < data.min_duration_s 0.02"
    assert reasons[missing] == "file not found"
    assert cache.files.set_index("path").loc[blip, "orig_sample_rate_hz"] == 8000

    report = pd.read_csv(cache.write_bad_files(tmp_path), keep_default_na=False)
    assert report.columns.tolist() == ["path", "reason"] and len(report) == 3

    decoded.clear()
    again = prepare_cache(paths, data, progress=False)
    assert decoded == [] and again.stats.n_bad == 3

    good = prepare_cache(tones, data, progress=False)
    written = good.write_bad_files(tmp_path / "report" / "bad_files.csv")
    assert written.read_text().strip() == "path,reason"


def test_chunked_files_take_consecutive_rows(tmp_path, data):
    long = write_tone(tmp_path / "long.wav", 500, 2.6)
    chunked = data.model_copy(update={"clip": "chunk", "chunk_hop_s": 0.5})
    cache = prepare_cache([long], chunked, progress=False)
    segments = cache.segments
    assert segments["segment"].tolist() == [0, 1, 2, 3, 4]  # the 2.0 s window holds 0.6 s: kept
    assert np.diff(segments["row"]).tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(segments["start_s"], [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(segments["end_s"], [1.0, 1.5, 2.0, 2.5, 2.6])
    np.testing.assert_array_equal(np.asarray(cache.waves[segments["row"]]), load_segments(long, chunked)[0])


@pytest.mark.parametrize("clip", ["pad", "chunk"])  # pad: workers write rows in place; chunk: clips sent back
def test_parallel_decoding_equals_serial(tmp_path, data, monkeypatch, clip):
    data = data.model_copy(update={"clip": clip, "duration_s": 0.25 if clip == "chunk" else data.duration_s})
    (tmp_path / "many").mkdir()
    paths = [write_tone(tmp_path / "many" / f"t{i}.wav", 100 + 37 * i, 0.2 + 0.01 * i) for i in range(48)]
    pools = []

    class CountedPool(cache_module.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cache_module, "ProcessPoolExecutor", CountedPool)
    monkeypatch.setattr(cache_module, "POOL_MIN_WORK_S", 0.0)
    monkeypatch.setattr(cache_module, "DIRECT_POOL_MIN_WORK_S", 0.0)
    serial = prepare_cache(paths, data, workers=1, progress=False)
    assert pools == []
    parallel = prepare_cache(paths, data.model_copy(update={"cache_dir": tmp_path / "cache2"}), workers=2, progress=True)
    assert len(pools) == 1 and parallel.stats.n_decoded == 48
    assert parallel.segments["path"].drop_duplicates().tolist() == paths
    assert len(parallel.segments) == len(serial.segments) > (48 if clip == "chunk" else 47)
    np.testing.assert_array_equal(np.asarray(parallel.waves[parallel.segments["row"]]),
                                  np.asarray(serial.waves[serial.segments["row"]]))


def test_an_interrupted_prepare_keeps_the_previous_index(tones, data, monkeypatch, tmp_path):
    before = prepare_cache(tones[:4], data, progress=False)
    index_before = (before.directory / "index.csv").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_index, "_write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(tones, data, progress=False)  # appends rows for tones[4:], then dies
    monkeypatch.undo()
    assert (before.directory / "index.csv").read_bytes() == index_before

    after = prepare_cache(tones, data, progress=False)
    assert (after.stats.n_reused, after.stats.n_decoded) == (4, 2)
    for path in tones:
        np.testing.assert_array_equal(clips_of(after, path), load_segments(path, data)[0])


def test_clean_cache_frees_every_cache_folder_and_nothing_else(tones, data, tmp_path):
    first = prepare_cache(tones, data, progress=False)
    prepare_cache(tones, data.model_copy(update={"duration_s": 0.5}), progress=False)
    size = sum(f.stat().st_size for f in data.cache_dir.rglob("*") if f.is_file())
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    assert clean_cache(tmp_path) == [] and (tmp_path / "keep" / "notes.txt").exists()
    del first
    removed = clean_cache(data.cache_dir)
    assert len(removed) == 2 and sum(size for _, size in removed) == size > 6 * 16000 * 4
    assert not data.cache_dir.exists() and clean_cache(data.cache_dir) == []


def test_concurrent_prepares_of_one_folder_take_turns(tones, data):
    with ThreadPoolExecutor(2) as pool:
        caches = list(pool.map(lambda _: prepare_cache(tones, data, progress=False), range(2)))
    assert sorted(cache.stats.n_decoded for cache in caches) == [0, 6]
    for path in tones:
        np.testing.assert_array_equal(clips_of(caches[1], path), load_segments(path, data)[0])


def test_clean_deletes_only_what_earmark_marked(tones, data, tmp_path):
    import json

    from earmark import api
    from earmark.config import load_config
    from earmark.data.splits import write_splits

    workspace, cache_dir = tmp_path / "ws", data.cache_dir
    mine = workspace / "splits" / "mine"  # the user's own folders under workspace and cache_dir
    mine.mkdir(parents=True)
    (mine / "train.csv").write_text("my data")
    (cache_dir / "notes").mkdir(parents=True)
    (cache_dir / "notes" / "meta.json").write_text("{}")
    items = pd.DataFrame({"path": ["a.wav"], "label": ["x"], "split": ["train"]})
    write_splits(items, workspace / "splits" / "abc123", {})
    prepare_cache(tones, data, progress=False)
    old = next(p for p in cache_dir.iterdir() if (p / "meta.json").is_file() and p.name != "notes")
    (old / ".earmark-generated").unlink()  # a cache from before the marker: earmark's meta.json and index.csv
    assert set(json.loads((old / "meta.json").read_text())) >= {"version", "audio_key", "n_samples"}
    config = load_config(overrides=[f"workspace={workspace}", f"data.cache_dir={cache_dir}"])
    assert len(api.clean(config, everything=True)) == 2
    assert (mine / "train.csv").read_text() == "my data" and (cache_dir / "notes" / "meta.json").exists()
    assert not (workspace / "splits" / "abc123").exists() and not old.exists()


def test_clean_of_a_config_removes_only_what_that_config_uses(tones, tmp_path):
    from earmark import api
    from earmark.config import load_config
    from earmark.data.cache import cache_folder
    from earmark.data.prepared import split_folder
    from earmark.data.splits import write_splits

    items = pd.DataFrame({"path": tones, "label": ["x", "y"] * 3, "split": ["train"] * 6})
    configs = {rate: load_config(overrides=[f"workspace={tmp_path / 'ws'}", f"data.cache_dir={tmp_path / 'cache'}",
                                            f"data.sample_rate_hz={rate}"]) for rate in (8000, 16000)}
    for config in configs.values():  # two data sets' worth: decoded audio, embeddings beside it, splits
        prepare_cache(tones, config.data, progress=False)
        (cache_folder(config.data) / "embeddings").mkdir()
        (cache_folder(config.data) / "embeddings" / "aisfx.npy").write_bytes(b"\0" * 1000)
        write_splits(items, split_folder(config), {})
    assert split_folder(configs[8000]) != split_folder(configs[16000])
    removed = api.clean(configs[8000])
    assert sorted(folder for folder, _ in removed) == sorted([cache_folder(configs[8000].data),
                                                              split_folder(configs[8000])])
    assert all(size > 0 for _, size in removed)
    assert not cache_folder(configs[8000].data).exists() and not split_folder(configs[8000]).exists()
    assert (cache_folder(configs[16000].data) / "embeddings" / "aisfx.npy").is_file()
    assert split_folder(configs[16000]).is_dir()
    assert api.clean(configs[8000]) == []  # nothing of its own left
    assert len(api.clean(configs[8000], everything=True)) == 2  # the other config's cache and splits
    assert not (tmp_path / "cache").exists() and not (tmp_path / "ws" / "splits").exists()
