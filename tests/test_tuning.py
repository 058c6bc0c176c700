"""Hyper-parameter search on tiny synthetic tones: space validation, pruning, reproducibility, resume, best config."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import soundfile as sf
import torch

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.workflows.search_space import load_space, pruning_callback

SPACE = """
train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}
model.params.width: {choices: [2, 4]}
train.max_epochs: {low: 1, high: 2}
"""


def tiny_config(base: Path):
    root = base / "tones"
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(8):
            sf.write(root / label / f"{label}_{take}.wav", tone_clip(frequency, 8000, 0.25, class_index * 100 + take),
                     8000)
    return load_config(overrides=[
        f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
        "data.sample_rate_hz=8000", "data.duration_s=0.25", f"data.cache_dir={base / 'ws' / 'cache'}",
        "data.workers=1", "split.val_fraction=0.25", "split.test_fraction=0.25", "features.n_fft=256",
        "features.n_mels=16", "model.params.width=4", "train.max_epochs=1", "train.batch_size=8",
        "train.progress=false", "name=tones"])


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The same 3-trial search run twice with one seed (no pruning), in two tune folders."""
    base = tmp_path_factory.mktemp("tune")
    config = tiny_config(base)
    space = base / "space.yaml"
    space.write_text(SPACE)
    lines: list[str] = []
    first = api.tune(config, space=space, trials=3, seed=7, pruner="none", log=lines.append)
    second = api.tune(config, space=space, trials=3, seed=7, pruner="none")
    return first, second, config, space, lines


def test_space_errors_name_the_key_and_what_is_allowed(tmp_path):
    config = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}", "model.name=simple_cnn"])  # not auto
    cases = {
        "train.lrr: {low: 0.1, high: 0.2}": "unknown config key 'train.lrr'",
        "train.lr: {low: 0.2, high: 0.1}": "low (0.2) must be below high (0.1)",
        "train.lr: {low: 0.0, high: 0.1, log: true}": "a log range needs low > 0",
        "train.lr: {low: 0.01, high: 0.1, log: true, step: 0.01}": "cannot be combined with log",
        "train.lr: {low: 0.01, hi: 0.1}": "allowed fields: low, high, log, step, choices",
        "model.params.width: {choices: []}": "choices must be a non-empty list",
        "train.monitor: {choices: [val_loss, val_acc]}": "it decides the objective",
        "train.lr: {low: 0.0, high: 0.1}": "train.lr",  # the config itself refuses lr=0
        "model.params.widht: {choices: [4, 8]}": "unknown key(s) widht",
        "train.max_epochs: {low: 1.0, high: 2.5}": "train.max_epochs",  # an int field given a float range
        "augment.noise_snr_db: {choices: [[20, 5]]}": "min <= max",
        "- train.lr": "must map dotted config keys",
    }
    for text, message in cases.items():
        path = tmp_path / "space.yaml"
        path.write_text(text)
        with pytest.raises(EarmarkError, match=None) as caught:
            load_space(path, config)
        assert message in str(caught.value), (text, str(caught.value))
        assert str(path) in str(caught.value)
    path.write_text("augment.noise_snr_db: {choices: [[5, 20], null]}\ntrain.max_epochs: {low: 5, high: 20, step: 5}")
    kinds = {param.key: param.kind for param in load_space(path, config)}
    assert kinds == {"augment.noise_snr_db": "categorical", "train.max_epochs": "int"}


class StubTrial:
    """Records reports; asks to prune from epoch `prune_from` on."""

    def __init__(self, prune_from: int) -> None:
        self.prune_from, self.reported, self.epoch = prune_from, [], -1

    def report(self, value: float, step: int) -> None:
        self.reported.append((step, value))
        self.epoch = step

    def should_prune(self) -> bool:
        return self.epoch >= self.prune_from


def test_pruning_callback_reports_each_epoch_and_raises_when_told():
    trial = StubTrial(prune_from=1)
    callback = pruning_callback(trial, "val_loss")
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"val_loss": torch.tensor(0.9)})
    callback.on_validation_end(trainer, None)
    trainer.current_epoch, trainer.callback_metrics = 1, {"val_loss": torch.tensor(0.7)}
    with pytest.raises(optuna.TrialPruned):
        callback.on_validation_end(trainer, None)
    assert trial.reported == [(0, pytest.approx(0.9)), (1, pytest.approx(0.7))]
    assert callback.best("minimize") == pytest.approx(0.7) and callback.best("maximize") == pytest.approx(0.9)
    with pytest.raises(EarmarkError, match="validation split"):
        pruning_callback(trial, "val_loss").best("minimize")


def test_importing_the_tuning_module_does_not_import_lightning():
    import subprocess
    import sys

    code = "import sys, earmark.workflows.search_space, earmark.workflows.tune; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_same_seed_samples_the_same_trials(searched):
    first, second, _, _, lines = searched
    keys = ["train.lr", "model.params.width", "train.max_epochs"]
    assert first.tune_dir.name == "tones-tune" and second.tune_dir.name == "tones-tune-1"
    pd.testing.assert_frame_equal(first.trials[keys], second.trials[keys])
    assert first.trials["state"].tolist() == ["COMPLETE"] * 3
    assert first.trials["train.lr"].between(1e-3, 1e-2).all() and set(first.trials["model.params.width"]) <= {2, 4}
    assert any("best so far" in line for line in lines)


