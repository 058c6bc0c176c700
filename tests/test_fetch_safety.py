"""Nothing from the network escapes the target folder: names, archive members, links, devices, bombs."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from earmark.errors import EarmarkError
from earmark.fetch.archives import ArchiveLimits, archive_kind, safe_extract
from earmark.fetch.names import inside, name_from_url
from earmark.fetch.report import FetchError
from earmark.files import safe_name


@pytest.mark.parametrize("raw, expected", [
    ("../../etc/passwd", "etc_passwd"),
    ("Drone über Feld.mp4", "Drone_uber_Feld.mp4"),
    ("..", "file"),
    ("", "file"),
    ("CON.wav", "_CON.wav"),
    ("a/b\\c.wav", "a_b_c.wav"),
    (".hidden.wav", "hidden.wav"),
    ("x" * 300 + ".flac", "x" * 75 + ".flac"),
])
def test_safe_name_keeps_names_plain_and_inside(raw, expected):
    assert safe_name(raw) == expected


def test_names_from_urls_are_decoded_and_sanitised():
    assert name_from_url("https://host/a/My%20Song%20(live).wav?x=1") == "My_Song_live.wav"
    assert name_from_url("https://host/dir/%2e%2e%2fevil.zip") == "evil.zip"
    assert name_from_url("https://host/") == "download"


def test_inside_refuses_paths_leaving_the_root(tmp_path):
    assert inside(tmp_path, "a/b.wav") == (tmp_path / "a" / "b.wav").resolve()
    for bad in ("../x.wav", "/etc/passwd", "a/../../x"):
        with pytest.raises(EarmarkError, match="outside"):
            inside(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(EarmarkError, match="outside"):
        inside(tmp_path, "link/escaped.wav")


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for info in members:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
            bundle.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def test_a_good_archive_is_extracted_completely(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"clips/a.wav": b"RIFFa", "clips/sub/b.wav": b"RIFFb", "./c.txt": b"c"})
    assert archive_kind(archive) == "zip"
    names = safe_extract(archive, tmp_path / "out")
    assert sorted(names) == ["c.txt", "clips/a.wav", "clips/sub/b.wav"]
    assert (tmp_path / "out" / "clips" / "sub" / "b.wav").read_bytes() == b"RIFFb"
    assert not list(tmp_path.glob(".out.extracting*"))


@pytest.mark.parametrize("member, why", [("../evil.wav", "outside"), ("/tmp/evil.wav", "absolute"),
                                         ("ok/../../evil.wav", "outside"), ("C:/evil.wav", "absolute")])
def test_zip_members_escaping_the_folder_are_refused_before_anything_is_written(tmp_path, member, why):
    archive = make_zip(tmp_path / "evil.zip", {"good.wav": b"RIFF", member: b"gotcha"})
    target = tmp_path / "deep" / "out"
    target.parent.mkdir()
    with pytest.raises(FetchError, match=why):
        safe_extract(archive, target)
    assert not target.exists() and not list(target.parent.iterdir())  # not even the good member
    assert not (tmp_path / "evil.wav").exists() and not Path("/tmp/evil.wav").exists()


def test_tar_links_pointing_out_and_device_files_are_refused(tmp_path):
    link = tarfile.TarInfo("clips/passwd.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    hard = tarfile.TarInfo("clips/hard.wav")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/shadow"
    device = tarfile.TarInfo("clips/null.wav")
    device.type = tarfile.CHRTYPE
    for info, why in ((link, "points outside"), (hard, "points outside"), (device, "device")):
        archive = make_tar(tmp_path / f"{info.type!r}.tar.gz", [info])
        with pytest.raises(FetchError, match=why):
            safe_extract(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_tar_escape_is_refused_and_links_inside_are_skipped(tmp_path):
    escape = tarfile.TarInfo("../evil.wav")
    with pytest.raises(FetchError, match="outside"):
        safe_extract(make_tar(tmp_path / "evil.tar.gz", [escape], {"../evil.wav": b"x"}), tmp_path / "out")
    good = tarfile.TarInfo("a/good.wav")
    inner_link = tarfile.TarInfo("a/alias.wav")
    inner_link.type, inner_link.linkname = tarfile.SYMTYPE, "good.wav"
    names = safe_extract(make_tar(tmp_path / "ok.tar.gz", [good, inner_link], {"a/good.wav": b"RIFF"}),
                         tmp_path / "ok")
    assert names == ["a/good.wav"]
    assert not (tmp_path / "ok" / "a" / "alias.wav").exists()


def test_archives_over_the_size_or_member_limit_are_refused(tmp_path):
    bomb = make_zip(tmp_path / "bomb.zip", {"silence.wav": bytes(3 << 20)})  # 3 MiB of zeros: ~3 KB zipped
    assert bomb.stat().st_size < 20_000
    with pytest.raises(FetchError, match="expands to more than"):
        safe_extract(bomb, tmp_path / "out", ArchiveLimits(max_total_bytes=1 << 20))
    many = make_zip(tmp_path / "many.zip", {f"{i}.wav": b"x" for i in range(30)})
    with pytest.raises(FetchError, match="more than 20 members"):
        safe_extract(many, tmp_path / "out", ArchiveLimits(max_members=20))
    assert not (tmp_path / "out").exists()


def test_a_damaged_archive_is_reported_and_an_existing_target_is_never_touched(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"a.wav": np.random.default_rng(0).bytes(5000)})
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(archive.read_bytes()[:200] + bytes(200) + archive.read_bytes()[400:])  # inside the data
    with pytest.raises(FetchError, match="damaged"):
        safe_extract(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep")
    with pytest.raises(FetchError, match="already exists"):
        safe_extract(archive, tmp_path / "taken")
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"
    not_archive = tmp_path / "page.html"
    not_archive.write_text("<html></html>")
    assert archive_kind(not_archive) is None


def patch_declared_size(archive: Path, declared: int) -> None:
    """Rewrite the (single) member's uncompressed size in the local header and the central directory."""
    _patch(archive, {(b"PK\x03\x04", 22): declared, (b"PK\x01\x02", 24): declared})


