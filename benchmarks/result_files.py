"""Writing benchmarks/results/*.json: each file gets `_meta` (machine, date, command), which the docs print beside
every figure rendered from it (tools/docs_figures.py). EARMARK_MACHINE overrides the detected machine description,
e.g. EARMARK_MACHINE="2-core VM shared with other jobs".
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_description() -> str:
    if os.environ.get("EARMARK_MACHINE"):
        return os.environ["EARMARK_MACHINE"]
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} {platform.system()}, {gpu}"


def save_results(path: Path, data: dict, command: str | None = None) -> None:
    """Write `data` to `path` as JSON with `_meta` first: this machine, today's date and the command that ran."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    command = command or "python " + " ".join(shlex.quote(arg) for arg in [script.as_posix(), *sys.argv[1:]])
    meta = {"machine": machine_description(), "date": datetime.date.today().isoformat(), "command": command}
    rows = {key: value for key, value in data.items() if key != "_meta"}
    Path(path).write_text(json.dumps({"_meta": meta, **rows}, indent=1) + "\n")
