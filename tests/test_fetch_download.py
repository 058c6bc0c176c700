"""Downloads against a local server: retries, resume, skip-when-done, no overwrite, offline, Drive links."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from earmark.errors import EarmarkError
from earmark.fetch.download import DownloadOptions, fetch_url
from earmark.fetch.drive import download_drive_file, download_drive_folder
from earmark.fetch.report import NO_NETWORK, FetchError
from earmark.fetch.state import DownloadState
from earmark.fetch.video import download_media
from fetch_server import LocalServer, wav_bytes

FAST = DownloadOptions(retries=2, backoff_s=0.0, timeout_s=5.0)


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
def offline(monkeypatch):
    """Every host name lookup fails, as on a machine without network."""
    def no_lookup(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)


def test_a_finished_download_is_recorded_and_skipped_next_time(server, tmp_path):
    body = wav_bytes(440, 0.5)
    server.files["/clips/a%20b.wav"] = body
    state = DownloadState(tmp_path)
    path = fetch_url(server.url("/clips/a%20b.wav"), tmp_path, FAST, state)
    assert path.read_bytes() == body and path.name.endswith("-a_b.wav")
    assert not list(tmp_path.glob("*.part"))
    again = fetch_url(server.url("/clips/a%20b.wav"), tmp_path, FAST, DownloadState(tmp_path))  # a new run
    assert again == path and server.hits["/clips/a%20b.wav"] == 1  # no second request
    assert DownloadState(tmp_path).entry(server.url("/clips/a%20b.wav"))["bytes"] == len(body)


def test_transient_failures_are_retried_then_reported(server, tmp_path):
    server.files["/flaky.wav"] = b"RIFF-data"
    server.flaky["/flaky.wav"] = 2
    path = fetch_url(server.url("/flaky.wav"), tmp_path, FAST, DownloadState(tmp_path))
    assert path.read_bytes() == b"RIFF-data" and server.hits["/flaky.wav"] == 3
    server.files["/down.wav"] = b"x"
    server.flaky["/down.wav"] = 10
    with pytest.raises(FetchError, match=r"HTTP 503.*gave up after 3 attempts"):
        fetch_url(server.url("/down.wav"), tmp_path, FAST, DownloadState(tmp_path))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(server.url("/missing.wav"), tmp_path, FAST, DownloadState(tmp_path))
    assert server.hits["/missing.wav"] == 1  # a 404 is not retried


def test_a_broken_transfer_resumes_with_a_range_request(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/big.bin"] = body
    server.truncate_once.add("/big.bin")
    state = DownloadState(tmp_path)
    path = fetch_url(server.url("/big.bin"), tmp_path, FAST, state)
    assert path.read_bytes() == body
    assert server.range_requests == [("/big.bin", f"bytes={len(body) // 2}-")]
    assert [tag for _, tag in server.if_range_requests] == [f'"{hashlib.sha256(body).hexdigest()[:16]}"']
    assert state.entry(server.url("/big.bin"))["sha256"] == hashlib.sha256(body).hexdigest()  # both halves hashed
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.resume.json"))


def test_a_file_changed_between_runs_is_fetched_whole_not_spliced(server, tmp_path):
    """The .part of the old file is resumed with If-Range: the server sends the new file whole."""
    old, new = bytes(range(256)) * 400, bytes(reversed(range(256))) * 400
    server.files["/moving.bin"] = old
    server.truncate_once.add("/moving.bin")
    with pytest.raises(FetchError, match="closed after"):
        fetch_url(server.url("/moving.bin"), tmp_path, DownloadOptions(retries=0, backoff_s=0), DownloadState(tmp_path))
    server.files["/moving.bin"] = new  # the publisher replaced the file meanwhile
    state = DownloadState(tmp_path)
    path = fetch_url(server.url("/moving.bin"), tmp_path, FAST, state)
    assert path.read_bytes() == new
    assert server.if_range_requests == [("/moving.bin", f'"{hashlib.sha256(old).hexdigest()[:16]}"')]
    assert state.entry(server.url("/moving.bin"))["sha256"] == hashlib.sha256(new).hexdigest()


def test_a_run_stopped_while_recording_a_finished_download_recovers(server, tmp_path, monkeypatch):
    """Ctrl-C as state.json is written: the next run finishes the job instead of stopping at 'already exists'."""
    body = wav_bytes(440, 0.5)
    server.files["/a.wav"] = body
    original_save = DownloadState.save

    def interrupted_save(self):
        monkeypatch.setattr(DownloadState, "save", original_save)
        raise KeyboardInterrupt

    monkeypatch.setattr(DownloadState, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        fetch_url(server.url("/a.wav"), tmp_path, FAST, DownloadState(tmp_path))
    state = DownloadState(tmp_path)
    path = fetch_url(server.url("/a.wav"), tmp_path, FAST, state)
    assert path.read_bytes() == body and state.finished(server.url("/a.wav")) == path
    assert server.hits["/a.wav"] == 2  # the second run only confirmed the .part was whole (416)


@pytest.mark.parametrize("disposition", ['attachment; filename="../evil.wav"',
                                         "attachment; filename*=UTF-8''..%2F..%2Fevil.wav"])
def test_a_server_file_name_cannot_leave_the_folder(server, tmp_path, disposition):
    server.files["/download"] = b"RIFF-evil"
    server.headers["/download"] = {"Content-Disposition": disposition}
    target = tmp_path / "dir"
    path = fetch_url(server.url("/download"), target, FAST, DownloadState(target))
    assert path.parent == target and path.name.endswith("-evil.wav") and path.read_bytes() == b"RIFF-evil"
    assert not (tmp_path / "evil.wav").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_a_server_without_range_support_restarts_cleanly(server, tmp_path):
    body = b"0123456789" * 1000
    server.files["/plain.bin"] = body
    server.truncate_once.add("/plain.bin")
    server.no_range.add("/plain.bin")
    assert fetch_url(server.url("/plain.bin"), tmp_path, FAST, DownloadState(tmp_path)).read_bytes() == body


def test_an_existing_file_is_never_overwritten(server, tmp_path):
    server.files["/a.wav"] = b"new"
    first = fetch_url(server.url("/a.wav"), tmp_path, FAST, DownloadState(tmp_path))
    first.unlink()  # the user removed it; a stranger's file now takes its name
    (tmp_path / "state.json").unlink()
    first.write_bytes(b"mine")
    with pytest.raises(FetchError, match="left untouched"):
        fetch_url(server.url("/a.wav"), tmp_path, FAST, DownloadState(tmp_path))
    assert first.read_bytes() == b"mine"


def test_unreachable_hosts_fail_with_one_clear_reason(server, tmp_path, offline):
    with pytest.raises(FetchError) as caught:
        fetch_url("https://example.org/a.wav", tmp_path, FAST, DownloadState(tmp_path))
    assert caught.value.reason.startswith("cannot reach example.org: no network?")
    with pytest.raises(FetchError, match=f"cannot reach www.youtube.com: {NO_NETWORK}"):
        download_media("https://www.youtube.com/watch?v=abcdefghijk", tmp_path, FAST, DownloadState(tmp_path))
    with pytest.raises(FetchError, match=f"cannot reach drive.google.com: {NO_NETWORK}"):
        download_drive_folder("https://drive.google.com/drive/folders/1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2",
                              "1ZXEhzbLRLU1giKKRJkjm8N04cO_JoYE2", tmp_path, FAST, DownloadState(tmp_path))


def test_a_refused_connection_is_retried_then_reported(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="connection refused.*gave up after 2 attempts"):
        fetch_url(f"http://127.0.0.1:{port}/a.wav", tmp_path, DownloadOptions(retries=1, backoff_s=0),
                  DownloadState(tmp_path))


def test_drive_file_links_direct_and_through_the_confirmation_page(server, tmp_path):
    small, large = wav_bytes(300, 0.3), b"PK-pretend-zip" * 1000
    server.drive["1SmallFileIdAbc"] = ("speech one.wav", small, "direct")
    server.drive["1LargeFileIdXyz"] = ("harmful clips.zip", large, "confirm")
    base = server.url("/drive")
    state = DownloadState(tmp_path)
    direct = download_drive_file("1SmallFileIdAbc", tmp_path, FAST, state, base)
    assert direct.read_bytes() == small and direct.name.endswith("-speech_one.wav")
    confirmed = download_drive_file("1LargeFileIdXyz", tmp_path, FAST, state, base)
    assert confirmed.read_bytes() == large and confirmed.name.endswith("-harmful_clips.zip")
    assert server.hits["/usercontent/download"] == 1
    assert server.hits["/drive/uc"] == 2  # one each: a file served directly is not requested twice
    assert [p.name for p in tmp_path.iterdir() if "harmful" not in p.name and "speech" not in p.name] == \
        ["state.json"]  # the confirmation page is gone
    assert download_drive_file("1LargeFileIdXyz", tmp_path, FAST, DownloadState(tmp_path), base) == confirmed
    assert server.hits["/usercontent/download"] == 1  # finished: not asked again


def test_a_drive_file_not_shared_publicly_is_explained(server, tmp_path):
    server.drive["1PrivateFileId00"] = ("secret.wav", b"", "private")
    with pytest.raises(FetchError, match="Anyone with the link"):
        download_drive_file("1PrivateFileId00", tmp_path, FAST, DownloadState(tmp_path), server.url("/drive"))
    with pytest.raises(FetchError, match="HTTP 404"):
        download_drive_file("1UnknownFileId00", tmp_path, FAST, DownloadState(tmp_path), server.url("/drive"))


def test_the_drive_confirmation_request_is_retried_like_any_download(server, tmp_path):
    """A 503, then a page cut off mid-way: both retried, not a traceback."""
    server.drive["1LargeFileIdXyz"] = ("clips.zip", b"PK-pretend-zip" * 1000, "confirm")
    server.flaky["/drive/uc"] = 1
    server.truncate_once.add("/drive/uc")
    path = download_drive_file("1LargeFileIdXyz", tmp_path, FAST, DownloadState(tmp_path), server.url("/drive"))
    assert path.read_bytes() == b"PK-pretend-zip" * 1000 and server.hits["/drive/uc"] == 3


def fake_gdown_listing(monkeypatch, names_and_ids: dict[str, str]):
    """gdown.download_folder(skip_download=True) needs drive.google.com; this stand-in lists, writes nothing."""
    import gdown
    from gdown.download import GoogleDriveFileToDownload

    calls = []

    def download_folder(url, output=None, quiet=False, use_cookies=True, skip_download=False, timeout=None):
        assert skip_download and quiet and use_cookies is False
        calls.append(url)
        return [GoogleDriveFileToDownload(id=file_id, path=name, local_path=f"/nowhere/{name}")
                for name, file_id in names_and_ids.items()]

    lookup = socket.getaddrinfo  # "online" for drive.google.com, without touching the network
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: lookup(host, *a, **k) if host == "127.0.0.1"
                        else [])
    monkeypatch.setattr(gdown, "download_folder", download_folder)
    return calls


def test_drive_folders_are_listed_by_gdown_then_fetched_file_by_file(server, tmp_path, monkeypatch):
    server.drive["1FileAaaaaaaaa"] = ("a.wav", wav_bytes(500, 0.2), "direct")
    server.drive["1FileBbbbbbbbb"] = ("b.wav", wav_bytes(520, 0.2), "confirm")
    calls = fake_gdown_listing(monkeypatch, {"a.wav": "1FileAaaaaaaaa", "sub/b.wav": "1FileBbbbbbbbb"})
    url = "https://drive.google.com/drive/folders/1FolderIdAbcdef"
    files = download_drive_folder(url, "1FolderIdAbcdef", tmp_path, FAST, DownloadState(tmp_path),
                                  server.url("/drive"))
    assert calls == [url] and sorted(name for _, name in files) == ["a.wav", "sub/b.wav"]
    by_name = {name: path for path, name in files}
    assert by_name["a.wav"].read_bytes() == server.drive["1FileAaaaaaaaa"][1]
    assert by_name["sub/b.wav"].read_bytes() == server.drive["1FileBbbbbbbbb"][1]
    assert by_name["sub/b.wav"].parent.name == "sub"
    hits = sum(server.hits.values())
    again = download_drive_folder(url, "1FolderIdAbcdef", tmp_path, FAST, DownloadState(tmp_path),
                                  server.url("/drive"))
    assert again == files and calls == [url] and sum(server.hits.values()) == hits  # neither listed nor fetched

    import gdown

    def failing(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Cannot retrieve the folder information from the link.")

    monkeypatch.setattr(gdown, "download_folder", failing)
    with pytest.raises(FetchError, match="gdown could not list the Drive folder.*Cannot retrieve"):
        download_drive_folder("https://drive.google.com/drive/folders/1OtherFolderId00", "1OtherFolderId00",
                              tmp_path, FAST, DownloadState(tmp_path))


def test_a_drive_folder_listing_a_name_outside_is_refused_before_any_download(server, tmp_path, monkeypatch):
    server.drive["1FileAaaaaaaaa"] = ("a.wav", b"RIFF", "direct")
    fake_gdown_listing(monkeypatch, {"a.wav": "1FileAaaaaaaaa", "../../escape.wav": "1FileAaaaaaaaa"})
    with pytest.raises(FetchError, match="'../../escape.wav', which would land outside its folder"):
        download_drive_folder("https://drive.google.com/drive/folders/1FolderIdAbcdef", "1FolderIdAbcdef",
                              tmp_path / "d", FAST, DownloadState(tmp_path / "d"), server.url("/drive"))
    assert sum(server.hits.values()) == 0 and not list(tmp_path.rglob("*.wav"))


def test_yt_dlp_reads_a_direct_media_url_from_the_local_server(server, tmp_path):
    server.files["/media/engine.wav"] = wav_bytes(700, 0.4)
    server.content_types["/media/engine.wav"] = "audio/wav"
    url = server.url("/media/engine.wav")
    path, title = download_media(url, tmp_path, FAST, DownloadState(tmp_path))
    assert path.read_bytes() == server.files["/media/engine.wav"] and title == "engine"
    requests = sum(server.hits.values())
    assert download_media(url, tmp_path, FAST, DownloadState(tmp_path)) == (path, "engine")
    assert sum(server.hits.values()) == requests  # finished: yt-dlp is not even started
    with pytest.raises(FetchError, match="yt-dlp: .*404"):
        download_media(server.url("/media/missing.wav"), tmp_path, FAST, DownloadState(tmp_path))


def test_a_download_over_the_size_cap_stops_and_leaves_nothing(server, tmp_path):
    capped = DownloadOptions(retries=0, backoff_s=0.0, timeout_s=5.0, max_download_mb=1)
    server.endless.add("/endless.wav")  # no Content-Length: counted as it arrives
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"larger than --max-download-mb 1 MiB .*partial file was deleted"):
        fetch_url(server.url("/endless.wav"), tmp_path, capped, DownloadState(tmp_path))
    assert time.monotonic() - started < 10
    server.files["/big.wav"] = bytes(2 << 20)  # announced by Content-Length: refused before the body
    with pytest.raises(FetchError, match=r"announces 2097152 bytes, more than --max-download-mb 1 MiB"):
        fetch_url(server.url("/big.wav"), tmp_path, capped, DownloadState(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if p.name != "state.json"] == []


def test_a_dripping_server_is_cut_off_after_the_timeout_window(server, tmp_path):
    server.drip["/drip.wav"] = 0.2  # each read succeeds well inside the 1 s timeout
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"too slow: .* bytes in 1\.\d s, under 1024 bytes/s .*gave up after 2"):
        fetch_url(server.url("/drip.wav"), tmp_path, DownloadOptions(retries=1, backoff_s=0.0, timeout_s=1.0),
                  DownloadState(tmp_path))
    assert time.monotonic() - started < 6


def test_the_size_cap_is_checked_when_options_arrive():
    with pytest.raises(EarmarkError, match="max_download_mb"):
        DownloadOptions(max_download_mb=0)
