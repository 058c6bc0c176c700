"""Files in, labels out, for any predictor: decode, cut into windows, predict, aggregate (torch-free).

A predictor only has to turn waves `(N, n_samples)` into probabilities `(N, n_classes)`;
`FilePredictor` adds everything about files on top: long files become windows of `chunk_s`
every `hop_s` (the `fit_length` chunk rule), each window gets a (start_s, end_s, label,
probability) row, and the file's label comes from the mean of its windows' probabilities.
A top probability below the predictor's `reject_threshold` labels a window or file "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd

from earmark.contract import InputContract
from earmark.errors import EarmarkError

UNKNOWN = "unknown"  # the label of a window or file whose top probability is below the reject threshold
TIME_DECIMALS = 3  # start_s/end_s are rounded to the millisecond

Groups = Union[str, Sequence[Optional[str]], None]  # one group for all inputs, one per input, or none


@dataclass
class FilePredictions:
    files: pd.DataFrame  # one row per file: path, label, probability, top-k columns, n_chunks
    timeline: pd.DataFrame | None  # one row per window when chunking: path, start_s, end_s, label, probability
    bad_files: pd.DataFrame  # path, reason
    timeline_path: Path | None = None  # where the workflow wrote the timeline, when it was asked for
    source: str = ""  # what predicted: the checkpoint or .onnx file and the runtime (FilePredictor.source)


@dataclass(frozen=True)
class Windows:
    """How a long recording is cut: windows of `window` samples every `hop` samples, each fitted
    (padded or cut) to the model's `n_samples`, all at `sample_rate_hz`."""

    window: int
    hop: int
    n_samples: int
    sample_rate_hz: int

    @classmethod
    def for_contract(cls, contract: InputContract, chunk_s: float | None, hop_s: float | None) -> "Windows | None":
        """The windows `chunk_s`/`hop_s` ask for; a chunk-mode model's own windows when chunk_s is None;
        None (one clip per file, no timeline) otherwise."""
        if chunk_s is None and contract.clip == "chunk":
            chunk_s, hop_s = contract.duration_s, contract.chunk_hop_s
        if chunk_s is None:
            if hop_s is not None:
                raise EarmarkError("--hop-s needs --chunk-s (the window length in seconds)")
            return None
        if chunk_s <= 0 or (hop_s is not None and hop_s <= 0):
            raise EarmarkError(f"chunk_s and hop_s must be positive seconds; got chunk_s={chunk_s}, hop_s={hop_s}")
        rate = contract.sample_rate_hz
        window = max(1, int(round(chunk_s * rate)))
        if window > contract.n_samples:
            raise EarmarkError(f"chunk_s ({chunk_s:g} s) is longer than the model's clip ({contract.duration_s:g} s): "
                               f"each window is fitted to the clip, so the rest of it would go unheard; use chunk_s "
                               f"of at most {contract.duration_s:g} s, with hop_s for overlapping windows")
        return cls(window, max(1, int(round((hop_s or chunk_s) * rate))), contract.n_samples, rate)

    def fit(self, chunk: np.ndarray) -> np.ndarray:
        """One window `(<= window,)` → `(n_samples,)`, zero-padded at the end (window <= n_samples)."""
        out = np.zeros(self.n_samples, dtype=np.float32)
        piece = chunk[: self.window]
        out[: len(piece)] = piece
        return out

    def row_times(self, start: int, n_total: int) -> tuple[float, float]:
        """(start_s, end_s) of the window starting at sample `start` of an `n_total`-sample recording."""
        end = min(start + self.window, max(n_total, start + 1))
        return round(start / self.sample_rate_hz, TIME_DECIMALS), round(end / self.sample_rate_hz, TIME_DECIMALS)


