"""`predict RUN` with the run's current ONNX export (no torch) or its checkpoint, and how it chooses."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from earmark import api
from earmark.errors import EarmarkError
from earmark.files import sha256_of
from earmark.predict import run_export
from earmark.predict.onnx_predictor import OnnxPredictor
from earmark.predict.torch_predictor import Predictor, load_predictor
from onnx_runs import exported_model
from test_onnx_predict import run_without_torch, tone_files  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    return exported_model(tmp_path_factory).parent.parent


@pytest.fixture
def run_copy(exported_run, tmp_path):
    """A copy of the exported run that a test may change."""
    return shutil.copytree(exported_run, tmp_path / "run")


def test_the_export_records_the_checkpoint_it_was_made_from(exported_run):
    report = json.loads((exported_run / "export" / "parity.json").read_text())
    checkpoint = exported_run / "checkpoints" / "best.ckpt"
    assert report["checkpoint"] == {"file": "checkpoints/best.ckpt", "bytes": checkpoint.stat().st_size,
                                    "sha256": sha256_of(checkpoint)}
    assert run_export.run_export(exported_run, checkpoint) == run_export.RunExport(
        exported_run / "export" / "model.onnx", True, "")


def test_a_run_with_a_current_export_predicts_without_importing_torch(exported_run, tone_files, tmp_path):  # noqa: F811
    out = tmp_path / "preds.csv"
    done = run_without_torch("predict", exported_run, tone_files, "--out", out, "--top-k", "2",
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heavy modules loaded: []" in done.stderr
    assert f"model: {exported_run / 'export' / 'model.onnx'}, the run's current ONNX export" in done.stderr
    table = pd.read_csv(out)
    assert list(table["label"]) == ["high", "low", "mid"]
    with_checkpoint = api.predict(exported_run, [tone_files], top_k=2, device="cpu", backend="torch")
    assert "best.ckpt on torch (cpu)" in with_checkpoint.source
    np.testing.assert_allclose(table["probability"], with_checkpoint.files["probability"], atol=1e-4)
    assert list(table["top2_label"]) == list(with_checkpoint.files["top2_label"])


def test_the_api_and_the_stream_take_the_export_and_say_so(exported_run, tone_files):  # noqa: F811
    result = api.predict(exported_run, [tone_files], device="cpu")
    assert result.source.startswith(str(exported_run / "export" / "model.onnx"))
    stream = api.predict_stream(exported_run, tone_files / "low.wav", device="cpu")
    assert isinstance(stream.predictor, OnnxPredictor)
    assert [row["label"] for row in stream] == ["low"]


@pytest.mark.parametrize("change, reason", [
    (lambda report: report["checkpoint"].update(sha256="0" * 64), "made from another best.ckpt"),
    (lambda report: report["checkpoint"].update(bytes=1), "made from another best.ckpt"),
    (lambda report: report["fp32"].update(passed=False), "failed its parity check"),
    (lambda report: report.pop("checkpoint"), "does not name the checkpoint"),
])
def test_an_export_that_is_not_current_leaves_the_run_to_its_checkpoint(run_copy, tone_files, change,  # noqa: F811
                                                                         reason):
    report_file = run_copy / "export" / "parity.json"
    report = json.loads(report_file.read_text())
    change(report)
    report_file.write_text(json.dumps(report))
    result = api.predict(run_copy, [tone_files], device="cpu")
    assert result.source == f"{run_copy / 'checkpoints' / 'best.ckpt'} on torch (cpu)"
    with pytest.raises(EarmarkError, match=f"needs a current export.*{reason}.*earmark export"):
        api.predict(run_copy, [tone_files], device="cpu", backend="onnx")


def test_a_changed_checkpoint_makes_the_old_export_stale(run_copy):
    checkpoint = run_copy / "checkpoints" / "best.ckpt"
    assert run_export.run_export(run_copy, checkpoint).current
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 1  # same size, other bytes: a checkpoint the export was not made from
    checkpoint.write_bytes(bytes(data))
    assert run_export.run_export(run_copy, checkpoint) == run_export.RunExport(
        run_copy / "export" / "model.onnx", False, "the export was made from another best.ckpt than the run's "
                                                   "current one")


def test_without_an_export_or_with_backend_torch_the_checkpoint_predicts(exported_run, run_copy, tone_files):  # noqa: F811
    assert isinstance(load_predictor(exported_run, device="cpu", backend="torch"), Predictor)
    shutil.rmtree(run_copy / "export")
    assert isinstance(load_predictor(run_copy, device="cpu"), Predictor)
    with pytest.raises(EarmarkError, match="the run has no export"):
        load_predictor(run_copy, backend="onnx")
    refused = run_without_torch("predict", run_copy, tone_files, "--backend", "onnx")  # refused before any torch
    assert refused.returncode == 2 and "error: --backend onnx needs a current export" in refused.stderr
    assert "Traceback" not in refused.stderr
    with pytest.raises(EarmarkError, match="backend must be one of auto, torch, onnx"):
        load_predictor(exported_run, backend="tensorrt")
    with pytest.raises(EarmarkError, match="predicts a run directory's export or an .onnx file"):
        load_predictor(exported_run / "checkpoints" / "best.ckpt", backend="onnx")
    with pytest.raises(EarmarkError, match="backend must be one of"):
        load_predictor(exported_run / "checkpoints" / "best.ckpt", backend="tensorrt")
    with pytest.raises(EarmarkError, match="--backend torch needs a run directory or a .ckpt"):
        load_predictor(exported_run / "export" / "model.onnx", backend="torch")


def test_a_prediction_bound_for_a_gpu_keeps_the_checkpoint(exported_run, monkeypatch):
    checkpoint = exported_run / "checkpoints" / "best.ckpt"
    export = exported_run / "export" / "model.onnx"
    monkeypatch.setattr(run_export, "gpu_visible", lambda: True)
    assert run_export.choose_export(exported_run, checkpoint, "auto", None) is None
    assert run_export.choose_export(exported_run, checkpoint, "auto", "cuda") is None
    assert run_export.choose_export(exported_run, checkpoint, "auto", "cpu") == export
    assert run_export.choose_export(exported_run, checkpoint, "onnx", None) == export  # asked for: honoured
    monkeypatch.setattr(run_export, "gpu_visible", lambda: False)
    assert run_export.choose_export(exported_run, checkpoint, "auto", None) == export


def test_hidden_gpus_are_not_visible(monkeypatch):
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert run_export.gpu_visible() is False


def test_a_served_run_keeps_its_checkpoint_and_a_served_onnx_its_runtime(exported_run):
    from fastapi.testclient import TestClient

    with TestClient(api.create_app(exported_run)) as served_run:
        assert served_run.get("/health").json()["backend"] == "torch"
    with TestClient(api.create_app(exported_run / "export" / "model.onnx")) as served_onnx:
        assert served_onnx.get("/health").json()["backend"] == "onnx"
