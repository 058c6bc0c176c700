"""Groups that decide a split: classes with too few groups to sit in every split, and a `group` column
(a source recording, a speaker) whose values straddle splits the split was not grouped by.

Arrays in, answers out; `earmark.data.splits` uses them to split and to report.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from earmark.config import SplitConfig
from earmark.data.labels import natural_key
from earmark.errors import EarmarkError

MAX_LISTED = 50  # straddling values listed


def small_classes(labels, keys, needed: int, split: SplitConfig, refuse: bool = False) -> dict[str, int]:
    """{label: groups} of the classes with fewer than `needed` groups (one per non-empty split); an error
    when every class is that small (nothing could be held out), or any is and `refuse`."""
    groups_per_class = pd.DataFrame({"label": labels, "key": keys}).groupby("label")["key"].nunique()
    rows_per_class = pd.Series(labels).value_counts()
    small = groups_per_class[groups_per_class < needed]
    if small.empty or (len(small) < len(groups_per_class) and not refuse):
        return {str(label): int(n) for label, n in small.items()}
    unit = f"groups of {split.group_by!r}" if split.group_by else "files"
    listed = ", ".join(f"{label!r} ({n} {unit}, {rows_per_class[label]} rows)" for label, n in small.items())
    raise EarmarkError(
        f"{len(small)} class(es) are too small for a stratified train/val/test split: {listed}; each class needs at "
        f"least {needed} {unit} (one per non-empty split). Add data for them, drop them from the metadata, or lower "
        f"split.val_fraction / split.test_fraction (0 leaves that split empty; now {split.val_fraction:g} / "
        f"{split.test_fraction:g})")


def hold_out_one_group(assigned: np.ndarray, labels, keys, small: dict[str, int], with_test: bool,
                       seed: int) -> dict[str, str]:
    """Move one group of each small class with 2+ groups to test (in place) where every class of that
    group keeps rows in train; {label: "train and test" | "train only"} for the small classes."""
    rng = np.random.default_rng(seed)
    where = {}
    for label in sorted(small, key=natural_key):
        where[label] = "train only"
        groups = sorted(set(keys[(labels == label) & (assigned == "train")]))
        if not with_test or len(groups) < 2:
            continue
        for group in rng.permutation(groups):
            rows = keys == group
            rest = (assigned == "train") & ~rows
            if set(labels[rows]) <= set(labels[rest]):
                assigned[rows] = "test"
                where[label] = "train and test"
                break
    return where


def group_overlap(items: pd.DataFrame, group_key: Optional[str]) -> Optional[dict]:
    """The `group` column's values (a source recording, a speaker) in several splits, when the split was
    not grouped by it: {"column", "count", "examples"}; None when the split is grouped by it or it is empty."""
    if (group_key or "path") == "group" or "group" not in items.columns or items["group"].isna().all():
        return None
    pairs = pd.DataFrame({"key": items["group"], "split": items["split"]}).dropna().drop_duplicates()
    per_key = pairs.groupby("key")["split"].nunique()
    shared = sorted(per_key.index[per_key > 1].astype("str"), key=natural_key)
    return {"column": "group", "count": len(shared), "examples": shared[:MAX_LISTED]}


def not_held_out_warning(kept: Optional[dict]) -> list[str]:
    """The warning for split_stats' `not_held_out` ({"classes": {label: where}, "group_key", "needed"})."""
    if not kept:
        return []
    unit = "files" if kept["group_key"] == "path" else f"groups of {kept['group_key']!r}"
    named = ", ".join(f"{label!r} ({where})" for label, where in list(kept["classes"].items())[:20])
    return [f"{len(kept['classes'])} class(es) have fewer than {kept['needed']} {unit} (one per split), so they "
            f"cannot be held out in every split: {named}; they train, but where they are absent their scores are "
            f"missing. Add recordings of them, or lower split.val_fraction (0: two groups suffice for train and test)"]
