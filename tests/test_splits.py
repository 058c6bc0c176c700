"""Splits: stratified, grouped, predefined, by fold; stats that catch leakage; files round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from earmark.config import SplitConfig
from earmark.data.splits import assign_splits, kfold_assignments, load_splits, split_stats, write_splits
from earmark.errors import EarmarkError

RANDOM = SplitConfig(use_predefined=False)


def make_items(n_classes: int = 5, files_per_class: int = 40, n_speakers: int = 10, segments: int = 1,
               seed: int = 0) -> pd.DataFrame:
    """One row per segment; file i of class c is spoken by speaker i % n_speakers."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_classes):
        for i in range(files_per_class):
            n_segments = segments if segments == 1 else int(rng.integers(1, segments + 1))
            for s in range(n_segments):
                rows.append({"path": f"/data/c{c}/f{i}.wav", "label": f"class{c}", "group": f"spk{i % n_speakers}",
                             "fold": np.nan, "split": np.nan, "speaker": f"spk{i % n_speakers}", "segment": s})
    items = pd.DataFrame(rows)
    for column in ("path", "label", "group", "fold", "split"):
        items[column] = items[column].astype("str")
    return items


def split_of(result: pd.DataFrame, key: str) -> pd.Series:
    return result.groupby(key)["split"].nunique()


def test_stratified_sizes_follow_fractions_and_every_class_is_everywhere():
    items = make_items()
    result = assign_splits(items, SplitConfig(use_predefined=False, val_fraction=0.1, test_fraction=0.2), seed=0)
    sizes = result["split"].value_counts()
    assert set(result["split"]) == {"train", "val", "test"}
    assert abs(sizes["val"] - 20) <= 4 and abs(sizes["test"] - 40) <= 4
    per_class = pd.crosstab(result["label"], result["split"])
    assert (per_class > 0).all().all()
    stats = split_stats(result, None)
    assert stats["total"] == sizes.reindex(["train", "val", "test"]).to_dict()
    assert stats["leakage"]["ok"] and stats["warnings"] == []
    assert sum(stats["per_class"]["class0"].values()) == 40
    assert len(result) == len(items) and list(result.index) == list(items.index)
    assert items["split"].isna().all()  # the input is not modified


def test_zero_fraction_leaves_that_split_empty():
    result = assign_splits(make_items(), SplitConfig(use_predefined=False, val_fraction=0.0, test_fraction=0.25), 0)
    assert set(result["split"]) == {"train", "test"}
    assert "the val split is empty" in split_stats(result, None)["warnings"]


@pytest.mark.parametrize("group_by", ["speaker", "group"])
def test_grouped_split_never_puts_a_group_in_two_splits(group_by):
    items = make_items(n_speakers=10)
    result = assign_splits(items, SplitConfig(use_predefined=False, group_by=group_by), seed=3)
    assert (split_of(result, "speaker") == 1).all()
    assert set(result["split"]) == {"train", "val", "test"}
    stats = split_stats(result, group_by)
    assert stats["leakage"] == {"groups_in_several_splits": [], "count": 0, "ok": True}
    assert sum(stats["groups"].values()) == 10


def test_segments_of_a_chunked_file_stay_together():
    items = make_items(segments=4)
    assert items["path"].duplicated().any()
    result = assign_splits(items, RANDOM, seed=1)
    assert (split_of(result, "path") == 1).all()
    stats = split_stats(result, None)
    assert stats["leakage"]["ok"]
    assert sum(stats["files"].values()) == items["path"].nunique()


def test_leaky_predefined_split_is_reported():
    items = make_items(n_classes=2, files_per_class=10)
    items["split"] = np.where(items["label"] == "class0", "train", "test")  # every speaker in both
    stats = split_stats(assign_splits(items, SplitConfig(val_fraction=0), seed=0), "speaker")
    assert not stats["leakage"]["ok"] and "spk0" in stats["leakage"]["groups_in_several_splits"]
    assert any("several splits" in w for w in stats["warnings"])


