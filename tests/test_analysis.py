"""Per-group accuracy, leakage between train and test, and chunk → file aggregation."""

import numpy as np
import pandas as pd
import pytest

from earmark.errors import EarmarkError
from earmark.evaluate.analysis import (
    aggregate_chunks,
    analysed_columns,
    clip_level_metrics,
    leakage,
    leakage_warnings,
    per_group_accuracy,
)


def items(paths, speakers, group=None):
    table = pd.DataFrame({"path": paths, "label": ["a"] * len(paths), "speaker": speakers})
    table["group"] = group if group is not None else np.nan
    return table


def test_per_group_accuracy_names_the_worst_groups_and_skips_missing_values():
    correct = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    groups = pd.Series(["ann", "ann", "ann", "bob", "bob", "bob", "cy", None, "nan"])
    result = per_group_accuracy(correct, groups, worst_n=2)
    assert result["groups"]["ann"] == {"n_clips": 3, "accuracy": 1.0}
    assert result["groups"]["bob"]["accuracy"] == pytest.approx(1 / 3)
    assert result["worst"] == ["cy", "bob"]  # 0.0, then 0.33
    assert result["n_missing"] == 2 and set(result["groups"]) == {"ann", "bob", "cy"}


def test_leakage_fires_when_a_speaker_is_in_train_and_test_and_not_otherwise():
    train = items(["t1.wav", "t2.wav", "t3.wav"], ["george", "lucas", "yweweler"])
    clean_test = items(["x1.wav", "x2.wav"], ["jackson", "nicolas"])
    assert leakage(train, clean_test, None) == {}
    assert leakage_warnings({}) == []
    leaky_test = items(["x1.wav", "x2.wav"], ["jackson", "george"])
    shared = leakage(train, leaky_test, None)
    assert shared == {"speaker": ["george"]}
    (warning,) = leakage_warnings(shared)
    assert warning.startswith("leakage:") and "george" in warning and "split.group_by=speaker" in warning


def test_leakage_checks_the_split_column_the_group_column_once_and_files():
    train = items(["t1.wav", "t2.wav"], ["s1", "s2"], group=["s1", "s2"])
    train["site"] = ["north", "south"]
    test = items(["t1.wav", "x.wav"], ["s9", "s2"], group=["s9", "s2"])
    test["site"] = ["north", "east"]
    shared = leakage(train, test, "site")
    assert shared == {"site": ["north"], "group": ["s2"], "path": ["t1.wav"]}  # speaker == group: reported once
    assert any("file(s) are in both train and test" in w for w in leakage_warnings(shared))


def test_analysed_columns_default_to_split_group_and_group_column():
    table = items(["a", "b"], ["s1", "s2"], group=["g1", "g2"])
    table["site"] = ["x", "y"]
    assert analysed_columns(table, "site", []) == ["site", "group"]
    assert analysed_columns(table, None, ["speaker"]) == ["speaker", "group"]
    assert analysed_columns(items(["a"], ["s1"]), None, []) == []  # an empty group column is not analysed
    with pytest.raises(EarmarkError, match="available: path, label, speaker"):
        analysed_columns(table, None, ["actor"])


def test_mean_probability_and_majority_vote_differ_on_a_constructed_file():
    # file A: two chunks narrowly say class 0, one chunk says class 1 with near certainty
    probabilities = np.array([[0.55, 0.45], [0.55, 0.45], [0.01, 0.99],  # file A
                              [0.9, 0.1]])  # file B
    paths = ["A.wav", "A.wav", "A.wav", "B.wav"]
    aggregated = aggregate_chunks(paths, probabilities)
    assert list(aggregated["paths"]) == ["A.wav", "B.wav"]
    assert aggregated["majority_vote"].tolist() == [0, 0]
    assert aggregated["mean_probability"].argmax(axis=1).tolist() == [1, 0]
    assert aggregated["n_chunks"].tolist() == [3, 1]
    truth = np.array([1, 1, 1, 0])  # file A is class 1
    metrics = clip_level_metrics(paths, truth, probabilities, ["x", "y"])
    assert metrics["mean_probability"]["accuracy"] == 1.0 and metrics["majority_vote"]["accuracy"] == 0.5
    assert metrics["mean_probability"]["n_files"] == 2 and metrics["chunks_per_file"] == 2.0


def test_a_vote_tie_goes_to_the_more_probable_class():
    probabilities = np.array([[0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    assert aggregate_chunks(["f", "f"], probabilities)["majority_vote"].tolist() == [1]
