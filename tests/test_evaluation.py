import numpy as np
import pytest

from earmark.data.labels import class_ids
from earmark.errors import EarmarkError
from earmark.evaluate.metrics import classification_metrics, label_metrics, wilson_interval


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


# --- every metric of an evaluation -------------------------------------------------------------------------

def test_precision_recall_f1_top_k_and_chance_match_sklearn():
    from sklearn.metrics import f1_score, precision_score, recall_score, top_k_accuracy_score

    rng = np.random.default_rng(0)
    y = np.arange(120) % 6
    probabilities = rng.dirichlet(np.ones(6), 120)
    probabilities[np.arange(120), y] += rng.uniform(0, 0.6, 120)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = [f"c{i}" for i in range(6)]
    metrics = classification_metrics(y, probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    for average in ("macro", "weighted"):
        assert metrics[f"{average}_precision"] == pytest.approx(precision_score(y, predicted, average=average))
        assert metrics[f"{average}_recall"] == pytest.approx(recall_score(y, predicted, average=average))
        assert metrics[f"{average}_f1"] == pytest.approx(f1_score(y, predicted, average=average))
    assert set(metrics["top_k_accuracy"]) == {"3", "5"}
    for k in (3, 5):
        assert metrics["top_k_accuracy"][str(k)] == pytest.approx(top_k_accuracy_score(y, probabilities, k=k))
    assert metrics["chance_accuracy"] == pytest.approx(1 / 6)
    assert metrics["prior_chance_accuracy"] == pytest.approx(1 / 6)  # balanced classes
    assert classification_metrics(y % 3, probabilities[:, :3], labels[:3])["top_k_accuracy"] == {}  # k >= classes


def test_collapse_fires_on_a_collapsed_model_and_not_on_a_good_or_an_imbalanced_one():
    y = np.array([0, 1, 2] * 20)
    always_first = np.tile([0.5, 0.3, 0.2], (60, 1))
    collapsed = classification_metrics(y, always_first, ["a", "b", "c"])
    assert any(w.startswith("collapse: 100% of predictions are 'a'") for w in collapsed["warnings"])
    good = classification_metrics(y, one_hot(y, 3), ["a", "b", "c"])
    assert not [w for w in good["warnings"] if "collapse" in w]
    imbalanced = np.array([0] * 95 + [1] * 5)  # a correct model on a test set that is 95% one class
    fine = classification_metrics(imbalanced, one_hot(imbalanced, 2), ["common", "rare"])
    assert not [w for w in fine["warnings"] if "collapse" in w]


def test_binary_roc_auc_and_average_precision_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from earmark.evaluate.binary import binary_metrics

    y = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    score = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.55, 0.3, 0.05])
    result = binary_metrics(y, np.column_stack([1 - score, score]), ["no", "yes"], 1, 0.5, "balanced_accuracy")
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, score))
    assert result["average_precision"] == pytest.approx(average_precision_score(y, score))
    assert result["positive_label"] == "yes" and result["prevalence"] == 0.5
    at = result["at_threshold"]  # predicted positive: 0.8, 0.9, 0.6, 0.55
    assert (at["tp"], at["fp"], at["fn"], at["tn"]) == (3, 1, 2, 4)
    assert at["recall"] == pytest.approx(0.6) and at["precision"] == pytest.approx(0.75)


def test_the_decision_threshold_maximises_the_validation_metric():
    from earmark.evaluate.binary import at_threshold, choose_threshold

    positive = np.array([False] * 6 + [True] * 4)
    score = np.array([0.05, 0.1, 0.12, 0.15, 0.2, 0.22, 0.25, 0.35, 0.4, 0.45])  # positives all below 0.5
    threshold, value = choose_threshold(positive, score, "balanced_accuracy")
    assert threshold == pytest.approx(0.235) and value == pytest.approx(1.0)  # halfway between 0.22 and 0.25
    assert at_threshold(positive, score, 0.5)["balanced_accuracy"] == pytest.approx(0.5)  # argmax misses all
    f1_threshold, f1 = choose_threshold(positive, score, "f1")
    assert f1 == pytest.approx(1.0) and at_threshold(positive, score, f1_threshold)["f1"] == pytest.approx(1.0)
    assert choose_threshold(np.zeros(4, bool), score[:4]) == (0.5, None)  # one class: nothing to choose


