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
from earmark.fetch.presets import PRESETS

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
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0
    for word in ("esc50", "urbansound8k", "speech_commands", "CC BY-SA 4.0", "2.4 GB", "soundata"):
        assert word in run.stdout
    checksum = sha256_of(mirror, "fsdd")
    run = subprocess.run([sys.executable, "-m", "earmark", "fetch", "fsdd", "--to", str(tmp_path), "--base-url",
                          mirror.url("/mirror"), "--checksum", checksum], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"next: earmark prepare data.source=fsdd data.path={tmp_path / 'fsdd'}" in run.stdout
