import numpy as np

from earmark.evaluation import classification_metrics, wilson_interval


def one_hot(ids, n):
    out = np.full((len(ids), n), 0.01)
    out[np.arange(len(ids)), ids] = 0.98
    return out


def test_perfect_predictions():
    y = np.array([0, 1, 2, 0, 1, 2] * 10)
    metrics = classification_metrics(y, one_hot(y, 3), ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    assert metrics["per_class"]["b"]["recall"] == 1.0
    assert metrics["confusion"][0] == [20, 0, 0]
    assert not [w for w in metrics["warnings"] if "collapse" in w]


def test_collapsed_model_is_flagged_and_baseline_shown_beside_it():
    y = np.array([0] * 60 + [1] * 40)
    predictions = one_hot(np.zeros(100, dtype=int), 2)
    metrics = classification_metrics(y, predictions, ["safe", "harmful"])
    assert metrics["accuracy"] == 0.6
    assert metrics["majority_baseline"]["accuracy"] == 0.6
    assert metrics["majority_baseline"]["label"] == "safe"
    assert any("collapse" in w for w in metrics["warnings"])
    assert any("near chance" in w for w in metrics["warnings"])


def test_tiny_test_sets_carry_a_wide_interval():
    low, high = wilson_interval(9, 10)
    assert low < 0.6 and high > 0.95
    y = np.arange(10) % 2
    metrics = classification_metrics(y, one_hot(y, 2), ["x", "y"])
    assert any("tiny test set" in w for w in metrics["warnings"])
