"""The embedding cache: one vector per decoded clip, per backbone and weights, computed once.

Vectors live beside the decoded audio they came from, `<decoded cache>/embeddings/<backbone_id>.npy`,
aligned with its rows (the decoded cache only ever appends rows), with `<backbone_id>.filled.npy`
marking which rows hold a vector. The decoded cache's folder is keyed by the audio settings and the
backbone id by the backbone and its weights' hash, so a second run, a CV fold, a tuning trial or
`earmark embed` on the same data computes no embedding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from earmark.console import progress_bar

EMBEDDINGS_DIR = "embeddings"


def _paths(cache_dir: Path, backbone_id: str) -> tuple[Path, Path]:
    folder = Path(cache_dir) / EMBEDDINGS_DIR
    return folder / f"{backbone_id}.npy", folder / f"{backbone_id}.filled.npy"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as handle:
        np.save(handle, array)
    os.replace(partial, path)


def load_vectors(cache_dir: Path, backbone_id: str, n_rows: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n_rows, dim) float32, filled (n_rows,) bool): what is cached, grown to the cache's rows."""
    vectors_path, filled_path = _paths(cache_dir, backbone_id)
    vectors, filled = np.zeros((n_rows, dim), np.float32), np.zeros(n_rows, bool)
    if vectors_path.is_file() and filled_path.is_file():
        try:
            old_vectors, old_filled = np.load(vectors_path), np.load(filled_path)
        except (OSError, ValueError):  # a torn or foreign file: compute again
            return vectors, filled
        if old_vectors.ndim == 2 and old_vectors.shape[1] == dim and len(old_filled) == len(old_vectors):
            keep = min(n_rows, len(old_vectors))
            vectors[:keep], filled[:keep] = old_vectors[:keep], old_filled[:keep]
    return vectors, filled


def embedding_views(model) -> list:
    """The parts of `model` that embed and cache separately: a fusion's views, else the model itself (each has
    `embedder`, `backbone_id`, `embedding_dim`)."""
    return list(getattr(model, "views", None) or [model])


def cached_model_embeddings(model, waves: np.ndarray, rows: np.ndarray, cache_dir: Path, *, batch_size: int = 32,
                            device: str = "cpu", progress: bool = True) -> tuple[np.ndarray, int]:
    """`cached_embeddings` of every view of `model` (one cache file per view), side by side: (vectors
    (len(waves), sum D), how many view embeddings were computed now)."""
    parts = [cached_embeddings(view, waves, rows, cache_dir, batch_size=batch_size, device=device, progress=progress)
             for view in embedding_views(model)]
    vectors = parts[0][0] if len(parts) == 1 else np.concatenate([part[0] for part in parts], axis=1)
    return vectors, sum(part[1] for part in parts)


def cached_embeddings(model, waves: np.ndarray, rows: np.ndarray, cache_dir: Path, *, batch_size: int = 32,
                      device: str = "cpu", progress: bool = True) -> tuple[np.ndarray, int]:
    """(vectors (len(waves), D) with `rows` filled, how many were computed now) for an `EmbeddingClassifier`
    `model`; `waves` is the decoded cache's (n_rows, n_samples) array and `rows` the clips needed."""
    import torch

    vectors, filled = load_vectors(cache_dir, model.backbone_id, len(waves), model.embedding_dim)
    rows = np.asarray(rows, dtype=np.int64)
    missing = np.unique(rows[~filled[rows]])
    if len(missing):
        embedder = model.embedder.eval().to(device)
        with progress_bar(progress, len(missing), f"embedding with {model.backbone_id}") as advance, \
                torch.inference_mode():
            for start in range(0, len(missing), batch_size):
                batch = missing[start:start + batch_size]
                clips = torch.from_numpy(np.asarray(waves[batch], dtype=np.float32)).to(device)
                vectors[batch] = embedder(clips).float().cpu().numpy()  # (B, D)
                filled[batch] = True
                advance(len(batch))
        vectors_path, filled_path = _paths(cache_dir, model.backbone_id)
        _save(vectors_path, vectors)
        _save(filled_path, filled)
    return vectors, len(missing)

