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
    if split.group_by and predefined and not stats["leakage"]["ok"]:
        column = "split" if strategy.startswith("predefined") else "fold"
        lines.append(f"note: the data's {column!r} column decides the test split, not split.group_by="
                     f"{split.group_by!r} (which only groups the validation carve-out and the leakage check); "
                     f"set split.use_predefined=false for a split grouped by {split.group_by!r}")
    lines += [f"warning: {warning}" for warning in stats.get("warnings", [])]
    overlap = stats.get("group_overlap")
    if overlap and overlap["count"]:
        fix = "split.group_by=group" + (" split.use_predefined=false" if predefined else "")
        lines.append(f"warning: {overlap['count']} value(s) of the 'group' column (e.g. "
                     f"{', '.join(overlap['examples'][:5])}) sit in several splits: clips of one source recording "
                     f"or speaker in train and test make the scores optimistic. Instead: {fix} (whole groups per "
                     f"split), or `earmark cv --group-by group`")
    problems = degenerate(stats)
    if problems:
        lines.append(f"warning: this split cannot score the model fairly ({'; '.join(problems)}). "
                     + advice(strategy, split.group_by))
    return lines


def degenerate(stats: dict) -> list[str]:
    """What makes the plan unable to score the model: a non-empty split missing classes, or a test
    split smaller than the number of classes."""
    n_classes = len(stats["per_class"])
    kept = set((stats.get("not_held_out") or {}).get("classes", {}))  # named in their own warning
    problems = []
    for name in SPLITS:
        absent = [label for label, counts in stats["per_class"].items() if counts[name] == 0 and label not in kept]
        if stats["total"][name] and absent:
            problems.append(f"{name} lacks {len(absent)} of {n_classes} classes")
    if 0 < stats["total"]["test"] < n_classes:
        problems.append(f"the test split holds {stats['total']['test']} clips for {n_classes} classes")
    return problems


def advice(strategy: str, group_by: str | None = None) -> str:
    """What to do instead; a random split keeps the groups of `group_by` (e.g. ESC-50's source recordings)
    together, so following the advice never trades a degenerate split for a leaking one."""
    random_split = (f"a stratified random split of whole groups of {group_by!r}" if group_by else
                    "a stratified random split; add split.group_by=COLUMN if clips share a recording or speaker")
    if strategy.startswith("fold column"):
        return (f"Instead: another split.test_fold, split.use_predefined=false ({random_split}), or "
                "`earmark cv --fold-column fold` to score every fold")
    if strategy.startswith("predefined split column"):
        return f"Instead: split.use_predefined=false ({random_split}), or `earmark cv --folds K`"
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
