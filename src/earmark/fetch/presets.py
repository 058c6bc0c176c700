"""Public data sets by name: where they live, their license and size, a checksum, and their layout.

`fetch_preset(name, DIR)` downloads the archive into DIR/downloads/, verifies it, extracts
it safely and lays it out as DIR/<name>/, exactly what `data.source=<name>` (or, for
Speech Commands, `data.source=csv` on the metadata.csv written here) reads. Where no
checksum is published (a moving GitHub archive), the sha256 of the first download is
recorded in DIR/checksums.lock and every later download must match it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from earmark.errors import EarmarkError
from earmark.fetch.archives import ArchiveLimits, safe_extract
from earmark.fetch.download import DownloadOptions, DownloadState, fetch_url, file_digest
from earmark.fetch.report import FetchError, FetchResult

LOCK_FILE = "checksums.lock"
DOWNLOADS = "downloads"


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
    partial = root / "metadata.csv.part"
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "speaker", "split"])
        writer.writerows(rows)
    os.replace(partial, root / "metadata.csv")


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
    preset = PRESETS.get(name.lower().replace("-", "").replace(" ", "_"))
    if preset is None:
        raise EarmarkError(f"{name!r} is neither an existing sources file (.yaml/.csv) nor a preset "
                           f"({', '.join(PRESETS)}; see `earmark datasets`)")
    return preset


def fetch_preset(name: str, to: Path, options: DownloadOptions, *, base_url: Optional[str] = None,
                 checksum: Optional[str] = None, limits: ArchiveLimits = ArchiveLimits()) -> FetchResult:
    """Download, verify, extract and lay out a preset as DIR/<name>; a complete layout is left as it is."""
    preset = preset_named(name)
    to = Path(to)
    root = to / preset.name
    result = FetchResult(to=to, overrides=[o.format(root=root) for o in preset.overrides], n_sources=1, root=root)
    if (root / preset.marker).exists():
        result.n_reused = 1
        return result
    if root.exists():
        raise EarmarkError(f"{root} exists but is not a complete {preset.title} layout (no {preset.marker}); it is "
                           f"left untouched: delete it, or fetch into another --to folder")
    url = f"{base_url.rstrip('/')}/{preset.archive_name}" if base_url else preset.url
    state = DownloadState(to / DOWNLOADS)
    key = f"preset:{preset.name}:{url}"
    result.n_downloaded = 1  # laid out in this run (the archive itself may come from an earlier run)
    try:
        archive = fetch_url(url, to / DOWNLOADS, options, state, key=key, default_name=preset.archive_name)
        _verify(archive, preset, checksum, state.entry(key)["sha256"], to / LOCK_FILE, url, state, key)
        unpacked = to / DOWNLOADS / f".{preset.name}.unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)  # ours, from an interrupted run
        safe_extract(archive, unpacked, limits)
    except FetchError as exc:
        raise EarmarkError(f"cannot fetch {preset.title} from {url}: {exc.reason}") from None
    _lay_out(unpacked, root, preset)
    return result


def _checksum_parts(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.strip().lower().rpartition(":")
    algorithm = algorithm or {32: "md5", 64: "sha256"}.get(len(value), "")
    if algorithm not in ("md5", "sha256") or not value or any(c not in "0123456789abcdef" for c in value):
        raise EarmarkError(f"checksum {checksum!r} must be 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'")
    return algorithm, value


def _verify(archive: Path, preset: DatasetPreset, checksum: Optional[str], sha256: str, lock_path: Path, url: str,
            state: DownloadState, key: str) -> None:
    """Against the given or published checksum, and against checksums.lock; a mismatch removes the download."""
    lock = json.loads(lock_path.read_text()) if lock_path.is_file() else {}
    expected = checksum or preset.checksum
    problems = []
    if expected:
        algorithm, value = _checksum_parts(expected)
        actual = sha256 if algorithm == "sha256" else file_digest(archive, algorithm)
        if actual != value:
            problems.append(f"its {algorithm} is {actual}, expected {value}")
    recorded = lock.get(preset.name, {}).get("sha256")
    if recorded and recorded != sha256:
        problems.append(f"its sha256 {sha256} differs from the one recorded on the first download in {lock_path} "
                        f"({recorded}); the published archive changed, or this is not it")
    if problems:
        state.forget(key)
        archive.unlink()
        raise EarmarkError(f"{preset.title} download from {url} failed verification: {'; '.join(problems)}. The "
                           f"file was removed; try again, check --base-url, or (for a new upstream version) "
                           f"delete the entry in {lock_path}")
    if not recorded:
        lock[preset.name] = {"url": url, "sha256": sha256, "bytes": archive.stat().st_size,
                             "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        partial = lock_path.with_name(lock_path.name + ".part")
        partial.write_text(json.dumps(lock, indent=1, sort_keys=True))
        os.replace(partial, lock_path)


def _lay_out(unpacked: Path, root: Path, preset: DatasetPreset) -> None:
    """unpacked/<single top folder>/ (or unpacked/ itself) becomes `root`; then the preset's last step."""
    source = unpacked
    if preset.strip_top_folder:
        entries = [p for p in unpacked.iterdir() if p.name not in ("__MACOSX",) and not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            raise EarmarkError(f"the {preset.title} archive should hold one top folder, but holds "
                               f"{', '.join(p.name for p in entries[:5]) or 'nothing'}; is --base-url serving "
                               f"the right file?")
        source = entries[0]
    os.rename(source, root)
    shutil.rmtree(unpacked, ignore_errors=True)
    if preset.finish is not None:
        preset.finish(root)
    if not (root / preset.marker).exists():
        raise EarmarkError(f"the {preset.title} archive was extracted to {root} but lacks {preset.marker}; is "
                           f"--base-url serving the right file?")
