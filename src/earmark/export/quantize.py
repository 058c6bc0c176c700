"""INT8 versions of an exported model.onnx (onnxruntime.quantization), the front-end kept in float.

Only the classifier is quantized. The front-end stays float32 on purpose: 8-bit activations
would turn the waveform into 8-bit audio and the power spectrum (a 100 dB range) into a few
levels, and its DFT and mel matrices are a small share of the work.

    dynamic: the weights of fully connected layers (MatMul/Gemm: heads, attention, GPT-2/wav2vec2/AST
             blocks) INT8 ahead of time, their activations scaled per batch at run time (no data
             needed). Convolutions stay float: onnxruntime's ConvInteger, what dynamic quantization
             makes of a Conv, ran 2-4x slower than the float Conv on CPU (benchmarks/inference_latency.py)
             — onnxruntime's own advice is dynamic for transformers and RNNs, static for CNNs.
    static:  weights and activations of every supported op INT8 (QDQ format), activation ranges
             calibrated on training clips
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from pathlib import Path

import numpy as np

from earmark.errors import EarmarkError

INT8_MODES = ("dynamic", "static")
DYNAMIC_OP_TYPES = ["MatMul", "Gemm"]  # see the module docstring: convolutions stay float in dynamic mode
FRONTEND_SCOPE = "frontend"  # the AudioClassifier attribute whose nodes stay float
CALIBRATION_BATCH = 16


def frontend_nodes(model) -> list[str]:
    """Names of the nodes that compute the features: those the exporter scoped under `frontend`, and
    unscoped helper nodes (e.g. a Split) fed only by front-end nodes, the waveform and constants."""
    constants = {init.name for init in model.graph.initializer}
    produced_by_frontend = {model.graph.input[0].name} | constants
    names = []
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        try:
            scope_list = ast.literal_eval(scopes) if scopes else []
        except (ValueError, SyntaxError):
            scope_list = []
        in_scope = any(s.split(".")[-1] == FRONTEND_SCOPE or f".{FRONTEND_SCOPE}." in s for s in scope_list)
        in_scope = in_scope or f"/{FRONTEND_SCOPE}/" in node.name  # the TorchScript exporter's naming
        unscoped = not scope_list and "/" not in node.name
        inputs = [name for name in node.input if name]
        if in_scope or (unscoped and inputs and all(name in produced_by_frontend for name in inputs)):
            names.append(node.name)
            produced_by_frontend.update(node.output)
    return names


class WaveBatches:
    """A CalibrationDataReader over waves (N, n_samples): {"wave": (b, n_samples)} batches, then None."""

    def __init__(self, waves: np.ndarray, batch_size: int = CALIBRATION_BATCH, with_group: bool = False) -> None:
        self.waves = np.asarray(waves, dtype=np.float32)
        self.batch_size = batch_size
        self.with_group = with_group
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.waves):
            return None
        batch = self.waves[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        feed = {"wave": batch}
        if self.with_group:
            feed["group"] = np.full(len(batch), -1, dtype=np.int64)
        return feed

    def rewind(self) -> None:
        self.position = 0


def quantize_model(fp32_path: Path, int8_path: Path, mode: str, calibration_waves: np.ndarray | None = None) -> None:
    """Write the INT8 version of `fp32_path` to `int8_path`; static needs `calibration_waves (N, n_samples)`."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode not in INT8_MODES:
        raise EarmarkError(f"--int8 must be one of {', '.join(INT8_MODES)}; got {mode!r}")
    if mode == "static" and (calibration_waves is None or not len(calibration_waves)):
        raise EarmarkError("static INT8 needs calibration clips (the run's training split); "
                           "use --int8 dynamic for a model without its run")

    class Reader(WaveBatches, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:  # ONNX shape inference helps the quantizer; node names are kept (no optimisation here)
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
        except Exception:  # shape inference fails on some graphs; quantize the export as it is
            shutil.copy(fp32_path, prepared)
        model = onnx.load(str(prepared))
        exclude = frontend_nodes(model)
        if mode == "dynamic":
            quantize_dynamic(prepared, int8_path, weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=DYNAMIC_OP_TYPES, nodes_to_exclude=exclude)
            return
        with_group = len(model.graph.input) > 1
        quantize_static(prepared, int8_path, Reader(calibration_waves, with_group=with_group),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
