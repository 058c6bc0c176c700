"""Every view's cached embeddings of prepared data, by view name: what a model search scores probes and
fusions on without embedding anything twice (the same cache files a fusion or a probe run reads)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from earmark.embed.cache import cached_embeddings


def view_embeddings(prepared, views: Sequence[str], sample_rate_hz: int, *, view_params: Optional[dict] = None,
                    device: str = "cpu", progress: bool = True) -> dict[str, np.ndarray]:
    """{view name: vectors (n_cache_rows, D_v) float32} for registered embedders `views` on `prepared` data
    decoded at `sample_rate_hz` (e.g. `fusion_sample_rate_hz(views)`); rows of `prepared.items["row"]` are
    filled. Each view resamples inside its graph where its rate differs, exactly as `model.name=fusion` does,
    so these are the vectors a fusion of these views (and, at a view's own rate, its probe) fits on."""
    from earmark.models.fusion import FusionView, checked_views

    names = checked_views(views, view_params)
    rows = prepared.items["row"].to_numpy()
    n_samples = int(prepared.cache.waves.shape[1])
    vectors = {}
    for name in names:
        view = FusionView(name, sample_rate_hz, n_samples, (view_params or {}).get(name))
        vectors[name], _ = cached_embeddings(view, prepared.cache.waves, rows, prepared.cache.directory,
                                             device=device, progress=progress)
    return vectors
