"""Honest splits: stratified, grouped, predefined or by fold, with stats that show leakage.

`items` is the table from `earmark.data.sources` after decoding: one row per clip
*segment* (a long file chunked into several segments has several rows with the
same `path`), with at least the columns path, label, group, fold, split.

The grouping key decides what may never straddle splits: `split.group_by`
(any column, e.g. `group` or `speaker`) or else the file `path`, so the
segments of one file always land in the same split. A row whose group value is
missing is its own group (keyed by its file).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, ShuffleSplit, StratifiedGroupKFold, StratifiedKFold

from earmark.config import SplitConfig
from earmark.data.labels import natural_key
from earmark.data.split_groups import group_overlap, hold_out_one_group, not_held_out_warning, small_classes
from earmark.errors import EarmarkError
from earmark.files import atomic_write_text, mark_generated

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("path", "label", "group", "fold", "split")
TEXT_COLUMNS = REQUIRED_COLUMNS  # read back as str
MAX_FOLDS = 20  # fractions are approximated by k of n folds, n <= MAX_FOLDS
MAX_LISTED = 50  # leaking groups listed


def assign_splits(items: pd.DataFrame, split: SplitConfig, seed: int) -> pd.DataFrame:
    """A copy of `items` whose `split` column says train, val or test for every row. Rules, first that applies: a predefined `split` column (val carved from train when
    it has none); a `fold` column (test = `split.test_fold`, default the last fold);
    else a seeded stratified split grouped by the key. `result.attrs["split_strategy"]`
    says which one ran, `attrs["not_held_out"]` which classes it could not put in every split."""
    _require_columns(items)
    keys = group_keys(items, split.group_by)
    labels = items["label"].astype("str").to_numpy()
    has_split = items["split"].notna().any()
    has_fold = items["fold"].notna().any()
    if (split.test_fold or split.val_fold) and not (split.use_predefined and has_fold and not has_split):
        raise EarmarkError("split.test_fold / split.val_fold only apply to data with a fold column (and no split "
                           "column) with split.use_predefined=true; unset them or use such data")
    kept: dict[str, str] = {}  # classes too small for every split (a random split only)
    if split.use_predefined and has_split:
        assigned, strategy = _predefined(items, labels, keys, split, seed)
    elif split.use_predefined and has_fold:
        assigned, strategy = _by_fold(items, labels, keys, split, seed)
    else:
        assigned, strategy, kept = _stratified(labels, keys, split, seed)
    result = items.copy()
    result["split"] = pd.Series(assigned, index=items.index, dtype="str")
    result.attrs["split_strategy"] = strategy
    if kept:
        result.attrs["not_held_out"] = {"classes": kept, "group_key": split.group_by or "path",
                                        "needed": 1 + (split.val_fraction > 0) + (split.test_fraction > 0)}
    return result


def group_keys(items: pd.DataFrame, column: Optional[str]) -> pd.Series:
    """The values that must not straddle splits: `items[column]`, or the file path when column is None."""
    if column is None:
        return items["path"].astype("str")
    if column not in items.columns:
        raise EarmarkError(f"split.group_by={column!r} is not a column of the metadata; available columns: "
                           f"{', '.join(map(str, items.columns))}")
    values = items[column]
    if values.isna().all():
        raise EarmarkError(f"split.group_by={column!r}: the column is empty for every row; pick a column with "
                           "values (e.g. the speaker), or unset split.group_by to group by file")
    text = values.astype("str")
    return text.where(values.notna(), "file:" + items["path"].astype("str"))


def split_stats(items: pd.DataFrame, group_key: Optional[str]) -> dict:
    """Counts per class and split, groups per split, a leakage check and warnings (JSON-ready)."""
    keys = group_keys(items, group_key)
    splits = items["split"]
    labels = sorted(items["label"].astype("str").unique())
    counts = pd.crosstab(items["label"].astype("str"), splits).reindex(index=labels, columns=list(SPLITS), fill_value=0)
    per_split_groups = pd.DataFrame({"key": keys, "split": splits}).dropna().drop_duplicates()
    key_splits = per_split_groups.groupby("key")["split"].nunique()
    leaking = sorted(key_splits.index[key_splits > 1])
    stats = {
        "strategy": items.attrs.get("split_strategy"),
        "group_key": group_key or "path",
        "total": {s: int(counts[s].sum()) for s in SPLITS},
        "per_class": {label: {s: int(counts.at[label, s]) for s in SPLITS} for label in labels},
        "groups": {s: int((per_split_groups["split"] == s).sum()) for s in SPLITS},
        "files": {s: int(items.loc[splits == s, "path"].nunique()) for s in SPLITS},
        "leakage": {"groups_in_several_splits": leaking[:MAX_LISTED], "count": len(leaking), "ok": not leaking},
        "group_overlap": group_overlap(items, group_key),
        "not_held_out": items.attrs.get("not_held_out"),
        "warnings": [],
    }
    stats["warnings"] = _warnings(stats, labels, int(splits.isna().sum()))
    return stats


def write_splits(items: pd.DataFrame, out_dir: Path, stats: dict) -> None:
    """train.csv, val.csv, test.csv (all columns) and split_stats.json, each written atomically."""
    out_dir = mark_generated(out_dir)  # `earmark clean` deletes only marked folders
    for name in SPLITS:
        atomic_write_text(out_dir / f"{name}.csv", items[items["split"] == name].to_csv(index=False))
    atomic_write_text(out_dir / "split_stats.json", json.dumps(stats, indent=2, default=str) + "\n")


def load_splits(out_dir: Path) -> pd.DataFrame:
    """The rows written by `write_splits`, train then val then test; path/label/group/fold/split as str."""
    frames = []
    for name in SPLITS:
        path = Path(out_dir) / f"{name}.csv"
        if not path.is_file():
            raise EarmarkError(f"split file {path} is missing; prepare the data again (or delete {out_dir})")
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""],
                            dtype={c: "str" for c in TEXT_COLUMNS})
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for column in TEXT_COLUMNS:
        if column in table.columns:
            table[column] = table[column].astype("str")
    return table


def load_split_stats(out_dir: Path) -> dict:
    path = Path(out_dir) / "split_stats.json"
    if not path.is_file():
        raise EarmarkError(f"split stats {path} are missing; prepare the data again (or delete {out_dir})")
    return json.loads(path.read_text())


def kfold_assignments(items: pd.DataFrame, k: int, group_key: Optional[str], seed: int) -> pd.Series:
    """Fold id 0..k-1 per row for cross-validation, stratified by label, never splitting a group."""
    keys = group_keys(items, group_key).to_numpy()
    n_groups = len(np.unique(keys))
    if k < 2 or k > n_groups:
        raise EarmarkError(f"k-fold needs 2 <= k <= the number of groups ({n_groups} by "
                           f"{group_key or 'file path'}); got k={k}")
    labels = items["label"].astype("str").to_numpy()
    folds = np.full(len(items), -1, dtype=int)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes with fewer than k groups
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            splits = list(splitter.split(np.zeros(len(labels)), labels, keys))
    except ValueError:  # every class smaller than k: folds stay grouped, not stratified
        splits = list(GroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels, keys))
    for fold, (_, held_out) in enumerate(splits):
        folds[held_out] = fold
    return pd.Series(folds, index=items.index, name="cv_fold")


def cv_folds(items: pd.DataFrame, k: Optional[int], group_key: Optional[str], fold_column: Optional[str],
             seed: int) -> pd.Series:
    """Fold name (str) per row for cross-validation, named so a folder `fold-<name>` reads well.

    fold_column: the data's own folds (ESC-50's 5, UrbanSound8K's 10); `k`, when given, must match
    their number. Otherwise `k` seeded folds "1".."k", stratified by label, never splitting a group
    of `group_key` (the file path when None).
    """
    _require_columns(items)
    if fold_column is None:
        folds = kfold_assignments(items, k if k is not None else 5, group_key, seed)
        return (folds + 1).astype("str").rename("cv_fold")
    if fold_column not in items.columns:
        raise EarmarkError(f"--fold-column {fold_column!r} is not a column of the metadata; available columns: "
                           f"{', '.join(map(str, items.columns))} (the esc50/urbansound8k sources name theirs 'fold')")
    missing = items[fold_column].isna().to_numpy()
    if missing.any():
        raise EarmarkError(f"{int(missing.sum())} of {len(items)} rows have no value in the {fold_column!r} column "
                           f"(e.g. {items['path'].iloc[int(np.flatnonzero(missing)[0])]}); fill it in, or leave "
                           "--fold-column out to compute folds with --folds K")
    values = items[fold_column].astype("str").to_numpy(dtype=object)
    names = sorted(set(values), key=natural_key)
    if len(names) < 2:
        raise EarmarkError(f"the {fold_column!r} column has a single fold ({names[0]!r}); cross-validation needs "
                           "at least 2: compute folds instead with --folds K")
    if k is not None and k != len(names):
        raise EarmarkError(f"--folds {k} does not match the {len(names)} folds of the {fold_column!r} column "
                           f"({', '.join(names)}); leave --folds out to use them all")
    return pd.Series(values, index=items.index, name="cv_fold", dtype="str")


def cv_split(items: pd.DataFrame, folds: pd.Series, test_fold: str, group_key: Optional[str], val_fraction: float,
             seed: int) -> np.ndarray:
    """train / val / test per row for one cross-validation fold: test is `test_fold`; validation is
    whole groups of `group_key` worth `val_fraction` of all rows carved from the other folds,
    stratified, so no group sits in two of train, val and test."""
    assigned = np.where(folds.astype("str").to_numpy() == str(test_fold), "test", "train").astype(object)
    labels = items["label"].astype("str").to_numpy()
    keys = group_keys(items, group_key).to_numpy()
    _carve_val(assigned, labels, keys, val_fraction, seed, f"the folds other than {test_fold}")
    return assigned


def groups_in_several_folds(items: pd.DataFrame, folds: pd.Series, group_key: Optional[str]) -> list[str]:
    """Groups of `group_key` whose rows sit in more than one fold (leakage between predefined folds)."""
    pairs = pd.DataFrame({"key": group_keys(items, group_key).to_numpy(), "fold": folds.astype("str").to_numpy()})
    per_key = pairs.drop_duplicates().groupby("key")["fold"].nunique()
    return sorted(per_key.index[per_key > 1])


# ---------------------------------------------------------------- the three rules


def _predefined(items, labels, keys, split: SplitConfig, seed: int) -> tuple[np.ndarray, str]:
    assigned = items["split"].astype("str").str.strip().str.lower().to_numpy(dtype=object)
    _check_complete(items, assigned, "split", "fill it in")
    unknown = sorted(set(assigned) - set(SPLITS))
    if unknown:
        raise EarmarkError(f"column 'split' holds {', '.join(map(repr, unknown))}; expected train, val or test")
    strategy = "predefined split column"
    if "val" not in set(assigned) and split.val_fraction > 0:
        moved = _carve_val(assigned, labels, keys, split.val_fraction, seed, "the predefined train split")
        strategy += f"; val carved from train {carved_note(moved, len(assigned), split.val_fraction)}"
    return assigned, strategy


def _by_fold(items, labels, keys, split: SplitConfig, seed: int) -> tuple[np.ndarray, str]:
    folds = items["fold"].astype("str").to_numpy(dtype=object)
    _check_complete(items, folds, "fold", "fill it in")
    available = sorted(set(folds), key=natural_key)
    if len(available) < 2:
        raise EarmarkError(f"the fold column has a single fold ({available[0]!r}); holding it out would leave "
                           "nothing to train on: set split.use_predefined=false for a random split")
    test_fold = _match_fold(split.test_fold, available, "test_fold") if split.test_fold else available[-1]
    assigned = np.where(folds == test_fold, "test", "train").astype(object)
    strategy = f"fold column: test = fold {test_fold}"
    if split.val_fold:
        val_fold = _match_fold(split.val_fold, available, "val_fold")
        if val_fold == test_fold:
            raise EarmarkError(f"split.val_fold and split.test_fold are both {val_fold!r}; pick two different folds")
        assigned[folds == val_fold] = "val"
        strategy += f", val = fold {val_fold}"
    elif split.val_fraction > 0:
        moved = _carve_val(assigned, labels, keys, split.val_fraction, seed, "the training folds")
        strategy += f", val carved from the other folds {carved_note(moved, len(assigned), split.val_fraction)}"
    return assigned, strategy


def _stratified(labels, keys, split: SplitConfig, seed: int) -> tuple[np.ndarray, str, dict[str, str]]:
    """A seeded stratified split grouped by `keys`. A class with fewer groups than the non-empty splits
    cannot be in each: its groups stay in train (one goes to test when it has two or more), and
    the third value names those classes, {label: where its groups went}."""
    keys = keys.to_numpy()
    needed = 1 + (split.val_fraction > 0) + (split.test_fraction > 0)
    small = small_classes(labels, keys, needed, split)
    assigned = np.full(len(labels), "train", dtype=object)
    # whole groups holding a small class's rows are kept out of the draws, so no group straddles splits
    pinned = np.isin(keys, np.unique(keys[np.isin(labels, list(small))]))
    if pinned.all():  # their groups hold every clip (say speakers who said every word): nothing to draw from
        small_classes(labels, keys, needed, split, refuse=True)
    free, assigned[pinned] = ~pinned, "pinned"
    test_fraction = min(0.99, split.test_fraction * len(labels) / max(1, int(free.sum()))) if pinned.any() else \
        split.test_fraction
    test = np.zeros(len(labels), dtype=bool)
    test[free] = _take(labels[free], keys[free], test_fraction, seed)
    assigned[test] = "test"
    _carve_val(assigned, labels, keys, split.val_fraction, seed + 1, "the data left after test")
    assigned[pinned] = "train"
    kept = hold_out_one_group(assigned, labels, keys, small, split.test_fraction > 0, seed)
    strategy = (f"stratified random split (val {split.val_fraction:g}, test {split.test_fraction:g}, "
                f"seed {seed}), grouped by {split.group_by or 'file path'}")
    if kept:
        strategy += f"; {len(kept)} class(es) with too few groups for every split kept in train"
    return assigned, strategy, kept


# ---------------------------------------------------------------- building blocks


def carved_note(moved: int, n_rows: int, val_fraction: float) -> str:
    """What a carve-out took, as it is: whole groups make it differ from the fraction asked."""
    return f"({moved} of {n_rows} clips, {moved / max(n_rows, 1):.2f}; split.val_fraction={val_fraction:g} asked)"


def _carve_val(assigned: np.ndarray, labels, keys, val_fraction: float, seed: int, pool_name: str) -> int:
    """Move whole groups worth about `val_fraction` of all rows from train to val, stratified (in place);
    how many rows moved."""
    if val_fraction <= 0:
        return 0
    keys = np.asarray(keys)
    pool = np.flatnonzero(assigned == "train")
    wanted = val_fraction * len(assigned)
    if wanted >= len(pool):
        raise EarmarkError(f"split.val_fraction={val_fraction:g} asks for {wanted:.0f} validation rows but "
                           f"{pool_name} has only {len(pool)}; lower split.val_fraction")
    taken = _take(labels[pool], keys[pool], wanted / len(pool), seed)
    assigned[pool[taken]] = "val"
    return int(taken.sum())


def _take(labels: np.ndarray, keys: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of whole groups worth about `fraction` of the rows, stratified by label.

    The rows are cut into n folds (StratifiedGroupKFold, seeded) and the k folds
    whose k/n is closest to `fraction` and that cover the most classes are taken.
    """
    taken = np.zeros(len(labels), dtype=bool)
    n_groups = len(np.unique(keys))
    if fraction <= 0 or n_groups < 2:
        return taken
    largest_class = int(pd.Series(labels).value_counts().max())  # sklearn refuses more folds than that
    n_folds, k = _fold_plan(fraction, min(n_groups, largest_class))
    one_row_groups = n_groups == len(keys)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class with fewer members than folds
            splitter = (StratifiedKFold(n_folds, shuffle=True, random_state=seed) if one_row_groups
                        else StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed))
            folds = [held for _, held in splitter.split(np.zeros(len(labels)), labels, keys)]
    except ValueError:  # stratification impossible (e.g. every class smaller than n_folds)
        splitter = ShuffleSplit if one_row_groups else GroupShuffleSplit
        groups = None if one_row_groups else keys
        _, held = next(splitter(1, test_size=fraction, random_state=seed).split(np.zeros(len(labels)), labels, groups))
        taken[held] = True
        return taken
    for held in _pick_folds(folds, labels, k, fraction * len(labels)):
        taken[held] = True
    return taken


