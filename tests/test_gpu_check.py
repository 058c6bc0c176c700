"""benchmarks/gpu_check.py: on a machine without CUDA it says so, exits 0 and writes nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_cleanly(monkeypatch, tmp_path, capsys):
    gpu_check = load_gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA_MESSAGE
    assert not (tmp_path / "results").exists()


def test_it_measures_the_models_it_promises_and_they_are_registered():
    from earmark.models.registry import MODELS

    gpu_check = load_gpu_check()
    assert gpu_check.THROUGHPUT_MODELS == ("simple_cnn", "lite_cnn", "resnet18", "efficientnetv2_s", "cnn14")
    assert all(MODELS.entry(name).input_kind == "spectrogram" for name in gpu_check.THROUGHPUT_MODELS)
    assert (gpu_check.BATCH, gpu_check.CLIP_S) == (128, 5.0)
