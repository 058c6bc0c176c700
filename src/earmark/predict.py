"""Prediction with a trained run: waves or files in, probabilities, top-k and chunk timelines out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from earmark.contract import InputContract
from earmark.errors import EarmarkError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.suffix == ".ckpt":
        return run_dir
    if not run_dir.is_dir():
        raise EarmarkError(f"run not found: {run_dir} (give a run directory such as runs/<name>, or a .ckpt file)")
    for name in (f"{which}.ckpt", "best.ckpt", "last.ckpt"):
        candidate = run_dir / "checkpoints" / name
        if candidate.is_file():
            return candidate
    raise EarmarkError(f"{run_dir} holds no checkpoint (expected checkpoints/best.ckpt); was training interrupted?")


def resolve_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (searched recursively for audio) and CSV lists, in the order given."""
    return [path for path, _ in resolve_grouped_inputs(inputs)]


def resolve_grouped_inputs(inputs: Sequence[str | Path], group_columns: Sequence[str] = ()
                           ) -> list[tuple[Path, Optional[str]]]:
    """(path, group) per input: a CSV list's group comes from the first of `group_columns` it has
    (case-insensitive); files and folders have no group (None)."""
    resolved: list[tuple[Path, Optional[str]]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise EarmarkError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {item}")
            resolved += [(path, None) for path in found]
        elif item.suffix.lower() in (".csv", ".tsv") and item.is_file():
            from earmark.data.metadata import read_path_list
            from earmark.personalization import group_names

            paths, group_values = read_path_list(item, group_columns)
            groups = group_names(group_values) if group_values is not None else [None] * len(paths)
            resolved += list(zip(map(Path, paths), groups))
        elif item.exists():
            resolved.append((item, None))
        else:
            raise EarmarkError(f"input not found: {item}")
    return resolved


@dataclass
class FilePredictions:
    files: pd.DataFrame  # one row per file: path, label, probability, top-k columns, n_chunks
    timeline: pd.DataFrame | None  # one row per chunk when chunking: path, start_s, end_s, label, probability
    bad_files: pd.DataFrame  # path, reason


Groups = Union[str, Sequence[Optional[str]], None]  # one group for all inputs, one per input, or none


class Predictor:
    """A trained front-end + model on one device. `predict_waves` is the core; files go through it.

    A personalized run's model takes a group (e.g. the speaker) per input; without one, or with one
    it never saw in training, it predicts exactly as its base model.
    """

    def __init__(self, module, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.module = module.eval().to(device)
        self.device = device
        self.contract: InputContract = module.contract

    @classmethod
    def from_run(cls, run: Path | str, device: str | None = None, checkpoint: str = "best") -> "Predictor":
        import torch

        from earmark.training import AudioClassifier

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        module = AudioClassifier.load_from_checkpoint(find_checkpoint(Path(run), checkpoint), map_location=device,
                                                      weights_only=False)
        return cls(module, device)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def uses_groups(self) -> bool:
        return bool(getattr(self.module, "uses_groups", False))

    @property
    def known_groups(self) -> list[str]:
        """The groups the model was personalized for (its training split's); empty for other models."""
        return list(self.module.model.groups_) if self.uses_groups else []

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
        """waves (N, n_samples) float32 → probabilities (N, n_classes).

        groups: for a personalized run, a group name per wave (None: unknown) or one name for all.
        """
        torch = self.torch
        group_ids = self._group_ids(groups, len(waves))
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(waves), batch_size):
                batch = torch.as_tensor(np.asarray(waves[start:start + batch_size], dtype=np.float32),
                                        device=self.device)
                batch_groups = None if group_ids is None else group_ids[start:start + batch_size]
                outputs.append(self.module.predict_probabilities(batch, batch_groups).cpu().numpy())
        if not outputs:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(outputs)

    def _segments(self, path: Path, chunk_s: float | None, hop_s: float | None) -> tuple[np.ndarray, float]:
        from earmark.data.audio import decode, fit_length, resample, to_mono

        contract = self.contract
        samples, rate_hz = decode(path)
        wave = resample(to_mono(samples), rate_hz, contract.sample_rate_hz)
        if chunk_s is None and contract.clip == "chunk":
            chunk_s, hop_s = contract.duration_s, contract.chunk_hop_s
        if chunk_s is None:
            return fit_length(wave, contract.n_samples, contract.clip), contract.duration_s
        window = int(round(chunk_s * contract.sample_rate_hz))
        hop = int(round((hop_s or chunk_s) * contract.sample_rate_hz))
        chunks = fit_length(wave, window, "chunk", hop)
        fitted = np.stack([fit_length(chunk, contract.n_samples, "pad")[0] for chunk in chunks])
        return fitted, hop / contract.sample_rate_hz

    def predict_files(self, paths: Iterable[Path], top_k: int = 3, chunk_s: float | None = None,
                      hop_s: float | None = None, batch_size: int = 256, groups: Groups = None) -> FilePredictions:
        """groups (personalized runs): one group per path, or one for all; the rows then tell the group
        used and whether the model was personalized for it."""
        from earmark.data.audio import AudioError

        paths = list(paths)
        if groups is not None:
            self._group_ids(groups, len(paths))  # checked before any decoding
            groups = [groups] * len(paths) if isinstance(groups, str) else list(groups)
        labels = np.asarray(self.labels)
        top_k = max(1, min(top_k, len(labels)))
        known = set(self.known_groups)
        file_rows, chunk_rows, bad = [], [], []
        for index, path in enumerate(paths):
            try:
                segments, step_s = self._segments(Path(path), chunk_s, hop_s)
            except AudioError as exc:
                bad.append({"path": str(path), "reason": str(exc)})
                continue
            group = None if groups is None else groups[index]
            probabilities = self.predict_waves(segments, None if group is None else [group] * len(segments),
                                               batch_size=batch_size)  # (n_chunks, C)
            mean = probabilities.mean(axis=0)
            order = np.argsort(-mean)[:top_k]
            row = {"path": str(path), "label": labels[order[0]], "probability": float(mean[order[0]]),
                   "n_chunks": len(segments)}
            if self.uses_groups:
                row.update(group=group, personalized=group in known)
            for rank, index in enumerate(order[1:], start=2):
                row[f"top{rank}_label"] = labels[index]
                row[f"top{rank}_probability"] = float(mean[index])
            file_rows.append(row)
            if chunk_s is not None or self.contract.clip == "chunk":
                window_s = chunk_s or self.contract.duration_s
                for i, chunk in enumerate(probabilities):
                    chunk_rows.append({"path": str(path), "start_s": round(i * step_s, 3),
                                       "end_s": round(i * step_s + window_s, 3), "label": labels[chunk.argmax()],
                                       "probability": float(chunk.max())})
        timeline = pd.DataFrame(chunk_rows) if chunk_rows else None
        return FilePredictions(pd.DataFrame(file_rows), timeline, pd.DataFrame(bad, columns=["path", "reason"]))
