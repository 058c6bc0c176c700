"""A sources list end to end: download each row, unpack, convert and cut, write metadata.csv.

    DIR/audio/<label>/<name>-<id>[_<k>].wav   mono WAV clips at one rate
    DIR/metadata.csv                           one row per clip, with provenance; data.source=csv reads it
    DIR/fetch_failures.csv                     line, source, reason of everything that failed
    DIR/downloads/                             raw downloads, unpacked archives, state.json

A second run skips every finished download and every clip already written, so it
needs the network only for what failed or is new. Nothing existing is overwritten.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

from earmark.errors import EarmarkError
from earmark.fetch.archives import SKIPPED_MEMBERS, ArchiveLimits, archive_kind, safe_extract
from earmark.fetch.clips import clip_bounds, is_media, read_mono, write_wav
from earmark.fetch.download import DownloadOptions, fetch_url
from earmark.fetch.drive import (
    DRIVE_BASE_URL,
    download_drive_file,
    download_drive_folder,
    is_finished,
    parse_drive_link,
)
from earmark.fetch.names import short_hash
from earmark.fetch.report import FAILURES_FILE, Failure, FetchError, FetchResult, write_failures
from earmark.fetch.sources import SourceRow, read_sources
from earmark.fetch.state import DOWNLOADS, DownloadState
from earmark.fetch.video import download_media
from earmark.files import atomic_write_text, safe_name

METADATA_FILE = "metadata.csv"
METADATA_COLUMNS = ["path", "label", "group", "source", "kind", "member", "source_start_s", "source_end_s",
                    "license", "line"]


@dataclass(frozen=True)
class ClipSettings:
    rate_hz: int = 16000
    clip_s: Optional[float] = None  # None: one file per source segment

    def __post_init__(self) -> None:
        if self.rate_hz <= 0 or (self.clip_s is not None and self.clip_s <= 0):
            raise EarmarkError(f"--rate-hz ({self.rate_hz}) and --clip-s ({self.clip_s}) must be positive")


def fetch_sources(sources_file: Path, to: Path, settings: ClipSettings, options: DownloadOptions,
                  limits: ArchiveLimits = ArchiveLimits(), drive_base_url: str = DRIVE_BASE_URL,
                  say: Callable[[str], None] = lambda text: None) -> FetchResult:
    rows = read_sources(sources_file)  # every malformed row is reported before any download
    to = Path(to)
    state = _open_state(to, settings)
    result = FetchResult(to=to, overrides=["data.source=csv", f"data.path={to / METADATA_FILE}"],
                         n_sources=len(rows), metadata=to / METADATA_FILE)
    records: list[dict] = []
    for row in rows:
        seen_before = _already_downloaded(row, state)
        try:
            payloads = _download(row, to / DOWNLOADS, options, state, limits, drive_base_url)
        except FetchError as exc:
            result.failures.append(Failure(row.line, row.url, exc.reason))
            say(_row_outcome(row, [], result.failures[-1:], seen_before))
            continue
        n_failed_before = len(result.failures)
        row_records = _clips_for_row(row, payloads, to, settings, state, limits, result.failures)
        records += row_records
        result.n_reused += seen_before
        result.n_downloaded += not seen_before
        say(_row_outcome(row, row_records, result.failures[n_failed_before:], seen_before))
    _write_metadata(to / METADATA_FILE, records)
    write_failures(to / FAILURES_FILE, result.failures)
    result.n_clips = len(records)
    result.audio_s = float(sum(r["source_end_s"] - r["source_start_s"] for r in records))
    if not records and result.failures and all(f.is_offline for f in result.failures):
        hosts = sorted({urlsplit(f.source).hostname or f.source for f in result.failures})
        raise EarmarkError(f"cannot reach {', '.join(hosts)}: no network? nothing was fetched; connect (or set "
                           f"HTTPS_PROXY) and run the same command again")
    return result


def _row_outcome(row: SourceRow, records: list[dict], failures: list[Failure], seen_before: bool) -> str:
    """One line per row: its clips, or why it gave none; files of it that failed are counted."""
    if not records and failures:
        more = f" (and {len(failures) - 1} more file(s))" if len(failures) > 1 else ""
        return f"line {row.line}: failed: {row.url}: {failures[0].reason}{more}"
    seconds = sum(r["source_end_s"] - r["source_start_s"] for r in records)
    text = f"line {row.line}: {len(records)} clip(s), {seconds:.1f} s of '{row.label}' from {row.url}"
    text += " (already downloaded)" if seen_before else ""
    return text + (f"; {len(failures)} file(s) of it failed" if failures else "")


def _open_state(to: Path, settings: ClipSettings) -> DownloadState:
    """The folder's state; a folder fetched with other settings, or someone else's metadata.csv, is refused."""
    state = DownloadState(to / DOWNLOADS)
    if (to / METADATA_FILE).exists() and not state.path.exists():
        raise EarmarkError(f"{to / METADATA_FILE} exists but was not written by earmark fetch; it is left "
                           f"untouched: fetch into an empty folder (--to)")
    wanted = {"rate_hz": settings.rate_hz, "clip_s": settings.clip_s}
    earlier = state.data.get("settings")
    if earlier is not None and earlier != wanted:
        raise EarmarkError(f"{to} was fetched with --rate-hz {earlier['rate_hz']} --clip-s {earlier['clip_s']}; "
                           f"clips already there would not match --rate-hz {settings.rate_hz} --clip-s "
                           f"{settings.clip_s}: use the same settings, or another --to folder")
    state.data["settings"] = wanted
    state.save()
    return state


def _already_downloaded(row: SourceRow, state: DownloadState) -> bool:
    if row.kind == "drive":
        return is_finished(row.url, state)
    return state.finished(row.url) is not None


def _download(row: SourceRow, folder: Path, options: DownloadOptions, state: DownloadState, limits: ArchiveLimits,
              drive_base_url: str) -> list[tuple[Path, str]]:
    """The row's downloaded files as (path, member), member being the name inside a Drive folder ('' if none)."""
    if row.kind == "video":
        path, _ = download_media(row.url, folder, options, state)
        return [(path, "")]
    if row.kind == "drive":
        kind, drive_id = parse_drive_link(row.url)
        if kind == "folder":
            return download_drive_folder(row.url, drive_id, folder, options, state, drive_base_url)
        path = download_drive_file(drive_id, folder, options, state, drive_base_url)
    else:
        path = fetch_url(row.url, folder, options, state)
    return [(path, "")]


