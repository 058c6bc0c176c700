"""Every `earmark` command in the bash blocks of README.md and the docs pages (tests/doc_pages.py) parses: its
subcommand exists, its options are that
subcommand's with values of the right type, and its `key=value` overrides (with the example config it names)
validate. The slow test `test_readme_walkthrough` (tests/readme_walk.py) runs them for real on tiny data.
"""

from __future__ import annotations

import re
import shlex
import time

import pytest
import typer

from doc_pages import ROOT, fenced_blocks, where
from earmark.cli.app import app
from earmark.config import load_config


def readme_commands() -> list[tuple[str, str]]:
    """("page:line", command) for each command in a ```bash block of README.md and the docs pages: continuation
    lines joined, comments dropped."""
    commands = []
    for page, first_line, code in fenced_blocks("bash"):
        pending, start = "", first_line
        for offset, raw in enumerate(code.splitlines()):
            line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if not pending:
                start = first_line + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command:
                commands.append((where(page, start), command))
    return commands


def readme_python_blocks() -> list[tuple[str, str]]:
    """("page:line", code) for each ```python block of README.md and the docs pages."""
    return [(where(page, line), code) for page, line, code in fenced_blocks("python")]


def earmark_words(command: str) -> list[list[str]]:
    """The words after the program `earmark` (`earmark ...`, `srun earmark ...`, `python -m earmark ...`) in
    each piece of a pipeline or `&&` chain; `pip install earmark` names a package, not the program."""
    found = []
    for piece in re.split(r"\s(?:\||&&)\s", command):
        words = shlex.split(piece)
        for at, word in enumerate(words):
            if word == "earmark" and (at == 0 or words[at - 1] in {"-m", "srun"}):
                found.append(words[at + 1:])
    return found


INVOCATIONS = [(line, words) for line, command in readme_commands() for words in earmark_words(command)]


def test_the_readme_has_commands_to_check():
    assert len(INVOCATIONS) >= 50
    assert {words[0] for _, words in INVOCATIONS if words} >= {"train", "predict", "evaluate", "cv", "tune", "export",
                                                               "serve", "fetch", "embed", "audit", "inspect"}


@pytest.mark.parametrize(("line", "words"), INVOCATIONS, ids=[line for line, _ in INVOCATIONS])
def test_readme_command_parses_and_its_overrides_validate(line, words):
    group = typer.main.get_command(app)
    if not words:  # plain `earmark train` after `pip install .`: a subcommand is always given
        pytest.fail(f"{line}: `earmark` with no subcommand")
    name, args = words[0], words[1:]
    assert name in group.commands, f"{line}: no subcommand '{name}' (have {sorted(group.commands)})"
    command = group.commands[name]
    with command.make_context(name, list(args), resilient_parsing=False) as context:  # unknown option: UsageError
        params = context.params
    positional = [word for word in (params.get("args") or params.get("overrides") or ())]
    overrides = [word for word in positional if "=" in word]
    configs = [word for word in positional if word.endswith((".yaml", ".yml")) and word.startswith("examples/")]
    if overrides or configs:
        load_config(ROOT / configs[0] if configs else None, overrides)  # an unknown key or a bad value raises


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_readme_walkthrough(tmp_path):
    """Every command of README.md and the docs pages, in page order, in a folder of tiny stand-in data (tests/readme_walk.py says what
    is skipped or rewritten and why); all must exit 0."""
    from readme_walk import (
        build_world,
        newest_runs,
        python_skip_reason,
        rewrite,
        run_python,
        run_step,
        skip_reason,
    )

    project = build_world(tmp_path)
    failures, ran, skipped = [], 0, []
    for line, command in readme_commands():
        for piece in command.split(" && "):
            reason = skip_reason(piece)
            if reason:
                skipped.append(f"{line} {piece} ({reason})")
                continue
            step = rewrite(piece, newest_runs(project))
            started = time.perf_counter()
            done = run_step(project, step)
            print(f"{time.perf_counter() - started:6.1f} s  rc {done.returncode}  {line} {step}", flush=True)
            ran += 1
            if done.returncode != 0:
                failures.append(f"{line} `{step}` exited {done.returncode}:\n{done.stderr[-1500:]}")
    for line, code in readme_python_blocks():
        reason = python_skip_reason(code)
        if reason:
            skipped.append(f"{line} python block ({reason})")
            continue
        started = time.perf_counter()
        done = run_python(project, code, newest_runs(project))
        print(f"{time.perf_counter() - started:6.1f} s  rc {done.returncode}  {line} python block", flush=True)
        ran += 1
        if done.returncode != 0:
            failures.append(f"{line} python block exited {done.returncode}:\n{done.stderr[-1500:]}")
    print(f"ran {ran} README commands and python blocks; skipped {len(skipped)}:", *skipped, sep="\n")
    assert ran >= 52
    assert not failures, "\n\n".join(failures)


def test_the_walks_skip_and_rewrite_rules_still_match_the_readme():
    from readme_walk import PYTHON_REWRITES, PYTHON_SKIPPED, REWRITES, SKIPPED

    code = "\n".join(block for _, block in readme_python_blocks())
    for text in [*PYTHON_SKIPPED, *PYTHON_REWRITES]:
        assert text in code, f"python rule {text!r} matches no README python block"

    commands = [piece for _, command in readme_commands() for piece in command.split(" && ")]
    for prefix in SKIPPED:
        assert any(command.startswith(prefix) for command in commands), f"SKIPPED rule {prefix!r} matches nothing"
    for text in REWRITES:
        assert any(text in command for command in commands), f"REWRITES rule {text!r} matches nothing"
