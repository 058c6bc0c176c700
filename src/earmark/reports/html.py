"""One self-contained HTML page per result: escaped tables, embedded PNGs, warnings first.

The page needs no network and no JavaScript: CSS is inline and every plot is a base64 data URI,
so `report.html` alone is enough to share.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a202c;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #2b6cb0;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;color:#2b6cb0}
h3{font-size:1.05em}
.warnings{background:#fff5f5;border:2px solid #c53030;border-radius:6px;padding:.6em 1em;margin:1em 0}
.warnings strong{color:#c53030}
.warnings ul{margin:.3em 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #cbd5e0;padding:.25em .6em;text-align:left}
th{background:#edf2f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #e2e8f0}
figcaption{font-size:.85em;color:#4a5568}
pre{background:#f7fafc;border:1px solid #e2e8f0;padding:.8em;overflow-x:auto;font-size:.85em}
.note{color:#4a5568;font-size:.9em}
"""


def _cell(value: Any, float_format: str) -> tuple[str, bool]:
    """(escaped text, is numeric) for one table cell."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return html.escape(str(value)), False
    if isinstance(value, float):
        return html.escape(float_format.format(value)), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, (list, tuple, dict)):
        return html.escape(json.dumps(value)), False
    return html.escape(str(value)), False


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               float_format: str = "{:.4f}") -> str:
    """An escaped <table>; columns default to the keys of the rows, in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            text, numeric = _cell(row.get(column), float_format)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_image(png_path: Path, alt: str) -> str:
    """The PNG embedded as a data URI in a <figure>; "" when the file does not exist."""
    png_path = Path(png_path)
    if not png_path.is_file():
        return ""
    encoded = base64.b64encode(png_path.read_bytes()).decode("ascii")
    alt_text = html.escape(alt, quote=True)
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{alt_text}">'
            f"<figcaption>{html.escape(png_path.name)}</figcaption></figure>")


def html_pre(text: str) -> str:
    """Preformatted, escaped text (a config YAML, a log excerpt)."""
    return f"<pre>{html.escape(text)}</pre>"


def render_html(title: str, warnings: Sequence[str], sections: Sequence[tuple[str, str]]) -> str:
    """A complete HTML5 page: the title, the warnings in a red box, then each (heading, fragment).

    Headings and warnings are escaped; fragments are trusted HTML built with the helpers above.
    """
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if warnings:
        items = "".join(f"<li>{html.escape(str(warning))}</li>" for warning in warnings)
        parts.append(f'<div class="warnings" id="warnings"><strong>Warnings</strong><ul>{items}</ul></div>')
    for heading, fragment in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{fragment}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