def _expand(path: Path, member: str, limits: ArchiveLimits) -> list[tuple[Path, str]]:
    """An audio file stands for itself; an archive for the audio files inside it."""
    if is_media(path):
        return [(path, member)]
    if archive_kind(path) is None:
        raise FetchError(f"{path.name} is neither audio (WAV, FLAC, OGG, MP3; M4A, MP4, WEBM, ... with ffmpeg) "
                         f"nor a zip/tar archive")
    unpacked = path.parent / f"{path.name}.unpacked"
    if not unpacked.is_dir():  # renamed into place only once complete
        safe_extract(path, unpacked, limits)
    found, other = [], []
    for current, dirnames, filenames in os.walk(unpacked):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_MEMBERS)
        for name in sorted(filenames):
            relative = os.path.relpath(os.path.join(current, name), unpacked).replace(os.sep, "/")
            inner = f"{member}/{relative}" if member else relative
            (found if is_media(name) and not name.startswith(".") else other).append((Path(current) / name, inner))
    if not found:
        listed = ", ".join(name for _, name in other[:5]) or "nothing"
        raise FetchError(f"no audio files in archive {path.name} (it holds: {listed})")
    return found


def _clips_for_row(row: SourceRow, payloads: list[tuple[Path, str]], to: Path, settings: ClipSettings,
                   state: DownloadState, limits: ArchiveLimits, failures: list[Failure]) -> list[dict]:
    """Clips of every audio file the row brought (archives unpacked); a file that fails is listed, the rest go on."""
    audio_files = []
    for path, member in payloads:
        try:
            audio_files += _expand(path, member, limits)
        except FetchError as exc:
            failures.append(Failure(row.line, f"{row.url}#{member}" if member else row.url, exc.reason))
    records = []
    for path, member in audio_files:
        source_id = f"{row.url}#{member}" if member else row.url
        try:
            clips = _clips(path, member, row, to, settings, state)
        except FetchError as exc:
            failures.append(Failure(row.line, source_id, exc.reason))
            continue
        for relative, first, stop in clips:
            records.append({"path": relative, "label": row.label, "group": source_id, "source": row.url,
                            "kind": row.kind, "member": member,
                            "source_start_s": round(first / settings.rate_hz, 4),
                            "source_end_s": round(stop / settings.rate_hz, 4), "license": row.license,
                            "line": row.line})
    return records


def _clips(path: Path, member: str, row: SourceRow, to: Path, settings: ClipSettings,
           state: DownloadState) -> list[tuple[str, int, int]]:
    """Write (or find, from an earlier run) the clips of one audio file: [(path relative to `to`, first, stop)]."""
    identity = short_hash(row.url, member, row.start_s, row.end_s, row.label, n_chars=8)
    written = state.data.setdefault("clips", {})
    if identity in written and all((to / relative).is_file() for relative, _, _ in written[identity]):
        return [tuple(clip) for clip in written[identity]]
    wave = read_mono(path, settings.rate_hz)  # (n_samples,) at rate_hz
    bounds = clip_bounds(len(wave), settings.rate_hz, row.start_s, row.end_s, settings.clip_s)
    stem = safe_name(Path(member).stem if member else _title(path, state, row), "clip")
    folder = to / "audio" / safe_name(row.label, "label")
    clips = []
    for index, (first, stop) in enumerate(bounds):
        suffix = "" if settings.clip_s is None else f"_{index:04d}"
        clip_path = folder / f"{stem}-{identity}{suffix}.wav"
        write_wav(clip_path, wave[first:stop], settings.rate_hz)  # a clip already there is kept
        clips.append((os.path.relpath(clip_path, to).replace(os.sep, "/"), first, stop))
    written[identity] = clips
    state.save()
    return clips


def _title(path: Path, state: DownloadState, row: SourceRow) -> str:
    """A video's title, else the downloaded file's name without our hash prefix."""
    entry = state.entry(row.url) or {}
    return entry.get("title") or path.stem.split("-", 1)[-1]


def _write_metadata(path: Path, records: list[dict]) -> None:
    records = sorted(records, key=lambda r: (r["line"], r["path"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METADATA_COLUMNS)
    writer.writeheader()
    writer.writerows(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text.getvalue())
