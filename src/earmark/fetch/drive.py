"""Google Drive: file links through the documented download URL, folders through gdown.

File links (`/file/d/<id>/view`, `open?id=<id>`, `uc?id=<id>`) become
`<base>/uc?export=download&id=<id>`; a large file first answers with a page asking to
confirm (virus scan skipped), whose form gives the real download URL. Both requests go
through `fetch_url`. `base_url` is injectable so tests and mirrors can stand in for
drive.google.com. Folder links (`/drive/folders/<id>`) are listed by gdown, which always
talks to drive.google.com itself; their files then come like file links.
"""

from __future__ import annotations

import inspect
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

from earmark.errors import EarmarkError
from earmark.fetch.download import DownloadOptions, check_reachable, fetch_url
from earmark.fetch.names import inside, short_hash
from earmark.fetch.report import FetchError, unreachable
from earmark.fetch.state import DownloadState

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
    """The file behind a Drive id, through `fetch_url` (retries, resume, state) for the page and the file."""
    key = f"gdrive:{file_id}"
    finished = state.finished(key)
    if finished is not None:
        return finished
    first_key = f"gdrive-uc:{file_id}"  # the first answer: the file itself, or the page asking to confirm
    url = file_download_url(file_id, base_url)
    path = _fetch(url, folder, options, state, first_key, file_id)
    page = _html_head(path)
    if page is None:  # served directly: one request, now recorded as the file
        state.move(first_key, key)
        return path
    _drop(path, state, first_key)
    path = _fetch(_confirmed_url(page, url), folder, options, state, key, file_id)
    if _html_head(path) is not None:
        _drop(path, state, key)
        raise FetchError(NOT_SHARED)
    return path


def is_finished(url: str, state: DownloadState) -> bool:
    """Whether an earlier run downloaded everything behind a Drive file or folder link."""
    kind, drive_id = parse_drive_link(url)
    if kind == "file":
        return state.finished(f"gdrive:{drive_id}") is not None
    listing = _listing(state, drive_id)
    return listing is not None and all(state.finished(f"gdrive:{i}") is not None for i in listing.values())


def _fetch(url: str, folder: Path, options: DownloadOptions, state: DownloadState, key: str, file_id: str) -> Path:
    try:
        return fetch_url(url, folder, options, state, key=key, default_name=f"drive-{file_id}")
    except FetchError as exc:
        if exc.reason.startswith(("HTTP 403", "HTTP 404")):
            raise FetchError(f"{exc.reason} from Google Drive (is the file shared as 'Anyone with the link'?)") \
                from None
        raise


def _html_head(path: Path) -> Optional[str]:
    """The start of the file (up to MAX_PAGE_BYTES) when it is a web page, else None."""
    with open(path, "rb") as handle:
        head = handle.read(512)
        if not head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
            return None
        return (head + handle.read(MAX_PAGE_BYTES - len(head))).decode("utf-8", "replace")


def _drop(path: Path, state: DownloadState, key: str) -> None:
    state.forget(key)
    path.unlink(missing_ok=True)


def _confirmed_url(page: str, page_url: str) -> str:
    """The real download URL from the page asking to confirm; FetchError for any other page."""
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
                          state: DownloadState, base_url: str = DRIVE_BASE_URL) -> list[tuple[Path, str]]:
    """Every file of a public Drive folder as (path, name in the folder).

    gdown only lists the folder (at most 50 files per folder); every name is checked to stay
    inside the target before anything is written, then each file comes through
    `download_drive_file`, with its retries, resume and state.
    """
    target = folder / f"{short_hash(f'gdrive-folder:{folder_id}')}-folder"
    listing = _listing(state, folder_id)
    if listing is None:
        listing = _list_folder(folder_id, target, options)
        state.data["downloads"][f"gdrive-folder:{folder_id}"] = {"url": url, "files": listing}
        state.save()
    files = []
    for name, file_id in listing.items():
        subfolder = inside(target, posixpath.dirname(name) or ".")  # checked again: a link may have appeared
        files.append((download_drive_file(file_id, subfolder, options, state, base_url), name))
    return files


def _listing(state: DownloadState, folder_id: str) -> Optional[dict[str, str]]:
    """{name in the folder: file id} recorded by an earlier run, if any."""
    entry = state.entry(f"gdrive-folder:{folder_id}") or {}
    return entry["files"] if isinstance(entry.get("files"), dict) else None


def _list_folder(folder_id: str, target: Path, options: DownloadOptions) -> dict[str, str]:
    """{name in the folder: file id} from gdown, without downloading; a name leaving the folder is refused."""
    check_reachable(DRIVE_BASE_URL)
    import gdown

    parameters = inspect.signature(gdown.download_folder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "skip_download" not in parameters and not takes_any:
        raise FetchError(f"gdown {getattr(gdown, '__version__', '')} cannot list a Drive folder without "
                         f"downloading it; pip install 'gdown>=5.1'")
    wanted = {"url": f"{DRIVE_BASE_URL}/drive/folders/{folder_id}", "quiet": True, "use_cookies": False,
              "skip_download": True, "timeout": options.timeout_s}
    try:
        entries = gdown.download_folder(**{k: v for k, v in wanted.items() if k in parameters or takes_any})
    except Exception as exc:  # gdown's own errors, requests' connection errors, ValueError
        text = str(exc)
        if any(word in text for word in ("NameResolution", "Failed to resolve", "getaddrinfo", "Name or service")):
            raise unreachable("drive.google.com", "name lookup failed") from None
        raise FetchError(f"gdown could not list the Drive folder: {type(exc).__name__}: {text[:300]}") from None
    listing = {}
    for entry in entries or []:
        name = str(entry.path).replace("\\", "/")
        try:
            inside(target, name)  # the same check as for archive members, before anything is written
        except EarmarkError:
            raise FetchError(f"the Drive folder lists {name!r}, which would land outside its folder; refused") \
                from None
        listing[posixpath.normpath(name)] = str(entry.id)
    if not listing:
        raise FetchError("the Drive folder is empty or not shared as 'Anyone with the link'")
    return listing
