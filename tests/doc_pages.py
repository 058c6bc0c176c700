"""The pages whose commands, configs and figures the tests check: README.md, then the docs site's pages in the
order of mkdocs.yml's nav (the order a reader follows, and the order the slow walkthrough runs them in)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def nav_pages() -> list[Path]:
    """docs/ pages in mkdocs.yml's nav order."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    return [ROOT / "docs" / file for entry in nav for file in entry.values()]


def doc_pages() -> list[Path]:
    return [README, *nav_pages()]


def where(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT).as_posix()}:{line}"


def fenced_blocks(language: str) -> list[tuple[Path, int, str]]:
    """(page, first line of the code, code) for each ```language block of every page, pages in order."""
    found = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for block in re.finditer(rf"```{language}\n(.*?)```", text, re.S):
            found.append((page, text[:block.start()].count("\n") + 2, block.group(1)))
    return found


def pages_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in doc_pages())
