"""Predictors: the torch one for a trained run, and `load_predictor` for a run, a .ckpt or a .onnx file.

This module imports torch only inside the torch predictor, so `load_predictor("model.onnx")` works
where torch is not installed. File handling (windows, timelines, "unknown") lives in
`earmark.predict.files.FilePredictor`, shared with `earmark.predict.onnx_predictor.OnnxPredictor`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earmark.errors import EarmarkError
from earmark.predict.files import FilePredictions, FilePredictor, Groups  # noqa: F401 (re-exported)
from earmark.predict.inputs import AUDIO_EXTENSIONS, resolve_grouped_inputs, resolve_inputs  # noqa: F401 (re-exported)
from earmark.rundir import find_checkpoint


def load_predictor(model: str | Path, *, threads: int | None = None, device: str | None = None,
                   trust_checkpoint: bool = False, backend: str = "auto") -> FilePredictor:
    """A predictor for a run directory or .ckpt (torch) or an exported .onnx file (onnxruntime only).

    threads: CPU threads for one prediction (onnxruntime's intra_op_num_threads; torch's set_num_threads,
        which is process-wide). device: "cpu" or "cuda" (default: cuda when available for torch, cpu for ONNX).
    trust_checkpoint: unpickle a .ckpt in full (it can run code); only for a file you trust.
    backend (run directories): "auto" predicts on the CPU with the run's current ONNX export when it has one
        (no torch import; see `earmark.predict.run_export`), "torch" with the checkpoint, "onnx" with the
        export or fails. The predictor's `source` says which.
    """
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.run_export import BACKENDS, choose_export

    model = Path(model)
    if backend not in BACKENDS:
        raise EarmarkError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if model.suffix.lower() == ".onnx":
        if backend == "torch":
            raise EarmarkError(f"--backend torch needs a run directory or a .ckpt; {model} is an ONNX model")
        return OnnxPredictor(model, threads=threads, device=device)
    if model.is_dir():
        export = choose_export(model, find_checkpoint(model), backend, device)
        if export is not None:
            predictor = OnnxPredictor(export, threads=threads, device=device)
            predictor.source = f"{export}, the run's current ONNX export, on onnxruntime ({predictor.device})"
            return predictor
    elif backend == "onnx":
        raise EarmarkError(f"--backend onnx predicts a run directory's export or an .onnx file; {model} is neither")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return Predictor.from_run(model, device=device, trust_checkpoint=trust_checkpoint)


class Predictor(FilePredictor):
    """A trained front-end + model on one device. `predict_waves` is the core; files go through it.

    A personalized run's model takes a group (e.g. the speaker) per input; without one, or with one
    it never saw in training, it predicts exactly as its base model.
    """

    def __init__(self, module, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.module = module.eval().to(device)
        self.device = device
        self.contract = module.contract
        threshold = getattr(module, "reject_threshold_", None)
        self.reject_threshold = float(threshold) if threshold is not None else 0.0
        self.source = f"a checkpoint on torch ({device})"

    @classmethod
    def from_run(cls, run: Path | str, device: str | None = None, checkpoint: str = "best",
                 trust_checkpoint: bool = False) -> "Predictor":
        """The run's (or .ckpt's) model, read without running code from the file unless `trust_checkpoint`."""
        path = find_checkpoint(Path(run), checkpoint)  # a wrong path fails before torch's import (2 s on a laptop)
        import torch

        from earmark.train.network import InferenceClassifier  # no Lightning: it takes seconds to import

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        predictor = cls(InferenceClassifier.load(path, map_location=device, trust=trust_checkpoint), device)
        predictor.source = f"{path} on torch ({device})"
        return predictor

    @property
    def uses_groups(self) -> bool:
        return bool(getattr(self.module, "uses_groups", False))

    @property
    def known_groups(self) -> list[str]:
        """The groups the model was personalized for (its training split's); empty for other models."""
        return list(self.module.model.groups_) if self.uses_groups else []

    @property
    def group_column(self) -> str | None:
        return self.module.model.group_column if self.uses_groups else None

    def _group_ids(self, groups: Groups, n: int):
        """(n,) int64 ids on the device, or None when no groups are given."""
        if groups is None:
            return None
        if not self.uses_groups:
            raise EarmarkError("this run's model takes no groups (only model.name=personalized does); "
                               "predict without a group")
        names = [groups] * n if isinstance(groups, str) else list(groups)
        if len(names) != n:
            raise EarmarkError(f"got {len(names)} groups for {n} inputs; give one group per input or one for all")
        return self.module.model.group_ids(names).to(self.device)

    def predict_waves(self, waves: np.ndarray, groups: Groups = None, *, batch_size: int = 256) -> np.ndarray:
        """waves (N, n_samples) float32 → calibrated probabilities (N, n_classes).

        groups: for a personalized run, a group name per wave (None: unknown) or one name for all.
        """
        return self._in_batches(self.module.predict_probabilities, waves, groups, batch_size)

    def predict_logits(self, waves: np.ndarray, groups: Groups = None, *, batch_size: int = 256) -> np.ndarray:
        """waves (N, n_samples) float32 → logits (N, n_classes): the module's forward, before temperature
        scaling (probabilities = softmax(logits / temperature_)). What calibration is fitted on.

        groups: as for `predict_waves`.
        """
        return self._in_batches(self.module, waves, groups, batch_size)

    def _in_batches(self, forward, waves: np.ndarray, groups: Groups, batch_size: int) -> np.ndarray:
        """forward(batch (b, n_samples), groups (b,) or None) → (b, C), over `waves` `batch_size` at a time."""
        torch = self.torch
        group_ids = self._group_ids(groups, len(waves))
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(waves), batch_size):
                batch = torch.as_tensor(np.asarray(waves[start:start + batch_size], dtype=np.float32),
                                        device=self.device)
                batch_groups = None if group_ids is None else group_ids[start:start + batch_size]
                outputs.append(forward(batch, batch_groups).float().cpu().numpy())
        if not outputs:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(outputs)

    def predict_files(self, paths, top_k: int = 3, chunk_s: float | None = None, hop_s: float | None = None,
                      batch_size: int = 256, groups: Groups = None) -> FilePredictions:
        """groups (personalized runs): one group per path, or one for all; the rows then tell the group
        used and whether the model was personalized for it."""
        paths = list(paths)
        if groups is not None:
            self._group_ids(groups, len(paths))  # checked before any decoding
        return super().predict_files(paths, top_k, chunk_s, hop_s, batch_size, groups)
