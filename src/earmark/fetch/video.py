"""YouTube and other video-site links through yt-dlp's Python API (audio only, one video per row).

yt-dlp talks to the given URL's site and nothing else: no update check (the Python API
never does one), no cache folder, no playlists.
"""

from __future__ import annotations

import re
from pathlib import Path

from earmark.fetch.download import DownloadOptions, check_reachable
from earmark.fetch.names import short_hash
from earmark.fetch.report import FetchError, unreachable
from earmark.fetch.state import DownloadState

VIDEO_HOSTS = ("youtube.com", "youtu.be", "youtube-nocookie.com", "vimeo.com", "dailymotion.com", "dai.ly",
               "soundcloud.com", "tiktok.com", "twitch.tv", "facebook.com", "fb.watch", "instagram.com",
               "twitter.com", "x.com", "bilibili.com", "rumble.com", "odysee.com", "bandcamp.com")
NAME_LOOKUP_FAILURES = ("name or service not known", "temporary failure in name resolution", "getaddrinfo failed",
                        "nodename nor servname", "failed to resolve", "no address associated")
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def is_video_host(host: str) -> bool:
    host = host.lower()
    return any(host == known or host.endswith("." + known) for known in VIDEO_HOSTS)


class _Messages:
    """yt-dlp's logger interface; keeps the errors for the failure reason, prints nothing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        pass

    info = warning = debug

    def error(self, message: str) -> None:
        self.errors.append(message)


def download_media(url: str, folder: Path, options: DownloadOptions, state: DownloadState) -> tuple[Path, str]:
    """The best audio-only (else best) format of `url` saved as `<hash>.<ext>`; returns it and the title."""
    finished = state.finished(url)
    if finished is not None:
        return finished, state.entry(url).get("title") or finished.stem
    check_reachable(url)
    import yt_dlp

    folder.mkdir(parents=True, exist_ok=True)
    messages = _Messages()
    settings = {
        "format": "bestaudio/best",
        "outtmpl": {"default": str(folder / f"{short_hash(url)}.%(ext)s")},
        "noplaylist": True,
        "quiet": True, "no_warnings": True, "noprogress": not options.progress, "logger": messages,
        "retries": options.retries, "fragment_retries": options.retries, "extractor_retries": options.retries,
        "socket_timeout": options.timeout_s, "max_filesize": options.max_download_bytes,
        "continuedl": True, "overwrites": False, "cachedir": False, "updatetime": False,
    }
    try:
        with yt_dlp.YoutubeDL(settings) as downloader:
            info = downloader.extract_info(url, download=False)
            if info.get("_type") in ("playlist", "multi_video") or "entries" in info:
                raise FetchError("this link is a playlist or channel; give each video its own row")
            info = downloader.process_ie_result(info, download=True)
    except yt_dlp.utils.YoutubeDLError as exc:
        raise _reason(url, str(exc), messages.errors) from None
    files = [Path(d["filepath"]) for d in info.get("requested_downloads", []) if d.get("filepath")]
    if not files or not files[0].is_file():
        raise FetchError("yt-dlp reported no downloaded file")
    title = str(info.get("title") or files[0].stem)
    state.record(url, files[0], url=url, title=title, extractor=info.get("extractor_key"))
    return files[0], title


def _reason(url: str, text: str, errors: list[str]) -> FetchError:
    text = ANSI_CODES.sub("", (errors[-1] if errors else text)).removeprefix("ERROR: ").strip()
    if any(failure in text.lower() for failure in NAME_LOOKUP_FAILURES):
        from urllib.parse import urlsplit

        return unreachable(urlsplit(url).hostname or url, "name lookup failed")
    return FetchError(f"yt-dlp: {text}")
