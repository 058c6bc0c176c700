"""`earmark fetch <preset>` lays out exactly what data.source=<preset> reads; checksums are enforced.

Tiny fake archives in each data set's real layout are served from a local mirror (--base-url)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys

import pytest

from earmark import api
from earmark.config import load_config
from earmark.data.sources import load_table
from earmark.errors import EarmarkError
from earmark.fetch.entry import fetch as fetch_entry
from earmark.fetch.presets import PRESETS, preset_named
from earmark.fetch.state import DownloadState
from fetch_server import LocalServer, tar_bytes, wav_bytes, zip_bytes


def fake_esc50() -> bytes:
    rows, members = ["filename,fold,target,category,esc10,src_file,take"], {}
    for target, (category, frequency) in enumerate((("dog", 300), ("rain", 2000))):
        for i in range(10):
            name = f"{i % 5 + 1}-{100 + i}-A-{target}.wav"
            rows.append(f"{name},{i % 5 + 1},{target},{category},False,{100 + i},A")
            members[f"ESC-50-master/audio/{name}"] = wav_bytes(frequency + 10 * i, 0.3)
    members["ESC-50-master/meta/esc50.csv"] = ("\n".join(rows) + "\n").encode()
    members["ESC-50-master/README.md"] = b"ESC-50"
    return zip_bytes(members)


def fake_urbansound8k() -> bytes:
    rows, members = ["slice_file_name,fsID,start,end,salience,fold,classID,class"], {}
    for class_id, label in enumerate(("dog_bark", "siren")):
        for fold in (1, 2, 3):
            name = f"{100 + fold}-{class_id}-0-0.wav"
            rows.append(f"{name},{100 + fold},0,0.3,1,{fold},{class_id},{label}")
            members[f"UrbanSound8K/audio/fold{fold}/{name}"] = wav_bytes(400 + 900 * class_id, 0.3)
    members["UrbanSound8K/metadata/UrbanSound8K.csv"] = ("\n".join(rows) + "\n").encode()
    return tar_bytes(members)


def fake_fsdd() -> bytes:
    return tar_bytes({f"free-spoken-digit-dataset-1.0.10/recordings/{digit}_jackson_{take}.wav": wav_bytes(300, 0.2)
                   for digit in (0, 1) for take in range(6)} | {"free-spoken-digit-dataset-1.0.10/README.md": b"x"})


def fake_speech_commands() -> bytes:
    members = {f"{word}/{speaker}_nohash_0.wav": wav_bytes(500, 0.2)
               for word in ("yes", "no") for speaker in ("aaaa1111", "bbbb2222", "cccc3333")}
    members["_background_noise_/white_noise.wav"] = wav_bytes(100, 0.5)
    members["validation_list.txt"] = b"yes/bbbb2222_nohash_0.wav\nno/bbbb2222_nohash_0.wav\n"
    members["testing_list.txt"] = b"yes/cccc3333_nohash_0.wav\nno/cccc3333_nohash_0.wav\n"
    members["LICENSE"] = b"CC BY 4.0"
    return tar_bytes(members)


FAKES = {"esc50": fake_esc50, "urbansound8k": fake_urbansound8k, "fsdd": fake_fsdd,
         "speech_commands": fake_speech_commands}


@pytest.fixture
def mirror():
    local = LocalServer()
    for name, make in FAKES.items():
        local.files[f"/mirror/{PRESETS[name].archive_name}"] = make()
    yield local
    local.close()


def sha256_of(mirror: LocalServer, name: str) -> str:
    return "sha256:" + hashlib.sha256(mirror.files[f"/mirror/{PRESETS[name].archive_name}"]).hexdigest()


def fetch_from(mirror: LocalServer, name: str, to, **kwargs):
    kwargs.setdefault("checksum", sha256_of(mirror, name))
    return api.fetch(name, to, base_url=mirror.url("/mirror"), retries=0, backoff_s=0, **kwargs)


@pytest.mark.parametrize("name, n_files, labels", [("esc50", 20, {"dog", "rain"}),
                                                   ("urbansound8k", 6, {"dog_bark", "siren"}),
                                                   ("fsdd", 12, {"0", "1"}),
                                                   ("speech_commands", 6, {"yes", "no"})])
def test_each_preset_is_laid_out_as_its_loader_reads_it(mirror, tmp_path, name, n_files, labels):
    result = fetch_from(mirror, name, tmp_path)
    assert result.root == tmp_path / name and result.n_downloaded == 1
    config = load_config(overrides=result.overrides)
    table = load_table(config.data)
    assert len(table) == n_files and set(table["label"]) == labels
    assert all(os.path.isfile(p) for p in table["path"])
    assert not list((tmp_path / "downloads").glob(".*unpacked"))
    if name == "speech_commands":  # the official lists give the splits; background noise is not a class
        assert table.set_index("label")["split"].value_counts().to_dict() == {"train": 2, "val": 2, "test": 2}
        assert table.groupby("split")["group"].nunique().to_dict() == {"test": 1, "train": 1, "val": 1}
    if name == "fsdd":  # the loader's FSDD rule: takes 0-4 are the test split
        assert (table["split"] == "test").sum() == 10
    again = fetch_from(mirror, name, tmp_path)
    assert again.n_reused == 1 and sum(mirror.hits.values()) == 1  # already laid out: no request at all


def test_a_fetched_preset_prepares_end_to_end(mirror, tmp_path):
    result = fetch_from(mirror, "esc50", tmp_path / "data")
    config = load_config(overrides=[*result.overrides, "data.sample_rate_hz=8000", "data.duration_s=0.3",
                                    f"data.cache_dir={tmp_path / 'cache'}", f"workspace={tmp_path / 'ws'}",
                                    "data.workers=1"])
    prepared = api.prepare(config, progress=False)
    assert len(prepared.items) == 20 and prepared.labels == ["dog", "rain"]
    assert set(prepared.items.loc[prepared.items["split"] == "test", "fold"]) == {"5"}  # the last fold


def test_a_wrong_checksum_removes_the_download_and_lays_out_nothing(mirror, tmp_path):
    with pytest.raises(EarmarkError, match="failed verification: its sha256 is"):
        fetch_from(mirror, "esc50", tmp_path, checksum="sha256:" + "0" * 64)
    assert not (tmp_path / "esc50").exists()
    assert not [p for p in (tmp_path / "downloads").iterdir() if p.name != "state.json"]
    with pytest.raises(EarmarkError, match="must be 'sha256:<64 hex digits>'"):
        fetch_from(mirror, "esc50", tmp_path, checksum="sha1:abc")


def test_published_checksums_are_enforced(mirror, tmp_path):
    """The fake Speech Commands archive is not the published one: its sha256 must not match."""
    with pytest.raises(EarmarkError, match="expected af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"):
        fetch_from(mirror, "speech_commands", tmp_path, checksum=None)


def test_without_a_published_checksum_the_first_download_is_locked(mirror, tmp_path):
    fetch_from(mirror, "fsdd", tmp_path, checksum=None)
    lock = (tmp_path / "checksums.lock").read_text()
    assert sha256_of(mirror, "fsdd").split(":")[1] in lock
    # later: the data set and its download are gone, and the mirror now serves a different archive
    import shutil

    shutil.rmtree(tmp_path / "fsdd")
    shutil.rmtree(tmp_path / "downloads")
    mirror.files[f"/mirror/{PRESETS['fsdd'].archive_name}"] = fake_esc50()
    with pytest.raises(EarmarkError, match="differs from the one recorded on the first download"):
        fetch_from(mirror, "fsdd", tmp_path, checksum=None)
    assert not (tmp_path / "fsdd").exists()


def test_a_malicious_or_wrong_preset_archive_is_refused(mirror, tmp_path):
    mirror.files[f"/mirror/{PRESETS['esc50'].archive_name}"] = zip_bytes({"ESC-50-master/meta/esc50.csv": b"x",
                                                                       "../../evil.wav": b"gotcha"})
    with pytest.raises(EarmarkError, match="refused.*outside"):
        fetch_from(mirror, "esc50", tmp_path)
    assert not (tmp_path / "esc50").exists() and not (tmp_path.parent / "evil.wav").exists()
    mirror.files[f"/mirror/{PRESETS['urbansound8k'].archive_name}"] = fake_fsdd()  # the wrong data set
    with pytest.raises(EarmarkError, match="lacks metadata/UrbanSound8K.csv"):
        fetch_from(mirror, "urbansound8k", tmp_path / "u")


def test_an_offline_preset_download_fails_with_one_message(tmp_path, monkeypatch):
    def no_lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(EarmarkError, match=r"cannot fetch ESC-50 from https://github.com/.*cannot reach github.com: "
                                           r"no network\?"):
        api.fetch("esc50", tmp_path, retries=0)


def test_datasets_lists_every_preset_with_license_and_size(mirror, tmp_path):
    rows = {row["name"]: row for row in api.datasets()}
    assert set(rows) == {"esc50", "urbansound8k", "fsdd", "speech_commands"}
    assert rows["esc50"]["license"].startswith("CC BY-NC 3.0")
    assert rows["fsdd"]["license"] == "CC BY-SA 4.0" and rows["speech_commands"]["license"] == "CC BY 4.0"
    assert rows["speech_commands"]["checksum"].startswith("sha256:af14739e")
    run = subprocess.run([sys.executable, "-m", "earmark", "datasets"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0
    for word in ("esc50", "urbansound8k", "speech_commands", "CC BY-SA 4.0", "2.4 GB", "soundata"):
        assert word in run.stdout
    checksum = sha256_of(mirror, "fsdd")
    run = subprocess.run([sys.executable, "-m", "earmark", "fetch", "fsdd", "--to", str(tmp_path), "--base-url",
                          mirror.url("/mirror"), "--checksum", checksum], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"next: earmark prepare data.source=fsdd data.path={tmp_path / 'fsdd'}" in run.stdout


def archive_path(name: str) -> str:
    return f"/mirror/{PRESETS[name].archive_name}"


def test_an_archive_that_fails_to_lay_out_is_forgotten_and_not_locked(mirror, tmp_path):
    """No published checksum: a bad first archive must neither stay recorded nor lock its sha256."""
    good = mirror.files[archive_path("fsdd")]
    mirror.files[archive_path("fsdd")] = tar_bytes({"top/recordings/0_a_0.wav": b"RIFF", "../evil.wav": b"x"})
    with pytest.raises(EarmarkError, match="refused.*outside.*The download was removed"):
        fetch_from(mirror, "fsdd", tmp_path, checksum=None)
    assert not (tmp_path / "checksums.lock").exists() and not (tmp_path / "fsdd").exists()
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["state.json"]
    assert DownloadState(tmp_path / "downloads").data["downloads"] == {}
    mirror.files[archive_path("fsdd")] = fake_esc50()  # an archive that extracts, but is the wrong data set
    with pytest.raises(EarmarkError, match="lacks recordings.*The download was removed"):
        fetch_from(mirror, "fsdd", tmp_path, checksum=None)
    assert not (tmp_path / "checksums.lock").exists() and not (tmp_path / "fsdd").exists()
    mirror.files[archive_path("fsdd")] = good  # the mirror is fixed: the next run simply works
    assert fetch_from(mirror, "fsdd", tmp_path, checksum=None).root == tmp_path / "fsdd"
    assert hashlib.sha256(good).hexdigest() in (tmp_path / "checksums.lock").read_text()


def test_a_malformed_checksum_is_refused_before_downloading(mirror, tmp_path):
    for bad in ("sha1:abc", "sha256:abc", "md5:" + "z" * 32, "0" * 40):
        with pytest.raises(EarmarkError, match="must be 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'"):
            fetch_from(mirror, "esc50", tmp_path, checksum=bad)
    assert sum(mirror.hits.values()) == 0


def test_an_md5_checksum_is_computed_while_downloading(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr("earmark.fetch.presets.file_digest", lambda *a: pytest.fail("the archive was read again"))
    md5 = hashlib.md5(mirror.files[archive_path("fsdd")]).hexdigest()
    assert fetch_from(mirror, "fsdd", tmp_path, checksum=f"md5:{md5}").n_downloaded == 1
    esc50_md5 = hashlib.md5(mirror.files[archive_path("esc50")]).hexdigest()
    with pytest.raises(EarmarkError, match=f"its md5 is {esc50_md5}, expected 0{{32}}"):
        fetch_from(mirror, "esc50", tmp_path / "other", checksum="md5:" + "0" * 32)


@pytest.mark.parametrize("spelling, name", [("speech-commands", "speech_commands"),
                                            ("Speech Commands", "speech_commands"), ("ESC-50", "esc50"),
                                            ("urban_sound_8k", "urbansound8k"), ("FSDD", "fsdd")])
def test_preset_names_ignore_case_dashes_underscores_and_spaces(spelling, name):
    assert preset_named(spelling).name == name


def test_a_damaged_checksums_lock_is_named_before_anything_is_downloaded(mirror, tmp_path):
    (tmp_path / "checksums.lock").write_text('{"fsdd": {"sha256": ')
    with pytest.raises(EarmarkError, match=f"{tmp_path / 'checksums.lock'} is damaged"):
        fetch_from(mirror, "fsdd", tmp_path, checksum=None)
    assert sum(mirror.hits.values()) == 0
    run = subprocess.run([sys.executable, "-m", "earmark", "fetch", "fsdd", "--to", str(tmp_path), "--base-url",
                          mirror.url("/mirror")], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 2 and run.stderr.startswith("error:") and "checksums.lock is damaged" in run.stderr
    assert "Traceback" not in run.stderr


def test_an_interrupted_preset_resumes_where_it_stopped(mirror, tmp_path, monkeypatch):
    """A download cut off mid-way resumes with a Range request; an extraction stopped by Ctrl-C is redone
    from the kept archive, without the network."""
    mirror.truncate_once.add(archive_path("esc50"))
    with pytest.raises(EarmarkError, match="closed after"):
        fetch_from(mirror, "esc50", tmp_path)
    assert not (tmp_path / "esc50").exists()
    import earmark.fetch.presets as presets

    extract = presets.safe_extract

    def interrupted(archive, dest, limits):
        extract(archive, dest, limits)
        raise KeyboardInterrupt

    monkeypatch.setattr(presets, "safe_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_from(mirror, "esc50", tmp_path)
    assert [path for path, _ in mirror.range_requests] == [archive_path("esc50")]
    assert not (tmp_path / "esc50").exists() and not list((tmp_path / "downloads").glob(".*unpacked"))
    monkeypatch.setattr(presets, "safe_extract", extract)
    hits = sum(mirror.hits.values())
    result = fetch_from(mirror, "esc50", tmp_path)
    assert result.n_downloaded == 1 and (tmp_path / "esc50" / "meta" / "esc50.csv").is_file()
    assert sum(mirror.hits.values()) == hits  # the archive was already whole


def test_options_that_do_not_apply_to_a_preset_are_refused(mirror, tmp_path):
    for option, flag in ((dict(rate_hz=8000), "--rate-hz"), (dict(clip_s=1.0), "--clip-s"),
                         (dict(drive_base_url="http://127.0.0.1:9"), "--drive-base-url")):
        with pytest.raises(EarmarkError, match=f"{flag} does not apply to a preset"):
            fetch_entry("esc50", tmp_path, base_url=mirror.url("/mirror"), **option)
    with pytest.raises(EarmarkError, match="--max-extract-gb must be > 0"):
        fetch_entry("esc50", tmp_path, max_extract_gb=0)
    with pytest.raises(EarmarkError, match="--max-extract-gb must be > 0"):
        api.fetch("esc50", tmp_path, max_extract_gb=-1)
    assert sum(mirror.hits.values()) == 0 and not (tmp_path / "esc50").exists()
    result = fetch_entry("esc50", tmp_path, base_url=mirror.url("/mirror"), checksum=sha256_of(mirror, "esc50"),
                         retries=0)
    assert result.root == tmp_path / "esc50"
