"""`earmark fetch SOURCES --to DIR` end to end against a local server, then `prepare` on what it wrote."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.fetch.entry import fetch as fetch_entry
from earmark.fetch.names import short_hash
from fetch_server import LocalServer, tar_bytes, wav_bytes, zip_bytes

DRIVE_ID = "1DriveSpeechAbcdef"




@pytest.fixture
def server():
    local = LocalServer()
    local.files.update({
        "/audio/low.wav": wav_bytes(300, 2.0),
        "/audio/high.flac": wav_bytes(2400, 1.5, fmt="FLAC"),
        "/archives/mid.zip": zip_bytes({"mid/a.wav": wav_bytes(900, 0.5), "mid/b.wav": wav_bytes(950, 0.6),
                                     "readme.txt": b"clips of mid tones", "__MACOSX/._a.wav": b"junk"}),
        "/archives/more.tar.gz": tar_bytes({"low/c.wav": wav_bytes(320, 1.0)}),
        "/archives/evil.zip": zip_bytes({"ok.wav": wav_bytes(300, 0.5), "../evil.wav": b"gotcha"}),
        "/media/engine.wav": wav_bytes(2300, 1.0),
    })
    local.content_types["/media/engine.wav"] = "audio/wav"
    local.drive[DRIVE_ID] = ("mid clips.zip", zip_bytes({"d.wav": wav_bytes(880, 0.5), "e.wav": wav_bytes(920, 0.5)}),
                             "confirm")
    yield local
    local.close()


def sources_yaml(server: LocalServer, path: Path) -> Path:
    path.write_text(f"""\
defaults:
  license: CC0 (generated)
sources:
  - url: {server.url('/audio/low.wav')}
    label: low
  - url: {server.url('/audio/high.flac')}
    label: high
    start_s: 0.5
    end_s: 1.5
    license: CC BY 4.0
  - url: {server.url('/archives/mid.zip')}
    label: mid
  - url: {server.url('/archives/more.tar.gz')}
    label: low
  - url: {server.url('/archives/evil.zip')}
    label: low
  - url: {server.url('/missing.wav')}
    label: high
  - url: {server.url('/media/engine.wav')}
    label: high
    kind: video
  - url: https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing
    label: mid