def test_confusion_plots_stay_readable_at_fifty_classes(tmp_path):
    from PIL import Image

    from earmark.reports.plots import plot_confusion, plot_per_class

    labels = [f"class_with_a_long_name_{i}" for i in range(50)]
    counts = (np.eye(50, dtype=int) * 7 + np.roll(np.eye(50, dtype=int), 1, axis=1)).tolist()
    plot_confusion(counts, labels, tmp_path / "c.png")
    plot_confusion(counts, labels, tmp_path / "n.png", normalized=True)
    width, height = Image.open(tmp_path / "c.png").size
    assert width / 50 >= 35 and height / 50 >= 35  # at least 35 pixels per cell for its number
    per_class = {label: {"precision": 1.0, "recall": i / 50, "f1": i / 50, "support": 3} for i, label in enumerate(labels)}
    plot_per_class(per_class, tmp_path / "per_class.png")
    assert (tmp_path / "per_class.png").stat().st_size > 0


def test_markdown_and_printed_summaries_hold_every_section():
    from earmark.reports.markdown import markdown_report, summary_lines

    y = np.array([0, 1] * 20)
    metrics = classification_metrics(y, one_hot(y, 2), ["no", "yes"])
    metrics.update(
        notes=["calibration skipped: no validation split"],
        clip_level={"mean_probability": {"n_files": 10, "accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0},
                    "majority_vote": {"n_files": 10, "accuracy": 0.9, "balanced_accuracy": 0.9, "macro_f1": 0.9},
                    "chunks_per_file": 4.0},
        per_group={"speaker": {"groups": {"ann": {"n_clips": 30, "accuracy": 1.0}, "bob": {"n_clips": 10,
                                                                                          "accuracy": 0.5}},
                               "worst": ["bob", "ann"], "n_missing": 0}},
        per_group_plots={"speaker": "per_group_speaker.png"})
    text = markdown_report("run", metrics, {"run directory": "runs/run"})
    for part in ("chance", "## Chunks and files", "majority vote", "## Per speaker", "| bob | 10 | 0.5000 |",
                 "per_group_speaker.png", "confusion_normalized.png", "per_class.png", "calibration skipped"):
        assert part in text, part
    printed = "\n".join(summary_lines(metrics))
    assert "worst bob 0.500" in printed and "by majority vote" in printed


def test_the_validation_threshold_is_reported_as_a_recommendation():
    from earmark.evaluate.binary import binary_metrics
    from earmark.reports.markdown import markdown_report, summary_lines

    y = np.array([0, 1] * 20)
    probabilities = one_hot(y, 2)
    metrics = classification_metrics(y, probabilities, ["no", "yes"])
    metrics["binary"] = binary_metrics(y, probabilities, ["no", "yes"], 1, 0.3, "balanced_accuracy")
    text = markdown_report("run", metrics, {})
    assert "The threshold is a recommendation" in text and "most probable class (argmax)" in text
    assert "if you applied the recommended threshold 0.3000" in "\n".join(summary_lines(metrics))


def test_label_metrics_and_class_ids_are_shared_by_every_score():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    y_true, y_pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    scores = label_metrics(y_true, y_pred, 4)  # class 3 never occurs: it counts 0 in the macro F1
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2, 3], average="macro",
                                                        zero_division=0))
    assert label_metrics(np.array([], int), np.array([], int), 3) == {"accuracy": 0.0, "balanced_accuracy": 0.0,
                                                                      "macro_f1": 0.0}
    assert classification_metrics(y_true, one_hot(y_pred, 4), list("abcd"))["macro_f1"] == scores["macro_f1"]
    assert class_ids(["01", "NA", "1", "01"], ["01", "1", "NA"]).tolist() == [0, 2, 1, 0]  # text, never numbers
    with pytest.raises(EarmarkError, match="'2' are not among the classes 01, 1"):
        class_ids(["01", "2"], ["01", "1"])


def test_a_thousand_classes_plot_and_tabulate_in_bounded_memory(tmp_path):
    import warnings

    import pandas as pd
    from PIL import Image

    from earmark.evaluate.predictions import predictions_table
    from earmark.reports.plots import MAX_CLASS_BARS, plot_confusion, plot_per_class

    n = 1000
    labels = [f"species_{i:04d}" for i in range(n)]
    counts = np.eye(n, dtype=int) * 2
    plot_confusion(counts.tolist(), labels, tmp_path / "c.png")
    width, height = Image.open(tmp_path / "c.png").size
    assert width * height < 4000 ** 2  # a 1,000-class image is a fixed-size picture, not a 40,000-px canvas
    per_class = {label: {"recall": 1.0, "f1": 1.0 - i / n, "support": 2} for i, label in enumerate(labels)}
    plot_per_class(per_class, tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").size[1] < 40 * MAX_CLASS_BARS * 3  # the worst classes, not all 1,000
    items = pd.DataFrame({"path": [f"{i}.wav" for i in range(50)], "label": labels[:50]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)  # one column at a time fragments the frame
        table = predictions_table(items, np.full((50, n), 1.0 / n), labels, None, 0.0)
    assert table.shape == (50, 3 + n) and table.columns[-1] == f"p_{labels[-1]}"
