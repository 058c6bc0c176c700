"""What a person looks at: the confusion-matrix plot and the markdown report of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, title: str = "Confusion (test)") -> Path:
    """Counts in each cell, colour by row-normalised share; readable up to ~50 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = max(4.0, min(24.0, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90 if n > 10 else 0, fontsize=8 if n > 20 else 10)
    ax.set_yticks(range(n), labels, fontsize=8 if n > 20 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_report(run_name: str, metrics: dict[str, Any], context: dict[str, Any]) -> str:
    """A readable report.md: headline, baseline beside it, warnings first, per-class table."""
    lines = [f"# earmark run `{run_name}`", ""]
    for warning in metrics.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
    if metrics.get("warnings"):
        lines.append("")
    low, high = metrics["accuracy_ci95"]
    baseline = metrics["majority_baseline"]
    lines += [
        "## Test metrics",
        "",
        "| metric | model | majority-class baseline |",
        "|---|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} (95% CI {low:.3f}–{high:.3f}) | {baseline['accuracy']:.4f} |",
        f"| balanced accuracy | {metrics['balanced_accuracy']:.4f} | {baseline['balanced_accuracy']:.4f} |",
        f"| macro F1 | {metrics['macro_f1']:.4f} | {baseline['macro_f1']:.4f} |",
        f"| weighted F1 | {metrics['weighted_f1']:.4f} | |",
        "",
        f"Test clips: {metrics['n_clips']}. Majority class: `{baseline['label']}`.",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, row in metrics["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "## Run", ""]
    for key, value in context.items():
        lines.append(f"- {key}: {value}")
    lines.append("")
    return "\n".join(lines)


def plot_augmentations(waves, frontend, augmenter, labels, path: Path, generator) -> Path:
    """One row per clip: its features "clean" and "augmented" (waveform then spectrogram transforms).

    waves (n, T) array or tensor; `frontend` a `FrontEnd`; `augmenter` a `BatchAugmenter`. Mixing is left
    out, as it blends clips. Standardisation is undone for display, so both columns read in the front-end's
    units (dB for log-mel) and a mask shows as each bin's training mean. A row shares one colour scale.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_personalization(summary: dict[str, Any], path: Path) -> Path:
    """Per-group test accuracy of the base model beside the personalized one (`personalization.json`).

    Groups the training split never had are marked "(unseen)": they get the base model unchanged.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
