"""The generated parts of the docs pages: the configuration reference (from the pydantic models in
earmark.config), the CLI reference (from the typer app) and every figure (from benchmarks/results/*.json).

A page marks each generated part with a pair of comments, and only the text between them is written here:

    <!-- generated: NAME -->
    ...
    <!-- /generated -->

NAME is `config-reference`, `cli-reference` or a figure of tools/docs_figures.py. `python tools/docs_pages.py`
rewrites every such part of README.md and docs/**/*.md; `--check` changes nothing and exits 1 naming each part
that differs (tests/test_docs.py runs the check, so a page cannot drift from the code or a result file).
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_figures import FIGURES, render_figure  # noqa: E402  (a sibling script, not a package)

REGION = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md, then every page under docs/ (sorted)."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


# -- configuration reference ---------------------------------------------------------------------------------------

def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _default_text(field) -> str:
    from pydantic_core import PydanticUndefined

    default = field.get_default(call_default_factory=True)
    if default is PydanticUndefined:
        return "required"
    if hasattr(default, "model_dump"):
        return ""
    if isinstance(default, Path):
        default = str(default)
    if isinstance(default, tuple):
        default = list(default)
    return "null" if default is None else f"`{default}`".replace("'", "").replace("|", "\\|")


def _limits(field) -> str:
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    found = [f"{signs[name]} {getattr(item, name)}" for item in field.metadata for name in signs if hasattr(item, name)]
    return f" ({', '.join(found)})" if found else ""


def _section_rows(model, prefix: str, sections: list) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            sections.append((key, annotation))
            continue
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default_text(field)} | {text}{_limits(field)} |")
    return rows


def render_config_reference() -> str:
    """One table per config section: every key, its type, default, description and allowed range."""
    from earmark.config import Config

    lines, sections = [], [("", Config)]
    while sections:
        key, model = sections.pop(0)
        nested: list = []
        rows = _section_rows(model, f"{key}." if key else "", nested)
        sections[:0] = nested
        title = f"`{key}`" if key else "top level"
        doc = (model.__doc__ or "").strip() if model.__doc__ != model.__mro__[1].__doc__ else ""
        lines += [f"### {title}", ""] + ([doc, ""] if doc and key else [])
        lines += ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


# -- CLI reference -------------------------------------------------------------------------------------------------

def _cli_rows(command, context) -> list[str]:
    rows = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(context)
        if record is None:
            continue
        name, help_text = f"`{record[0]}`", record[1]
        rows.append(f"| {name.replace('|', chr(92) + '|')} | {help_text.replace('|', chr(92) + '|')} |")
    return rows


def render_cli_reference() -> str:
    """Every `earmark` command: its usage line, its help and a table of its arguments and options."""
    import typer.main

    from earmark.cli.app import app

    group = typer.main.get_command(app)
    lines = []
    for name, command in group.commands.items():
        context = command.context_class(command, info_name=f"earmark {name}")  # typer vendors its own click
        usage = " ".join(command.collect_usage_pieces(context))
        lines += [f"### `earmark {name}`", "", (command.help or "").strip().split("\n\n")[0].strip(), "",
                  "```text", f"earmark {name} {usage}", "```", "",
                  "| argument or option | meaning |", "|---|---|", *_cli_rows(command, context), ""]
    return "\n".join(lines)


# -- the pages -----------------------------------------------------------------------------------------------------

def render(name: str, root: Path = ROOT) -> str:
    if name == "config-reference":
        return render_config_reference()
    if name == "cli-reference":
        return render_cli_reference()
    if name in FIGURES:
        return render_figure(name, root / "benchmarks" / "results")
    raise SystemExit(f"error: no generated part named {name!r}; have config-reference, cli-reference, "
                     f"{', '.join(FIGURES)}")


def regenerate(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """The page with every generated part rendered afresh, and the names of the parts that changed."""
    changed = []

    def fill(match: re.Match) -> str:
        body = render(match[2], root).rstrip("\n") + "\n"
        if body != match[3]:
            changed.append(match[2])
        return match[1] + body + match[4]

    return REGION.sub(fill, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated part is stale")
    args = parser.parse_args(argv)
    stale = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        fresh, changed = regenerate(text)
        stale += [f"{page.relative_to(ROOT)}: {name}" for name in changed]
        if changed and not args.check:
            page.write_text(fresh, encoding="utf-8")
    verb = "stale (run `python tools/docs_pages.py`)" if args.check else "rewritten"
    for line in stale:
        print(f"{verb}: {line}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
