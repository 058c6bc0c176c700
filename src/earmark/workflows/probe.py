"""A probe run: a frozen pretrained backbone's embeddings, computed once (cached), and a head fitted on them.

The result is an ordinary run folder (config.yaml, splits/, checkpoints/best.ckpt holding the whole
chain — backbone, pooling, head — calibration, metrics, reports), so evaluate, predict, serve, export,
compare, CV and tuning treat it like any other run. Calibration and the test evaluation here read
the cached embeddings instead of running the backbone again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from earmark.predict.torch_predictor import Predictor
from earmark.rundir import RunDir


class EmbeddingPredictor(Predictor):
    """A probe's predictor whose inputs are cached clip embeddings (N, D) instead of waves (N, n_samples)."""

    def _head_logits(self, embeddings, groups=None):
        return self.module.model.forward_head(embeddings)

    def predict_logits(self, waves: np.ndarray, groups=None, *, batch_size: int = 4096) -> np.ndarray:
        return self._in_batches(self._head_logits, waves, groups, batch_size)


def is_probe(module) -> bool:
    """True for a frozen `EmbeddingClassifier`: only its head learns, on cached embeddings."""
    return bool(getattr(module.model, "frozen", False)) and hasattr(module.model, "backbone_id")


def save_probe_checkpoint(module, run_dir: Path, facts: dict) -> None:
    """best.ckpt and last.ckpt as Lightning writes them (hyper-parameters + state dict)."""
    from earmark.train.checkpoints import save_module_checkpoint

    run = RunDir(run_dir)
    for path in (run.best_checkpoint, run.last_checkpoint):
        save_module_checkpoint(module, path, probe=facts)


def fit_probe(plan, prepared, module, run_dir: Path, evaluate_test: bool, evaluate_run) -> tuple[dict, float]:
    """Embed (cached), fit the head, save, calibrate and evaluate; returns (metrics, fit seconds)."""
    import torch

    from earmark.embed.cache import cached_model_embeddings
    from earmark.train.probe import fit_head
    from earmark.workflows.evaluate import fit_on_validation, write_untested_metrics

    config, items = plan.config, prepared.items
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    vectors, computed = cached_model_embeddings(module.model, prepared.cache.waves, items["row"].to_numpy(),
                                          prepared.cache.directory, device=device, progress=config.train.progress)
    embed_seconds = time.perf_counter() - started
    x_train, y_train = vectors[prepared.rows("train")], prepared.targets("train")
    x_val, y_val = vectors[prepared.rows("val")], prepared.targets("val")
    facts = fit_head(module.model.head, x_train, y_train, x_val, y_val, n_classes=len(prepared.labels),
                     class_weights=plan.class_weights, seed=config.seed)
    fit_seconds = time.perf_counter() - started
    facts.update({"embedded_now": int(computed), "embed_seconds": round(embed_seconds, 3),
                  "backbone": module.model.backbone_id})
    save_probe_checkpoint(module, run_dir, facts)
    predictor = fit_on_validation(run_dir, items[items["split"] == "val"], vectors, prepared.labels,
                                  config.evaluation, predictor_type=EmbeddingPredictor)
    extra = {"fit_seconds": fit_seconds, "epochs": facts.get("epochs", 1), "probe": facts, "device_resident": False}
    if not evaluate_test:
        return write_untested_metrics(run_dir, extra), fit_seconds
    if predictor is None:
        predictor = EmbeddingPredictor(module, device)
    _draw_embedding_map(predictor, items[items["split"] == "test"], vectors, prepared.labels, run_dir, config.seed)
    metrics = evaluate_run(run_dir, items[items["split"] == "test"], vectors, prepared.labels, config=config,
                           extra=extra, predictor=predictor)
    return metrics, fit_seconds


def _draw_embedding_map(predictor, test_items, vectors: np.ndarray, labels, run_dir: Path, seed: int) -> None:
    """embedding_map.png in the run folder (the report shows it): test clips, coloured by label, errors marked."""
    from earmark.reports.embedding_map import EMBEDDING_MAP_PNG, plot_embedding_map

    if len(test_items) < 3:
        return
    test_vectors = vectors[test_items["row"].to_numpy()]
    predicted = np.asarray(labels)[predictor.predict_logits(test_vectors).argmax(axis=1)]
    plot_embedding_map(test_vectors, test_items["label"].astype(str).tolist(), predicted.tolist(),
                       Path(run_dir) / EMBEDDING_MAP_PNG, seed)
