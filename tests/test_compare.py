"""`earmark compare`: paired tests that can tell a real gap from chance, refusals on mismatched test sets,
and the command end to end on two tiny real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from earmark import api
from earmark.errors import EarmarkError
from earmark.evaluate.compare import compare_runs
from earmark.evaluate.paired_stats import mcnemar_exact, paired_bootstrap

LABELS = ["bird", "car", "rain"]
N_CLIPS = 120


def truth() -> np.ndarray:
    return np.arange(N_CLIPS) % len(LABELS)  # (N,) class ids, 40 clips per class


def predictions_right_on(correct: np.ndarray) -> np.ndarray:
    """Class ids that are right exactly where `correct` is True (wrong: the next class)."""
    y = truth()
    return np.where(correct, y, (y + 1) % len(LABELS))


def write_run(folder: Path, predicted: np.ndarray, labels=LABELS, paths=None, true=None, shuffle_seed=None,
              names=LABELS) -> Path:
    """A folder with predictions.csv (+ metrics.json) as `earmark train` writes them; class k is `names[k]`."""
    folder.mkdir(parents=True)
    true = truth() if true is None else true
    table = pd.DataFrame({"path": paths or [f"/data/clip_{i // 2}.wav" for i in range(N_CLIPS)],
                          "true": np.asarray(names)[true], "predicted": np.asarray(names)[predicted]})
    table.insert(3, "start_s", [0.5 * (i % 2) for i in range(N_CLIPS)])  # two chunks per file
    for k, label in enumerate(labels):
        table[f"p_{label}"] = (predicted == k).astype(float) if k < len(names) else 0.0
    if shuffle_seed is not None:  # row order must not matter: rows are matched by (path, start_s)
        table = table.sample(frac=1.0, random_state=shuffle_seed)
    table.to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"epochs": 3, "fit_seconds": 1.5}))
    return folder


def outcomes(n_both: int, n_only_a: int, n_only_b: int) -> tuple[np.ndarray, np.ndarray]:
    """correct_a, correct_b (N,) with the given concordant/discordant counts; the rest both wrong."""
    a, b = np.zeros(N_CLIPS, bool), np.zeros(N_CLIPS, bool)
    a[:n_both] = b[:n_both] = True
    a[n_both:n_both + n_only_a] = True
    b[n_both + n_only_a:n_both + n_only_a + n_only_b] = True
    return a, b


def test_mcnemar_tells_a_real_gap_from_chance():
    significant = mcnemar_exact(*outcomes(60, 0, 40))
    assert significant["only_b_correct"] == 40 and significant["only_a_correct"] == 0
    assert significant["p_value"] == pytest.approx(2 * 0.5 ** 40)
    chance = mcnemar_exact(*outcomes(80, 6, 5))
    assert chance["p_value"] == pytest.approx(1.0)
    assert mcnemar_exact(*outcomes(60, 3, 12))["p_value"] == pytest.approx(0.03515625)  # 2·P(X≤3), X~B(15,½)
    assert mcnemar_exact(*outcomes(50, 0, 0))["p_value"] == 1.0  # identical outcomes


def test_paired_bootstrap_interval_excludes_zero_only_for_a_real_gap():
    y = truth()
    pred_a, pred_b = (predictions_right_on(c) for c in outcomes(60, 0, 40))
    gap = paired_bootstrap(y, pred_a, pred_b, 3, n_resamples=2000, seed=0)
    assert gap["accuracy"]["difference"] == pytest.approx(40 / 120)
    assert 0 < gap["accuracy"]["ci95"][0] < 40 / 120 < gap["accuracy"]["ci95"][1]
    assert gap["accuracy"]["excludes_zero"] and gap["macro_f1"]["excludes_zero"]
    expected_f1 = (f1_score(y, pred_b, average="macro") - f1_score(y, pred_a, average="macro"))
    assert gap["macro_f1"]["difference"] == pytest.approx(expected_f1)
    assert paired_bootstrap(y, pred_a, pred_b, 3, n_resamples=2000, seed=0) == gap  # seeded
    pred_a, pred_b = (predictions_right_on(c) for c in outcomes(80, 6, 5))
    same = paired_bootstrap(y, pred_a, pred_b, 3, n_resamples=2000, seed=0)
    low, high = same["accuracy"]["ci95"]
    assert low < 0 < high and not same["accuracy"]["excludes_zero"]


def test_compare_runs_aligns_clips_and_reports_differences(tmp_path):
    a, b = outcomes(60, 0, 40)
    base = write_run(tmp_path / "basic", predictions_right_on(a))
    better = write_run(tmp_path / "personalized", predictions_right_on(b), shuffle_seed=3)
    a_c, c = outcomes(60, 6, 5)
    similar = write_run(tmp_path / "similar", predictions_right_on(c))
    comparison = compare_runs([base, better, similar])
    assert comparison.n_clips == N_CLIPS and comparison.labels == LABELS
    assert [row["accuracy"] for row in comparison.runs] == pytest.approx([0.5, 100 / 120, 65 / 120])
    assert comparison.runs[0]["epochs"] == 3
    better_row, similar_row = comparison.differences
    assert better_row["significant"] and better_row["mcnemar"]["p_value"] < 1e-9
    assert "more accurate" in better_row["verdict"]
    assert not similar_row["significant"] and "no significant difference" in similar_row["verdict"]
    per_class = {row["class"]: row for row in comparison.per_class}
    assert per_class["bird"]["support"] == 40
    assert per_class["bird"]["Δrecall personalized"] == pytest.approx(
        per_class["bird"]["recall personalized"] - per_class["bird"]["recall basic"])


def test_labels_that_look_like_numbers_or_missing_values_stay_labels(tmp_path):
    from earmark.reports.crossval import pooled_predictions

    names = ["01", "NA", "1"]  # read as numbers, "01" and "1" would merge; read with NA handling, "NA" would vanish
    a, b = outcomes(60, 0, 40)
    runs = [write_run(tmp_path / "a", predictions_right_on(a), labels=names, names=names),
            write_run(tmp_path / "b", predictions_right_on(b), labels=names, names=names)]
    comparison = compare_runs(runs)
    assert comparison.labels == names
    assert [row["accuracy"] for row in comparison.runs] == [pytest.approx(60 / 120), pytest.approx(100 / 120)]
    assert {row["class"]: row["support"] for row in comparison.per_class} == {"01": 40, "NA": 40, "1": 40}
    pooled = pooled_predictions(runs)  # cross-validation reads fold predictions the same way
    assert set(pooled["true"]) == set(names) and set(pooled["predicted"]) == set(names)


def test_api_compare_writes_json_markdown_html_and_never_overwrites(tmp_path):
    a, b = outcomes(60, 0, 40)
    runs = [write_run(tmp_path / "runs" / "basic", predictions_right_on(a)),
            write_run(tmp_path / "runs" / "gpt2", predictions_right_on(b))]
    first = api.compare(runs)
    second = api.compare(runs)
    assert first.out_dir != second.out_dir and first.out_dir.parent == tmp_path / "runs"
    assert first.out_dir.name.startswith("compare-basic-vs-gpt2-")
    saved = json.loads((first.out_dir / "compare.json").read_text())
    assert saved["differences"][0]["run"] == "gpt2" and saved["differences"][0]["significant"]
    assert "McNemar" in (first.out_dir / "compare.md").read_text()
    page = (first.out_dir / "compare.html").read_text()
    assert "data:image/png;base64," in page and "How to read this" in page
    with pytest.raises(EarmarkError, match="never overwrites"):
        api.compare(runs, out_dir=first.out_dir)


def test_refuses_runs_scored_on_different_test_sets(tmp_path):
    y = truth()
    reference = write_run(tmp_path / "a", y)
    other_clips = write_run(tmp_path / "b", y, paths=[f"/data/other_{i // 2}.wav" for i in range(N_CLIPS)])
    with pytest.raises(EarmarkError, match=r"b was scored on different test clips than .*a \(120 vs 120"):
        compare_runs([reference, other_clips])
    more_labels = write_run(tmp_path / "c", y, labels=LABELS + ["siren"])
    with pytest.raises(EarmarkError, match=r"different label sets .*only in c: \['siren'\]"):
        compare_runs([reference, more_labels])
    relabelled = write_run(tmp_path / "d", y, true=(y + 1) % 3)
    with pytest.raises(EarmarkError, match="different true labels"):
        compare_runs([reference, relabelled])
    with pytest.raises(EarmarkError, match="at least two runs"):
        compare_runs([reference])
    with pytest.raises(EarmarkError, match="no predictions.csv"):
        compare_runs([reference, tmp_path])


def earmark(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with stdout a pipe and no COLUMNS, as in a log file."""
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "earmark", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_compare_command_end_to_end_on_two_real_runs(tmp_path):
    from tiny_runs import train_tiny_run

    basic = train_tiny_run(tmp_path, "one-epoch", max_epochs=1).run_dir
    longer = train_tiny_run(tmp_path, "two-epochs", max_epochs=2).run_dir
    result = earmark("compare", str(basic), str(longer), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "McNemar p" in result.stdout and "two-epochs" in result.stdout and "compare.html" in result.stdout
    assert "Δ accuracy vs one-epoch (95% CI)" in result.stdout  # piped: the table is not squashed to 80 columns
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["n_clips"] == json.loads((basic / "metrics.json").read_text())["n_clips"]
    assert [row["run"] for row in saved["runs"]] == ["one-epoch", "two-epochs"]
    for row in saved["runs"]:  # recomputed from predictions.csv, it matches what training reported
        metrics = json.loads((Path(row["folder"]) / "metrics.json").read_text())
        assert row["accuracy"] == pytest.approx(metrics["accuracy"])
        assert row["macro_f1"] == pytest.approx(metrics["macro_f1"])
    stranger = write_run(tmp_path / "stranger", truth())
    refused = earmark("compare", str(basic), str(stranger), cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error:") and "Traceback" not in refused.stderr
    assert "different" in refused.stderr


def test_compare_says_when_an_interval_had_to_be_widened_to_hold_its_estimate(tmp_path):
    """60 classes × 2 clips: resamples miss classes, so the bootstrap of Δ macro F1 is biased; the report
    still holds the estimate in its interval and warns instead of printing one beside it."""
    from earmark.evaluate.compare import compare_runs

    names = [f"class{k:02d}" for k in range(60)]
    true = np.arange(N_CLIPS) // 2
    rng = np.random.default_rng(0)
    weak = np.where(rng.random(N_CLIPS) < 0.3, true, (true + 1) % 60)
    first = write_run(tmp_path / "weak", weak, labels=names, true=true, names=names)
    second = write_run(tmp_path / "perfect", true.copy(), labels=names, true=true, names=names)
    comparison = compare_runs([first, second], n_resamples=1000)
    diff = comparison.differences[0]
    for metric in ("accuracy", "macro_f1"):
        low, high = diff[f"{metric}_difference_ci95"]
        assert low <= diff[f"{metric}_difference"] <= high, (metric, diff)
    assert diff["macro_f1_difference_method"] != "BCa"
    assert any("macro_f1 interval" in warning for warning in comparison.warnings), comparison.warnings