def _fold_plan(fraction: float, max_folds: int) -> tuple[int, int]:
    """(n, k) with k/n closest to fraction, n <= min(MAX_FOLDS, max_folds), fewest folds on ties."""
    plans = [(n, k) for n in range(2, max(2, min(MAX_FOLDS, max_folds)) + 1) for k in range(1, n)]
    return min(plans, key=lambda plan: (abs(plan[1] / plan[0] - fraction), plan[0]))


def _pick_folds(folds: list[np.ndarray], labels: np.ndarray, k: int, target_rows: float) -> list[np.ndarray]:
    """Greedy: each next fold adds the most classes not yet covered, then keeps the size closest to target."""
    chosen, covered, rows = [], set(), 0
    remaining = list(range(len(folds)))
    for _ in range(k):
        best = min(remaining, key=lambda i: (-len(set(labels[folds[i]]) - covered),
                                             abs(rows + len(folds[i]) - target_rows), i))
        remaining.remove(best)
        chosen.append(folds[best])
        covered |= set(labels[folds[best]])
        rows += len(folds[best])
    return chosen


def _check_complete(items: pd.DataFrame, values: np.ndarray, column: str, fix: str) -> None:
    missing = pd.isna(values) | (values == "nan")
    if missing.any():
        example = items["path"].iloc[int(np.flatnonzero(missing)[0])]
        raise EarmarkError(f"{int(missing.sum())} of {len(values)} rows have no value in the {column!r} column "
                           f"(e.g. {example}); {fix}, or set split.use_predefined=false for a random split")