def patch_crc(archive: Path, crc: int) -> None:
    _patch(archive, {(b"PK\x03\x04", 14): crc, (b"PK\x01\x02", 16): crc})


def _patch(archive: Path, fields: dict[tuple[bytes, int], int]) -> None:
    """Overwrite 4-byte little-endian fields at (offset after a header signature)."""
    data = bytearray(archive.read_bytes())
    for (signature, offset), value in fields.items():
        start = data.index(signature) + offset
        data[start:start + 4] = value.to_bytes(4, "little")
    archive.write_bytes(bytes(data))


def test_a_zip_member_inflating_past_its_declared_size_never_grows_on_disk(tmp_path):
    """Declared 100 bytes (well under the limit), inflates to 3 MiB: refused, or cut at 100 bytes."""
    import zlib

    bomb = make_zip(tmp_path / "bomb.zip", {"quiet.wav": bytes(3 << 20)})
    patch_declared_size(bomb, 100)
    limits = ArchiveLimits(max_total_bytes=1000)
    with pytest.raises(FetchError, match="bomb.zip is damaged"):  # the CRC of 100 bytes cannot match
        safe_extract(bomb, tmp_path / "out", limits)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    patch_crc(bomb, zlib.crc32(bytes(100)))  # a forger who also fixed the CRC gets 100 bytes, no more
    safe_extract(bomb, tmp_path / "out", limits)
    assert (tmp_path / "out" / "quiet.wav").stat().st_size == 100


def zip_with_symlink(path: Path, link_name: str, target: bytes, others: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        link = zipfile.ZipInfo(link_name)
        link.external_attr = (0o120777 << 16)  # S_IFLNK | 0777, as `zip --symlinks` stores it
        bundle.writestr(link, target)
        for name, data in others.items():
            bundle.writestr(name, data)
    return path


def test_zip_symlinks_are_refused_when_they_leave_and_skipped_when_they_stay(tmp_path):
    outside = zip_with_symlink(tmp_path / "out.zip", "clips/passwd.wav", b"../../etc/passwd", {"a.wav": b"RIFF"})
    with pytest.raises(FetchError, match="points outside"):
        safe_extract(outside, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    inner = zip_with_symlink(tmp_path / "in.zip", "clips/alias.wav", b"good.wav", {"clips/good.wav": b"RIFF"})
    assert safe_extract(inner, tmp_path / "ok") == ["clips/good.wav"]
    assert not (tmp_path / "ok" / "clips" / "alias.wav").exists()
    huge = zip_with_symlink(tmp_path / "huge.zip", "clips/long.wav", b"a/" * (1 << 20), {"a.wav": b"RIFF"})
    with pytest.raises(FetchError, match="target longer than 4096 bytes"):
        safe_extract(huge, tmp_path / "y")


def test_a_tar_over_the_member_limit_is_refused_before_its_listing_is_read(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "many.tar.gz", [tarfile.TarInfo(f"{i}.wav") for i in range(300)],
                       {f"{i}.wav": b"x" for i in range(300)})
    headers_read = []
    read_header = tarfile.TarFile.next

    def counting(self):
        headers_read.append(1)
        return read_header(self)

    monkeypatch.setattr(tarfile.TarFile, "next", counting)
    with pytest.raises(FetchError, match="more than 10 members"):
        safe_extract(archive, tmp_path / "out", ArchiveLimits(max_members=10))
    assert len(headers_read) < 20  # stopped at the limit, not after all 300 headers
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("members, why", [
    ({"a": b"file", "a/b.wav": b"RIFF"}, "'a/b.wav' lies inside 'a', which the archive also holds as a file"),
    ({"a/b.wav": b"RIFF", "a": b"file"}, "'a' is a file, but other members lie inside a folder of that name"),
])
def test_a_member_both_file_and_folder_is_refused_with_the_reason(tmp_path, members, why):
    for make, suffix in ((make_zip, ".zip"), (None, ".tar.gz")):
        if make is None:
            archive = make_tar(tmp_path / f"clash{suffix}", [tarfile.TarInfo(n) for n in members], members)
        else:
            archive = make(tmp_path / f"clash{suffix}", members)
        with pytest.raises(FetchError, match=re.escape(why)):
            safe_extract(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_archive_limits_must_be_positive():
    for bad in (0, -1, float("nan")):
        with pytest.raises(EarmarkError, match="--max-extract-gb must be > 0"):
            ArchiveLimits.from_gb(bad)
    with pytest.raises(EarmarkError, match="max_members=0"):
        ArchiveLimits(max_members=0)
    assert ArchiveLimits.from_gb(0.5).max_total_bytes == 2**29
