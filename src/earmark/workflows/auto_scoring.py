"""How `model.name=auto` scores a candidate without touching the test split.

- On the grouped validation split: the candidate run's calibrated probabilities of the validation clips.
- When the data is small (`is_small`), a probe is scored by inner grouped cross-validation on train+val
  instead: its head is refitted on the cached embeddings of each fold's other groups (seconds), and every
  train+val clip is predicted once by a head that never saw its group: more clips, a tighter interval.

Each score carries its Wilson 95% interval and what it was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SMALL_TRAIN_CLIPS, SMALL_VAL_CLIPS = 300, 50  # below either, probes are scored by inner CV on train+val
INNER_FOLDS = 5


@dataclass(frozen=True)
class Score:
    accuracy: float
    low: float
    high: float
    macro_f1: float
    n_clips: int
    on: str  # "validation split" or "inner CV (k folds by <group>)"


def score_of(y_true: np.ndarray, probabilities: np.ndarray, on: str) -> Score:
    from earmark.evaluate.metrics import label_metrics, wilson_interval

    y_pred = np.asarray(probabilities).argmax(axis=1)
    scores = label_metrics(np.asarray(y_true), y_pred, probabilities.shape[1])
    low, high = wilson_interval(int((y_pred == y_true).sum()), len(y_true))
    return Score(scores["accuracy"], low, high, scores["macro_f1"], int(len(y_true)), on)


def is_small(prepared) -> bool:
    return len(prepared.rows("train")) < SMALL_TRAIN_CLIPS or len(prepared.rows("val")) < SMALL_VAL_CLIPS


def predictor_and_inputs(run_dir: Path, prepared):
    """(the run's calibrated predictor, the array its inputs are rows of): a probe reads the cached embeddings
    of its backbone (nothing is embedded again), any other model the decoded waves of `prepared`."""
    from earmark.predict.torch_predictor import Predictor
    from earmark.workflows.probe import EmbeddingPredictor, is_probe

    predictor = Predictor.from_run(run_dir)
    model = predictor.module.model
    if is_probe(predictor.module) and hasattr(model, "embedder") and hasattr(model, "embedding_dim"):
        return EmbeddingPredictor(predictor.module, predictor.device), probe_vectors(model, prepared)
    return predictor, prepared.cache.waves


def probe_vectors(model, prepared) -> np.ndarray:
    """The cached embeddings (n_cache_rows, D) of `model`'s backbone, every clip of `prepared` filled."""
    from earmark.embed.cache import cached_embeddings

    vectors, _ = cached_embeddings(model, prepared.cache.waves, prepared.items["row"].to_numpy(),
                                   prepared.cache.directory, progress=False)
    return vectors


def split_probabilities(predictor, inputs: np.ndarray, prepared, split: str) -> np.ndarray:
    """Calibrated probabilities (n_split, C) of a split's clips, as the predictor returns them."""
    from earmark.evaluate.calibration import softmax
    from earmark.evaluate.predictions import predict_item_logits

    items = prepared.items[prepared.items["split"] == split]
    logits, _ = predict_item_logits(predictor, items, inputs)
    return softmax(logits, float(predictor.module.temperature_))


def inner_cv_probabilities(predictor, vectors: np.ndarray, prepared, group_by: str | None, seed: int,
                           class_weights_setting="none") -> tuple[np.ndarray, np.ndarray, str] | None:
    """Out-of-fold probabilities of every train+val clip from the probe's head kind refitted per inner fold:
    (probabilities (N, C), class ids (N,), what it was measured on); None when there are fewer than 2 groups."""
    import torch

    from earmark.data.labels import class_ids
    from earmark.data.splits import group_keys, kfold_assignments
    from earmark.evaluate.calibration import softmax
    from earmark.models.embedding import EmbeddingHead
    from earmark.train.losses import class_weights
    from earmark.train.probe import fit_head

    pool = prepared.items[prepared.items["split"].isin(["train", "val"])].reset_index(drop=True)
    n_groups = group_keys(pool, group_by).nunique()
    if n_groups < 2:
        return None
    k = min(INNER_FOLDS, n_groups)
    folds = kfold_assignments(pool, k, group_by, seed).to_numpy()
    x, y = vectors[pool["row"].to_numpy()], class_ids(pool["label"], prepared.labels)
    weights = class_weights(class_weights_setting, prepared.labels, y)
    template = predictor.module.model.head
    hidden = template.layers[0].out_features if template.kind == "mlp" else 256
    probabilities = np.zeros((len(pool), len(prepared.labels)))
    for fold in range(k):
        held_out = folds == fold
        head = EmbeddingHead(x.shape[1], len(prepared.labels), template.kind, hidden)
        fit_head(head, x[~held_out], y[~held_out], n_classes=len(prepared.labels), class_weights=weights,
                 seed=seed)
        with torch.no_grad():
            logits = head(torch.from_numpy(np.asarray(x[held_out], np.float32))).numpy()
        probabilities[held_out] = softmax(logits)
    return probabilities, y, f"inner CV ({k} folds by {group_by or 'file'})"


def embedding_seconds(model, prepared, n_timed: int = 4) -> float:
    """Seconds `model`'s backbone will take to embed the clips of `prepared` not cached yet (0: all cached),
    from timing it on a few of them."""
    import time

    import torch

    from earmark.embed.cache import load_vectors

    _, filled = load_vectors(prepared.cache.directory, model.backbone_id, len(prepared.cache.waves),
                             model.embedding_dim)
    rows = prepared.items["row"].to_numpy()
    missing = rows[~filled[rows]]
    if not len(missing):
        return 0.0
    clips = torch.from_numpy(np.asarray(prepared.cache.waves[missing[:n_timed]], dtype=np.float32))
    embedder = model.embedder.eval()
    with torch.inference_mode():
        embedder(clips[:1])  # warm-up
        started = time.perf_counter()
        embedder(clips)
    return (time.perf_counter() - started) / len(clips) * len(missing)