def _match_fold(wanted: str, available: list[str], option: str) -> str:
    for fold in available:
        if fold == str(wanted) or _same_number(fold, wanted):
            return fold
    raise EarmarkError(f"split.{option}={wanted!r} is not one of the folds in the data: {', '.join(available)}")


def _same_number(fold: str, wanted: object) -> bool:
    """'1.0' in the data is the fold 1 asked for."""
    try:
        return float(fold) == float(wanted)
    except (TypeError, ValueError):
        return False


def _warnings(stats: dict, labels: list[str], unassigned: int) -> list[str]:
    found = []
    consequences = {"train": "the model cannot learn them", "val": "model selection ignores them",
                    "test": "their accuracy cannot be measured"}
    for name in SPLITS:
        if stats["total"][name] == 0:
            found.append(f"the {name} split is empty")
            continue
        absent = [label for label in labels if stats["per_class"][label][name] == 0]
        if absent:
            found.append(f"the {name} split has no examples of {len(absent)} class(es): {', '.join(absent[:20])}; "
                         f"{consequences[name]}")
    found += not_held_out_warning(stats.get("not_held_out"))
    leakage = stats["leakage"]
    if not leakage["ok"]:
        found.append(f"{leakage['count']} group(s) of {stats['group_key']!r} appear in several splits (e.g. "
                     f"{leakage['groups_in_several_splits'][0]}); scores on val/test may be optimistic")
    if unassigned:
        found.append(f"{unassigned} row(s) have no split")
    return found


def _require_columns(items: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in items.columns]
    if missing:
        raise EarmarkError(f"the items table lacks column(s) {', '.join(missing)}; build it with "
                           "earmark.data.sources.load_table")
    if items.empty:
        raise EarmarkError("there are no items to split; check the data source")
