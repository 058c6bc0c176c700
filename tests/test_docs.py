"""The docs site: every generated part of a page (configuration and CLI reference, figures from
benchmarks/results/*.json) equals what tools/docs_pages.py renders now, and `mkdocs build --strict` passes
(and fails on a broken link)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from doc_pages import ROOT, doc_pages, nav_pages

sys.path.insert(0, str(ROOT / "tools"))
import docs_pages  # noqa: E402  (tools/ is not a package)
from docs_figures import FIGURES  # noqa: E402

META = {"machine": "2-core VM", "date": "2026-12-08", "command": "python benchmarks/demo_seeds.py --seeds 5"}


def test_every_generated_part_of_every_page_is_current():
    stale, seen = [], set()
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        seen |= {match[2] for match in docs_pages.REGION.finditer(text)}
        stale += [f"{page.relative_to(ROOT)}: {name}" for name in docs_pages.regenerate(text)[1]]
    assert not stale, f"stale generated parts (run `python tools/docs_pages.py`): {stale}"
    assert {"config-reference", "cli-reference", *FIGURES} <= seen, "a reference or figure is on no page"


def test_the_references_cover_every_config_key_and_command():
    import typer.main

    from earmark.cli.app import app
    from earmark.config import Config

    config_page = docs_pages.render_config_reference()
    for section in ("data", "split", "features", "augment", "model", "train", "evaluation"):
        for key in type(getattr(Config(), section)).model_fields:
            assert f"`{section}.{key}`" in config_page or f"`{section}.{key}." in config_page
    cli_page = docs_pages.render_cli_reference()
    for name in typer.main.get_command(app).commands:
        assert f"### `earmark {name}`" in cli_page
    assert "`--max-upload-mb" in cli_page and "| `--top-k" in cli_page


def write_results(root: Path, name: str, data: dict) -> None:
    (root / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (root / "benchmarks" / "results" / name).write_text(json.dumps(data))


def test_the_demo_figure_states_test_size_interval_and_spread_over_seeds(tmp_path):
    """demo.json as benchmarks/demo_seeds.py writes it: machine, date and command at the top level."""
    accuracies = [0.5143, 0.6286, 0.5714, 0.6, 0.5429]
    seeds = [{"seed": seed, "accuracy": acc, "accuracy_ci95": [acc - 0.11, acc + 0.11], "n_test": 70,
              "model": "fusion", "wall_s": 31.7 + seed} for seed, acc in enumerate(accuracies)]
    write_results(tmp_path, "demo.json", {**META, "seeds": seeds, "mean": 0.5714})
    figure = docs_pages.render("demo", tmp_path)
    assert "Over 5 seeds: mean **0.571**, min 0.514, max 0.629, on 70 test clips each" in figure
    assert "| 0 | fusion | 0.514 | 0.404–0.624 | 32 s |" in figure
    assert "95% interval is 0.22 wide" in figure
    assert "Measured 2026-12-08 on 2-core VM: `python benchmarks/demo_seeds.py --seeds 5`" in figure


def test_a_page_is_stale_when_its_result_file_changes(tmp_path):
    startup = json.loads((ROOT / "benchmarks" / "results" / "startup.json").read_text())
    write_results(tmp_path, "startup.json", startup)
    page = "intro\n<!-- generated: startup -->\nold numbers\n<!-- /generated -->\nafter\n"
    fresh, changed = docs_pages.regenerate(page, tmp_path)
    assert changed == ["startup"] and fresh.startswith("intro\n") and fresh.endswith("after\n")
    assert docs_pages.regenerate(fresh, tmp_path)[1] == []
    startup["earmark --help"]["median_s"] = 9.99
    write_results(tmp_path, "startup.json", startup)
    assert docs_pages.regenerate(fresh, tmp_path)[1] == ["startup"]


def test_a_result_file_without_machine_and_date_is_refused(tmp_path):
    write_results(tmp_path, "startup.json", {"import torch": {"min_s": 1, "median_s": 1, "max_s": 1}})
    with pytest.raises(SystemExit, match="startup.json has no _meta with machine, date and command"):
        docs_pages.render("startup", tmp_path)


def test_every_docs_page_is_in_the_nav():
    assert sorted(nav_pages()) == sorted((ROOT / "docs").glob("*.md"))


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=240, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly(tmp_path):
    done = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    assert "earmark.api.train" in (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The same validation settings as mkdocs.yml, on a two-page site (no API pages, so it takes a second)."""
    import yaml

    settings = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [the data page](data.md#no-such-heading).\n")
    (tmp_path / "docs" / "data.md").write_text("# Data\n\nSee [a page that is not there](missing.md).\n")
    config = {"site_name": "t", "strict": True, "validation": settings["validation"],
              "nav": [{"Home": "index.md"}, {"Data": "data.md"}]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "missing.md" in done.stderr, done.stderr[-2000:]
    (tmp_path / "docs" / "data.md").write_text("# Data\n\nNo links.\n")
    done = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no-such-heading" in done.stderr, done.stderr[-2000:]


def test_the_readmes_links_and_picture_point_at_files():
    """README.md is outside the site (mkdocs does not check it): its relative links and images must exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
               if not target.startswith(("http://", "https://", "#"))]
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
