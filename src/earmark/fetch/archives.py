"""Zip and tar archives checked before anything is extracted.

Refused: absolute names, `..` components, links pointing outside the archive, device
files and FIFOs, a member both a file and a folder (`a`, then `a/b.wav`), a member
listed twice, more than `max_members` members (counted as the headers are read, so a
huge listing stops early), and more than `max_total_bytes` once expanded (a zip member
that inflates beyond its declared size is stopped mid-way).
Links that stay inside are skipped: audio data sets never need them. Extraction goes
into a temporary folder beside the target, renamed into place only when complete.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional

from earmark.errors import EarmarkError
from earmark.fetch.names import inside
from earmark.fetch.report import FetchError

CHUNK_BYTES = 1 << 20
MAX_LINK_TARGET_BYTES = 4096  # PATH_MAX on Linux; a zip stores a symlink's target as the member's data
SKIPPED_MEMBERS = ("__MACOSX",)  # resource forks that macOS zip tools add; never data


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 64 * 2**30  # UrbanSound8K expands to about 7 GB
    max_members: int = 500_000  # Speech Commands holds about 106,000

    def __post_init__(self) -> None:
        if self.max_total_bytes <= 0 or self.max_members <= 0:
            raise EarmarkError(f"archive limits must be positive: max_total_bytes={self.max_total_bytes}, "
                               f"max_members={self.max_members}")

    @classmethod
    def from_gb(cls, max_extract_gb: float) -> "ArchiveLimits":
        if not max_extract_gb > 0:  # also refuses NaN
            raise EarmarkError(f"--max-extract-gb must be > 0 (GiB an archive may expand to); got {max_extract_gb}")
        return cls(max_total_bytes=max(1, int(max_extract_gb * 2**30)))


@dataclass(frozen=True)
class _Member:
    name: str  # normalised relative POSIX path
    size: int
    handle: object  # the ZipInfo or TarInfo


def archive_kind(path: Path) -> Optional[str]:
    """'zip', 'tar' (plain or compressed) or None."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, tarfile.TarError):
        return None


