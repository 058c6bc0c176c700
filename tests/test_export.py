"""ONNX export: front-end inside the graph, metadata, parity with PyTorch, INT8 and its refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from conftest import tone_clip
from earmark import api
from earmark.errors import EarmarkError
from onnx_runs import exported_model, trained_run


def silent(text: str) -> None:
    pass


@pytest.mark.parametrize("model", ["simple_cnn", pytest.param("wave_cnn", marks=pytest.mark.slow), "lite_cnn"])
def test_export_matches_pytorch_on_the_test_split(model, tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory, model)
    result = api.export(run, tmp_path, log=silent)
    assert result.model_path == tmp_path / "model.onnx"
    onnx.checker.check_model(onnx.load(str(result.model_path)), full_check=True)
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert parity["fp32"]["passed"] and parity["fp32"]["n_clips"] == 9  # the run's test split
    assert parity["fp32"]["max_abs_prob_diff"] <= 1e-4
    assert parity["fp32"]["top1_agreement"] == 1.0
    assert parity["fp32"]["onnx_accuracy"] == parity["fp32"]["torch_accuracy"]


def test_the_graph_takes_raw_waves_of_any_batch_and_length_and_carries_the_contract(tmp_path_factory):
    import onnxruntime as ort

    from earmark.predict.torch_predictor import Predictor

    path = exported_model(tmp_path_factory)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (wave,) = session.get_inputs()
    assert wave.name == "wave" and len(wave.shape) == 2 and all(isinstance(d, str) for d in wave.shape)
    assert [o.name for o in session.get_outputs()] == ["probabilities", "logits"]
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["labels"]) == ["high", "low", "mid"]
    assert (metadata["sample_rate_hz"], metadata["duration_s"], metadata["clip"]) == ("8000", "0.5", "pad")
    for key in ("chunk_hop_s", "reject_threshold", "temperature", "earmark_version", "features"):
        assert key in metadata
    module = Predictor.from_run(path.parent.parent, device="cpu").module
    for batch, length in ((1, 4000), (5, 4000), (3, 6400)):  # other batches and lengths than exported
        waves = np.stack([tone_clip(300.0 * (i + 1), 8000, length / 8000, i) for i in range(batch)])
        probabilities, logits = session.run(None, {"wave": waves})
        with torch.no_grad():
            expected = module(torch.from_numpy(waves)).numpy()
        assert np.abs(logits - expected).max() < 1e-3
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def calibrated_copy(run, tmp_path, temperature: float, reject_threshold: float):
    """A copy of `run` whose checkpoint has the given calibration buffers."""
    copy = tmp_path / "calibrated"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "tensorboard"))
    checkpoint = copy / "checkpoints" / "best.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state_dict"]["temperature_"] = torch.tensor(temperature)
    state["state_dict"]["reject_threshold_"] = torch.tensor(reject_threshold)
    torch.save(state, checkpoint)
    return copy


def test_temperature_is_in_the_graph_and_the_reject_threshold_in_the_metadata(tmp_path_factory, tmp_path):
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.torch_predictor import Predictor

    original = trained_run(tmp_path_factory)
    run = calibrated_copy(original, tmp_path, temperature=4.0, reject_threshold=0.9)
    result = api.export(run, tmp_path / "export", log=silent)
    onnx_predictor, torch_predictor = OnnxPredictor(result.model_path), Predictor.from_run(run, device="cpu")
    assert onnx_predictor.reject_threshold == pytest.approx(0.9) == torch_predictor.reject_threshold
    assert float(onnx_predictor.metadata["temperature"]) == 4.0
    waves = np.stack([tone_clip(f, 8000, 0.5, 7) for f in (300.0, 900.0, 2400.0)])
    calibrated = onnx_predictor.predict_waves(waves)
    assert np.abs(calibrated - torch_predictor.predict_waves(waves)).max() < 1e-4
    # softmax(logits / 4) is flatter than softmax(logits)
    raw = OnnxPredictor(exported_model(tmp_path_factory)).predict_waves(waves)
    assert calibrated.max(axis=1).mean() < raw.max(axis=1).mean()
    # everything below 0.9 is "unknown" for both predictors; the probabilities are kept
    root = original.parent.parent / "tones"
    for predictor in (onnx_predictor, torch_predictor):
        result = predictor.predict_files([root / "low" / "low_0.wav", root / "high" / "high_0.wav"])
        files = result.files
        assert result.bad_files.empty and len(files) == 2
        assert set(files["label"]) == {"unknown"}
        assert set(files["best_label"]) <= {"low", "high", "mid"} and (files["probability"] < 0.9).all()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_models_are_written_with_their_accuracy_change(mode, tmp_path_factory, tmp_path):
    from earmark.predict.onnx_predictor import OnnxPredictor

    lines = []
    result = api.export(trained_run(tmp_path_factory, "lite_cnn"), tmp_path, int8=mode, max_int8_drop=100,
                        log=lines.append)
    assert result.int8_path == tmp_path / "model.int8.onnx" and result.int8_path.is_file()
    int8 = json.loads((tmp_path / "parity.json").read_text())["int8"]
    assert int8["mode"] == mode and int8["n_clips"] == 9
    assert int8["drop_points"] == pytest.approx(100 * (int8["fp32_accuracy"] - int8["int8_accuracy"]))
    assert (int8["calibration_clips"] > 0) == (mode == "static")
    assert any("INT8" in line and "accuracy" in line for line in lines)
    model = onnx.load(str(result.int8_path))
    ops = {node.op_type for node in model.graph.node}
    if mode == "dynamic":  # the head's MatMul/Gemm in INT8, convolutions left in float
        assert "MatMulInteger" in ops and "ConvInteger" not in ops and "Conv" in ops
    else:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    predictor = OnnxPredictor(result.int8_path)
    assert predictor.metadata["quantization"] == mode and predictor.labels == ("high", "low", "mid")


def test_the_front_end_stays_float_in_int8_models(tmp_path_factory):
    from earmark.export.quantize import frontend_nodes

    model = onnx.load(str(exported_model(tmp_path_factory)))
    names = frontend_nodes(model)
    ops = [node.op_type for node in model.graph.node if node.name in names]
    assert "Conv" in ops and "Log" in ops  # the DFT and the dB
    assert ops.count("Conv") == 1  # only the DFT: the model's convolutions are quantized
    assert len(names) < len(model.graph.node)


@pytest.mark.slow
def test_an_int8_model_losing_too_much_is_refused_unless_forced(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    with pytest.raises(EarmarkError, match="above the limit of -1.*--max-int8-drop"):
        api.export(run, tmp_path / "refused", int8="dynamic", max_int8_drop=-1, log=silent)
    assert (tmp_path / "refused" / "model.onnx").is_file()
    assert not (tmp_path / "refused" / "model.int8.onnx").exists()
    assert json.loads((tmp_path / "refused" / "parity.json").read_text())["int8"]["passed"] is False
    result = api.export(run, tmp_path / "forced", int8="dynamic", max_int8_drop=-1, force=True, log=silent)
    assert result.int8_path.is_file()


def test_a_parity_failure_fails_the_export_and_keeps_no_model(tmp_path_factory, tmp_path, monkeypatch):
    import earmark.export.onnx

    monkeypatch.setattr(earmark.export.onnx, "MAX_ABS_PROBABILITY_DIFF", -1.0)
    with pytest.raises(EarmarkError, match="does not match PyTorch"):
        api.export(trained_run(tmp_path_factory), tmp_path, log=silent)
    assert not (tmp_path / "model.onnx").exists()
    assert json.loads((tmp_path / "parity.json").read_text())["fp32"]["passed"] is False


def test_given_clips_replace_the_test_split_and_bad_options_are_named(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    root = run.parent.parent / "tones"
    result = api.export(run, tmp_path, clips=[root / "mid"], int8="dynamic", log=silent)
    parity = result.parity
    assert parity["clips"] == "given clips (12 files)" and parity["fp32"]["torch_accuracy"] is None
    assert parity["int8"]["drop_points"] == pytest.approx(100 * (1 - parity["int8"]["top1_agreement"]))
    with pytest.raises(EarmarkError, match="--int8 must be one of dynamic, static"):
        api.export(run, tmp_path / "x", int8="int4", log=silent)
    with pytest.raises(EarmarkError, match="exporter must be one of"):
        api.export(run, tmp_path / "y", exporter="magic", log=silent)


def test_a_model_no_exporter_handles_fails_with_each_reason(tmp_path_factory, tmp_path, monkeypatch):
    import earmark.export.onnx

    def refuse(graph, example, path, exporter, dynamic_length, opset):
        raise RuntimeError(f"{exporter} cannot trace this")

    monkeypatch.setattr(earmark.export.onnx, "_export_once", refuse)
    with pytest.raises(EarmarkError, match="cannot export model 'simple_cnn'.*dynamo cannot.*torchscript cannot"):
        api.export(trained_run(tmp_path_factory), tmp_path, log=silent)


def test_the_legacy_torchscript_exporter_gives_the_same_model(tmp_path_factory, tmp_path):
    result = api.export(trained_run(tmp_path_factory), tmp_path, exporter="torchscript", log=silent)
    assert result.parity["export"]["exporter"] == "torchscript" and result.parity["fp32"]["passed"]


# every registered model is exported in tests/test_every_model.py; these are the paths it does not take
TINY_FAMILIES = {
    "timm:resnet10t": {},  # torch.export cannot keep its length dynamic: exercises the fixed-length fallback
    "personalized": {"base_params": {"width": 4}},
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name == "timm:resnet10t" else [])
                                  for name in TINY_FAMILIES])
def test_other_families_export_with_parity(name, tmp_path, capfd):
    """Random-weight tiny models of the other families: exported quietly, and equal to PyTorch."""
    from earmark.config import FeaturesConfig, TrainConfig
    from earmark.contract import InputContract
    from earmark.export.onnx import export_graph, onnx_metadata, set_metadata
    from earmark.export.parity import compare
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.torch_predictor import Predictor
    from earmark.train.module import AudioClassifier

    kind = "waveform" if name == "wav2vec2" else "log_mel"
    contract = InputContract(8000, 0.5, "pad", ("a", "b", "c"),
                             FeaturesConfig(kind=kind, n_fft=256, n_mels=32).model_dump())
    torch.manual_seed(0)
    groups = ["ann", "bob"] if name == "personalized" else None
    module = AudioClassifier(contract.to_dict(), name, TINY_FAMILIES[name], TrainConfig().model_dump(),
                             groups=groups).eval()
    waves = np.stack([tone_clip(f, 8000, 0.5, i) for i, f in enumerate((300.0, 900.0, 2400.0, 600.0))])
    module.frontend.fit_normalization([torch.from_numpy(waves)])
    clip_groups = None
    if groups:
        torch.nn.init.normal_(module.model.film.weight, std=0.5)  # make the groups matter
        clip_groups = ["ann", "bob", None, "never-seen"]
    path = tmp_path / "model.onnx"
    how = export_graph(module, path)
    printed = capfd.readouterr()
    assert "Error" not in printed.err + printed.out and "Traceback" not in printed.err, printed.err[-2000:]
    set_metadata(path, onnx_metadata(module, name, how))
    reference = Predictor(module).predict_waves(waves, clip_groups)
    exported = OnnxPredictor(path)
    report = compare(reference, exported.predict_waves(waves, clip_groups))
    assert report["max_abs_prob_diff"] <= 1e-4 and report["top1_differs_not_tie"] == 0
    if groups:
        assert exported.uses_groups and exported.known_groups == ["ann", "bob"]
        assert exported.group_column == "group"
        assert not np.allclose(reference[0], Predictor(module).predict_waves(waves[:1])[0])


@pytest.mark.slow
def test_export_from_the_command_line(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory)
    done = subprocess.run([sys.executable, "-m", "earmark", "export", str(run), "--int8", "static",
                           "--max-int8-drop", "100", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FP32 parity" in done.stdout and "INT8 (static)" in done.stdout
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()
    bad = subprocess.run([sys.executable, "-m", "earmark", "export", str(tmp_path / "no-such-run")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "error: run not found" in bad.stderr


@pytest.mark.parametrize("drop, kept", [(0.015, True), (0.03, False)])
def test_the_int8_gate_at_its_default_budget_keeps_a_small_loss_and_refuses_a_larger_one(
        drop, kept, tmp_path_factory, tmp_path, monkeypatch):
    import earmark.export.onnx

    calls = []

    def accuracy_with_an_int8_loss(probabilities, targets):  # fp32 first, then int8, as _export_int8 asks
        calls.append(probabilities)
        return 0.9 if len(calls) % 2 else 0.9 - drop

    monkeypatch.setattr(earmark.export.onnx, "accuracy", accuracy_with_an_int8_loss)
    assert earmark.export.onnx.DEFAULT_MAX_INT8_DROP == 2.0  # what `earmark export --int8` uses unless told
    run = trained_run(tmp_path_factory)
    if kept:
        result = api.export(run, tmp_path, int8="dynamic", log=silent)
        assert result.int8_path.is_file()
    else:
        with pytest.raises(EarmarkError, match=r"3\.00 points, above the limit of 2"):
            api.export(run, tmp_path, int8="dynamic", log=silent)
        assert not (tmp_path / "model.int8.onnx").exists()
    assert json.loads((tmp_path / "parity.json").read_text())["int8"]["passed"] is kept
