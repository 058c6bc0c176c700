"""model.name=auto: candidates from the registry, scored on validation, the winner kept as the run and tested alone.

The views here are two toy embedders registered for the test (log-mel mean at 8 kHz, log-mel spread at 16 kHz),
so the selection runs in seconds; the real registry's views are checked by name only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.workflows.auto_candidates import offline_views
from tiny_runs import tone_dataset

TOY_VIEWS = {"toy_mean": 8000, "toy_spread": 16000}


class ToyStats(nn.Module):
    """(B, T) → (B, 16): each mel band's mean (or standard deviation) over time."""

    def __init__(self, rate_hz: int, statistic: str) -> None:
        super().__init__()
        from earmark.features import LogMel

        n_fft = 256 if rate_hz == 8000 else 512
        self.mel, self.statistic = LogMel(rate_hz, n_fft, n_fft, n_fft // 2, 16), statistic

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        bands = self.mel(wave)[:, 0]  # (B, 16, frames)
        return bands.mean(dim=2) if self.statistic == "mean" else bands.std(dim=2)


def _toy_builder(name: str, rate_hz: int):
    def build(n_classes: int, input_shape: tuple[int, ...], head: str = "linear", hidden: int = 32,
              dropout: float = 0.0):
        from earmark.models.embedding import EmbeddingClassifier

        embedder = ToyStats(rate_hz, "mean" if name == "toy_mean" else "std")
        return EmbeddingClassifier(embedder, 16, n_classes, f"{name}-v1", head=head, hidden=hidden, dropout=dropout)

    return build


@pytest.fixture(scope="module")
def toy_views():
    """The toy views in the registry, and auto seeing only them (the bundled ones take tens of seconds)."""
    from earmark.models.registry import MODELS, ModelEntry
    from earmark.workflows import auto_candidates

    MODELS.names()  # load the real registry first
    with pytest.MonkeyPatch.context() as patch:
        for name, rate in TOY_VIEWS.items():
            patch.setitem(MODELS._entries, name, ModelEntry(name, _toy_builder(name, rate), "waveform",
                                                            "toy view (tests)", sample_rate_hz=rate))
        patch.setattr(auto_candidates, "offline_views", lambda: list(TOY_VIEWS))
        yield


def auto_overrides(base: Path, name: str, *extra: str) -> list[str]:
    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
            "data.sample_rate_hz=8000", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
            "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.25", "features.n_fft=256",
            "features.n_mels=32", "model.name=auto", "train.max_epochs=2", "train.batch_size=8",
            "train.progress=false", "train.time_budget_s=120", f"name={name}", *extra]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, toy_views):
    """One auto selection on the tones, with every test-split evaluation recorded."""
    from earmark.workflows import evaluate

    base = tmp_path_factory.mktemp("auto")
    evaluated = []
    real = evaluate.evaluate_run

    def recording(run_dir, test_items, *args, **kwargs):
        evaluated.append((Path(run_dir), sorted(test_items["path"])))
        return real(run_dir, test_items, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "evaluate_run", recording)
        result = api.train(load_config(overrides=auto_overrides(base, "picked")))
    return base, result, evaluated


def test_the_leaderboard_has_every_candidate_and_the_winner_is_the_best_on_validation(auto_run):
    _, result, _ = auto_run
    board = pd.read_csv(result.run_dir / "leaderboard.csv")
    assert {"toy_mean probe", "toy_spread probe", "toy_mean probe, MLP head", "simple_cnn from zero"} <= set(
        board["candidate"])
    ran = board[board["status"].isin(["ran", "chosen"])]
    assert ran["score"].notna().all() and (ran["ci95_low"] <= ran["score"]).all()
    assert (ran["score"] <= ran["ci95_high"]).all() and (ran["seconds"] > 0).all()
    chosen = board[board["status"] == "chosen"]
    assert len(chosen) == 1
    if chosen["kind"].iloc[0] != "ensemble":  # an ensemble is built only when it beats its members
        probes = ran[ran["kind"] == "probe"]  # the best probe by its own score meets the others on validation
        finalists = pd.concat([probes.loc[[probes["score"].idxmax()]], ran[ran["kind"] != "probe"]])
        assert chosen["val_accuracy"].iloc[0] == finalists["val_accuracy"].max()
    summary = json.loads((result.run_dir / "leaderboard.json").read_text())
    assert summary["winner"] == chosen["candidate"].iloc[0] == result.metrics["auto"]["winner"]
    assert "Model selection (auto)" in (result.run_dir / "report.md").read_text()
    assert "Model selection (auto)" in (result.run_dir / "report.html").read_text()


