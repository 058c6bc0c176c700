"""SOURCES.yaml / SOURCES.csv: one row per source, validated before anything is downloaded.

Each row: `url` (a video-site link, a Google Drive file or folder link, or an HTTP(S)
URL of an audio file or a zip/tar archive), `label`, and optionally `start_s`/`end_s`
(seconds or [HH:]MM:SS), `license` and `kind` (auto | video | drive | http). A YAML
file is a list of rows, or a mapping with `sources:` (the rows) and `defaults:`
(values every row gets unless it sets its own). Every malformed row is reported with
its line number.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import urlsplit

import yaml

from earmark.errors import EarmarkError
from earmark.fetch.drive import is_drive_host, parse_drive_link
from earmark.fetch.report import FetchError
from earmark.fetch.video import is_video_host

FIELDS = ("url", "label", "start_s", "end_s", "license", "kind")
ALIASES = {"source": "url", "link": "url", "start": "start_s", "end": "end_s", "class": "label"}
KINDS = ("auto", "video", "drive", "http")
MAX_PROBLEMS_SHOWN = 10


class _Malformed(str):
    """A row that could not even be split into fields; the text says why."""


@dataclass(frozen=True)
class SourceRow:
    line: int  # in the sources file, for messages and fetch_failures.csv
    url: str
    label: str
    kind: str  # video | drive | http (auto resolved from the host)
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    license: str = ""


def read_sources(path: Path) -> list[SourceRow]:
    path = Path(path)
    if not path.is_file():
        raise EarmarkError(f"sources file {path} does not exist; give a SOURCES.yaml or SOURCES.csv, or a preset "
                           f"name (see `earmark datasets`)")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        raw_rows = _yaml_rows(path)
    elif suffix in (".csv", ".tsv"):
        raw_rows = _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise EarmarkError(f"{path}: a sources list must be .yaml, .yml, .csv or .tsv (got '{suffix}')")
    rows, problems, seen = [], [], {}
    for line, raw in raw_rows:
        try:
            row = parse_row(line, raw)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        identity = (row.url, row.start_s, row.end_s)
        if identity in seen:
            problems.append(f"line {line}: repeats the source and times of line {seen[identity]}")
            continue
        seen[identity] = line
        rows.append(row)
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise EarmarkError(f"{path}: {len(problems)} malformed row(s): {shown}{more}; each row needs url and label, "
                           f"optionally {', '.join(FIELDS[2:])}")
    if not rows:
        raise EarmarkError(f"{path} lists no sources; add rows with url and label")
    return rows


def parse_row(line: int, raw: Any) -> SourceRow:
    """One validated row; ValueError says what is wrong with it."""
    if isinstance(raw, _Malformed):
        raise ValueError(str(raw))
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping with url and label, got {type(raw).__name__} {str(raw)[:60]!r}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = ALIASES.get(str(key).strip().lower(), str(key).strip().lower())
        if name not in FIELDS:
            raise ValueError(f"unknown field {key!r} (allowed: {', '.join(FIELDS)})")
        values[name] = None if value is None or str(value).strip() == "" else value
    url = str(values.get("url") or "").strip()
    label = str(values.get("label") or "").strip()
    if not url:
        raise ValueError("url is missing")
    if not label:
        raise ValueError("label is missing")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {url!r} must be an http:// or https:// link")
    start_s = _seconds(values.get("start_s"), "start_s")
    end_s = _seconds(values.get("end_s"), "end_s")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s:g}) must be after start_s ({start_s:g})")
    kind = str(values.get("kind") or "auto").strip().lower()
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "drive" if is_drive_host(parts.hostname) else "video" if is_video_host(parts.hostname) else "http"
    if kind == "drive":
        try:
            parse_drive_link(url)
        except FetchError as exc:
            raise ValueError(exc.reason) from None
    return SourceRow(line, url, label, kind, start_s, end_s, str(values.get("license") or "").strip())


def _seconds(value: Any, name: str) -> Optional[float]:
    """12, 12.5, '1:05', '01:02:03.5' -> seconds; ValueError for anything else or a negative time."""
    if value is None:
        return None
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)", text)
    try:
        seconds = (int(match[1] or 0) * 3600 + int(match[2]) * 60 + float(match[3])) if match else float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a time: use seconds (75.5) or [HH:]MM:SS (1:15.5)") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{name} {text!r} must be a finite time >= 0")
    return seconds


def _yaml_rows(path: Path) -> list[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        document, node = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EarmarkError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    defaults: dict = {}
    if isinstance(document, dict):
        if "sources" not in document or set(document) - {"sources", "defaults"}:
            raise EarmarkError(f"{path}: expected a list of rows, or a mapping with 'sources:' (and optionally "
                               f"'defaults:'); found keys {', '.join(map(str, document))}")
        defaults = document.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise EarmarkError(f"{path}: 'defaults:' must be a mapping such as {{license: CC BY 4.0}}")
        document = document["sources"]
        node = next(value for key, value in node.value if key.value == "sources")
    if not isinstance(document, list):
        raise EarmarkError(f"{path}: expected a list of rows (- url: ..., label: ...), got {type(document).__name__}")
    lines = [item.start_mark.line + 1 for item in node.value]  # the nodes hold what safe_load drops
    return [(line, {**defaults, **item} if isinstance(item, dict) else item) for line, item in zip(lines, document)]


def _csv_rows(path: Path, delimiter: str) -> Iterable[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames:
        raise EarmarkError(f"{path} is empty; it needs a header row such as url,label,start_s,end_s,license")
    rows = []
    for raw in reader:
        cells = [v for k, v in raw.items() if k is not None and v]
        if not cells or str(cells[0]).lstrip().startswith("#"):
            continue  # blank and comment lines
        if None in raw:  # more cells than header fields
            rows.append((reader.line_num, _Malformed(f"{len(raw[None])} cell(s) more than the header has "
                                                     f"(quote cells that hold commas)")))
            continue
        rows.append((reader.line_num, {k: v for k, v in raw.items() if k is not None}))
    return rows
