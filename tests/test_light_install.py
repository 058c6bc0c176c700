"""Deploying without PyTorch: with every package outside README's light install list made unimportable,
`earmark --help`, `earmark predict model.onnx` (and a run folder with a current export) and `earmark serve
model.onnx` work.

The light list (README, *Deploy without PyTorch*): `pip install --no-deps earmark` plus onnxruntime numpy
pandas soundfile soxr typer rich pydantic PyYAML fastapi uvicorn python-multipart. Every other
dependency in pyproject.toml is blocked here, so an import of one on these paths fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import TONES_HZ, tone_clip
from onnx_runs import RATE_HZ, exported_model

# top-level modules of the dependencies the light install leaves out (and what they pull in)
HEAVY = ("torch", "torchaudio", "torchvision", "lightning", "pytorch_lightning", "lightning_fabric", "transformers",
         "optuna", "yt_dlp", "gdown", "timm", "sklearn", "scipy", "matplotlib", "tensorboard", "onnx", "onnxscript",
         "safetensors")

LIGHT_CLI = textwrap.dedent(f"""
    import atexit, importlib.abc, sys
    HEAVY = {HEAVY!r}
    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{{name}} is not in the light install")
    sys.meta_path.insert(0, Blocked())
    atexit.register(lambda: print("heavy modules loaded:", sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
                                  file=sys.stderr))
    from earmark.cli import main
    sys.argv = ["earmark"] + sys.argv[1:]
    main()
""")


def light(*args) -> list[str]:
    return [sys.executable, "-c", LIGHT_CLI, *map(str, args)]


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
    assert "is not in the light install" not in served
    assert "heavy modules loaded:" not in served or "heavy modules loaded: []" in served