def window_batches(wave: np.ndarray, windows: Windows, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(starts (b,), clips (b, n_samples)) batches over mono `wave (n,)`, never all windows at once."""
    from earmark.data.audio import chunk_starts

    starts = chunk_starts(len(wave), windows.window, windows.hop)
    for first in range(0, len(starts), batch_size):
        batch = starts[first:first + batch_size]
        yield batch, np.stack([windows.fit(wave[start:start + windows.window]) for start in batch])


def window_probabilities(predictor, wave: np.ndarray, windows: Windows, batch_size: int, group: Optional[str] = None,
                         before_batch=None) -> tuple[np.ndarray, np.ndarray]:
    """(starts (n_windows,), probabilities (n_windows, C)) of mono `wave (n,)` cut by `windows`, predicted a
    batch at a time so a long recording never becomes all its windows at once. `predictor` needs only
    `predict_waves`; `before_batch()` runs before each batch (e.g. to stop at a deadline)."""
    starts, probabilities = [], []
    for batch_starts, clips in window_batches(wave, windows, batch_size):  # (b,), (b, n_samples)
        if before_batch is not None:
            before_batch()
        batch = predictor.predict_waves(clips) if group is None else predictor.predict_waves(clips, [group] * len(clips))
        starts.append(batch_starts)
        probabilities.append(np.asarray(batch))
    return np.concatenate(starts), np.concatenate(probabilities)


def decode_mono(path: Path, sample_rate_hz: int) -> np.ndarray:
    """A file as mono float32 `(n,)` at `sample_rate_hz`; raises `AudioError` for unusable files."""
    from earmark.data.audio import decode, resample, to_mono

    samples, rate_hz = decode(path)
    return resample(to_mono(samples), rate_hz, sample_rate_hz)


def top_labels(probabilities: np.ndarray, labels: Sequence[str], reject_threshold: float) -> tuple[list[str], np.ndarray]:
    """(label per row, top probability per row) of `probabilities (N, C)`; "unknown" below the threshold."""
    best = probabilities.argmax(axis=1)
    top = probabilities[np.arange(len(probabilities)), best]
    names = [UNKNOWN if reject_threshold > 0 and p < reject_threshold else labels[i] for i, p in zip(best, top)]
    return names, top


class FilePredictor:
    """Base of the torch and ONNX predictors: subclasses set `contract` and `reject_threshold`
    and implement `predict_waves`; files, folders and timelines then work the same for both."""

    contract: InputContract
    reject_threshold: float = 0.0  # top probability below it → "unknown"; 0: off
    source: str = ""  # what predicts, for people: the file and the runtime

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def uses_groups(self) -> bool:
        return False

    @property
    def known_groups(self) -> list[str]:
        return []

    @property
    def group_column(self) -> str | None:
        """The metadata column whose values are a personalized model's groups; None for other models."""
        return None

    def predict_waves(self, waves: np.ndarray, groups: Groups = None, *, batch_size: int = 256) -> np.ndarray:
        """waves (N, n_samples) float32 → calibrated probabilities (N, n_classes)."""
        raise NotImplementedError

    def label_rows(self, probabilities: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(label, top probability) per row of `probabilities (N, C)`, "unknown" below the reject threshold."""
        return top_labels(probabilities, self.labels, self.reject_threshold)

    def _file_row(self, path: Path, mean: np.ndarray, top_k: int, n_chunks: int) -> dict:
        order = np.argsort(-mean)[:top_k]
        (label,), _ = self.label_rows(mean[None, :])
        row = {"path": str(path), "label": label, "probability": float(mean[order[0]]), "n_chunks": n_chunks}
        if self.reject_threshold > 0:
            row["best_label"] = self.labels[order[0]]  # the label a rejected file would have had
        for rank, index in enumerate(order[1:], start=2):
            row[f"top{rank}_label"] = self.labels[index]
            row[f"top{rank}_probability"] = float(mean[index])
        return row

    def predict_files(self, paths: Iterable[Path], top_k: int = 3, chunk_s: float | None = None,
                      hop_s: float | None = None, batch_size: int = 256, groups: Groups = None) -> FilePredictions:
        """One row per file (its label from the mean over its windows), a timeline when chunking, and
        the files that could not be decoded. groups (personalized models): one per path, or one for all.

        Without windows every file is one clip, and clips of consecutive files share a model call
        (`batch_size` at a time): a folder of short clips is predicted in batches, not one by one."""
        from earmark.data.audio import AudioError, fit_length

        paths = list(paths)
        if groups is not None:
            groups = [groups] * len(paths) if isinstance(groups, str) else list(groups)
            if len(groups) != len(paths):
                raise EarmarkError(f"got {len(groups)} groups for {len(paths)} inputs; give one per input or one")
        windows = Windows.for_contract(self.contract, chunk_s, hop_s)
        top_k = max(1, min(top_k, len(self.labels)))
        known = set(self.known_groups)
        file_rows: dict[int, dict] = {}
        chunk_rows, bad = [], []
        waiting: list[tuple[int, np.ndarray]] = []  # (file index, clip (n_samples,)) for the next model call

        def add_row(index: int, mean: np.ndarray, n_chunks: int) -> None:
            row = self._file_row(Path(paths[index]), mean, top_k, n_chunks)
            if self.uses_groups:
                group = None if groups is None else groups[index]
                row.update(group=group, personalized=group in known)
            file_rows[index] = row

        def predict_waiting() -> None:
            indices = [index for index, _ in waiting]
            clip_groups = None if groups is None else [groups[index] for index in indices]
            probabilities = self.predict_waves(np.stack([clip for _, clip in waiting]), clip_groups,
                                               batch_size=batch_size)  # (b, C)
            for index, row_probabilities in zip(indices, probabilities):
                add_row(index, row_probabilities, 1)
            waiting.clear()

        for index, path in enumerate(paths):
            try:
                wave = decode_mono(Path(path), self.contract.sample_rate_hz)
            except AudioError as exc:
                bad.append({"path": str(path), "reason": str(exc)})
                continue
            if windows is None:
                waiting.append((index, fit_length(wave, self.contract.n_samples, self.contract.clip)[0]))
                if len(waiting) >= batch_size:
                    predict_waiting()
                continue
            group = None if groups is None else groups[index]
            starts, probabilities = window_probabilities(self, wave, windows, batch_size, group)  # (n,), (n, C)
            chunk_rows += self.timeline_rows(str(path), starts, probabilities, windows, len(wave))
            add_row(index, probabilities.mean(axis=0, dtype=np.float64).astype(np.float32), len(starts))
        if waiting:
            predict_waiting()
        timeline = pd.DataFrame(chunk_rows) if windows is not None else None
        files = pd.DataFrame([file_rows[index] for index in sorted(file_rows)])
        return FilePredictions(files, timeline, pd.DataFrame(bad, columns=["path", "reason"]))

    def timeline_rows(self, path: str, starts: np.ndarray, probabilities: np.ndarray, windows: Windows,
                      n_total: int) -> list[dict]:
        """One {path, start_s, end_s, label, probability} per window; `starts` in samples."""
        names, top = self.label_rows(probabilities)
        rows = []
        for start, name, probability in zip(starts, names, top):
            start_s, end_s = windows.row_times(int(start), n_total)
            rows.append({"path": path, "start_s": start_s, "end_s": end_s, "label": name,
                         "probability": float(probability)})
        return rows
