"""ONNX export of a trained run: raw waveform in, calibrated probabilities out, verified against torch.

The graph holds the whole pipeline after decoding: the conv-DFT front-end with its fitted
`mean_`/`std_`, the model, and `softmax(logits / temperature_)`. Its input is `wave (batch,
samples)` float32 at the run's sample rate (batch and length axes dynamic); a personalized model
takes a second input `group (batch,)` int64 (an index into the `groups` metadata, -1 = none).
metadata_props carry the input contract, the reject threshold and the temperature, so the file
alone is enough to predict (`earmark.predict.onnx_predictor`). Every export is checked with `onnx.checker`
and against PyTorch on real clips; the figures go to `parity.json` beside the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earmark.errors import EarmarkError
from earmark.export.parity import MAX_ABS_PROBABILITY_DIFF, accuracy, compare
from earmark.export.quantize import INT8_MODES
from earmark.rundir import EXPORT_DIR  # default output folder inside the run
from earmark.rundir import EXPORT_MODEL_FILE as MODEL_FILE
from earmark.rundir import EXPORT_PARITY_FILE as PARITY_FILE

INT8_FILE = "model.int8.onnx"
MAX_PARITY_CLIPS = 256
CALIBRATION_CLIPS = 256  # training clips that calibrate static INT8
DEFAULT_MAX_INT8_DROP = 2.0  # percentage points of test accuracy
EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass
class ExportResult:
    out_dir: Path
    model_path: Path  # the FP32 model (an export whose FP32 model fails parity raises instead)
    int8_path: Path | None
    parity: dict[str, Any] = field(default_factory=dict)  # what parity.json holds


class ExportGraph:
    """Builds the nn.Module that is exported: wave (B, T) [, group (B,)] → (probabilities, logits) (B, C)."""

    @staticmethod
    def build(classifier):
        import torch
        from torch import nn

        class WaveToProbabilities(nn.Module):
            def __init__(self, classifier) -> None:
                super().__init__()
                self.classifier = classifier

            def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                logits = self.classifier(wave).float()  # (B, C)
                return torch.softmax(logits / self.classifier.temperature_, dim=1), logits

        class WaveGroupToProbabilities(WaveToProbabilities):
            def forward(self, wave: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                logits = self.classifier(wave, group).float()  # (B, C); group -1: the base model
                return torch.softmax(logits / self.classifier.temperature_, dim=1), logits

        graph = WaveGroupToProbabilities if classifier.uses_groups else WaveToProbabilities
        return graph(classifier).eval()


def load_classifier(run: str | Path, trust_checkpoint: bool = False):
    """(the run's AudioClassifier on the CPU in eval mode, its run directory or None for a bare .ckpt);
    the checkpoint is read without running code from it unless `trust_checkpoint`."""
    module, run_dir, _ = _load_checkpoint(run, trust_checkpoint)
    return module, run_dir


def _load_checkpoint(run: str | Path, trust_checkpoint: bool):
    """load_classifier's pair and the checkpoint file it read."""
    from earmark.rundir import RunDir, find_checkpoint
    from earmark.train.checkpoints import read_checkpoint

    checkpoint = find_checkpoint(Path(run))
    module = read_checkpoint(checkpoint, trust=trust_checkpoint)[1].eval()
    run = RunDir.of_checkpoint(checkpoint)
    return module, run.path if run is not None else None, checkpoint


def onnx_metadata(module, model_name: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata_props of an export: everything `OnnxPredictor` needs besides the graph."""
    import earmark

    contract = module.contract
    metadata = {
        "labels": json.dumps(list(contract.labels)), "sample_rate_hz": str(contract.sample_rate_hz),
        "duration_s": repr(float(contract.duration_s)), "n_samples": str(contract.n_samples),
        "clip": contract.clip, "chunk_hop_s": "" if contract.chunk_hop_s is None else repr(float(contract.chunk_hop_s)),
        "features": json.dumps(contract.features), "reject_threshold": repr(float(module.reject_threshold_)),
        "temperature": repr(float(module.temperature_)), "earmark_version": earmark.__version__,
        "model_name": model_name, "quantization": "none",
    }
    if module.uses_groups:
        metadata["groups"] = json.dumps(list(module.model.groups_))
        metadata["group_column"] = module.model.group_column
    metadata.update({key: str(value) for key, value in (extra or {}).items()})
    return metadata


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the metadata_props of the ONNX file at `path`, run onnx.checker, save in place."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EarmarkError(f"onnx.checker rejects {path}: {exc}") from None
    onnx.save(model, str(path))


def _export_once(graph, example: tuple, path: Path, exporter: str, dynamic_length: bool, opset: int | None) -> None:
    import torch

    input_names = ["wave", "group"][:len(example)]
    output_names = ["probabilities", "logits"]
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1)
        dims: dict[str, Any] = {"wave": {0: batch, 1: torch.export.Dim("samples", min=1024)} if dynamic_length
                                else {0: batch}}
        if len(example) > 1:
            dims["group"] = {0: batch}
        program = torch.onnx.export(graph, example, None, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dims, opset_version=opset, dynamo=True, verbose=False)
        program.save(str(path), external_data=False)
        return
    axes = {"wave": {0: "batch", 1: "samples"} if dynamic_length else {0: "batch"},
            "probabilities": {0: "batch"}, "logits": {0: "batch"}}
    if len(example) > 1:
        axes["group"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(graph, example, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, opset_version=opset or 17, dynamo=False)


def export_graph(module, path: Path, *, opset: int | None = None, exporter: str = "auto") -> dict[str, Any]:
    """Write `module` (an AudioClassifier) as ONNX to `path`; returns how: exporter and dynamic_length.

    "auto" tries the torch.export-based exporter (dynamo) with a dynamic length axis, then with the
    clip length fixed, then the legacy TorchScript exporter; a model none of them can export fails
    with an EarmarkError that gives each one's reason.
    """
    import io

    import torch

    if exporter not in EXPORTERS:
        raise EarmarkError(f"exporter must be one of {', '.join(EXPORTERS)}; got {exporter!r}")
    graph = ExportGraph.build(module)
    n = module.contract.n_samples
    example: tuple = (torch.zeros(2, n),)
    if module.uses_groups:
        example += (torch.tensor([0, -1], dtype=torch.long),)
    attempts = [(e, d) for e in ("dynamo", "torchscript") for d in (True, False)
                if exporter in ("auto", e)]
    reasons = []
    for name, dynamic_length in attempts:
        try:
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                    _logging_silenced():
                warnings.simplefilter("ignore")
                _export_once(graph, example, path, name, dynamic_length, opset)
            return {"exporter": name, "dynamic_length": dynamic_length, "opset": _opset_of(path)}
        except Exception as exc:  # each exporter raises its own types; report them all
            reasons.append(f"{name}{'' if dynamic_length else ' (fixed length)'}: "
                           f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    path.unlink(missing_ok=True)
    raise EarmarkError(f"cannot export model '{module.hparams['model_name']}' to ONNX; " + "; ".join(reasons))


@contextlib.contextmanager
def _logging_silenced() -> Iterator[None]:
    """No log records while an exporter tries: a failed attempt makes torch log its internal errors
    (dozens of `torch/_guards.py` lines) before it raises; the reason is reported once, if it matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def export_run(run: str | Path, out_dir: str | Path | None = None, *, int8: str | None = None,
               opset: int | None = None, clips: Sequence[str | Path] | None = None,
               max_int8_drop: float = DEFAULT_MAX_INT8_DROP, force: bool = False, exporter: str = "auto",
               log=print, trust_checkpoint: bool = False) -> ExportResult:
    """Export a run (or .ckpt) to `out_dir/model.onnx` (+ `model.int8.onnx`), checked against PyTorch.

    clips: files/folders/CSV lists to check parity on (default: the run's test split).
    int8: "dynamic" or "static" (calibrated on up to CALIBRATION_CLIPS training clips).
    max_int8_drop: the most test accuracy (percentage points) INT8 may lose against FP32; on given
        clips without labels, the share of clips whose top-1 changes stands in for it. A worse INT8
        model is deleted and the export fails, unless `force` keeps it (the failure is still reported).
    """
    from earmark.export.parity import file_clips, run_clips
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.run_export import checkpoint_record
    from earmark.predict.torch_predictor import Predictor

    if int8 is not None and int8 not in INT8_MODES:
        raise EarmarkError(f"--int8 must be one of {', '.join(INT8_MODES)}; got {int8!r}")
    module, run_dir, checkpoint = _load_checkpoint(run, trust_checkpoint)
    if int8 == "static" and run_dir is None:
        raise EarmarkError(f"static INT8 is calibrated on the run's training clips, and {run} is a bare checkpoint "
                           f"without its run directory; give the run directory, or use --int8 dynamic")
    out = Path(out_dir) if out_dir is not None else (run_dir or Path(run).parent) / EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    check = file_clips(clips, module.contract, MAX_PARITY_CLIPS) if clips else \
        run_clips(run_dir, module, "test", MAX_PARITY_CLIPS)
    if check is None:
        raise EarmarkError(f"{run} has no test split to check the export on; give clips with --clips")
    model_path = out / MODEL_FILE
    how = export_graph(module, model_path, opset=opset, exporter=exporter)
    if not how["dynamic_length"]:
        log(f"warning: {how['exporter']} could not export a dynamic length axis; the model takes exactly "
            f"{module.contract.n_samples} samples per clip (earmark's predictors fit every clip to that length)")
    metadata = onnx_metadata(module, module.hparams["model_name"], how)
    set_metadata(model_path, metadata)
    reference = Predictor(module, "cpu").predict_waves(check.waves, check.groups, batch_size=64)
    fp32 = OnnxPredictor(model_path).predict_waves(check.waves, check.groups, batch_size=64)
    report: dict[str, Any] = {"clips": check.source, "export": how,
                              "checkpoint": checkpoint_record(checkpoint, run_dir),  # what `predict RUN` checks
                              "fp32": {**compare(reference, fp32), "size_mb": _size_mb(model_path),
                                       "torch_accuracy": accuracy(reference, check.targets),
                                       "onnx_accuracy": accuracy(fp32, check.targets)}}
    result = ExportResult(out, model_path, None, report)
    # identical top-1 on every clip; near-ties are counted in the report (top1_differs_not_tie) to explain a miss
    fp32_ok = (report["fp32"]["max_abs_prob_diff"] <= MAX_ABS_PROBABILITY_DIFF
               and report["fp32"]["top1_differs"] == 0)
    report["fp32"]["passed"] = fp32_ok
    log(f"FP32 parity on {check.source}: max |Δprob| {report['fp32']['max_abs_prob_diff']:.2e} "
        f"(limit {MAX_ABS_PROBABILITY_DIFF:g}), top-1 agreement {report['fp32']['top1_agreement']:.4f}")
    if not fp32_ok:
        _write_report(out, report)
        model_path.unlink(missing_ok=True)
        raise EarmarkError(f"the ONNX export of {run} does not match PyTorch (max |Δprob| "
                           f"{report['fp32']['max_abs_prob_diff']:.2e} > {MAX_ABS_PROBABILITY_DIFF:g} or top-1 differs "
                           f"on {report['fp32']['top1_differs']} clips); model not kept, see {out / PARITY_FILE}")
    if int8 is not None:
        result.int8_path = _export_int8(model_path, out, int8, run_dir, module, check, fp32, report, metadata,
                                        max_int8_drop, force, log)
    _write_report(out, report)
    return result


def _export_int8(model_path: Path, out: Path, mode: str, run_dir: Path | None, module, check, fp32: np.ndarray,
                 report: dict, metadata: dict[str, str], max_drop_points: float, force: bool, log) -> Path:
    from earmark.export.parity import run_clips
    from earmark.export.quantize import quantize_model
    from earmark.predict.onnx_predictor import OnnxPredictor

    calibration = run_clips(run_dir, module, "train", CALIBRATION_CLIPS) if mode == "static" else None
    int8_path = out / INT8_FILE
    quantize_model(model_path, int8_path, mode, None if calibration is None else calibration.waves)
    set_metadata(int8_path, {**metadata, "quantization": mode})
    int8 = OnnxPredictor(int8_path).predict_waves(check.waves, check.groups, batch_size=64)
    figures = {"mode": mode, **compare(fp32, int8), "size_mb": _size_mb(int8_path),
               "calibration_clips": 0 if calibration is None else len(calibration.waves),
               "fp32_accuracy": accuracy(fp32, check.targets), "int8_accuracy": accuracy(int8, check.targets),
               "max_drop_points": max_drop_points}
    if figures["int8_accuracy"] is not None:
        figures["drop_points"] = 100 * (figures["fp32_accuracy"] - figures["int8_accuracy"])
        measure = "test accuracy drop"
    else:  # no labels: a changed top-1 is the most accuracy a clip can lose
        figures["drop_points"] = 100 * (1 - figures["top1_agreement"])
        measure = "top-1 disagreement with FP32"
    figures["passed"] = figures["drop_points"] <= max_drop_points
    report["int8"] = figures
    accuracy_text = ("" if figures["int8_accuracy"] is None else
                     f", accuracy {figures['fp32_accuracy']:.4f} → {figures['int8_accuracy']:.4f}")
    log(f"INT8 ({mode}) on {check.source}: top-1 agreement with FP32 {figures['top1_agreement']:.4f}"
        f"{accuracy_text}; {measure} {figures['drop_points']:.2f} points (limit {max_drop_points:g}); "
        f"{figures['size_mb']:.2f} MB vs {report['fp32']['size_mb']:.2f} MB")
    if not figures["passed"]:
        kept = "kept anyway (--force)" if force else "deleted"
        if not force:
            int8_path.unlink(missing_ok=True)
        _write_report(out, report)
        if not force:
            raise EarmarkError(f"INT8 ({mode}) {measure} is {figures['drop_points']:.2f} points, above the limit of "
                               f"{max_drop_points:g} (--max-int8-drop); {INT8_FILE} {kept}. Try --int8 "
                               f"{'static' if mode == 'dynamic' else 'dynamic'}, or --force to keep it")
        log(f"warning: INT8 {measure} exceeds the limit; {INT8_FILE} {kept}")
    return int8_path


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 4)


def _write_report(out: Path, report: dict) -> None:
    (out / PARITY_FILE).write_text(json.dumps(report, indent=1) + "\n")