def test_only_the_winner_touches_the_test_split(auto_run):
    _, result, evaluated = auto_run
    test_paths = sorted(pd.read_csv(result.run_dir / "splits" / "test.csv")["path"])
    assert evaluated == [(result.run_dir, test_paths)]  # one evaluation, of the run itself
    candidates = sorted((result.run_dir / "candidates").iterdir())
    assert candidates  # the others are kept, untested, under the run
    for folder in candidates:
        assert json.loads((folder / "metrics.json").read_text())["test_evaluated"] is False
        assert sorted(pd.read_csv(folder / "splits" / "test.csv")["path"]) == test_paths  # one split for all
    winner = result.metrics["auto"]["winner"]
    model = load_config(result.run_dir / "config.yaml").model.name
    assert model == next(r["model"] for r in result.metrics["auto"]["leaderboard"] if r["candidate"] == winner)
    assert load_config(result.run_dir / "config.yaml").runs_dir == result.run_dir.parent


def test_the_chosen_run_evaluates_and_predicts(auto_run, tmp_path):
    _, result, _ = auto_run
    again = api.evaluate(result.run_dir, out_dir=tmp_path / "eval")
    assert again["accuracy"] == pytest.approx(result.metrics["accuracy"])
    clips = pd.read_csv(result.run_dir / "predictions.csv")
    predicted = api.predict(result.run_dir, clips["path"].tolist()[:3], top_k=1, backend="torch")
    assert predicted.files["label"].tolist() == clips["predicted"].astype(str).tolist()[:3]


@pytest.mark.slow
def test_the_chosen_run_exports_with_parity(auto_run, tmp_path):
    _, result, _ = auto_run
    exported = api.export(result.run_dir, tmp_path / "export", log=lambda text: None)
    assert exported.parity["fp32"]["passed"]


def test_the_budget_stops_adding_candidates(toy_views, tmp_path):
    result = api.train(load_config(overrides=auto_overrides(tmp_path, "quick", "train.time_budget_s=0.5")))
    board = pd.read_csv(result.run_dir / "leaderboard.csv")
    first = board.iloc[0]
    assert first["status"] == "chosen"  # the first candidate always runs: there is a model
    assert board.iloc[1:]["status"].str.startswith("skipped: time budget").all() and len(board) >= 3
    assert result.metrics["accuracy"] >= 0.0 and result.metrics["auto"]["winner"] == first["candidate"]


def test_auto_needs_a_validation_split_and_no_model_params(toy_views, tmp_path):
    with pytest.raises(EarmarkError, match="validation"):
        api.train(load_config(overrides=auto_overrides(tmp_path, "noval", "split.val_fraction=0")))
    with pytest.raises(EarmarkError, match="model.params .width. are one model's settings"):
        api.train(load_config(overrides=auto_overrides(tmp_path, "params", "model.params.width=4")))


@pytest.mark.slow
def test_cv_repeats_the_selection_inside_each_fold(toy_views, tmp_path):
    config = load_config(overrides=auto_overrides(tmp_path, "cvauto", "train.time_budget_s=30"))
    result = api.cv(config, folds=2)
    folds = pd.read_csv(result.cv_dir / "folds.csv", dtype=str)
    for row in result.summary["per_fold"]:
        run_dir = Path(row["run_dir"])
        held_out = sorted(folds.loc[folds["fold"] == str(row["fold"]), "path"])
        assert json.loads((run_dir / "leaderboard.json").read_text())["winner"]
        assert sorted(pd.read_csv(run_dir / "predictions.csv")["path"]) == held_out
        for folder in (run_dir / "candidates").iterdir():  # no candidate trained or chose on the held-out fold
            seen = pd.concat([pd.read_csv(folder / "splits" / f"{s}.csv") for s in ("train", "val")])
            assert not set(seen["path"]) & set(held_out)