def test_predefined_split_is_respected_and_val_comes_from_train_only():
    items = make_items()
    is_test = items.index % 5 == 0
    items["split"] = np.where(is_test, "test", "train")
    result = assign_splits(items, SplitConfig(val_fraction=0.1), seed=0)
    assert (result.loc[is_test, "split"] == "test").all()
    assert set(result.loc[~is_test, "split"]) == {"train", "val"}
    assert abs((result["split"] == "val").sum() - 0.1 * len(items)) <= 4
    assert result["label"][result["split"] == "val"].nunique() == 5
    assert "predefined" in result.attrs["split_strategy"]


def test_predefined_val_is_kept_as_is():
    items = make_items(n_classes=2, files_per_class=10)
    items["split"] = np.resize(["train", "train", "val", "test"], len(items))
    result = assign_splits(items, SplitConfig(), seed=0)
    assert list(result["split"]) == list(items["split"])


def test_partial_split_column_is_an_error():
    items = make_items(n_classes=2, files_per_class=10)
    items.loc[:4, "split"] = "test"
    with pytest.raises(EarmarkError, match="no value in the 'split' column.*use_predefined=false"):
        assign_splits(items, SplitConfig(), seed=0)


def test_fold_column_default_test_fold_is_the_last_numerically():
    items = make_items()
    items["fold"] = (items.index % 10 + 1).astype(str)  # "1".."10": "10" sorts last numerically, "9" as text
    result = assign_splits(items, SplitConfig(val_fraction=0.1), seed=0)
    assert set(result.loc[items["fold"] == "10", "split"]) == {"test"}
    assert (result.loc[items["fold"] != "10", "split"] != "test").all()
    assert (result["split"] == "val").sum() > 0


def test_fold_column_with_test_fold_and_val_fold():
    items = make_items()
    items["fold"] = (items.index % 5 + 1).astype(str)
    result = assign_splits(items, SplitConfig(test_fold="3", val_fold="4"), seed=0)
    expected = np.select([items["fold"] == "3", items["fold"] == "4"], ["test", "val"], "train")
    assert list(result["split"]) == list(expected)
    with pytest.raises(EarmarkError, match="split.test_fold='7'.*1, 2, 3, 4, 5"):
        assign_splits(items, SplitConfig(test_fold="7"), seed=0)


def test_a_class_too_small_for_every_split_trains_and_is_named_not_an_error():
    """One rare file cannot be in train, val and test: it trains, and the stats say why it is not tested."""
    from earmark.data.split_plan import degenerate

    items = make_items(n_classes=3, files_per_class=20)
    rare = make_items(n_classes=1, files_per_class=1).assign(label="rare", path="/data/rare/f0.wav")
    items = pd.concat([items, rare], ignore_index=True)
    result = assign_splits(items, RANDOM, seed=0)
    assert result.loc[result["label"] == "rare", "split"].tolist() == ["train"]
    assert (pd.crosstab(result["label"], result["split"]).drop(index="rare") > 0).all().all()
    stats = split_stats(result, None)
    message = next(w for w in stats["warnings"] if "cannot be held out" in w)
    for fragment in ("1 class(es) have fewer than 3 files", "'rare' (train only)", "Add recordings",
                     "split.val_fraction"):
        assert fragment in message, message
    assert not degenerate(stats)  # named once, with its own fix; the other classes are scored fairly


def test_a_class_of_two_groups_goes_to_train_and_test_keeping_groups_whole():
    """ESC-50-like: every clip of a source recording has one class; 'rare' has two recordings, needs three."""
    items = make_items(n_classes=3, files_per_class=20)
    items["rec"] = items["path"]
    rare = pd.DataFrame({"path": [f"/data/rare/f{i}.wav" for i in range(6)], "label": "rare", "group": np.nan,
                         "fold": np.nan, "split": np.nan, "speaker": "x", "segment": 0,
                         "rec": ["r1", "r1", "r1", "r2", "r2", "r2"]})
    items = pd.concat([items, rare.astype({c: "str" for c in ("path", "label", "fold", "split")})], ignore_index=True)
    result = assign_splits(items, SplitConfig(use_predefined=False, group_by="rec"), seed=4)
    assert sorted(result.loc[result["label"] == "rare", "split"].unique()) == ["test", "train"]
    assert (split_of(result, "rec") == 1).all()
    assert result.attrs["not_held_out"]["classes"] == {"rare": "train and test"}
    assert any("'rare' (train and test)" in w for w in split_stats(result, "rec")["warnings"])


