"""Deploying without PyTorch: with every package outside README's light install list made unimportable,
`earmark --help`, `earmark predict model.onnx` (and a run folder with a current export) and `earmark serve
model.onnx` work.

The light install (docs/deployment.md, *Deploy without PyTorch*) is `pip install ./light` from a clone:
light/pyproject.toml, the same package with onnxruntime numpy pandas soundfile soxr typer rich pydantic
PyYAML fastapi uvicorn python-multipart only. Every other dependency in pyproject.toml is blocked here,
so an import of one on these paths fails the test; a command that needs one says what to install.
.ci/run installs exactly the page's command in a venv of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import TONES_HZ, tone_clip
from doc_pages import pages_text
from onnx_runs import RATE_HZ, exported_model

# top-level modules of the dependencies the light install leaves out (and what they pull in)
HEAVY = ("torch", "torchaudio", "torchvision", "lightning", "pytorch_lightning", "lightning_fabric", "transformers",
         "optuna", "yt_dlp", "gdown", "timm", "sklearn", "scipy", "matplotlib", "tensorboard", "onnx", "onnxscript",
         "safetensors", "cleanlab", "jinja2")

LIGHT_CLI = textwrap.dedent(f"""
    import atexit, importlib.abc, sys
    HEAVY = {HEAVY!r}
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HEAVY:  # as Python says it of a package that is not installed
                raise ModuleNotFoundError(f"No module named {{name!r}} (not in the light install)", name=name)
    sys.meta_path.insert(0, Blocked())
    atexit.register(lambda: print("heavy modules loaded:", sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
                                  file=sys.stderr))
    from earmark.cli import main
    sys.argv = ["earmark"] + sys.argv[1:]
    main()
""")


def light(*args) -> list[str]:
    return [sys.executable, "-c", LIGHT_CLI, *map(str, args)]


ROOT = Path(__file__).resolve().parents[1]
# the import name of each full-install dependency the light install leaves out
LEFT_OUT = {"torch": "torch", "lightning": "lightning", "scikit-learn": "sklearn", "scipy": "scipy",
            "matplotlib": "matplotlib", "tensorboard": "tensorboard", "timm": "timm", "transformers": "transformers",
            "onnx": "onnx", "safetensors": "safetensors", "onnxscript": "onnxscript", "optuna": "optuna",
            "yt-dlp": "yt_dlp", "gdown": "gdown", "cleanlab": "cleanlab", "jinja2": "jinja2"}


def requirement_names(pyproject: Path) -> set[str]:
    """The names in [project] dependencies (read as text: tomllib is Python 3.11+)."""
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject.read_text(), re.S | re.M).group(1)
    return {re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0] for requirement in re.findall(r'"([^"]+)"', block)}


def project_version(pyproject: Path) -> str:
    return re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M).group(1)


def test_the_light_install_is_the_full_one_less_the_training_stack_and_ci_runs_the_readmes_command():
    full, light_names = requirement_names(ROOT / "pyproject.toml"), requirement_names(ROOT / "light" / "pyproject.toml")
    assert light_names <= full and full - light_names == set(LEFT_OUT)
    assert {"typer", "PyYAML", "onnxruntime", "fastapi"} <= light_names  # `earmark --help` needs the first two
    assert set(LEFT_OUT.values()) <= set(HEAVY)  # what this file blocks covers what the light install lacks
    versions = [project_version(path) for path in (ROOT / "pyproject.toml", ROOT / "light" / "pyproject.toml")]
    assert versions[0] == versions[1] and (ROOT / "light" / "src").resolve() == (ROOT / "src").resolve()
    readme = pages_text()  # README.md and the docs pages (the section is on docs/deployment.md)
    deploy = readme.split("### Deploy without PyTorch", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    installs = [line.strip() for line in deploy.splitlines() if line.strip().startswith("pip ")]
    assert installs == ["pip install ./light"]
    ci = (ROOT / ".ci" / "run").read_text().split('README: "Deploy without PyTorch"', 1)[1]
    assert [line.strip() for line in ci.splitlines() if line.strip().startswith("pip ")] == \
        [installs[0].replace("pip install", "pip install --quiet")]


def test_a_command_that_needs_torch_says_what_to_install():
    for command in (("train",), ("models",)):
        result = subprocess.run(light(*command), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if not line.startswith("heavy modules loaded")]
        assert lines == [lines[0]] and lines[0].startswith("error: this command needs torch"), result.stderr
        assert "pip install" in lines[0] and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return exported_model(tmp_path_factory)


def test_help_and_onnx_prediction_import_nothing_heavy(onnx_model, tmp_path):
    import soundfile as sf

    helped = subprocess.run(light("--help"), capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "heavy modules loaded: []" in helped.stderr
    for index, (label, frequency) in enumerate(TONES_HZ.items()):
        sf.write(tmp_path / f"{label}.wav", tone_clip(frequency, RATE_HZ, 0.5, 700 + index), RATE_HZ)
    out = tmp_path / "preds.csv"
    predicted = subprocess.run(light("predict", onnx_model, tmp_path, "--out", out, "--threads", "1"),
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "heavy modules loaded: []" in predicted.stderr
    assert len(out.read_text().splitlines()) == 1 + len(TONES_HZ)
    run = onnx_model.parent.parent  # a run folder with a current export: predicted with it, no torch
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    predicted = subprocess.run(light("predict", run, tmp_path, "--out", out), capture_output=True, text=True,
                               timeout=300, env=env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "heavy modules loaded: []" in predicted.stderr and "the run's current ONNX export" in predicted.stderr
    assert len(out.read_text().splitlines()) == 1 + len(TONES_HZ)


@pytest.mark.slow
def test_serving_an_onnx_model_needs_only_the_light_install(onnx_model, tmp_path):
    import httpx
    import soundfile as sf

    from earmark.serve.client import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(light("serve", onnx_model, "--port", port, "--threads", "1"), stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the light server did not answer /health"
            time.sleep(0.2)
        sf.write(tmp_path / "low.wav", tone_clip(TONES_HZ["low"], RATE_HZ, 0.5, 5), RATE_HZ)
        answer = httpx.post(f"{url}/predict", files={"file": (tmp_path / "low.wav").open("rb")}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in TONES_HZ
        assert httpx.get(f"{url}/health", timeout=5).json()["backend"] == "onnx"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    served = (tmp_path / "serve.log").read_text()
    assert "not in the light install" not in served
    assert "heavy modules loaded:" not in served or "heavy modules loaded: []" in served