def test_train_auto_on_the_command_line_prints_the_leaderboard(toy_views, tmp_path):
    from typer.testing import CliRunner

    from earmark.cli import app

    overrides = [o for o in auto_overrides(tmp_path, "cli", "train.time_budget_s=0.5") if o != "model.name=auto"]
    outcome = CliRunner().invoke(app, ["train", "--auto", *overrides])
    assert outcome.exit_code == 0, outcome.output
    assert "auto: candidates" in outcome.output and "chosen" in outcome.output
    assert "test accuracy:" in outcome.output and "test clips, 95% CI" in outcome.output


def test_views_come_from_the_registry():
    views = offline_views()  # the real function, imported before the toy_views fixture patches it
    assert "aisfx" in views  # bundled weights
    assert not {"hf_audio", "clap_audio", "panns_cnn14", "simple_cnn", "personalized"} & set(views)  # hub / local / not a view


def test_the_demo_runs_auto_within_a_minute_unless_told_otherwise():
    assert load_config().model.name == "auto" and load_config().train.time_budget_s == 240
    assert load_config(overrides=["model.name=aisfx"]).model.name == "aisfx"
    assert load_config(overrides=["model.params.width=8"]).model.name == "simple_cnn"
    assert load_config(overrides=["data.source=folder", "data.path=."]).model.name == "simple_cnn"
    assert load_config(overrides=["data.source=folder", "data.path=."]).train.time_budget_s == 300


class _FakeSplit:
    """Just what the ensemble step reads: the validation targets (and split sizes)."""

    def __init__(self, y_val):
        self.y_val = np.asarray(y_val)

    def rows(self, split):
        return np.arange(len(self.y_val) if split == "val" else 400)

    def targets(self, split):
        return self.y_val


def test_the_ensemble_is_built_only_when_it_beats_its_members_on_validation(tmp_path, monkeypatch):
    import sys
    import types

    from earmark.workflows.auto import _choose
    from earmark.workflows.auto_candidates import Candidate
    from earmark.workflows.auto_scoring import score_of
    from earmark.workflows.auto_selection import Entry, Selection, ensemble

    y = np.array([0, 1, 2, 0, 1, 2])
    one_hot = np.eye(3)[y]
    a, b = one_hot * 0.8 + 0.1, one_hot * 0.8 + 0.1  # each right where the other is unsure
    a[4:] = [[0.36, 0.34, 0.30], [0.36, 0.30, 0.34]]
    b[:2] = [[0.34, 0.36, 0.30], [0.36, 0.34, 0.30]]
    selection = Selection(load_config(overrides=["model.name=simple_cnn"]), types.SimpleNamespace(base=_FakeSplit(y)),
                          tmp_path, False, lambda line: None)
    for name, probabilities in (("a", a), ("b", b)):
        score = score_of(y, probabilities, "validation split")
        selection.entries.append(Entry(Candidate(name, "probe", "x"), "ran", 1.0, score, score, tmp_path / name,
                                       probabilities))
    built = []
    fake = types.ModuleType("earmark.workflows.ensemble")
    fake.ensemble_runs = lambda runs, out, **kwargs: built.append((list(runs), out)) or types.SimpleNamespace(
        run_dir=out)
    monkeypatch.setitem(sys.modules, "earmark.workflows.ensemble", fake)
    ensemble(selection)
    assert built and built[0][0] == [tmp_path / "a", tmp_path / "b"]  # the members' runs
    winner = _choose(selection)
    assert winner.candidate.kind == "ensemble" and winner.val.accuracy == 1.0  # 4/6 each, 6/6 together

    selection.entries.pop()
    selection.entries[1].val_probabilities = a  # b now agrees with a: nothing to gain
    monkeypatch.delitem(sys.modules, "earmark.workflows.ensemble")
    ensemble(selection)
    assert selection.entries[-1].status.startswith("skipped: validation accuracy")
