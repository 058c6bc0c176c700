"""The test clips seen through a pretrained embedding: a 2-D t-SNE map coloured by label, errors marked."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from earmark.reports.plots import pyplot, save_figure

EMBEDDING_MAP_PNG = "embedding_map.png"
MAX_LEGEND_LABELS = 20
PCA_DIMS, TSNE_ITERATIONS, TSNE_ANGLE = 50, 300, 0.7  # a map to look at, in seconds, not minutes
# Why t-SNE and not umap-learn: a map is drawn once per run, in a fresh process, where UMAP pays numba's
# compilation first (measured on the shared 2-core VM: import 12 s + first fit 67 s for 70 points, against
# t-SNE's 5.9 s); warm, UMAP is faster and keeps neighbours as well (sklearn digits, 300 points: 2.9 s vs
# 38.8 s, trustworthiness 0.963 vs 0.943), so it would pay off only for maps of thousands of clips.


def map_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) → (N, 2): t-SNE on standardised vectors (PCA for fewer than 5 clips)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = (vectors - vectors.mean(axis=0)) / np.maximum(vectors.std(axis=0), 1e-6)
    if len(x) < 5:
        return PCA(n_components=min(2, len(x)), random_state=seed).fit_transform(x).reshape(len(x), -1)[:, :2]
    if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:  # t-SNE's neighbours on 50 principal components, as usual
        x = PCA(n_components=PCA_DIMS, random_state=seed).fit_transform(x)
    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", max_iter=TSNE_ITERATIONS, angle=TSNE_ANGLE,
                random_state=seed).fit_transform(x)


def plot_embedding_map(vectors: np.ndarray, true: Sequence[str], predicted: Sequence[str], path: Path,
                       seed: int = 0) -> Path:
    """Each test clip a dot at its t-SNE position, coloured by its true label; misclassified clips are
    drawn as a black-edged cross, so clusters of errors and mixed-up classes show at a glance."""
    points = map_2d(np.asarray(vectors, dtype=np.float64), seed)
    true, predicted = np.asarray(true, dtype=object), np.asarray(predicted, dtype=object)
    labels = sorted(set(true), key=str)
    colours = pyplot().get_cmap("tab20" if len(labels) > 10 else "tab10")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    wrong = true != predicted
    for i, label in enumerate(labels):
        mine = true == label
        ax.scatter(points[mine & ~wrong, 0], points[mine & ~wrong, 1], s=14, color=colours(i % colours.N),
                   label=str(label) if len(labels) <= MAX_LEGEND_LABELS else None)
        ax.scatter(points[mine & wrong, 0], points[mine & wrong, 1], s=46, marker="X", color=colours(i % colours.N),
                   edgecolors="black", linewidths=0.8)
    ax.set_title(f"test clips through the embedding (t-SNE): {int(wrong.sum())} of {len(true)} misclassified (X)")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(labels) <= MAX_LEGEND_LABELS:
        ax.legend(fontsize=7, markerscale=1.2, loc="best", ncol=2 if len(labels) > 10 else 1)
    return save_figure(fig, Path(path))
