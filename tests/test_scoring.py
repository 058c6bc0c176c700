"""End to end: tiny real runs whose evaluation holds every metric, analysis, warning and plot."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from conftest import tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.predict.torch_predictor import Predictor

RATE_HZ = 8000
FOUR_TONES_HZ = {"low": 300.0, "mid": 900.0, "high": 2400.0, "top": 3500.0}


def write_csv_data(root, tones_hz, files_per_class, duration_s, n_speakers, same_clip=False):
    """Tones on disk and a metadata.csv (file_path, label, speaker); speakers cycle through the files."""
    rows = []
    for class_index, (label, frequency) in enumerate(tones_hz.items()):
        for take in range(files_per_class):
            path = root / f"{label}_{take}.wav"
            seed = 7 if same_clip else class_index * 100 + take
            sf.write(path, tone_clip(frequency, RATE_HZ, duration_s, seed), RATE_HZ)
            rows.append({"file_path": path.name, "label": label, "speaker": f"s{take % n_speakers}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root / "metadata.csv"


def tiny_config(base, csv, *extra):
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=csv", f"data.path={csv}",
                 f"data.sample_rate_hz={RATE_HZ}", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.25", "split.test_fraction=0.25", "features.n_fft=256",
                 "features.n_mels=32", "model.params.width=4", "train.max_epochs=3", "train.batch_size=8",
                 "train.lr=0.01", "train.progress=false", *extra]
    return load_config(overrides=overrides)


@pytest.fixture(scope="module")
def four_class_run(tmp_path_factory):
    """4 tone classes, 4 speakers spread over every split (no split.group_by): leakage by speaker."""
    base = tmp_path_factory.mktemp("scoring4")
    (base / "data").mkdir()
    csv = write_csv_data(base / "data", FOUR_TONES_HZ, 8, 0.5, 4)
    return api.train(tiny_config(base, csv, "name=four"))


@pytest.fixture(scope="module")
def binary_chunked_run(tmp_path_factory):
    """2 classes of 1.6 s files cut into 0.5 s chunks, split by speaker, a rejection coverage target."""
    base = tmp_path_factory.mktemp("scoring2")
    (base / "data").mkdir()
    csv = write_csv_data(base / "data", {"low": 300.0, "high": 2400.0}, 8, 1.6, 4)
    return api.train(tiny_config(base, csv, "name=binary", "data.clip=chunk", "split.group_by=group",
                                 "evaluation.reject_target_coverage=0.75"))


def test_training_calibrates_best_ckpt_and_predictions_match_the_predictor(four_class_run):
    run = four_class_run.run_dir
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    temperature = float(state["temperature_"])
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["fitted"] and calibration["temperature"] == pytest.approx(temperature)
    if temperature == pytest.approx(1.0, abs=1e-3):  # a fit at a bound, or one that did not help, is not applied
        assert calibration["fitted_temperature"] != pytest.approx(1.0, abs=1e-3) and calibration["notes"]
    assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-9
    predictions = pd.read_csv(run / "predictions.csv")
    predictor = Predictor.from_run(run)
    assert float(predictor.module.temperature_) == pytest.approx(temperature)
    labels = list(predictor.labels)
    probabilities = predictor.predict_files(predictions["path"], top_k=len(labels)).files
    stored = predictions[[f"p_{label}" for label in labels]].to_numpy()
    from earmark.data.audio import decode, fit_length, resample, to_mono

    waves = np.stack([fit_length(resample(to_mono(decode(p)[0]), decode(p)[1], RATE_HZ), 4000, "pad")[0]
                      for p in predictions["path"]])
    assert np.allclose(predictor.predict_waves(waves), stored, atol=2e-5)
    assert (probabilities["label"].to_numpy() == predictions["predicted"].to_numpy()).all()


def test_metrics_json_holds_every_key_and_the_leakage_warning(four_class_run):
    run = four_class_run.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "accuracy_ci95", "balanced_accuracy", "macro_precision", "macro_recall", "macro_f1",
                "weighted_precision", "weighted_recall", "weighted_f1", "top_k_accuracy", "per_class", "confusion",
                "labels", "majority_baseline", "chance_accuracy", "warnings", "per_group", "calibration",
                "fit_seconds", "epochs"):
        assert key in metrics, key
    assert set(metrics["top_k_accuracy"]) == {"3"}  # 4 classes: top-3 only
    assert metrics["chance_accuracy"] == 0.25
    assert "binary" not in metrics and "clip_level" not in metrics
    assert set(metrics["per_group"]) == {"group"}  # the speaker column, detected as the group column
    assert any(w.startswith("leakage:") and "split.group_by=group" in w for w in metrics["warnings"])
    calibration = metrics["calibration"]
    for key in ("temperature", "ece_before", "ece_after", "reject_threshold", "test_coverage",
                "test_accuracy_on_accepted"):
        assert key in calibration, key
    assert calibration["reject_threshold"] == 0.0 and calibration["test_coverage"] == 1.0
    for png in ("confusion.png", "confusion_normalized.png", "per_class.png", "per_group_group.png",
                "reliability.png", "coverage.png"):
        assert (run / png).is_file(), png
    report = (run / "report.md").read_text()
    assert "leakage" in report and "## Calibration" in report and "## Per group" in report
    assert (run / "report.html").is_file()


@pytest.mark.slow
def test_evaluate_group_by_from_the_command_line(four_class_run, tmp_path):
    run = four_class_run.run_dir
    out = tmp_path / "eval"
    result = subprocess.run([sys.executable, "-m", "earmark", "evaluate", str(run), "--group-by", "speaker",
                             "--out", str(out)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per speaker (4)" in result.stdout and "warning: leakage" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # the run's `group` column holds the speaker again: analysed once, as `speaker` (issue 28, item 15)
    assert set(metrics["per_group"]) == {"speaker"} and "per group (" not in result.stdout
    assert sum(g["n_clips"] for g in metrics["per_group"]["speaker"]["groups"].values()) == metrics["n_clips"]
    assert (out / "per_group_speaker.png").is_file()
    assert metrics["accuracy"] == pytest.approx(four_class_run.metrics["accuracy"])
    with pytest.raises(EarmarkError, match="--group-by actor: not a column .* available: .*speaker"):
        api.evaluate(run, out_dir=tmp_path / "bad", group_by=["actor"])
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_binary_chunked_run_reports_curves_threshold_files_and_rejection(binary_chunked_run):
    run = binary_chunked_run.run_dir
    metrics = binary_chunked_run.metrics
    binary = metrics["binary"]
    assert binary["positive_label"] == "low"  # the second label in natural order: high, low
    assert binary["threshold_metric"] in ("balanced_accuracy", "default") and 0 <= binary["threshold"] <= 1
    assert set(binary["at_threshold"]) >= {"accuracy", "balanced_accuracy", "precision", "recall", "f1"}
    clip = metrics["clip_level"]
    test_files = pd.read_csv(run / "predictions.csv")["path"].nunique()
    assert clip["mean_probability"]["n_files"] == clip["majority_vote"]["n_files"] == test_files
    assert clip["chunks_per_file"] == pytest.approx(len(pd.read_csv(run / "predictions.csv")) / test_files)
    assert clip["chunks_per_file"] >= 3  # 1.6 s in 0.5 s windows
    assert not [w for w in metrics["warnings"] if w.startswith("leakage")]  # grouped by speaker
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["val_coverage"] >= 0.75 and calibration["reject_threshold"] > 0
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert float(state["reject_threshold_"]) == pytest.approx(calibration["reject_threshold"])
    predictions = pd.read_csv(run / "predictions.csv")
    rejected = predictions["decision"] == "unknown"
    assert rejected.sum() == metrics["calibration"]["n_rejected"]
    for png in ("roc.png", "pr.png", "coverage.png", "reliability.png"):
        assert (run / png).is_file(), png


def test_a_model_that_cannot_tell_the_classes_apart_is_flagged_as_collapsed(tmp_path):
    (tmp_path / "data").mkdir()
    csv = write_csv_data(tmp_path / "data", {"a": 500.0, "b": 500.0}, 8, 0.5, 2, same_clip=True)
    result = api.train(tiny_config(tmp_path, csv, "name=collapsed", "train.max_epochs=1"))
    warnings = result.metrics["warnings"]
    assert any(w.startswith("collapse: 100% of predictions") for w in warnings), warnings
    assert any("near chance" in w for w in warnings)


def test_a_positive_label_typo_fails_before_training(tmp_path):
    (tmp_path / "two").mkdir()
    csv = write_csv_data(tmp_path / "two", {"low": 300.0, "high": 2400.0}, 4, 0.5, 2)
    with pytest.raises(EarmarkError, match=r"evaluation.positive_label='hgih' is not one of .*allowed: high, low"):
        api.train(tiny_config(tmp_path, csv, "name=typo", "evaluation.positive_label=hgih"))
    (tmp_path / "four").mkdir()
    csv = write_csv_data(tmp_path / "four", FOUR_TONES_HZ, 4, 0.5, 2)
    with pytest.raises(EarmarkError, match=r"positive_label='low' applies to two-class tasks only; .* 4 classes "
                                           r"\(high, low, mid, top\)"):
        api.train(tiny_config(tmp_path, csv, "name=four", "evaluation.positive_label=low"))
    assert not (tmp_path / "runs").exists()  # no run directory, no training


def test_calibration_is_fitted_on_logits_even_when_probabilities_saturate(four_class_run, tmp_path):
    """A confidently wrong model: its float32 probabilities are exactly 0 for the true class, so logits rebuilt
    from them would be clipped; `Predictor.predict_logits` gives calibration the real ones."""
    import shutil

    from earmark.data.labels import class_ids
    from earmark.evaluate.calibration import negative_log_likelihood, softmax
    from earmark.workflows.evaluate import fit_on_validation

    run = tmp_path / "wrong"
    shutil.copytree(four_class_run.run_dir, run)
    best = run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    weights = checkpoint["state_dict"]
    head = [key for key, value in weights.items() if key.startswith("model.") and value.dim() == 2][-1]
    bias = head.removesuffix("weight") + "bias"
    weights[head] = torch.roll(weights[head], 1, dims=0) * 3000  # each class scores as its neighbour, loudly
    if bias in weights:
        weights[bias] = torch.roll(weights[bias], 1, dims=0) * 3000
    torch.save(checkpoint, best)
    config = load_config(run / "config.yaml")
    prepared = api.prepare(config, progress=False)
    val = prepared.items[prepared.items["split"] == "val"]
    waves = prepared.cache.waves[val["row"].to_numpy()]
    y_val = class_ids(val["label"], prepared.labels)

    predictor = fit_on_validation(run, val, prepared.cache.waves, prepared.labels, config.evaluation)
    logits = predictor.predict_logits(waves)  # the module's forward: unchanged by calibration
    uncalibrated = torch.softmax(torch.from_numpy(logits), dim=1).numpy()  # what the predictor gave before
    assert (uncalibrated[np.arange(len(y_val)), y_val] == 0).any()  # saturated in float32
    fit = json.loads((run / "calibration.json").read_text())
    assert fit["val_nll_before"] == pytest.approx(negative_log_likelihood(logits, y_val, 1.0), rel=1e-5)
    rebuilt = np.log(np.clip(uncalibrated, 1e-30, None))  # logits rebuilt from those probabilities
    assert fit["val_nll_before"] > 1.5 * negative_log_likelihood(rebuilt, y_val, 1.0)
    assert np.allclose(softmax(logits, fit["temperature"]), predictor.predict_waves(waves), atol=1e-5)
    stored = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]["temperature_"]
    assert float(stored) == pytest.approx(fit["temperature"]) == pytest.approx(float(predictor.module.temperature_))


def test_training_reads_best_ckpt_once_to_calibrate_and_evaluate(tmp_path, monkeypatch):
    from earmark.train import checkpoints as training

    reads, loads = [], []
    real_read = training.read_checkpoint
    real_from_run = Predictor.from_run.__func__
    monkeypatch.setattr(training, "read_checkpoint", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setattr(Predictor, "from_run",
                        classmethod(lambda cls, *args, **kwargs: loads.append(args) or real_from_run(cls, *args,
                                                                                                     **kwargs)))
    (tmp_path / "data").mkdir()
    csv = write_csv_data(tmp_path / "data", {"low": 300.0, "high": 2400.0}, 6, 0.5, 2)
    result = api.train(tiny_config(tmp_path, csv, "name=once", "train.max_epochs=1"))
    assert [path.name for path in reads] == ["best.ckpt"] and loads == []  # calibrated, then scored, in memory
    calibration = json.loads((result.run_dir / "calibration.json").read_text())
    assert result.metrics["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert not list((result.run_dir / "checkpoints").glob("*.tmp"))
