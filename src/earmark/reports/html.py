"""One self-contained HTML page per result: escaped tables, embedded PNGs, warnings first.

The markup lives in jinja2 templates beside this file (`templates/`: the page, a table, a figure, a
preformatted block, and the inline CSS), rendered with autoescaping on, so every value from a run
(labels, paths, config text, warnings) is escaped by jinja2 rather than by hand. The page needs no
network and no JavaScript: CSS is inline and every plot is a base64 data URI, so `report.html`
alone is enough to share.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _render(template: str, **values: Any) -> str:
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    return environment.get_template(template).render(**values)


def _cell(value: Any, float_format: str) -> tuple[str, bool]:
    """(text, is numeric) for one table cell; the template escapes the text."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, float):
        return float_format.format(value), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value), False
    return str(value), False


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               float_format: str = "{:.4f}") -> str:
    """An escaped <table>; columns default to the keys of the rows, in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column), float_format) for column in columns] for row in rows]
    return _render("table.html", columns=[str(column) for column in columns], rows=cells)


def html_image(png_path: Path, alt: str) -> str:
    """The PNG embedded as a data URI in a <figure>; "" when the file does not exist."""
    png_path = Path(png_path)
    if not png_path.is_file():
        return ""
    encoded = base64.b64encode(png_path.read_bytes()).decode("ascii")
    return _render("image.html", encoded=encoded, alt=alt, name=png_path.name)


def html_pre(text: str) -> str:
    """Preformatted, escaped text (a config YAML, a log excerpt)."""
    return _render("pre.html", text=text)


def render_html(title: str, warnings: Sequence[str], sections: Sequence[tuple[str, str]]) -> str:
    """A complete HTML5 page: the title, the warnings in a red box, then each (heading, fragment).

    Headings and warnings are escaped; fragments are trusted HTML built with the helpers above.
    """
    from markupsafe import Markup

    trusted = [(heading, Markup(fragment)) for heading, fragment in sections]
    return _render("page.html", title=title, warnings=[str(warning) for warning in warnings], sections=trusted)