def test_objective_is_the_best_validation_metric_of_each_trial(searched):
    first, _, _, _, _ = searched
    for row in first.trials.itertuples():
        checkpoint = torch.load(Path(row.run_dir) / "checkpoints" / "best.ckpt", map_location="cpu",
                                weights_only=False)
        states = [s for k, s in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint") and
                  "'monitor': 'val_loss'" in k]
        assert row.value == pytest.approx(float(states[0]["best_model_score"]), rel=1e-5)
    best = first.trials.loc[first.trials["value"].idxmin()]
    assert first.summary["best_trial"] == best["number"] and first.best_value == pytest.approx(best["value"])
    assert "test split is never used" in first.summary["objective"]
    for name in ("study.db", "trials.csv", "optimization_history.png", "best_config.yaml", "tune_summary.json",
                 "tune_report.md", "tune_report.html", "config.yaml", "space.yaml"):
        assert (first.tune_dir / name).is_file(), name
    assert (first.tune_dir / "optimization_history.png").stat().st_size > 1000
    for row in first.trials.itertuples():  # trials are calibrated but never scored on the test split
        run = Path(row.run_dir)
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test_evaluated"] is False and metrics["epochs"] == row.epochs and "accuracy" not in metrics
        assert (run / "calibration.json").is_file()
        assert not (run / "predictions.csv").exists() and not (run / "report.html").exists()


def test_best_config_reproduces_the_best_trial(searched):
    first, _, config, _, _ = searched
    best = load_config(first.best_config)
    trial = load_config(first.best_run_dir / "config.yaml")
    assert best.model_copy(update={"name": None, "runs_dir": Path("x")}) == \
        trial.model_copy(update={"name": None, "runs_dir": Path("x")})
    assert best.name == "tones-best" and best.runs_dir == config.runs_dir
    assert best.train.lr == pytest.approx(first.best_params["train.lr"])
    result = api.train(first.best_config)
    assert result.run_dir.name == "tones-best" and (result.run_dir / "metrics.json").is_file()
    assert result.metrics["epochs"] == first.best_params["train.max_epochs"]


def test_resume_from_the_command_line_continues_the_study(searched):
    from typer.testing import CliRunner

    from earmark.cli import app

    first, _, _, space, _ = searched
    before = pd.read_csv(first.tune_dir / "trials.csv")
    outcome = CliRunner().invoke(app, ["tune", "--resume", str(first.tune_dir), "--trials", "4"])
    assert outcome.exit_code == 0, outcome.output
    assert "best config" in outcome.output
    after = pd.read_csv(first.tune_dir / "trials.csv")
    assert len(after) == 4 and after["number"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(after.iloc[:3][["train.lr", "value"]], before[["train.lr", "value"]])
    assert after.loc[3, "train.lr"] not in set(before["train.lr"])  # new draws, not the first trial's again
    other = space.with_name("other.yaml")
    other.write_text("train.lr: {low: 1.0e-3, high: 1.0e-1}")
    with pytest.raises(EarmarkError, match="differs from its space.yaml"):
        api.tune(space=other, resume=first.tune_dir, trials=5)


class PruneAllButFirst(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number > 0


def test_pruned_trials_stop_after_their_first_epoch(tmp_path):
    config = tiny_config(tmp_path)
    config = config.model_copy(update={"train": config.train.model_copy(update={"max_epochs": 3})})
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-3, high: 1.0e-2}")
    result = api.tune(config, space=space, trials=3, pruner=PruneAllButFirst())
    assert result.trials["state"].tolist() == ["COMPLETE", "PRUNED", "PRUNED"]
    assert result.trials["epochs"].tolist() == [3, 1, 1]
    for row in result.trials.itertuples():
        assert (Path(row.run_dir) / "metrics.json").is_file() == (row.state == "COMPLETE")
    summary = json.loads((result.tune_dir / "tune_summary.json").read_text())
    assert summary["n_trials"] == {"COMPLETE": 1, "PRUNED": 2} and summary["best_trial"] == 0


def test_a_trial_with_an_impossible_combination_fails_and_is_reported(tmp_path):
    config = tiny_config(tmp_path)
    config = config.model_copy(update={"features": config.features.model_copy(update={"kind": "mfcc",
                                                                                        "n_mels": 32})})
    space = tmp_path / "space.yaml"  # each value alone is valid; together n_mfcc 28 > n_mels 24 is not
    space.write_text("features.n_mels: {choices: [24]}\nfeatures.n_mfcc: {choices: [28]}")
    expected = (r"(?s)no trial .* completed \(1 ran: FAIL 1\); first error: features.n_mels=24, "
                r"features.n_mfcc=28: .*n_mfcc \(28\) cannot exceed")
    with pytest.raises(EarmarkError, match=expected):
        api.tune(config, space=space, trials=1)
    trials = pd.read_csv(tmp_path / "runs" / "tones-tune" / "trials.csv")
    assert trials["state"].tolist() == ["FAIL"] and "n_mfcc" in trials.loc[0, "error"]
