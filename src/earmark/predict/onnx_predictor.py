"""Prediction with an exported model.onnx through onnxruntime alone: no torch, no lightning.

The file carries everything (see `earmark.export`): the front-end is inside the graph, whose input
is the raw waveform `wave (batch, samples)` float32 at the model's rate, and its metadata_props hold
the input contract, the reject threshold and the temperature (already applied to `probabilities`).
Only torch-free modules of earmark are imported here; tests check it with torch made unimportable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.predict.files import FilePredictor, Groups

WAVE_INPUT = "wave"
GROUP_INPUT = "group"  # personalized models: (batch,) int64 ids into the "groups" metadata, -1 = unknown
PROBABILITIES_OUTPUT = "probabilities"
UNKNOWN_GROUP_ID = -1
DEVICES = ("cpu", "cuda")


def contract_from_metadata(metadata: dict[str, str], path: Path) -> InputContract:
    """The input contract an earmark export wrote into its metadata_props."""
    if "labels" not in metadata or "sample_rate_hz" not in metadata:
        raise EarmarkError(f"{path} was not exported by `earmark export` (its metadata has no labels/sample_rate_hz); "
                           f"export the run again with `earmark export RUN`")
    hop = metadata.get("chunk_hop_s", "")
    return InputContract(sample_rate_hz=int(metadata["sample_rate_hz"]), duration_s=float(metadata["duration_s"]),
                         clip=metadata["clip"], labels=tuple(json.loads(metadata["labels"])),
                         features=json.loads(metadata.get("features", "{}")),
                         chunk_hop_s=float(hop) if hop not in ("", "None", "null") else None)


def session_options(threads: int | None, optimization: str = "all"):
    """onnxruntime SessionOptions: `threads` intra-op threads (None: onnxruntime's default, all cores)."""
    import onnxruntime as ort

    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise EarmarkError(f"optimization must be one of {', '.join(levels)}; got {optimization!r}")
    if threads is not None and threads < 1:
        raise EarmarkError(f"threads must be at least 1; got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.inter_op_num_threads = 1  # the graph is one chain; parallelism is inside each node
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class OnnxPredictor(FilePredictor):
    """An exported model.onnx (or model.int8.onnx) on onnxruntime: waves or files in, probabilities out."""

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str | None = None,
                 optimization: str = "all") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EarmarkError(f"ONNX model not found: {self.path} (create one with `earmark export RUN`)")
        device = device or "cpu"
        if device not in DEVICES:
            raise EarmarkError(f"device must be one of {', '.join(DEVICES)} for an ONNX model; got {device!r}")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EarmarkError("device 'cuda' needs onnxruntime-gpu (CUDAExecutionProvider is not available); "
                                   "use device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads, optimization),
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for corrupt or unsupported files
            raise EarmarkError(f"onnxruntime cannot load {self.path}: {exc}") from None
        self.device = device
        self.threads = threads
        self.source = f"{self.path} on onnxruntime ({device})"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.contract = contract_from_metadata(self.metadata, self.path)
        self.reject_threshold = float(self.metadata.get("reject_threshold", 0.0))
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.groups_ = list(json.loads(self.metadata.get("groups", "[]")))

    @property
    def uses_groups(self) -> bool:
        return GROUP_INPUT in self.input_names

    @property
    def known_groups(self) -> list[str]:
        return list(self.groups_)

    @property
    def group_column(self) -> str | None:
        return self.metadata.get("group_column") if self.uses_groups else None

    def _group_ids(self, groups: Groups, n: int) -> np.ndarray:
        """(n,) int64 ids: -1 for no group or one not seen in training (the base model's output)."""
        if groups is None:
            return np.full(n, UNKNOWN_GROUP_ID, dtype=np.int64)
        if not self.uses_groups:
            raise EarmarkError(f"{self.path.name} takes no groups (only exported personalized models do); "
                               f"predict without a group")
        names = [groups] * n if isinstance(groups, str) else list(groups)
        if len(names) != n:
            raise EarmarkError(f"got {len(names)} groups for {n} inputs; give one group per input or one for all")
        index = {name: i for i, name in enumerate(self.groups_)}
        return np.array([index.get(str(name), UNKNOWN_GROUP_ID) if name is not None else UNKNOWN_GROUP_ID
                         for name in names], dtype=np.int64)

    def predict_waves(self, waves: np.ndarray, groups: Groups = None, *, batch_size: int = 256) -> np.ndarray:
        """waves (N, n_samples) float32 → calibrated probabilities (N, n_classes)."""
        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim != 2:
            raise EarmarkError(f"waves must be shaped (clips, samples); got {waves.shape}")
        group_ids = self._group_ids(groups, len(waves)) if (self.uses_groups or groups is not None) else None
        outputs = []
        for start in range(0, len(waves), max(1, batch_size)):
            feed = {WAVE_INPUT: np.ascontiguousarray(waves[start:start + batch_size])}
            if group_ids is not None:
                feed[GROUP_INPUT] = group_ids[start:start + batch_size]
            (probabilities,) = self.session.run([PROBABILITIES_OUTPUT], feed)
            outputs.append(probabilities)
        if not outputs:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)