def test_too_few_groups_per_class_when_grouping():
    items = make_items(n_classes=2, files_per_class=20, n_speakers=2)
    with pytest.raises(EarmarkError, match="'class0' \\(2 groups of 'speaker'"):
        assign_splits(items, SplitConfig(use_predefined=False, group_by="speaker"), seed=0)


def test_group_by_must_be_a_column():
    with pytest.raises(EarmarkError, match="split.group_by='speakr'.*speaker"):
        assign_splits(make_items(), SplitConfig(group_by="speakr"), seed=0)


def test_test_split_without_a_class_is_a_warning():
    items = make_items(n_classes=3, files_per_class=10)
    items["split"] = np.where((items["label"] != "class2") & (items.index % 2 == 0), "test", "train")
    stats = split_stats(assign_splits(items, SplitConfig(), seed=0), None)
    assert any("test split has no examples of 1 class(es): class2" in w for w in stats["warnings"])


def test_same_seed_same_split_other_seed_other_split():
    items = make_items()
    first = assign_splits(items, RANDOM, seed=7)["split"]
    assert first.equals(assign_splits(items, RANDOM, seed=7)["split"])
    assert not first.equals(assign_splits(items, RANDOM, seed=8)["split"])
    grouped = SplitConfig(use_predefined=False, group_by="speaker")
    assert assign_splits(items, grouped, seed=7)["split"].equals(assign_splits(items, grouped, seed=7)["split"])


def test_write_and_load_round_trip(tmp_path):
    items = make_items(n_classes=3, files_per_class=10)
    items["label"] = items["label"].str.replace("class", "")  # "0", "1", "2": must come back as text
    items.loc[0, "group"] = np.nan
    result = assign_splits(items, RANDOM, seed=0)
    stats = split_stats(result, None)
    write_splits(result, tmp_path / "splits", stats)

    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [  # the marker: `earmark clean` may remove it
        ".earmark-generated", "split_stats.json", "test.csv", "train.csv", "val.csv"]
    assert json.loads((tmp_path / "splits" / "split_stats.json").read_text()) == stats
    loaded = load_splits(tmp_path / "splits")
    expected = result.sort_values(["split", "path"]).reset_index(drop=True)
    loaded = loaded.sort_values(["split", "path"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded, expected, check_dtype=False)
    for column in ("path", "label", "group", "fold", "split"):
        assert pd.api.types.is_string_dtype(loaded[column]), column
    assert loaded["group"].isna().sum() == 1 and loaded["fold"].isna().all()
    with pytest.raises(EarmarkError, match="missing"):
        load_splits(tmp_path / "elsewhere")


def test_kfold_assignments_are_grouped_and_stratified():
    items = make_items(n_classes=4, files_per_class=20, n_speakers=10)
    folds = kfold_assignments(items, k=5, group_key="speaker", seed=0)
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert (folds.groupby(items["speaker"]).nunique() == 1).all()
    assert (pd.crosstab(items["label"], folds) > 0).all().all()
    assert folds.equals(kfold_assignments(items, k=5, group_key="speaker", seed=0))
    with pytest.raises(EarmarkError, match="k=11"):
        kfold_assignments(items, k=11, group_key="speaker", seed=0)


def test_the_bundled_demo_split_shares_no_speaker():
    """`earmark train` with no config: no speaker in two splits, so its first run warns of no leakage."""
    from earmark.config import load_config
    from earmark.data.sources import load_table

    config = load_config()
    items = assign_splits(load_table(config.data), config.split, config.seed)
    stats = split_stats(items, config.split.group_by)
    assert stats["leakage"]["ok"] and stats["warnings"] == []
    speakers = items.groupby("speaker")["split"].nunique()
    assert (speakers == 1).all() and set(items["split"]) == {"train", "val", "test"}
