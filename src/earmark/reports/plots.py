"""The evaluation's PNGs (matplotlib, Agg): confusion counts and shares, per class, per group, ROC, PR,
reliability and accuracy-vs-coverage. Each function takes plain lists/arrays and a path, writes one file
and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

MAX_GROUP_BARS = 60  # beyond this many groups the plot shows the worst ones
MAX_CLASS_BARS = 60  # beyond this many classes the per-class plot shows the worst ones
MAX_LABELLED_CLASSES = 60  # beyond this many classes the confusion image has no per-cell numbers or tick labels
MAX_CONFUSION_IN = 16.0  # the confusion figure's largest side (inches): its canvas stays a few MB at any n


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); every earmark plot starts here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_confusion(confusion: list[list[int]], labels: Sequence[str], path: Path, normalized: bool = False,
                   title: str | None = None) -> Path:
    """Counts (or, `normalized`, each true class's row as percentages) in every non-zero cell, colour by
    the row share. Sized so 50 classes stay readable: cells ≥ 0.4 in, labels and numbers shrink with n.
    Over MAX_LABELLED_CLASSES classes the image alone (no numbers, no tick labels), at most
    MAX_CONFUSION_IN inches a side: 500 classes' 250,000 text cells drew a 20,000-pixel canvas (GBs)."""
    plt = pyplot()
    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    label_chars = max((len(str(label)) for label in labels), default=1)
    cell_in = 0.6 if n <= 10 else 0.42 if n <= 30 else 0.36
    margin_in = 1.2 + 0.075 * min(label_chars, 30)  # room for the longest tick label
    labelled = n <= MAX_LABELLED_CLASSES
    size = max(4.5, n * cell_in + margin_in) if labelled else MAX_CONFUSION_IN
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if not labelled:
        ax.set_xlabel(f"predicted (class index, {n} classes)")
        ax.set_ylabel("true (class index)")
        ax.set_title(title or ("Confusion, share of each true class (test)" if normalized else
                               "Confusion, colour = share of each true class (test)"))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of true class")
        return save_figure(fig, path)
    tick_size = 10 if n <= 10 else 8 if n <= 30 else 7
    ticks = [str(label) if len(str(label)) <= 30 else str(label)[:29] + "…" for label in labels]
    ax.set_xticks(range(n), ticks, rotation=90 if n > 6 or label_chars > 8 else 0, fontsize=tick_size)
    ax.set_yticks(range(n), ticks, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("Confusion, % of each true class (test)" if normalized else "Confusion, counts (test)"))
    cell_size = 9 if n <= 10 else 7 if n <= 30 else 5.5
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                text = f"{100 * shares[i, j]:.0f}" if normalized else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=cell_size,
                        color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of true class")
    return save_figure(fig, path)


def plot_per_class(per_class: dict[str, dict[str, float]], path: Path) -> Path:
    """Recall and F1 per class, sorted by F1 (worst at the top), support beside each class name. Over
    MAX_CLASS_BARS classes: the worst MAX_CLASS_BARS (every class stays in metrics.json and the report)."""
    plt = pyplot()
    ranked = sorted(per_class.items(), key=lambda item: (item[1]["f1"], item[1]["recall"]))
    rows = ranked[:MAX_CLASS_BARS]
    names = [f"{name} (n={row['support']})" for name, row in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.24 * len(rows) + 1.2)))
    ax.barh(y + 0.2, [row["recall"] for _, row in rows], 0.4, label="recall", color="#9aa5b1")
    ax.barh(y - 0.2, [row["f1"] for _, row in rows], 0.4, label="F1", color="#2b6cb0")
    ax.set_yticks(y, names, fontsize=9 if len(rows) <= 30 else 7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test split")
    ax.set_title("Per class, sorted by F1" + (f"; the worst {len(rows)} of {len(ranked)}"
                                               if len(ranked) > len(rows) else ""))
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(len(rows) - 0.4, -0.6)  # worst at the top
    return save_figure(fig, path)


def plot_per_group(column: str, analysis: dict[str, Any], overall_accuracy: float, path: Path) -> Path:
    """Accuracy per value of a metadata column, worst first, clips per group in the label, the overall
    accuracy as a line. Over MAX_GROUP_BARS groups: the worst MAX_GROUP_BARS."""
    plt = pyplot()
    groups = sorted(analysis["groups"].items(), key=lambda item: (item[1]["accuracy"], -item[1]["n_clips"]))
    shown = groups[:MAX_GROUP_BARS]
    y = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.24 * len(shown) + 1.2)))
    ax.barh(y, [row["accuracy"] for _, row in shown], color="#2b6cb0")
    ax.axvline(overall_accuracy, color="#c05621", linestyle="--", label=f"all clips ({overall_accuracy:.3f})")
    ax.set_yticks(y, [f"{name} (n={row['n_clips']})" for name, row in shown], fontsize=9 if len(shown) <= 30 else 7)
    ax.set_xlim(0, 1)
    ax.set_ylim(len(shown) - 0.4, -0.6)  # worst at the top
    ax.set_xlabel("test accuracy")
    more = f"; the worst {len(shown)} of {len(groups)}" if len(groups) > len(shown) else ""
    ax.set_title(f"Accuracy per {column}{more}")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_roc(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, positive_label: str, path: Path,
             operating_point: tuple[float, float] | None = None) -> Path:
    """ROC curve with its area and, when given, the (fpr, tpr) of the validation-chosen threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":", label="chance")
    ax.plot(fpr, tpr, color="#2b6cb0", label=f"model (AUC {auc:.3f})" if auc is not None else "model")
    if operating_point is not None:
        ax.plot(*operating_point, "o", color="#c05621", label="chosen threshold")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel(f"true positive rate ('{positive_label}')")
    ax.set_title("ROC (test)")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_pr(precision: Sequence[float], recall: Sequence[float], average_precision: float | None,
            prevalence: float, positive_label: str, path: Path,
            operating_point: tuple[float, float] | None = None) -> Path:
    """Precision–recall curve with average precision; the positive class's prevalence is chance."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.axhline(prevalence, color="#bbbbbb", linestyle=":", label=f"chance ({prevalence:.2f})")
    label = f"model (AP {average_precision:.3f})" if average_precision is not None else "model"
    ax.plot(recall, precision, color="#2b6cb0", label=label)
    if operating_point is not None:
        ax.plot(*operating_point, "o", color="#c05621", label="chosen threshold")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"recall ('{positive_label}')")
    ax.set_ylabel("precision")
    ax.set_title("Precision–recall (test)")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def plot_reliability(before: dict[str, list], after: dict[str, list], ece_before: float, ece_after: float,
                     temperature: float, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin (from `calibration.reliability_bins`),
    before and after temperature scaling; the diagonal is perfect calibration."""
    plt = pyplot()
    edges = np.asarray(before["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":")
    for bins, name, colour, shift in ((before, f"T = 1 (ECE {ece_before:.3f})", "#9aa5b1", -0.25),
                                      (after, f"T = {temperature:.2f} (ECE {ece_after:.3f})", "#2b6cb0", 0.25)):
        accuracy = np.array([np.nan if a is None else a for a in bins["accuracy"]], dtype=float)
        ax.bar(centres + shift * width, np.nan_to_num(accuracy), width * 0.5, color=colour, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability (test)")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def plot_coverage(coverage: np.ndarray, accuracy: np.ndarray, path: Path,
                  chosen: tuple[float, float] | None = None, target_accuracy: float | None = None) -> Path:
    """Accuracy on the accepted clips against the share accepted (most confident first); the chosen
    rejection threshold's test (coverage, accuracy) as a point."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.5))
    ax.plot(coverage, accuracy, color="#2b6cb0", label="test")
    if target_accuracy is not None:
        ax.axhline(target_accuracy, color="#bbbbbb", linestyle=":", label=f"target ({target_accuracy:.2f})")
    if chosen is not None:
        ax.plot(*chosen, "o", color="#c05621", label=f"chosen threshold ({chosen[0]:.0%} kept)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(max(0.0, float(np.min(accuracy)) - 0.05) if len(accuracy) else 0, 1.01)
    ax.set_xlabel("coverage (share of clips not rejected)")
    ax.set_ylabel("accuracy on accepted clips")
    ax.set_title("Accuracy vs coverage (test)")
    ax.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def plot_augmentations(waves, frontend, augmenter, labels, path: Path, generator) -> Path:
    """One row per clip: its features "clean" and "augmented" (waveform then spectrogram transforms).

    waves (n, T) array or tensor; `frontend` a `FrontEnd`; `augmenter` a `BatchAugmenter`. Mixing is left
    out, as it blends clips. Standardisation is undone for display, so both columns read in the front-end's
    units (dB for log-mel) and a mask shows as each bin's training mean. A row shares one colour scale.
    """
    import torch

    from earmark.reports.plots import pyplot, save_figure

    plt = pyplot()
    device = frontend.mean_.device
    clean_waves = torch.as_tensor(np.asarray(waves, dtype=np.float32), device=device)  # (n, T)

    def in_frontend_units(features: torch.Tensor) -> np.ndarray:
        if frontend.normalize:
            features = features * frontend.std_ + frontend.mean_
        return features.cpu().numpy()  # (n, C, bins, frames) or (n, C, T)

    with torch.no_grad():
        clean = in_frontend_units(frontend(clean_waves))
        augmented_waves = augmenter.waveform(clean_waves, generator)
        augmented = in_frontend_units(augmenter.spectrogram(frontend(augmented_waves), generator))
    rows = len(clean)
    fig, axes = plt.subplots(rows, 2, figsize=(8.0, 1.8 * rows + 0.5), squeeze=False)
    for row, (label, before, after) in enumerate(zip(labels, clean, augmented)):
        low, high = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
        for ax, feature in zip(axes[row], (before, after)):
            if feature.ndim == 3:  # (C, bins, frames): the first channel
                ax.imshow(feature[0], origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
            else:  # (C, T) waveform features
                ax.plot(feature.reshape(-1), linewidth=0.4)
                ax.set_ylim(low - 1e-6, high + 1e-6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(str(label), fontsize=9)
    axes[0, 0].set_title("clean")
    axes[0, 1].set_title("augmented")
    return save_figure(fig, path, dpi=100)


def plot_personalization(summary: dict[str, Any], path: Path) -> Path:
    """Per-group test accuracy of the base model beside the personalized one (`personalization.json`).

    Groups the training split never had are marked "(unseen)": they get the base model unchanged.
    """
    from earmark.reports.plots import pyplot, save_figure

    plt = pyplot()
    per_group = summary["per_group"]
    names = list(per_group)
    before = [per_group[name]["basic_accuracy"] for name in names]
    after = [per_group[name]["personalized_accuracy"] for name in names]
    ticks = [f"{name}\n(n={per_group[name]['n_clips']})" + ("" if per_group[name]["seen_in_training"]
                                                             else "\n(unseen)") for name in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, min(30.0, 0.7 * len(names) + 2)), 4.2))
    ax.bar(x - 0.2, before, 0.4, label=f"base model ({summary['basic_accuracy']:.3f} overall)", color="#9aa5b1")
    ax.bar(x + 0.2, after, 0.4, label=f"personalized ({summary['personalized_accuracy']:.3f} overall)",
           color="#2b6cb0")
    ax.set_xticks(x, ticks, fontsize=8 if len(names) > 12 else 9, rotation=90 if len(names) > 20 else 0)
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Accuracy per {summary['group_column']}: before and after personalization")
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    return save_figure(fig, path)
