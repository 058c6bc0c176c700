"""End to end through the Python API on tiny synthetic tones: one training run shared by the tests."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    # Build the tone data set and config inside a module-scoped folder.
    from conftest import TONES_HZ

    base = tmp_path_factory.mktemp("api")
    root = base / "tones"
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(12):
            sf.write(root / label / f"{label}_{take}.wav", tone_clip(frequency, 8000, 0.5, class_index * 100 + take), 8000)
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
                 "data.sample_rate_hz=8000", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.25", "features.n_fft=256",
                 "features.n_mels=32", "model.params.width=8", "train.max_epochs=6", "train.batch_size=8",
                 "train.lr=0.005", "train.progress=false", "name=tones"]
    config = load_config(overrides=overrides)
    result = api.train(config)
    return result, config, root


def test_run_directory_holds_every_artifact(trained):
    result, config, _ = trained
    run = result.run_dir
    for name in ("config.yaml", "labels.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.json",
                 "report.md", "confusion.png", "predictions.csv", "splits/train.csv", "splits/test.csv",
                 "splits/split_stats.json", "splits/bad_files.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents*"))
    assert load_config(run / "config.yaml") == config  # the resolved config reproduces the run
    assert json.loads((run / "labels.json").read_text()) == ["high", "low", "mid"]


def test_metrics_are_written_with_the_baseline_beside_them(trained):
    result, _, _ = trained
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "majority_baseline", "confusion"):
        assert key in metrics
    assert set(metrics["per_class"]) == {"high", "low", "mid"}
    assert metrics["accuracy"] > metrics["majority_baseline"]["accuracy"]  # pure tones are easy
    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    assert list(predictions.columns[:3]) == ["path", "true", "predicted"]
    assert {"p_high", "p_low", "p_mid"} <= set(predictions.columns)
    assert len(predictions) == metrics["n_clips"]
    assert np.allclose(predictions[["p_high", "p_low", "p_mid"]].sum(axis=1), 1, atol=1e-4)
    assert "majority-class baseline" in (result.run_dir / "report.md").read_text()


def test_evaluate_reproduces_the_test_metrics(trained, tmp_path):
    result, _, _ = trained
    metrics = api.evaluate(result.run_dir, out_dir=tmp_path / "eval")
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert (tmp_path / "eval" / "confusion.png").is_file()
    import pandas as pd

    trained_rows = pd.read_csv(result.run_dir / "predictions.csv").sort_values("path").reset_index(drop=True)
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv").sort_values("path").reset_index(drop=True)
    columns = [c for c in trained_rows if c.startswith("p_")]
    assert list(again["path"]) == list(trained_rows["path"]) and columns
    np.testing.assert_allclose(again[columns].to_numpy(), trained_rows[columns].to_numpy(), atol=1e-5)


def test_predict_files_folders_and_chunked_timelines(trained, tmp_path):
    result, _, root = trained
    long_file = tmp_path / "long.wav"
    from conftest import TONES_HZ

    sf.write(long_file, np.concatenate([tone_clip(TONES_HZ["low"], 8000, 1.0, 1),
                                        tone_clip(TONES_HZ["high"], 8000, 1.0, 2)]), 8000)
    out = tmp_path / "preds.csv"
    predictions = api.predict(result.run_dir, [root / "low", long_file], out, top_k=2, chunk_s=0.5)
    table = pd.read_csv(out)
    assert len(table) == 13
    assert {"path", "label", "probability", "top2_label", "top2_probability"} <= set(table.columns)
    timeline = pd.read_csv(tmp_path / "preds_timeline.csv")
    long_rows = timeline[timeline["path"] == str(long_file)]
    assert list(long_rows["start_s"]) == [0.0, 0.5, 1.0, 1.5]
    assert predictions.files.loc[predictions.files["path"] == str(long_file), "n_chunks"].item() == 4


def test_predict_reports_unreadable_files_without_failing(trained, tmp_path):
    result, _, root = trained
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    predictions = api.predict(result.run_dir, [root / "mid" / "mid_0.wav", broken])
    assert len(predictions.files) == 1
    assert predictions.bad_files["path"].tolist() == [str(broken)]


def test_second_prepare_decodes_nothing_and_inspect_draws(trained, tmp_path, monkeypatch):
    from earmark.data.cache import DecodedCache

    _, config, _ = trained
    api.prepare(config, progress=False)  # whatever other tests did to the shared workspace, this one decodes
    reports = []
    real_write = DecodedCache.write_bad_files
    monkeypatch.setattr(DecodedCache, "write_bad_files", lambda self, path: reports.append(path) or real_write(self, path))
    prepared = api.prepare(config.model_copy(update={"train": config.train}), progress=False)
    assert prepared.cache.stats.n_decoded == 0 and prepared.cache.stats.n_reused == 36
    assert reports == [prepared.split_dir / "bad_files.csv"]  # written once, beside the splits
    monkeypatch.undo()
    summary = api.inspect(config, out_dir=tmp_path / "inspect")
    assert (tmp_path / "inspect" / "spectrograms.png").stat().st_size > 1000
    assert summary.facts["batch_shapes"]["logits"][1] == 3
    assert summary.facts["sample_rates_hz"] == {"8000": 36}


def test_clean_removes_caches_and_splits_but_keeps_runs(trained):
    result, config, _ = trained
    removed = api.clean(config)
    assert removed and sum(size for _, size in removed) > 0
    assert not (config.workspace / "splits").exists()
    assert not any(config.data.cache_dir.glob("*/*")) if config.data.cache_dir.exists() else True
    assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()


def test_bad_model_choice_fails_before_any_decoding(tmp_path):
    config = load_config(overrides=["model.name=wave_cnn", f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(EarmarkError, match="features.kind"):
        api.train(config)
    assert not (tmp_path / "cache").exists()


def test_predict_reads_a_csv_list_with_relative_paths(trained, tmp_path):
    result, _, root = trained
    listing = root / "to_predict.tsv"
    listing.write_text("filename\tnote\nlow/low_0.wav\ta\nhigh/high_1.wav\tb\n")
    predictions = api.predict(result.run_dir, [listing])
    assert predictions.files["path"].tolist() == [str(root / "low" / "low_0.wav"), str(root / "high" / "high_1.wav")]
    assert predictions.bad_files.empty


def test_evaluate_on_a_csv_scores_every_listed_file(trained, tmp_path):
    result, _, root = trained
    listing = tmp_path / "other_site.csv"
    rows = [f"{root / label / f'{label}_{take}.wav'},{label}" for label in ("low", "high") for take in range(5)]
    listing.write_text("path,label\n" + "\n".join(rows) + "\n")
    metrics = api.evaluate(result.run_dir, data=listing, out_dir=tmp_path / "eval_csv")
    assert metrics["n_clips"] == 10
    assert set(metrics["per_class"]) == {"high", "low", "mid"}  # the run's classes, even if one is absent
    assert metrics["per_class"]["mid"]["support"] == 0
    assert len(pd.read_csv(tmp_path / "eval_csv" / "predictions.csv")) == 10


def test_evaluate_reads_a_csv_with_its_own_column_names(trained, tmp_path):
    """The error names data.columns.label=...; evaluate takes exactly that override, and scores every row."""
    result, _, root = trained
    listing = tmp_path / "site_b.csv"
    rows = [f"{label}/{label}_{take}.wav,{label},{('train', 'test')[take % 2]}" for label in ("low", "mid", "high") for take in range(4)]
    listing.write_text("wav,kind,split\n" + "\n".join(rows) + "\n")  # a split column: still every row is scored
    with pytest.raises(EarmarkError, match="data.columns"):
        api.evaluate(result.run_dir, data=listing, out_dir=tmp_path / "eval_plain")
    overrides = ["data.columns.path=wav", "data.columns.label=kind", f"data.audio_root={root}"]
    metrics = api.evaluate(result.run_dir, data=listing, out_dir=tmp_path / "eval_named", overrides=overrides)
    assert metrics["n_clips"] == 12
    for wrong, says in ((["train.lr=0.1"], "data.\\* overrides only"), (["data.sample_rate_hz=16000"], "as it was trained")):
        with pytest.raises(EarmarkError, match=says):
            api.evaluate(result.run_dir, data=listing, out_dir=tmp_path / "eval_wrong", overrides=wrong + overrides)
    with pytest.raises(EarmarkError, match="--data"):
        api.evaluate(result.run_dir, out_dir=tmp_path / "eval_none", overrides=overrides)


def test_evaluate_refuses_classes_the_run_never_saw(trained, tmp_path):
    result, _, root = trained
    listing = tmp_path / "new_classes.csv"
    listing.write_text(f"path,label\n{root / 'low' / 'low_0.wav'},whistle\n{root / 'low' / 'low_1.wav'},low\n")
    with pytest.raises(EarmarkError, match="whistle"):
        api.evaluate(result.run_dir, data=listing, out_dir=tmp_path / "eval_bad")


def test_config_changes_name_every_differing_setting():
    from earmark.config_diff import config_changes, describe_changes

    old = load_config(overrides=["train.max_epochs=5", "train.lr=0.01"])
    new = load_config(overrides=["train.max_epochs=9", "train.lr=0.02", "seed=3"])
    assert config_changes(old, new) == {"seed": (0, 3), "train.lr": (0.01, 0.02), "train.max_epochs": (5, 9)}
    assert list(config_changes(old, new, may_change=("train.max_epochs",))) == ["seed", "train.lr"]
    assert config_changes(old, old) == {}
    assert describe_changes(config_changes(old, new), limit=2) == "seed (0 → 3), train.lr (0.01 → 0.02) and 1 more"


def test_evaluate_on_a_csv_reports_the_rows_it_cannot_score(trained, tmp_path, capsys):
    """Empty WAVs and a row without a label are counted by reason and listed, as prepare does; never silently dropped."""
    result, _, root = trained
    (tmp_path / "empty_0.wav").write_bytes(b"")
    (tmp_path / "empty_1.wav").write_bytes(b"")
    rows = [f"{root / label / f'{label}_{take}.wav'},{label}" for label in ("low", "high") for take in range(3)]
    rows += [f"{tmp_path / 'empty_0.wav'},low", f"{tmp_path / 'empty_1.wav'},high", f"{root / 'mid' / 'mid_0.wav'},"]
    listing = tmp_path / "with_bad_rows.csv"
    listing.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "eval_bad_rows"
    metrics = api.evaluate(result.run_dir, data=listing, out_dir=out)
    assert metrics["n_clips"] == 6
    assert metrics["unscored"]["bad_files"] == 2 and metrics["unscored"]["ignored"] == 1
    assert sum(metrics["unscored"]["by_reason"].values()) == 3
    bad = pd.read_csv(out / "bad_files.csv")
    assert sorted(bad["path"]) == [str(tmp_path / "empty_0.wav"), str(tmp_path / "empty_1.wav")]
    assert len(pd.read_csv(out / "ignored_files.csv")) == 1
    assert any("2 of 8 listed file(s) could not be decoded" in w for w in metrics["warnings"])
    printed = capsys.readouterr().out
    assert "bad: 2" in printed and "ignored: 1" in printed
    assert json.loads((out / "metrics.json").read_text())["unscored"]["bad_files"] == 2


@pytest.mark.parametrize("key, value, says", [
    ("sample_rate_hz", 44100, "data.sample_rate_hz: 44100 here, 8000 in the model"),
    ("duration_s", 2.0, "data.duration_s: 2.0 here, 0.5 in the model"),
    ("n_mels", 64, "features.n_mels: 64 here, 32 in the model")])
def test_evaluate_refuses_a_run_whose_config_was_edited_after_training(trained, tmp_path, key, value, says):
    import shutil

    import yaml

    result, _, _ = trained
    edited = tmp_path / "edited"
    shutil.copytree(result.run_dir, edited)
    config = yaml.safe_load((edited / "config.yaml").read_text())
    config["features" if key == "n_mels" else "data"][key] = value
    (edited / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(EarmarkError, match=f"{edited / 'config.yaml'} disagrees with the model.*{says}"):
        api.evaluate(edited, out_dir=tmp_path / "eval_edited")
