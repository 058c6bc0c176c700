"""Cross-validation on tiny synthetic tones: grouped folds, predefined folds, the summary, decode-once, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.config import load_config
from earmark.data import cache as cache_module
from earmark.data.audio import load_segments
from earmark.errors import EarmarkError

SPEAKERS = ("ann", "bob", "cy", "dee")
N_FILES = len(TONES_HZ) * len(SPEAKERS) * 3


def write_tone_table(root: Path) -> Path:
    """3 tone classes × 4 speakers × 3 takes, 0.25 s at 8 kHz; metadata.csv with speaker and fold columns."""
    rows = []
    (root / "audio").mkdir(parents=True)
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        for speaker_index, speaker in enumerate(SPEAKERS):
            for take in range(3):
                name = f"audio/{label}_{speaker}_{take}.wav"
                seed = class_index * 100 + speaker_index * 10 + take
                sf.write(root / name, tone_clip(frequency, 8000, 0.25, seed), 8000)
                rows.append({"path": name, "label": label, "speaker": speaker, "fold": speaker_index % 3 + 1})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root / "metadata.csv"


def tiny_overrides(base: Path, metadata: Path) -> list[str]:
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=csv", f"data.path={metadata}",
            "data.sample_rate_hz=8000", "data.duration_s=0.25", f"data.cache_dir={base / 'ws' / 'cache'}",
            "data.workers=1", "split.val_fraction=0.2", "features.n_fft=256", "features.n_mels=16",
            "model.params.width=4", "train.max_epochs=1", "train.batch_size=8", "train.lr=0.005",
            "train.progress=false", "name=tones"]


@pytest.fixture(scope="module")
def grouped_cv(tmp_path_factory):
    """One 3-fold CV grouped by speaker, counting every file the cache decodes."""
    base = tmp_path_factory.mktemp("cv")
    metadata = write_tone_table(base / "data")
    config = load_config(overrides=tiny_overrides(base, metadata))
    decoded: list[str] = []

    def counting_load_segments(path, data):
        decoded.append(str(path))
        return load_segments(path, data)

    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_module, "load_segments", counting_load_segments)
        result = api.cv(config, folds=3, group_by="speaker", log=lines.append)
    return result, config, decoded, lines


def fold_tests(cv_dir: Path) -> dict[str, pd.DataFrame]:
    return {path.parent.parent.name: pd.read_csv(path, dtype=str)
            for path in sorted(cv_dir.glob("fold-*/splits/test.csv"))}


@pytest.mark.slow
def test_each_fold_is_a_complete_run_under_one_cv_folder(grouped_cv):
    result, _, _, lines = grouped_cv
    assert result.cv_dir.name == "tones-cv"
    assert sorted(p.name for p in result.cv_dir.glob("fold-*")) == ["fold-1", "fold-2", "fold-3"]
    for run in result.cv_dir.glob("fold-*"):
        for name in ("config.yaml", "labels.json", "checkpoints/best.ckpt", "metrics.json", "predictions.csv",
                     "report.md", "confusion.png", "splits/train.csv", "splits/val.csv", "splits/test.csv"):
            assert (run / name).is_file(), f"{run.name}/{name}"
    for name in ("cv_summary.json", "cv_report.md", "cv_report.html", "cv_confusion.png", "folds.csv",
                 "config.yaml", "cv_plan.json"):
        assert (result.cv_dir / name).is_file(), name
    assert sum(line.startswith("fold ") and "accuracy" in line for line in lines) == 3  # a progress line per fold
    assert load_config(result.cv_dir / "config.yaml").split.group_by is None  # the config as given
    for run in result.cv_dir.glob("fold-*"):  # `--group-by speaker`, given to cv only, reaches every fold
        assert load_config(run / "config.yaml").split.group_by == "speaker"
        assert "speaker" in json.loads((run / "metrics.json").read_text())["per_group"]
    html = (result.cv_dir / "cv_report.html").read_text()
    assert "data:image/png;base64," in html and "Per fold" in html


@pytest.mark.slow
def test_test_folds_are_disjoint_cover_the_data_and_keep_speakers_apart(grouped_cv):
    result, _, _, _ = grouped_cv
    tests = fold_tests(result.cv_dir)
    paths = [set(table["path"]) for table in tests.values()]
    assert sum(len(p) for p in paths) == N_FILES and len(set().union(*paths)) == N_FILES  # disjoint and complete
    speakers = [set(table["speaker"]) for table in tests.values()]
    for i in range(len(speakers)):
        for j in range(i + 1, len(speakers)):
            assert not speakers[i] & speakers[j], "a speaker is in two folds' test sets"
    for run in result.cv_dir.glob("fold-*"):  # nothing leaks into validation either
        by_split = {s: set(pd.read_csv(run / "splits" / f"{s}.csv", dtype=str)["speaker"])
                    for s in ("train", "val", "test")}
        assert by_split["train"] and by_split["val"] and by_split["test"]
        assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                    or by_split["val"] & by_split["test"])
        row = next(r for r in result.summary["per_fold"] if r["fold"] == run.name.removeprefix("fold-"))
        assert row["held_out_groups"] == sorted(by_split["test"])


@pytest.mark.slow
def test_summary_mean_std_and_pooled_confusion_come_from_the_folds(grouped_cv):
    result, _, _, _ = grouped_cv
    summary = json.loads((result.cv_dir / "cv_summary.json").read_text())
    fold_metrics = [json.loads((result.cv_dir / f"fold-{row['fold']}" / "metrics.json").read_text())
                    for row in summary["per_fold"]]
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        values = [m[metric] for m in fold_metrics]
        assert summary[metric]["mean"] == pytest.approx(np.mean(values))
        assert summary[metric]["std"] == pytest.approx(np.std(values, ddof=1))
        assert [row[metric] for row in summary["per_fold"]] == values
    pooled = np.asarray(summary["pooled"]["confusion"])
    assert pooled.tolist() == np.sum([m["confusion"] for m in fold_metrics], axis=0).tolist()
    assert pooled.sum() == N_FILES == summary["pooled"]["n_clips"]
    assert summary["pooled"]["accuracy"] == pytest.approx(np.trace(pooled) / N_FILES)
    assert [row["n_test"] for row in summary["per_fold"]] == [m["n_clips"] for m in fold_metrics]
    assert any("tiny test set" in w for w in summary["warnings"])  # fold warnings are carried up
    assert summary["total_seconds"] > 0
    markdown = (result.cv_dir / "cv_report.md").read_text()
    assert f"{summary['accuracy']['mean']:.4f} ± {summary['accuracy']['std']:.4f}" in markdown


@pytest.mark.slow
def test_audio_is_decoded_once_for_all_folds(grouped_cv):
    result, _, decoded, _ = grouped_cv
    assert len(decoded) == N_FILES and len(set(decoded)) == N_FILES  # every file once, not once per fold
    assert result.summary["decoded"] == {"n_decoded": N_FILES, "n_reused": 0}


@pytest.mark.slow
def test_the_bad_file_report_is_written_once_into_the_cv_folder(grouped_cv):
    result, config, _, _ = grouped_cv
    assert (result.cv_dir / "bad_files.csv").is_file()
    assert not (config.workspace / "splits").exists()  # nothing written where a plain `prepare` keeps its splits
    assert not list(result.cv_dir.glob("splits/fold-*/bad_files.csv"))  # folds count them in split_stats.json


@pytest.mark.slow
def test_resume_keeps_finished_folds_and_completes_the_rest(grouped_cv, monkeypatch):
    result, _, _, _ = grouped_cv
    (result.cv_dir / "fold-2" / "metrics.json").unlink()  # as if fold 2 was interrupted after its last epoch
    calls = []
    from earmark.workflows import train as training_workflow

    real_train = training_workflow.train

    def counting_train(*args, **kwargs):
        calls.append(kwargs.get("resume"))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training_workflow, "train", counting_train)
    resumed = api.cv(resume=result.cv_dir)
    assert calls == [result.cv_dir / "fold-2"]  # only the unfinished fold ran, from its checkpoint
    assert (result.cv_dir / "fold-2" / "metrics.json").is_file()
    assert [r["reused"] for r in resumed.summary["per_fold"]] == [True, False, True]
    assert [r["resumed"] for r in resumed.summary["per_fold"]] == [False, True, False]
    report = (result.cv_dir / "cv_report.md").read_text()  # the timing says which folds ran before
    assert "fold(s) 1, 3 kept from before" in report and "fold(s) 2 resumed from a checkpoint" in report
    assert resumed.summary["decoded"]["n_decoded"] == 0
    for before, after in zip(result.summary["per_fold"], resumed.summary["per_fold"]):
        assert before["accuracy"] == pytest.approx(after["accuracy"])
    with pytest.raises(EarmarkError, match="folds=4"):
        api.cv(resume=result.cv_dir, folds=4)


@pytest.mark.slow
def test_predefined_folds_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from earmark.cli import app

    metadata = write_tone_table(tmp_path / "data")
    config_path = tmp_path / "cv.yaml"
    config_path.write_text(load_config(overrides=tiny_overrides(tmp_path, metadata)).to_yaml())
    outcome = CliRunner().invoke(app, ["cv", str(config_path), "--fold-column", "fold", "--group-by", "speaker"])
    assert outcome.exit_code == 0, outcome.output
    assert "accuracy" in outcome.output and " ± " in outcome.output
    cv_dir = tmp_path / "runs" / "tones-cv"
    table = pd.read_csv(metadata, dtype=str)
    for fold, test in fold_tests(cv_dir).items():
        expected = {p for p, f in zip(table["path"], table["fold"]) if f"fold-{f}" == fold}
        assert {Path(p).relative_to(metadata.parent).as_posix() for p in test["path"]} == expected
    summary = json.loads((cv_dir / "cv_summary.json").read_text())
    assert [row["fold"] for row in summary["per_fold"]] == ["1", "2", "3"]
    assert summary["decoded"]["n_decoded"] == N_FILES


def test_bad_fold_options_fail_before_training(tmp_path):
    metadata = write_tone_table(tmp_path / "data")
    config = load_config(overrides=tiny_overrides(tmp_path, metadata))
    with pytest.raises(EarmarkError, match="number of groups"):
        api.cv(config, folds=5, group_by="speaker")  # 4 speakers cannot make 5 folds
    with pytest.raises(EarmarkError, match="'session' is not a column"):
        api.cv(config, fold_column="session")
    with pytest.raises(EarmarkError, match="does not match the 3 folds"):
        api.cv(config, folds=4, fold_column="fold")
    with pytest.raises(EarmarkError, match="not a column"):
        api.cv(config, group_by="room")
    assert not (tmp_path / "runs").exists()  # nothing half-made left behind


def test_every_fold_is_checked_before_any_fold_trains(tmp_path, monkeypatch):
    """The last fold cannot be split: the CV fails at once, naming it, with advice that works."""
    metadata = write_tone_table(tmp_path / "data")
    table = pd.read_csv(metadata)
    table["fold"] = table["speaker"].map({"ann": 1, "bob": 2, "cy": 3, "dee": 3})  # fold 3 holds half the clips
    table.to_csv(metadata, index=False)
    config = load_config(overrides=[*tiny_overrides(tmp_path, metadata), "split.val_fraction=0.5"])
    with pytest.raises(EarmarkError) as error:
        api.cv(config, fold_column="fold")
    message = str(error.value)
    assert "fold 3" in message and "split.val_fraction=0" in message and "merge small folds" in message
    assert not (tmp_path / "runs").exists()  # folds 1 and 2 were never trained
    from earmark.workflows import train as training

    def reached_training(*args, **kwargs):
        raise RuntimeError("every fold can be split; training starts")

    monkeypatch.setattr(training, "train", reached_training)
    with pytest.raises(RuntimeError, match="training starts"):  # the advice works
        api.cv(config, ["split.val_fraction=0"], fold_column="fold")


def test_a_fold_whose_training_part_misses_classes_is_refused_before_any_training(tmp_path):
    """Predefined folds of 33, 1 and 2 clips: holding out the big one leaves 3 training clips without 'high'."""
    metadata = write_tone_table(tmp_path / "data")
    table = pd.read_csv(metadata)
    table["fold"] = 1
    table.loc[table.index[table["label"] == "low"][:1], "fold"] = 2
    table.loc[table.index[table["label"] == "mid"][:2], "fold"] = 3
    table.to_csv(metadata, index=False)
    config = load_config(overrides=[*tiny_overrides(tmp_path, metadata), "split.val_fraction=0"])
    with pytest.raises(EarmarkError) as error:
        api.cv(config, fold_column="fold")
    message = str(error.value)
    assert "fold 1 holds 33 of 36 clips" in message and "training part, 3 clips, lacks 1 of 3 classes (high)" in message
    assert "merge small folds" in message
    assert not (tmp_path / "runs").exists()  # no fold was trained


def test_the_headline_puts_the_pooled_score_beside_the_unweighted_mean():
    from earmark.reports.crossval import headline, unequal_folds_warning

    rows = [{"n_test": n} for n in (11, 1, 400, 2)]
    summary = {"per_fold": rows, "pooled": {"n_clips": 414, "accuracy": 0.9, "balanced_accuracy": 0.8, "macro_f1": 0.7},
               **{m: {"mean": 0.255, "std": 0.497} for m in ("accuracy", "balanced_accuracy", "macro_f1")}}
    lines = headline(summary)
    assert lines[0] == ("accuracy: pooled 0.9000 (every test clip once, 414 clips); per-fold mean 0.2550 ± 0.4970 "
                        "(unweighted, 4 folds of 1–400 clips)")
    assert "1 to 400 clips" in unequal_folds_warning(rows)[0] and "pooled" in unequal_folds_warning(rows)[0]
    assert unequal_folds_warning([{"n_test": 90}, {"n_test": 120}]) == []


def test_folds_not_grouped_by_the_group_column_say_which_values_straddle_them(tmp_path, monkeypatch):
    """The speaker column is detected as `group`; folds made by file put one speaker in several folds."""
    from earmark.workflows import train as training

    metadata = write_tone_table(tmp_path / "data")
    config = load_config(overrides=tiny_overrides(tmp_path, metadata))

    def reached_training(*args, **kwargs):
        raise RuntimeError("training starts")

    monkeypatch.setattr(training, "train", reached_training)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="training starts"):
        api.cv(config, folds=3, log=lines.append)
    said = [line for line in lines if "'group' column" in line]
    assert said and "4 value(s)" in said[0] and "--group-by group" in said[0]
    lines.clear()
    with pytest.raises(RuntimeError, match="training starts"):
        api.cv(config, folds=3, group_by="group", log=lines.append)
    assert not any("'group' column" in line for line in lines)
