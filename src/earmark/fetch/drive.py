"""Google Drive: file links through the documented download URL, folders through gdown.

File links (`/file/d/<id>/view`, `open?id=<id>`, `uc?id=<id>`) become
`<base>/uc?export=download&id=<id>`; a large file first answers with a page asking to
confirm (virus scan skipped), whose form gives the real download URL. `base_url` is
injectable so tests and mirrors can stand in for drive.google.com. Folder links
(`/drive/folders/<id>`) are listed and downloaded by gdown, which always talks to
drive.google.com itself.
"""

from __future__ import annotations

import inspect
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import Request, urlopen

from earmark.fetch.download import USER_AGENT, DownloadOptions, DownloadState, check_reachable, fetch_url
from earmark.fetch.names import short_hash
from earmark.fetch.report import FetchError, unreachable

DRIVE_BASE_URL = "https://drive.google.com"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
MAX_PAGE_BYTES = 2 << 20
NOT_SHARED = ("Google Drive answered with a web page instead of the file: share it as 'Anyone with the link' "
              "(or wait a day if its download quota was exceeded)")
DRIVE_ID = r"[A-Za-z0-9_-]{10,}"


def is_drive_host(host: str) -> bool:
    return host.lower() in DRIVE_HOSTS


def parse_drive_link(url: str) -> tuple[str, str]:
    """('file' | 'folder', id) of a Drive link; FetchError for anything else."""
    parts = urlsplit(url)
    if match := re.search(rf"/file/d/({DRIVE_ID})", parts.path):
        return "file", match.group(1)
    if match := re.search(rf"/folders/({DRIVE_ID})", parts.path):
        return "folder", match.group(1)
    ids = parse_qs(parts.query).get("id", [])
    if ids and re.fullmatch(DRIVE_ID, ids[0]):
        return "file", ids[0]
    raise FetchError("not a Google Drive file or folder link; expected .../file/d/<id>/view, .../open?id=<id>, "
                     ".../uc?id=<id> or .../drive/folders/<id>")


def file_download_url(file_id: str, base_url: str = DRIVE_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/uc?export=download&id={file_id}"


def download_drive_file(file_id: str, folder: Path, options: DownloadOptions, state: DownloadState,
                        base_url: str = DRIVE_BASE_URL) -> Path:
    key = f"gdrive:{file_id}"
    finished = state.finished(key)
    if finished is not None:
        return finished
    url = _confirmed_url(file_download_url(file_id, base_url), options)
    path = fetch_url(url, folder, options, state, key=key, default_name=f"drive-{file_id}")
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        state.forget(key)
        path.unlink()
        raise FetchError(NOT_SHARED)
    return path


def _confirmed_url(url: str, options: DownloadOptions) -> str:
    """`url` itself when it serves the file; the confirmation form's target when it serves a page."""
    try:
        with urlopen(Request(url, headers={"User-Agent": USER_AGENT}), timeout=options.timeout_s) as response:
            if "html" not in response.headers.get("Content-Type", ""):
                return response.geturl() or url
            page = response.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
            page_url = response.geturl() or url
    except HTTPError as exc:
        raise FetchError(f"HTTP {exc.code} {exc.reason} from Google Drive (is the file shared publicly?)") from None
    except URLError as exc:
        import socket

        if isinstance(exc.reason, socket.gaierror):
            raise unreachable(urlsplit(url).hostname or url, "name lookup failed") from None
        raise FetchError(f"cannot connect to {urlsplit(url).netloc}: {exc.reason}") from None
    form = _ConfirmForm()
    form.feed(page)
    if form.action:
        action = urlsplit(urljoin(page_url, form.action))
        query = {**{k: v[-1] for k, v in parse_qs(action.query).items()}, **form.fields}
        return urlunsplit(action._replace(query=urlencode(query)))
    if match := re.search(r'href="(/uc\?export=download[^"]*confirm=[^"]+)"', page):  # the older page
        return urljoin(page_url, match.group(1).replace("&amp;", "&"))
    if match := re.search(r'class="uc-error-subcaption">([^<]+)<', page):
        raise FetchError(f"Google Drive: {match.group(1).strip()}")
    raise FetchError(NOT_SHARED)


class _ConfirmForm(HTMLParser):
    """The `<form id="download-form" action=...>` of the confirmation page and its hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "form" and attributes.get("id") == "download-form":
            self.action, self._inside = attributes.get("action") or "", True
        elif tag == "input" and self._inside and attributes.get("type") == "hidden" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def download_drive_folder(url: str, folder_id: str, folder: Path, options: DownloadOptions,
                          state: DownloadState) -> list[tuple[Path, str]]:
    """Every file of a public Drive folder (gdown lists at most 50 per folder) as (path, name in the folder)."""
    key = f"gdrive-folder:{folder_id}"
    target = folder / f"{short_hash(key)}-folder"
    entry = state.entry(key)
    if entry is not None and all((target / name).is_file() for name in entry["files"]):
        return [(target / name, name) for name in entry["files"]]
    check_reachable("https://drive.google.com")
    import gdown

    wanted = {"url": f"https://drive.google.com/drive/folders/{folder_id}", "output": str(target), "quiet": True,
              "use_cookies": False, "resume": True, "timeout": options.timeout_s, "retries": options.retries}
    accepted = inspect.signature(gdown.download_folder).parameters
    try:
        paths = gdown.download_folder(**{k: v for k, v in wanted.items() if k in accepted})
    except Exception as exc:  # gdown's own errors, requests' connection errors, ValueError
        text = str(exc)
        if any(word in text for word in ("NameResolution", "Failed to resolve", "getaddrinfo", "Name or service")):
            raise unreachable("drive.google.com", "name lookup failed") from None
        raise FetchError(f"gdown could not fetch the Drive folder: {type(exc).__name__}: {text[:300]}") from None
    files = [Path(p) for p in paths or [] if p]
    real_target = os.path.realpath(target)
    if any(not os.path.realpath(p).startswith(real_target + os.sep) for p in files):
        raise FetchError("gdown wrote a file outside its folder; refused")
    if not files:
        raise FetchError("the Drive folder is empty or not shared as 'Anyone with the link'")
    names = [os.path.relpath(p, target).replace(os.sep, "/") for p in files]
    state.data["downloads"][key] = {"files": names, "url": url}
    state.save()
    return [(target / name, name) for name in names]
