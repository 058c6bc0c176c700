"""Rules of the test suite itself: honest skips, bounded subprocesses, no optional imports of dependencies.

With EARMARK_STRICT_SKIPS=1 (CI) only a missing GPU may skip a test (tests/conftest.py); every child
process a test starts has a timeout; a declared dependency is imported, never `importorskip`ped.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CONFTEST = TESTS / "conftest.py"
BLOCKING_CALLS = {"run", "call", "check_call", "check_output"}  # subprocess functions that wait for the child


def test_every_subprocess_a_test_waits_for_has_a_timeout():
    missing = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in BLOCKING_CALLS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and not any(k.arg in ("timeout", None) for k in node.keywords)):
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"subprocess calls without timeout=: {missing}"


def test_declared_dependencies_are_imported_not_importorskipped():
    users = [path.name for path in sorted(TESTS.glob("test_*.py"))
             if "importorskip(" in path.read_text() and path.name != Path(__file__).name]
    assert not users, f"importorskip hides a broken install of a declared dependency; import it: {users}"


def run_pytest(folder: Path, strict: bool) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "EARMARK_STRICT_SKIPS"}
    if strict:
        env["EARMARK_STRICT_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, capture_output=True, text=True, timeout=120, env=env)


def test_a_skip_off_the_allow_list_fails_only_under_strict_skips(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("earmark_skip_policy", {str(CONFTEST)!r})
        policy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(policy)
        pytest_runtest_makereport = policy.pytest_runtest_makereport
        pytest_make_collect_report = policy.pytest_make_collect_report
    """))
    (tmp_path / "test_some.py").write_text(textwrap.dedent("""
        import pytest

        def test_passes():
            pass

        @pytest.mark.skipif(True, reason="needs a CUDA device")
        def test_gpu():
            pass

        @pytest.mark.skipif(True, reason="../shared is absent (a user's clone): no shared FSDD data set")
        def test_shared():
            pass

        def test_chromium():
            pytest.skip("no Chromium at /usr/bin/chromium")

        @pytest.mark.xfail(reason="known", strict=True)
        def test_expected_failure():
            raise AssertionError
    """))
    relaxed = run_pytest(tmp_path, strict=False)
    assert relaxed.returncode == 0, relaxed.stdout[-3000:]
    assert "1 passed, 3 skipped, 1 xfailed" in relaxed.stdout
    strict = run_pytest(tmp_path, strict=True)
    assert strict.returncode == 1, strict.stdout[-3000:]
    # a skipif fails in setup (an error), pytest.skip in the test (a failure)
    assert "ERROR test_some.py::test_shared" in strict.stdout and "FAILED test_some.py::test_chromium" in strict.stdout
    assert "SKIPPED [1] test_some.py" in strict.stdout and "CUDA" in strict.stdout  # the allowed one
    assert "not on the allow-list" in strict.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in strict.stdout
    # a whole module skipped at import (importorskip) stops a strict run at collection
    (tmp_path / "test_module_skip.py").write_text("import pytest\npytest.importorskip('no_such_module_here')\n")
    assert run_pytest(tmp_path, strict=False).returncode == 0
    collected = run_pytest(tmp_path, strict=True)
    assert collected.returncode == 2 and "ERROR test_module_skip.py" in collected.stdout, collected.stdout[-3000:]
    assert "not on the allow-list" in collected.stdout and "no_such_module_here" in collected.stdout
