"""The house stays standing: layering and no cycles (import-linter), the lint rules (ruff), small modules."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "earmark"
MAX_MODULE_LINES = 400


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is part of the test extra (pip install '.[test]')"
    return found


def test_no_module_is_longer_than_the_limit():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


def test_every_package_says_its_job():
    silent = [str(init.relative_to(PACKAGE)) for init in PACKAGE.rglob("__init__.py")
              if not init.read_text(encoding="utf-8").lstrip().startswith('"""')]
    assert not silent, f"packages without a docstring naming their job: {silent}"


@pytest.mark.timeout(120)
def test_layers_hold_and_there_are_no_import_cycles():
    result = subprocess.run([_tool("lint-imports"), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.timeout(120)
def test_ruff_finds_nothing():
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
