"""Personalization figures: accuracy per group with and without the group embedding."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

NO_GROUP = "(none)"  # how clips without a group are listed in the report


def _accuracy(correct: np.ndarray) -> Optional[float]:
    return float(correct.mean()) if len(correct) else None


def personalization_summary(y_true: np.ndarray, basic: np.ndarray, personalized: np.ndarray,
                            groups: Sequence[Optional[str]], train_groups: Sequence[str], column: str,
                            settings: dict[str, Any]) -> dict[str, Any]:
    """Accuracy of the base model (`basic`, probabilities (N, C)) and of the personalized one, overall
    and per group; which test groups the training split never had (they get the base model)."""
    y_true = np.asarray(y_true)
    basic_right = basic.argmax(axis=1) == y_true
    personal_right = personalized.argmax(axis=1) == y_true
    names = np.array([NO_GROUP if g is None else g for g in groups], dtype=object)
    known = set(train_groups)
    seen = np.array([g in known for g in groups], dtype=bool)
    per_group = {}
    for name in sorted(set(names), key=str):
        mask = names == name
        before, after = _accuracy(basic_right[mask]), _accuracy(personal_right[mask])
        per_group[name] = {"n_clips": int(mask.sum()), "basic_accuracy": before, "personalized_accuracy": after,
                           "improvement": after - before, "seen_in_training": name in known}
    basic_accuracy, personalized_accuracy = _accuracy(basic_right), _accuracy(personal_right)
    return {
        "group_column": column,
        "n_clips": int(len(y_true)),
        "basic_accuracy": basic_accuracy,
        "personalized_accuracy": personalized_accuracy,
        "improvement": (personalized_accuracy - basic_accuracy) if len(y_true) else None,
        "seen_groups": {"n_clips": int(seen.sum()), "basic_accuracy": _accuracy(basic_right[seen]),
                        "personalized_accuracy": _accuracy(personal_right[seen])},
        "per_group": per_group,
        "unseen_groups": sorted(name for name in per_group if name != NO_GROUP and name not in known),
        "clips_without_group": int((names == NO_GROUP).sum()),
        "train_groups": list(train_groups),
        "settings": settings,
    }
