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
