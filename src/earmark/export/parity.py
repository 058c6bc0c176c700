"""Checking an export against PyTorch: real clips to check on, and the figures of agreement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from earmark.errors import EarmarkError

MAX_ABS_PROBABILITY_DIFF = 1e-4  # FP32 parity: max |Δprob| allowed against PyTorch
TIE_MARGIN = 2 * MAX_ABS_PROBABILITY_DIFF  # top-1 may differ only where torch's top two are closer than this


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Probabilities (N, C) of torch vs ONNX: max |Δ|, top-1 agreement and the disagreements that are
    not ties (torch's top two closer than TIE_MARGIN)."""
    top_ref, top_new = reference.argmax(axis=1), candidate.argmax(axis=1)
    ordered = np.sort(reference, axis=1)
    margin = ordered[:, -1] - (ordered[:, -2] if reference.shape[1] > 1 else 0)
    differ = top_ref != top_new
    return {"n_clips": int(len(reference)),
            "max_abs_prob_diff": float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
            "top1_agreement": float((~differ).mean()) if len(reference) else 1.0,
            "top1_differs": int(differ.sum()), "top1_differs_not_tie": int((differ & (margin >= TIE_MARGIN)).sum())}


def accuracy(probabilities: np.ndarray, targets: np.ndarray | None) -> float | None:
    if targets is None or not len(targets):
        return None
    return float((probabilities.argmax(axis=1) == targets).mean())


@dataclass
class Clips:
    """Real clips to check an export on: waves (N, n_samples), class ids (N,) or None, group names or None."""

    waves: np.ndarray
    targets: np.ndarray | None
    groups: list | None
    source: str


def run_clips(run_dir: Path, module, split: str, limit: int | None = None) -> Clips | None:
    """Up to `limit` clips of a split of the run (decoded through the run's cache), evenly spread."""
    from earmark.data.prepared import decode_listed
    from earmark.data.splits import load_splits
    from earmark.rundir import RunDir

    if run_dir is None or not RunDir(run_dir).splits.is_dir():
        return None
    run = RunDir(run_dir)
    items = load_splits(run.splits)
    items = items[items["split"] == split]
    if items.empty:
        return None
    items, cache = decode_listed(items, run.load_config().data, progress=False)
    if items.empty:
        return None
    if limit is not None and len(items) > limit:
        items = items.iloc[np.linspace(0, len(items) - 1, limit).round().astype(int)]
    index = {label: i for i, label in enumerate(module.contract.labels)}
    targets = items["label"].astype(str).map(index).to_numpy()
    groups = None
    if module.uses_groups and module.model.group_column in items:
        from earmark.data.labels import clip_groups

        groups = clip_groups(items, module.model.group_column)
    waves = np.asarray(cache.waves[items["row"].to_numpy()], dtype=np.float32)
    return Clips(waves, None if np.isnan(targets.astype(float)).any() else targets.astype(np.int64), groups,
                 f"{split} split ({len(items)} clips)")


def file_clips(paths: Sequence[str | Path], contract, limit: int | None = None) -> Clips:
    """Clips of the given files (files, folders, CSV lists), one per file as the model would see it."""
    from earmark.data.audio import AudioError, fit_length
    from earmark.predict.files import decode_mono
    from earmark.predict.inputs import resolve_inputs

    waves = []
    for path in resolve_inputs(paths)[:limit]:
        try:
            waves.append(fit_length(decode_mono(path, contract.sample_rate_hz), contract.n_samples, contract.clip)[0])
        except AudioError as exc:
            raise EarmarkError(f"cannot use {path} to check the export: {exc}") from None
    if not waves:
        raise EarmarkError("no clips to check the export on; give audio files with --clips")
    return Clips(np.stack(waves), None, None, f"given clips ({len(waves)} files)")
