"""Classification losses, one value per clip (so batch mixing can weight them), and class weights.

`ClassificationLoss(logits, targets)` → (B,) losses; the training step averages them (or mixes two
target sets with `earmark.augment.mixed_loss`). Class weights scale each clip's loss by its class's
weight; the mean over clips is then taken as is, so 'balanced' weights keep the loss's scale.
"""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError

ClassWeightSpec = Union[str, Mapping[str, float]]


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, weight: torch.Tensor | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) per clip: (1 - p_target) ** gamma * cross-entropy.

    logits (B, C), targets (B,) class ids → (B,). gamma = 0 is cross-entropy; larger gamma
    down-weights clips the model already gets right (p_target near 1).
    """
    cross_entropy = F.cross_entropy(logits.float(), targets, weight=weight, reduction="none",
                                    label_smoothing=label_smoothing)  # (B,)
    if gamma == 0:
        return cross_entropy
    p_target = torch.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)  # (B,)
    return (1 - p_target).clamp(min=0) ** gamma * cross_entropy


class ClassificationLoss(nn.Module):
    """Cross-entropy or focal loss per clip, with optional class weights and label smoothing.

    forward: logits (B, C), targets (B,) → (B,).
    """

    def __init__(self, kind: str = "cross_entropy", focal_gamma: float = 2.0,
                 class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if kind not in ("cross_entropy", "focal"):
            raise ValueError(f"loss must be cross_entropy or focal; got {kind!r}")
        self.gamma = focal_gamma if kind == "focal" else 0.0
        self.label_smoothing = label_smoothing
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        # rebuilt from the hyper-parameters, so kept out of the state_dict
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, self.gamma, self.weight, self.label_smoothing)


def class_weights(spec: ClassWeightSpec, labels: Sequence[str], train_targets: np.ndarray) -> list[float] | None:
    """Per-class loss weights from `train.class_weights`, in label order; None for 'none'.

    'balanced': n_clips / (n_classes * count) from the training split (scikit-learn's rule), so a
    class with half the clips weighs twice as much. A mapping gives weights by label; labels it
    leaves out weigh 1. Every weighted class needs training clips.
    """
    if isinstance(spec, str) and spec == "none":
        return None
    labels = [str(label) for label in labels]
    counts = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=len(labels))
    if isinstance(spec, str):
        if spec != "balanced":
            raise EarmarkError(f"train.class_weights must be 'none', 'balanced' or {{label: weight}}; got {spec!r}")
        missing = [label for label, count in zip(labels, counts) if count == 0]
        if missing:
            raise EarmarkError(f"train.class_weights=balanced needs training clips of every class; the train split "
                               f"has none of: {', '.join(missing)} (change split.* or the data)")
        return [float(counts.sum() / (len(labels) * count)) for count in counts]
    unknown = sorted(set(map(str, spec)) - set(labels))
    if unknown:
        raise EarmarkError(f"train.class_weights names unknown label(s) {', '.join(unknown)}; "
                           f"the labels are: {', '.join(labels)}")
    weights = {str(label): float(weight) for label, weight in spec.items()}
    negative = [f"{label}: {weight}" for label, weight in weights.items() if weight < 0]
    if negative:
        raise EarmarkError(f"train.class_weights must be 0 or more; got {', '.join(negative)}")
    empty = [label for label in weights if counts[labels.index(label)] == 0]
    if empty:
        raise EarmarkError(f"train.class_weights gives a weight to {', '.join(empty)}, which has no training clips "
                           f"(change split.* or drop the weight)")
    return [weights.get(label, 1.0) for label in labels]