def safe_extract(archive: Path, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[str]:
    """Check, then extract `archive` into the new folder `dest`; returns the extracted file names."""
    if dest.exists():
        raise FetchError(f"{dest} already exists; it is left untouched (delete it to extract again)")
    kind = archive_kind(archive)
    if kind is None:
        raise FetchError(f"{archive.name} is neither a zip nor a tar archive")
    temporary = dest.parent / f".{dest.name}.extracting"
    shutil.rmtree(temporary, ignore_errors=True)  # left by an interrupted run of ours
    temporary.mkdir(parents=True)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as bundle:
                members = _checked(_zip_members(bundle), limits, archive.name)
                names = _write_all(members, temporary, archive.name, lambda m: bundle.open(m.handle))
        else:
            with tarfile.open(archive) as bundle:
                members = _checked(_tar_members(bundle, temporary), limits, archive.name)
                names = _write_all(members, temporary, archive.name, lambda m: bundle.extractfile(m.handle))
        os.rename(temporary, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise FetchError(f"{archive.name} is damaged or truncated ({type(exc).__name__}: {exc}); "
                         f"delete it to download it again") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return names


def _refuse(archive_name: str, why: str) -> FetchError:
    return FetchError(f"archive {archive_name} refused: {why}")


def normalised_name(raw: str, archive_name: str) -> Optional[str]:
    """'./a/b.wav' -> 'a/b.wav'; None for the root entry; refuses absolute and '..' names."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive_name, f"member {raw!r} has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive_name, f"member {raw!r} would land outside the target folder ('..')")
    return "/".join(parts) or None


def _link_escapes(member_name: str, target: str, relative_to_member: bool) -> bool:
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        return True
    base = posixpath.dirname(member_name) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith("../")


def _zip_members(bundle: zipfile.ZipFile) -> Iterator[tuple[str, str, int, object, str]]:
    """(raw name, kind, size, info, link target) for each member."""
    for info in bundle.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            yield info.filename, "dir", 0, info, ""
        elif stat.S_ISLNK(mode):
            yield info.filename, "symlink", 0, info, _zip_link_target(bundle, info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            yield info.filename, "device", 0, info, ""
        else:
            yield info.filename, "file", info.file_size, info, ""


def _zip_link_target(bundle: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A symlink member's target, read no further than MAX_LINK_TARGET_BYTES."""
    with bundle.open(info) as source:
        target = source.read(MAX_LINK_TARGET_BYTES + 1)
    if len(target) > MAX_LINK_TARGET_BYTES:
        raise _refuse(Path(bundle.filename or "archive").name,
                      f"link {info.filename!r} has a target longer than {MAX_LINK_TARGET_BYTES} bytes")
    return target.decode("utf-8", "replace")


def _tar_members(bundle: tarfile.TarFile, temporary: Path) -> Iterator[tuple[str, str, int, object, str]]:
    data_filter = getattr(tarfile, "data_filter", None)  # Python 3.12+, and 3.11.4+ / 3.10.12+
    for info in bundle:  # header by header, so the member limit stops a huge listing early
        if info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.ischr() or info.isblk() or info.isfifo():
            kind = "device"
        elif info.isreg():
            kind = "file"
        else:
            kind = "other"  # sparse/contiguous/unknown types: never needed for audio, but counted
        if data_filter is not None and kind in ("dir", "file"):
            archive_name = Path(bundle.name or "archive").name
            normalised_name(info.name, archive_name)  # our clearer message first
            try:  # then the standard library's own check
                data_filter(info, str(temporary))
            except tarfile.FilterError as exc:
                raise _refuse(archive_name, str(exc)) from None
        yield info.name, kind, info.size if kind == "file" else 0, info, info.linkname


def _checked(raw_members, limits: ArchiveLimits, archive_name: str) -> list[_Member]:
    """Every member checked (names, links, devices, count, total size) before one byte is written."""
    files: list[_Member] = []
    tree = _Tree(archive_name)
    total_bytes = count = 0
    for raw_name, kind, size, handle, link_target in raw_members:
        count += 1
        if count > limits.max_members:
            raise _refuse(archive_name, f"more than {limits.max_members} members")
        if kind == "other":
            continue
        name = normalised_name(raw_name, archive_name)
        if kind == "device":
            raise _refuse(archive_name, f"member {raw_name!r} is a device file or FIFO")
        if kind in ("symlink", "hardlink"):
            if name is None or _link_escapes(name, link_target, relative_to_member=kind == "symlink"):
                raise _refuse(archive_name, f"link {raw_name!r} points outside the archive ({link_target!r})")
            continue  # a link inside the archive: not needed, not extracted
        if name is None:
            continue
        tree.add(name, is_folder=kind == "dir")
        if kind == "dir":
            continue
        total_bytes += size
        if total_bytes > limits.max_total_bytes:
            raise _refuse(archive_name, f"it expands to more than {limits.max_total_bytes / 2**30:.3g} GiB "
                                        f"(the limit; raise it with --max-extract-gb if you trust the source)")
        files.append(_Member(name, size, handle))
    return files


class _Tree:
    """The names seen so far, so that no member is both a file and a folder, or listed twice."""

    def __init__(self, archive_name: str):
        self.archive_name = archive_name
        self.files: set[str] = set()
        self.folders: set[str] = set()

    def add(self, name: str, is_folder: bool) -> None:
        parents = [name.rsplit("/", depth)[0] for depth in range(name.count("/"), 0, -1)]  # 'a', 'a/b' of 'a/b/c'
        if clash := next((parent for parent in parents if parent in self.files), None):
            raise _refuse(self.archive_name, f"member {name!r} lies inside {clash!r}, which the archive also holds "
                                             f"as a file")
        if name in self.files:
            raise _refuse(self.archive_name, f"member {name!r} appears twice" if not is_folder else
                          f"member {name!r} is both a file and a folder")
        if not is_folder and name in self.folders:
            raise _refuse(self.archive_name, f"member {name!r} is a file, but other members lie inside a folder "
                                             f"of that name")
        (self.folders if is_folder else self.files).add(name)
        self.folders.update(parents)


def _write_all(members: list[_Member], root: Path, archive_name: str, open_member) -> list[str]:
    """Stream each member out, counting bytes: a member may not exceed its declared size."""
    for member in members:
        try:
            target = inside(root, member.name)
        except EarmarkError as exc:
            raise _refuse(archive_name, str(exc)) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        source: IO[bytes] = open_member(member)
        with source, open(target, "xb") as out:  # "x": never over a file (names were checked to be unique)
            written = 0
            for block in iter(lambda source=source: source.read(CHUNK_BYTES), b""):
                written += len(block)
                if written > member.size:  # the declared sizes were checked against the limit
                    raise _refuse(archive_name, f"member {member.name!r} inflates beyond its declared size "
                                             f"({member.size} bytes): a zip bomb?")
                out.write(block)
    return [member.name for member in members]