""")
    return path


def fetch(sources: Path, to: Path, server: LocalServer, **kwargs):
    return api.fetch(sources, to, rate_hz=8000, clip_s=0.5, retries=0, backoff_s=0,
                     drive_base_url=server.url("/drive"), **kwargs)


def test_a_sources_list_becomes_wav_clips_with_provenance(server, tmp_path):
    result = fetch(sources_yaml(server, tmp_path / "SOURCES.yaml"), tmp_path / "data", server)
    data = tmp_path / "data"
    meta = pd.read_csv(data / "metadata.csv")
    assert list(meta.columns) == ["path", "label", "group", "source", "kind", "member", "source_start_s",
                                  "source_end_s", "license", "line"]
    counts = meta.groupby("line").size().to_dict()
    # 2 s -> 4 clips; 1 s of FLAC -> 2; mid.zip 0.5 s + 0.6 s -> 1 + 1; tar 1 s -> 2; video 1 s -> 2; drive 1 + 1
    assert counts == {4: 4, 6: 2, 11: 2, 13: 2, 19: 2, 22: 2}
    assert result.n_clips == len(meta) == 14 and result.n_sources == 8
    for row in meta.itertuples():
        info = sf.info(data / row.path)
        assert (info.samplerate, info.channels, info.frames) == (8000, 1, 4000)
        assert not os.path.isabs(row.path) and row.path.startswith(f"audio/{row.label}/")
    flac = meta[meta["line"] == 6]
    assert flac[["source_start_s", "source_end_s"]].values.tolist() == [[0.5, 1.0], [1.0, 1.5]]
    assert set(flac["license"]) == {"CC BY 4.0"} and set(meta[meta["line"] == 4]["license"]) == {"CC0 (generated)"}
    archive = meta[meta["line"] == 11]
    assert sorted(archive["member"]) == ["mid/a.wav", "mid/b.wav"]
    assert sorted(archive["group"]) == [server.url("/archives/mid.zip#mid/a.wav"),
                                        server.url("/archives/mid.zip#mid/b.wav")]
    assert set(meta[meta["line"] == 19]["kind"]) == {"video"}
    assert set(meta[meta["line"] == 22]["kind"]) == {"drive"}
    failures = pd.read_csv(data / "fetch_failures.csv")
    assert failures["line"].tolist() == [15, 17]
    assert "refused" in failures["reason"][0] and "outside" in failures["reason"][0]
    assert "HTTP 404" in failures["reason"][1]
    assert not (tmp_path / "evil.wav").exists() and not (data / "downloads" / "evil.wav").exists()
    assert result.overrides == ["data.source=csv", f"data.path={data / 'metadata.csv'}"]

    # a second run: nothing finished is asked for again or rewritten; failures are retried
    hits = dict(server.hits)
    stamps = {p: p.stat().st_mtime_ns for p in (data / "audio").rglob("*.wav")}
    again = fetch(sources_yaml(server, tmp_path / "SOURCES.yaml"), data, server)
    retried = {path for path, count in server.hits.items() if count != hits.get(path, 0)}
    assert retried == {"/missing.wav"}
    assert (again.n_reused, again.n_downloaded, result.n_downloaded) == (7, 0, 7)  # all but the 404 downloaded
    assert {p: p.stat().st_mtime_ns for p in (data / "audio").rglob("*.wav")} == stamps
    assert pd.read_csv(data / "metadata.csv").equals(meta)

    with pytest.raises(EarmarkError, match="was fetched with --rate-hz 8000"):
        api.fetch(tmp_path / "SOURCES.yaml", data, rate_hz=16000, clip_s=0.5, retries=0)

    # what fetch wrote is exactly what data.source=csv reads
    config = load_config(overrides=[*result.overrides, "data.sample_rate_hz=8000", "data.duration_s=0.5",
                                    f"data.cache_dir={tmp_path / 'cache'}", f"workspace={tmp_path / 'ws'}",
                                    "data.workers=1", "split.group_by=group", "split.val_fraction=0",
                                    "split.test_fraction=0.4"])
    prepared = api.prepare(config, progress=False)
    assert len(prepared.items) == 14 and prepared.labels == ["high", "low", "mid"]
    assert prepared.cache.stats.n_bad == 0
    assert prepared.items.groupby("group")["split"].nunique().max() == 1  # a recording's clips stay together
    assert set(prepared.items["split"]) == {"train", "test"}


def test_someone_elses_metadata_csv_is_never_overwritten(server, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "metadata.csv").write_text("path,label\nmine.wav,a\n")
    with pytest.raises(EarmarkError, match="not written by earmark fetch"):
        fetch(sources_yaml(server, tmp_path / "SOURCES.yaml"), tmp_path / "data", server)
    assert (tmp_path / "data" / "metadata.csv").read_text() == "path,label\nmine.wav,a\n"


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="ffmpeg is not installed")
def test_video_containers_are_converted_with_ffmpeg(server, tmp_path):
    source = tmp_path / "tone.wav"
    source.write_bytes(wav_bytes(500, 1.2, rate_hz=16000))
    m4a = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(source), "-c:a", "aac", str(m4a)], check=True, timeout=120)
    server.files["/media/tone.m4a"] = m4a.read_bytes()
    server.content_types["/media/tone.m4a"] = "audio/mp4"
    sources = tmp_path / "S.csv"
    sources.write_text(f"url,label,kind\n{server.url('/media/tone.m4a')},tone,video\n")
    result = api.fetch(sources, tmp_path / "data", rate_hz=8000, retries=0)
    meta = pd.read_csv(tmp_path / "data" / "metadata.csv")
    assert result.n_clips == 1 and meta["path"][0].startswith("audio/tone/tone-")
    assert sf.info(tmp_path / "data" / meta["path"][0]).samplerate == 8000
    assert abs(meta["source_end_s"][0] - 1.2) < 0.1


def test_without_ffmpeg_a_container_fails_its_row_with_the_install_line(server, tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    server.files["/media/clip.webm"] = b"\x1a\x45\xdf\xa3 not really webm"
    sources = tmp_path / "S.csv"
    sources.write_text(f"url,label\n{server.url('/media/clip.webm')},x\n{server.url('/audio/low.wav')},y\n")
    result = api.fetch(sources, tmp_path / "data", rate_hz=8000, retries=0)
    assert result.n_clips == 1 and len(result.failures) == 1
    assert "needs ffmpeg" in result.failures[0].reason and "apt-get install ffmpeg" in result.failures[0].reason


def earmark(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom earmark.cli import main\nsys.argv = ['earmark', *sys.argv[1:]]\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_fetch_reports_failures_and_the_next_step(server, tmp_path):
    sources = tmp_path / "S.csv"
    sources.write_text(f"url,label\n{server.url('/audio/low.wav')},low\n{server.url('/nope.wav')},high\n"
                       f"{server.url('/archives/mid.zip')},mid\n{server.url('/archives/evil.zip')},evil\n")
    run = earmark("fetch", str(sources), "--to", str(tmp_path / "data"), "--rate-hz", "8000", "--clip-s", "1",
                  "--retries", "0", cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    # low.wav: 2 clips; mid.zip: two files shorter than a clip, one clip each (prepare pads them)
    assert "2 of 4 sources fetched completely" in run.stdout and "4 clips" in run.stdout
    assert "line 4: 2 clip(s), 1.1 s of 'mid'" in run.stdout
    assert "failed line 3" in run.stdout and "HTTP 404" in run.stdout
    assert f"line 5: failed: {server.url('/archives/evil.zip')}: archive" in run.stdout and "outside" in run.stdout
    assert "next: earmark prepare data.source=csv" in run.stdout
    with open(tmp_path / "data" / "fetch_failures.csv") as handle:
        assert list(csv.reader(handle))[1][:2] == ["3", server.url("/nope.wav")]


def test_cli_fetch_caps_size_and_cuts_off_a_drip_row_by_row(server, tmp_path):
    server.endless.add("/endless.wav")
    server.drip["/drip.wav"] = 0.2
    sources = tmp_path / "S.csv"
    sources.write_text(f"url,label\n{server.url('/audio/low.wav')},low\n{server.url('/endless.wav')},high\n"
                       f"{server.url('/drip.wav')},high\n")
    started = time.monotonic()
    run = earmark("fetch", str(sources), "--to", str(tmp_path / "data"), "--rate-hz", "8000", "--retries", "0",
                  "--timeout-s", "1", "--max-download-mb", "1", cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 of 3 sources fetched completely" in run.stdout
    assert "line 3: failed:" in run.stdout and "larger than --max-download-mb 1 MiB" in run.stdout
    assert "line 4: failed:" in run.stdout and "too slow" in run.stdout
    with open(tmp_path / "data" / "fetch_failures.csv") as handle:
        reasons = {row[0]: row[2] for row in list(csv.reader(handle))[1:]}
    assert "partial file was deleted" in reasons["3"] and "under 1024 bytes/s" in reasons["4"]
    parts = {p.name: p.stat().st_size for p in (tmp_path / "data").rglob("*.part")}
    assert f"{short_hash(server.url('/endless.wav'))}.part" not in parts  # over the cap: deleted
    assert sum(parts.values()) < 100  # the drip's few bytes stay for a resume


def test_cli_fetch_errors_are_one_line(server, tmp_path):
    bad = tmp_path / "S.yaml"
    bad.write_text(f"- url: {server.url('/audio/low.wav')}\n  label: low\n- url: {server.url('/b.wav')}\n")
    run = earmark("fetch", str(bad), "--to", str(tmp_path / "data"), cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith("error:") and "Traceback" not in run.stderr
    assert "line 3: label is missing" in run.stderr
    assert not (tmp_path / "data").exists()  # validated before anything was created
    run = earmark("fetch", "esc-51", "--to", str(tmp_path / "data"), cwd=tmp_path)
    assert run.returncode == 2 and "neither an existing sources file" in run.stderr and "esc50" in run.stderr


def test_cli_fetch_offline_says_so_in_one_message(tmp_path):
    sources = tmp_path / "S.yaml"
    sources.write_text("- url: https://www.youtube.com/watch?v=abcdefghijk\n  label: drone\n"
                       "- url: https://example.org/car.wav\n  label: car\n"
                       "- url: https://drive.google.com/drive/folders/1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2\n"
                       "  label: speech\n")
    prelude = ("import socket\n"
               "def no_lookup(*a, **k):\n"
               "    raise socket.gaierror(socket.EAI_AGAIN, 'Temporary failure in name resolution')\n"
               "socket.getaddrinfo = no_lookup")
    run = earmark("fetch", str(sources), "--to", str(tmp_path / "data"), "--retries", "0", cwd=tmp_path,
                  prelude=prelude)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("error: cannot reach drive.google.com, example.org, www.youtube.com: no network?")
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert len(pd.read_csv(tmp_path / "data" / "fetch_failures.csv")) == 3


def test_a_drive_folder_row_uses_every_file_in_it(server, tmp_path, monkeypatch):
    """gdown needs drive.google.com to list a folder, so a stand-in honouring gdown.download_folder's
    skip_download contract lists it; the files themselves come from the local Drive stand-in."""
    import socket

    import gdown
    from gdown.download import GoogleDriveFileToDownload

    contents = {"talk.wav": ("1TalkFileIdAbc", wav_bytes(200, 1.0)),
                "more/clips.zip": ("1ZipFileIdAbcd", zip_bytes({"x.wav": wav_bytes(210, 0.5)})),
                "notes.txt": ("1NotesFileIdAb", b"not audio")}
    for name, (file_id, data) in contents.items():
        server.drive[file_id] = (name.rsplit("/", 1)[-1], data, "direct")

    def list_folder(url, output=None, quiet=False, use_cookies=True, skip_download=False, timeout=None):
        assert skip_download
        return [GoogleDriveFileToDownload(id=file_id, path=name, local_path="/nowhere")
                for name, (file_id, _) in contents.items()]

    lookup = socket.getaddrinfo  # "online" for drive.google.com, and nothing outside 127.0.0.1 is contacted
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: lookup(host, *a, **k) if host == "127.0.0.1"
                        else [])
    monkeypatch.setattr(gdown, "download_folder", list_folder)
    sources = tmp_path / "S.csv"
    sources.write_text("url,label\nhttps://drive.google.com/drive/folders/1FolderIdAbcdefgh?usp=sharing,speech\n")
    result = fetch(sources, tmp_path / "data", server)
    meta = pd.read_csv(tmp_path / "data" / "metadata.csv")
    assert sorted(meta["member"].unique()) == ["more/clips.zip/x.wav", "talk.wav"]
    assert result.n_clips == 3 and len(result.failures) == 1 and "notes.txt" in result.failures[0].source
    assert "neither audio" in result.failures[0].reason
    again = fetch(sources, tmp_path / "data", server)
    assert (again.n_reused, again.n_downloaded) == (1, 0)


def test_options_that_do_not_apply_to_a_sources_list_are_refused(server, tmp_path):
    sources = tmp_path / "S.csv"
    sources.write_text(f"url,label\n{server.url('/audio/low.wav')},low\n")
    for option, flag in ((dict(base_url="http://127.0.0.1:9"), "--base-url"), (dict(checksum="md5:" + "0" * 32),
                                                                               "--checksum")):
        with pytest.raises(EarmarkError, match=f"{flag} does not apply to a sources list"):
            fetch_entry(sources, tmp_path / "data", **option)
    with pytest.raises(EarmarkError, match="--max-extract-gb must be > 0"):
        fetch_entry(sources, tmp_path / "data", max_extract_gb=0)
    assert sum(server.hits.values()) == 0 and not (tmp_path / "data").exists()
    result = fetch_entry(sources, tmp_path / "data", retries=0)  # rate_hz not given: 16 kHz
    clip = result.metadata.parent / pd.read_csv(result.metadata)["path"][0]
    assert result.n_clips == 1 and sf.info(clip).samplerate == 16000
