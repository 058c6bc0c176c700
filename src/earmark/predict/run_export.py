"""Which model predicts a run: its checkpoint on torch, or its current ONNX export on onnxruntime.

`earmark export RUN` writes `RUN/export/model.onnx` and, in `parity.json`, the sha256 of the
checkpoint it was made from and whether the export matched PyTorch on the test clips. An export is
*current* when that check passed and the checkpoint the run would load now has that sha256 (a
resumed, re-calibrated or retrained run has another; its old export is then ignored).

backend "auto" predicts a run on the CPU with its current export — no torch import, which takes
2 s or more before the first clip — and with the checkpoint otherwise, or when the prediction
would run on a GPU (`device="cuda"`, or no device given and an NVIDIA GPU is visible).
"torch" always uses the checkpoint; "onnx" requires a current export. Imports no torch.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass
from pathlib import Path

from earmark.errors import EarmarkError
from earmark.rundir import EXPORT_MODEL_FILE, EXPORT_PARITY_FILE, RunDir

BACKENDS = ("auto", "torch", "onnx")
NVML_LIBRARIES = ("libnvidia-ml.so.1", "nvml.dll")


@dataclass(frozen=True)
class RunExport:
    """A run's FP32 export and whether it may stand in for the run's checkpoint."""

    model: Path
    current: bool
    reason: str  # why it is not current ("" when it is)


def checkpoint_record(checkpoint: Path, run_dir: Path | None) -> dict[str, object]:
    """What an export records of its source checkpoint: the file (relative to the run), size and sha256."""
    from earmark.files import sha256_of

    checkpoint = Path(checkpoint)
    name = checkpoint.relative_to(run_dir).as_posix() if run_dir is not None else checkpoint.name
    return {"file": name, "bytes": checkpoint.stat().st_size, "sha256": sha256_of(checkpoint)}


def run_export(run_dir: Path, checkpoint: Path) -> RunExport:
    """The export in `run_dir/export/` and whether it was made from `checkpoint` as it is now and passed parity."""
    from earmark.files import sha256_of

    folder = RunDir(run_dir).export_dir
    model, report_file = folder / EXPORT_MODEL_FILE, folder / EXPORT_PARITY_FILE
    if not model.is_file():
        return RunExport(model, False, f"the run has no export ({model} not found)")
    try:
        report = json.loads(report_file.read_text())
        source, passed = report["checkpoint"], report["fp32"]["passed"] is True
    except (OSError, ValueError, KeyError, TypeError):
        return RunExport(model, False, f"{report_file} is missing or does not name the checkpoint the export was "
                                       f"made from (an export by an older earmark)")
    if not passed:
        return RunExport(model, False, f"the export failed its parity check ({report_file})")
    checkpoint = Path(checkpoint)
    if source.get("bytes") != checkpoint.stat().st_size or source.get("sha256") != sha256_of(checkpoint):
        return RunExport(model, False, f"the export was made from another {checkpoint.name} than the run's "
                                       f"current one")
    return RunExport(model, True, "")


def gpu_visible() -> bool:
    """Whether the NVIDIA driver shows this process a GPU, asked through NVML: no torch import and no
    CUDA context (so it is safe before a fork). False when CUDA_VISIBLE_DEVICES hides every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    for name in NVML_LIBRARIES:
        try:
            nvml = ctypes.CDLL(name)
        except OSError:
            continue
        if nvml.nvmlInit_v2() != 0:
            return False
        try:
            count = ctypes.c_uint(0)
            return nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0 and count.value > 0
        finally:
            nvml.nvmlShutdown()
    return False


def choose_export(run_dir: Path, checkpoint: Path, backend: str, device: str | None) -> Path | None:
    """The export to predict `run_dir` with, or None for its checkpoint (see the module's docstring);
    `backend` is one of BACKENDS (load_predictor checks it for every kind of model)."""
    if backend == "torch":
        return None
    export = run_export(run_dir, checkpoint)
    if backend == "onnx":
        if not export.current:
            raise EarmarkError(f"--backend onnx needs a current export of {run_dir}: {export.reason}. "
                               f"Run `earmark export {run_dir}`, or use --backend torch")
        return export.model
    if not export.current or device == "cuda" or (device is None and gpu_visible()):
        return None
    try:
        import onnxruntime  # noqa: F401 (a torch-only install predicts with the checkpoint)
    except ImportError:
        return None
    return export.model
