"""Public data sets by name: where they live, their license and size, a checksum, and their layout.

`fetch_preset(name, DIR)` downloads the archive into DIR/downloads/, verifies it, extracts
it safely and lays it out as DIR/<name>/, exactly what `data.source=<name>` (or, for
Speech Commands, `data.source=csv` on the metadata.csv written here) reads. Where no
checksum is published (a moving GitHub archive), the sha256 of the first download that
lays out completely is recorded in DIR/checksums.lock and every later download must match it.
An archive that fails verification, extraction or layout is removed, so the next run
downloads it again.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from earmark.errors import EarmarkError
from earmark.fetch.archives import SKIPPED_MEMBERS, ArchiveLimits, safe_extract
from earmark.fetch.download import DownloadOptions, fetch_url
from earmark.fetch.report import FetchError, FetchResult
from earmark.fetch.state import DOWNLOADS, DownloadState
from earmark.files import atomic_write_text, file_digest

LOCK_FILE = "checksums.lock"


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    title: str
    url: str
    archive_name: str  # the file a --base-url mirror serves: <base_url>/<archive_name>
    license: str
    size: str
    checksum: Optional[str]  # 'sha256:<hex>' or 'md5:<hex>'; None: recorded on first download
    checksum_source: str
    marker: str  # a path inside the laid-out root that only a complete layout has
    overrides: tuple[str, ...]  # how to point prepare/train at it; {root} is DIR/<name>
    strip_top_folder: bool = True  # the archive holds one folder (ESC-50-master/, ...) that becomes DIR/<name>
    finish: Optional[Callable[[Path], None]] = None  # last step of the layout (writes the marker)
    notes: str = ""


def _speech_commands_metadata(root: Path) -> None:
    """metadata.csv (path, label, speaker, split) from the word folders and the official split lists."""
    def listed(name: str) -> set[str]:
        path = root / name
        return set(path.read_text().split()) if path.is_file() else set()

    test, val = listed("testing_list.txt"), listed("validation_list.txt")
    rows = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for wav in sorted(word_dir.glob("*.wav")):
            relative = f"{word_dir.name}/{wav.name}"
            split = "test" if relative in test else "val" if relative in val else "train"
            rows.append((relative, word_dir.name, wav.name.split("_nohash_")[0], split))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "label", "speaker", "split"])
    writer.writerows(rows)
    atomic_write_text(root / "metadata.csv", text.getvalue())


PRESETS: dict[str, DatasetPreset] = {preset.name: preset for preset in (
    DatasetPreset("esc50", "ESC-50", "https://github.com/karolpiczak/ESC-50/archive/master.zip",
                  "ESC-50-master.zip", "CC BY-NC 3.0", "882 MB unpacked; 2,000 clips of 5 s", None,
                  "none published (master.zip moves)", "meta/esc50.csv", ("data.source=esc50", "data.path={root}"),
                  notes="the ESC-10 subset is CC BY; soundata's md5 7771e4b9d86d0945acce719c7a59305a was taken "
                        "from one snapshot of master.zip"),
    DatasetPreset("urbansound8k", "UrbanSound8K",
                  "https://zenodo.org/records/1203745/files/UrbanSound8K.tar.gz?download=1",
                  "UrbanSound8K.tar.gz", "CC BY-NC 3.0", "6.0 GB download; 8,732 clips up to 4 s",
                  "md5:9aa69802bbf37fb986f71ec1483a196e", "soundata", "metadata/UrbanSound8K.csv",
                  ("data.source=urbansound8k", "data.path={root}"),
                  notes="license per the data set's README (soundata lists CC BY-NC 4.0)"),
    DatasetPreset("fsdd", "Free Spoken Digit Dataset v1.0.10",
                  "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
                  "free-spoken-digit-dataset-1.0.10.tar.gz", "CC BY-SA 4.0", "27 MB unpacked; 3,000 clips",
                  None, "none published for v1.0.10", "recordings", ("data.source=fsdd", "data.path={root}"),
                  notes="TensorFlow Datasets pins the older v1.0.9 (sha256 8bc44cde...)"),
    DatasetPreset("speech_commands", "Speech Commands v0.02",
                  "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                  "speech_commands_v0.02.tar.gz", "CC BY 4.0", "2.4 GB download; 105,829 clips of 1 s",
                  "sha256:af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                  "torchaudio, TensorFlow Datasets", "metadata.csv",
                  ("data.source=csv", "data.path={root}/metadata.csv"), strip_top_folder=False,
                  finish=_speech_commands_metadata,
                  notes="metadata.csv (path, label, speaker, split) written from the official split lists; "
                        "_background_noise_ left out"),
)}


def describe_presets() -> list[dict[str, str]]:
    return [{"name": p.name, "title": p.title, "license": p.license, "size": p.size, "url": p.url,
             "archive": p.archive_name, "checksum": p.checksum or "", "checksum_source": p.checksum_source,
             "notes": p.notes} for p in PRESETS.values()]


def preset_named(name: str) -> DatasetPreset:
    """The preset called `name`, ignoring case, '-', '_' and spaces ('Speech-Commands' is speech_commands)."""
    preset = next((p for p in PRESETS.values() if _plain(p.name) == _plain(name)), None)
    if preset is None:
        raise EarmarkError(f"{name!r} is neither an existing sources file (.yaml/.csv) nor a preset "
                           f"({', '.join(PRESETS)}; see `earmark datasets`)")
    return preset


def _plain(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


def fetch_preset(name: str, to: Path, options: DownloadOptions, *, base_url: Optional[str] = None,
                 checksum: Optional[str] = None, limits: ArchiveLimits = ArchiveLimits()) -> FetchResult:
    """Download, verify, extract and lay out a preset as DIR/<name>; a complete layout is left as it is."""
    preset = preset_named(name)
    expected = _checksum_parts(checksum or preset.checksum) if (checksum or preset.checksum) else None
    to = Path(to)
    root = to / preset.name
    result = FetchResult(to=to, overrides=[o.format(root=root) for o in preset.overrides], n_sources=1, root=root)
    if (root / preset.marker).exists():
        result.n_reused = 1
        return result
    if root.exists():
        raise EarmarkError(f"{root} exists but is not a complete {preset.title} layout (no {preset.marker}); it is "
                           f"left untouched: delete it, or fetch into another --to folder")
    lock_path = to / LOCK_FILE
    recorded = _read_lock(lock_path).get(preset.name, {}).get("sha256")  # a damaged lock stops us before downloading
    url = f"{base_url.rstrip('/')}/{preset.archive_name}" if base_url else preset.url
    state = DownloadState(to / DOWNLOADS)
    key = f"preset:{preset.name}:{url}"
    result.n_downloaded = 1  # laid out in this run (the archive itself may come from an earlier run)
    try:
        archive = fetch_url(url, to / DOWNLOADS, options, state, key=key, default_name=preset.archive_name,
                            extra_digests=(expected[0],) if expected else ())
    except FetchError as exc:
        raise EarmarkError(f"cannot fetch {preset.title} from {url}: {exc.reason}") from None
    entry = state.entry(key)
    problems = _verify(archive, entry, expected, recorded, lock_path)
    if problems:
        _remove(archive, state, key)
        raise EarmarkError(f"{preset.title} download from {url} failed verification: {'; '.join(problems)}. The "
                           f"file was removed; try again, check --base-url, or (for a new upstream version) "
                           f"delete the entry in {lock_path}")
    try:
        _unpack(archive, to / DOWNLOADS / f".{preset.name}.unpacked", root, preset, limits)
    except EarmarkError as exc:  # FetchError included: a refused, damaged or wrong archive
        _remove(archive, state, key)
        reason = exc.reason if isinstance(exc, FetchError) else str(exc)
        raise EarmarkError(f"cannot lay out {preset.title} from {url}: {reason}. The download was removed, so "
                           f"the next run fetches it again") from None
    if not recorded:
        _lock(lock_path, preset.name, {"url": url, "sha256": entry["sha256"], "bytes": entry["bytes"]})
    return result


def _checksum_parts(checksum: str) -> tuple[str, str]:
    """('md5' | 'sha256', lowercase hex) of 'sha256:<hex>', 'md5:<hex>' or bare hex of either length."""
    algorithm, _, value = checksum.strip().lower().rpartition(":")
    algorithm = algorithm or {32: "md5", 64: "sha256"}.get(len(value), "")
    width = {"md5": 32, "sha256": 64}.get(algorithm)
    if width is None or len(value) != width or any(c not in "0123456789abcdef" for c in value):
        raise EarmarkError(f"checksum {checksum!r} must be 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'")
    return algorithm, value


def _verify(archive: Path, entry: dict, expected: Optional[tuple[str, str]], recorded: Optional[str],
            lock_path: Path) -> list[str]:
    """What is wrong with the download: against the given or published checksum, and checksums.lock."""
    problems = []
    if expected:
        algorithm, value = expected
        actual = entry.get(algorithm) or file_digest(archive, algorithm)  # hashed while downloading, if we could
        if actual != value:
            problems.append(f"its {algorithm} is {actual}, expected {value}")
    if recorded and recorded != entry["sha256"]:
        problems.append(f"its sha256 {entry['sha256']} differs from the one recorded on the first download in "
                        f"{lock_path} ({recorded}); the published archive changed, or this is not it")
    return problems


def _remove(archive: Path, state: DownloadState, key: str) -> None:
    state.forget(key)
    archive.unlink(missing_ok=True)


def _read_lock(lock_path: Path) -> dict:
    if not lock_path.is_file():
        return {}
    try:
        lock = json.loads(lock_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EarmarkError(f"{lock_path} is damaged ({exc}); restore it, or delete it to record the checksums "
                           f"of the next downloads again") from None
    if not isinstance(lock, dict):
        raise EarmarkError(f"{lock_path} should map preset names to checksums; restore it, or delete it to record "
                           f"the checksums of the next downloads again")
    return lock


def _lock(lock_path: Path, preset_name: str, entry: dict) -> None:
    """Record the sha256 of a download that laid out completely; every later download must match it."""
    lock = _read_lock(lock_path)
    lock[preset_name] = {**entry, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(lock_path, json.dumps(lock, indent=1, sort_keys=True))


def _unpack(archive: Path, unpacked: Path, root: Path, preset: DatasetPreset, limits: ArchiveLimits) -> None:
    """Extract into `unpacked`, lay it out there, then rename it to `root`: `root` only ever appears complete."""
    shutil.rmtree(unpacked, ignore_errors=True)  # ours, from an interrupted run
    try:
        safe_extract(archive, unpacked, limits)
        source = _top_folder(unpacked, preset) if preset.strip_top_folder else unpacked
        if preset.finish is not None:
            preset.finish(source)
        if not (source / preset.marker).exists():
            raise EarmarkError(f"the {preset.title} archive lacks {preset.marker}; is --base-url serving the right "
                               f"file?")
        os.rename(source, root)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _top_folder(unpacked: Path, preset: DatasetPreset) -> Path:
    """The one folder (ESC-50-master/, ...) the archive holds."""
    entries = [p for p in unpacked.iterdir() if p.name not in SKIPPED_MEMBERS and not p.name.startswith(".")]
    if len(entries) != 1 or not entries[0].is_dir():
        raise EarmarkError(f"the {preset.title} archive should hold one top folder, but holds "
                           f"{', '.join(p.name for p in entries[:5]) or 'nothing'}; is --base-url serving "
                           f"the right file?")
    return entries[0]
