"""The split plan in words, said before any training: which rule chose the test split, how big
each split is, which classes a split lacks, and — when the plan cannot give a meaningful score —
what to do instead. `earmark train`, `prepare` and `cv` print these lines.
"""

from __future__ import annotations

import pandas as pd

from earmark.config import SplitConfig
from earmark.data.labels import natural_key

SPLITS = ("train", "val", "test")


def split_plan_lines(stats: dict, split: SplitConfig) -> list[str]:
    """Lines for a prepared split (`split_stats` output): the plan, sizes, a note when an explicit
    split.group_by does not decide the split, then the warnings and the advice, each marked."""
    n_classes = len(stats["per_class"])
    sizes = ", ".join(f"{name} {stats['total'][name]} clips ({_present(stats, name)}/{n_classes} classes)"
                      for name in SPLITS)
    lines = [f"split plan: {stats.get('strategy') or 'as prepared'}", f"split sizes: {sizes}"]
    strategy = stats.get("strategy") or ""
    predefined = strategy.startswith(("predefined split column", "fold column"))
    if split.group_by and predefined:
        column = "split" if strategy.startswith("predefined") else "fold"
        lines.append(f"note: the data's {column!r} column decides the test split, not split.group_by="
                     f"{split.group_by!r} (which only groups the validation carve-out and the leakage check); "
                     f"set split.use_predefined=false for a split grouped by {split.group_by!r}")
    lines += [f"warning: {warning}" for warning in stats.get("warnings", [])]
    problems = degenerate(stats)
    if problems:
        lines.append(f"warning: this split cannot score the model fairly ({'; '.join(problems)}). "
                     + advice(strategy))
    return lines


def degenerate(stats: dict) -> list[str]:
    """What makes the plan unable to score the model: a non-empty split missing classes, or a test
    split smaller than the number of classes."""
    n_classes = len(stats["per_class"])
    problems = []
    for name in SPLITS:
        present = _present(stats, name)
        if stats["total"][name] and present < n_classes:
            problems.append(f"{name} lacks {n_classes - present} of {n_classes} classes")
    if 0 < stats["total"]["test"] < n_classes:
        problems.append(f"the test split holds {stats['total']['test']} clips for {n_classes} classes")
    return problems


def advice(strategy: str) -> str:
    if strategy.startswith("fold column"):
        return ("Instead: another split.test_fold, split.use_predefined=false (a stratified random split), or "
                "`earmark cv --fold-column fold` to score every fold")
    if strategy.startswith("predefined split column"):
        return ("Instead: split.use_predefined=false (a stratified random split), or `earmark cv --folds K`")
    return "Instead: a larger split.test_fraction, or `earmark cv --folds K` (every clip is tested once)"


def cv_plan_lines(items: pd.DataFrame, folds: pd.Series, labels: list[str]) -> list[str]:
    """Lines for cross-validation folds: clips per held-out fold, and the folds that lack classes or hold
    fewer clips than there are classes, with what to do instead."""
    names = sorted(folds.unique(), key=natural_key)
    label_text = items["label"].astype("str")
    sizes = folds.value_counts()
    lines = ["fold plan: test clips per fold: " + ", ".join(f"{name} {int(sizes[name])}" for name in names)]
    weak = []
    for name in names:
        present = label_text[folds == name].nunique()
        if present < len(labels) or sizes[name] < len(labels):
            weak.append(f"{name} ({int(sizes[name])} clips, {present}/{len(labels)} classes)")
    if weak:
        lines.append(f"warning: {len(weak)} fold(s) cannot test every class: {', '.join(weak[:10])}; their "
                     "per-fold scores are noisy. Instead: fewer folds (--folds K), or computed folds instead of "
                     "--fold-column")
    return lines


def _present(stats: dict, name: str) -> int:
    return sum(1 for counts in stats["per_class"].values() if counts[name] > 0)
