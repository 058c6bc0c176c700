"""`earmark fetch` in one call: a sources list or a preset, with every option checked against it.

An option that does not apply to the kind of source given is refused, naming the option,
rather than silently ignored: `--rate-hz`, `--clip-s` and `--drive-base-url` shape a
sources list; `--base-url` and `--checksum` pick and verify a preset's archive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from earmark.errors import EarmarkError
from earmark.fetch.archives import ArchiveLimits
from earmark.fetch.download import DEFAULT_MAX_DOWNLOAD_MB, DownloadOptions
from earmark.fetch.report import FetchResult

SOURCES_SUFFIXES = (".yaml", ".yml", ".csv", ".tsv")
DEFAULT_RATE_HZ = 16000
OPTION_FLAGS = {"rate_hz": "--rate-hz", "clip_s": "--clip-s", "drive_base_url": "--drive-base-url",
                "base_url": "--base-url", "checksum": "--checksum"}


def is_sources_list(source: str | Path) -> bool:
    """A file that exists, or a name ending like one (so a mistyped path is not taken for a preset)."""
    return Path(source).is_file() or Path(source).suffix.lower() in SOURCES_SUFFIXES


def fetch(source: str | Path, to: str | Path, *, rate_hz: Optional[int] = None, clip_s: Optional[float] = None,
          retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30.0, max_extract_gb: float = 64.0,
          base_url: Optional[str] = None, checksum: Optional[str] = None, drive_base_url: Optional[str] = None,
          progress: bool = False, say: Optional[Callable[[str], None]] = None,
          max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB) -> FetchResult:
    """Fetch a sources list into `to` (clips at `rate_hz`, default 16000) or lay out a preset as `to`/<name>.

    None means "not given": an option given for the wrong kind of source is an EarmarkError.
    `max_download_mb` caps every single download (see earmark.fetch.download).
    """
    options = DownloadOptions(retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, progress=progress,
                              max_download_mb=max_download_mb)
    limits = ArchiveLimits.from_gb(max_extract_gb)
    if is_sources_list(source):
        _refuse("a sources list, whose rows carry their own URLs", base_url=base_url, checksum=checksum)
        from earmark.fetch.drive import DRIVE_BASE_URL
        from earmark.fetch.runner import ClipSettings, fetch_sources

        settings = ClipSettings(rate_hz=DEFAULT_RATE_HZ if rate_hz is None else rate_hz, clip_s=clip_s)
        return fetch_sources(Path(source), Path(to), settings, options, limits, drive_base_url or DRIVE_BASE_URL,
                             say or (lambda text: None))
    _refuse(f"a preset ({source!r} is laid out as published)", rate_hz=rate_hz, clip_s=clip_s,
            drive_base_url=drive_base_url)
    from earmark.fetch.presets import fetch_preset

    return fetch_preset(str(source), Path(to), options, base_url=base_url, checksum=checksum, limits=limits)


def _refuse(what: str, **given: object) -> None:
    wrong = [OPTION_FLAGS[name] for name, value in given.items() if value is not None]
    if wrong:
        raise EarmarkError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to {what}; "
                           f"leave {'it' if len(wrong) == 1 else 'them'} out")
