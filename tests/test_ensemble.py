"""`earmark ensemble`: runs averaged into one ordinary run that predicts, evaluates, exports and serves.

Three tiny tone runs are trained once for the module (two at 8 kHz, one at 16 kHz); member b's temperature is
set to 2.5 so that a missing or doubled calibration shows in the averaged probabilities.
"""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from earmark import api
from earmark.errors import EarmarkError
from tiny_runs import train_tiny_run

B_TEMPERATURE = 2.5


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """{"a", "b", "c"}: run folders sharing data and splits; c hears 16 kHz, b is calibrated at T = 2.5."""
    import torch

    from earmark.train.checkpoint_file import load_checkpoint_dict
    from earmark.train.checkpoints import save_checkpoint_atomically

    base = tmp_path_factory.mktemp("ensemble")
    runs = {"a": train_tiny_run(base, "a", max_epochs=2).run_dir,
            "b": train_tiny_run(base, "b", max_epochs=2, extra=("model.params.width=6",)).run_dir,
            "c": train_tiny_run(base, "c", max_epochs=2,
                                extra=("data.sample_rate_hz=16000", "features.n_fft=512")).run_dir}
    path = runs["b"] / "checkpoints" / "best.ckpt"
    checkpoint = load_checkpoint_dict(path)
    checkpoint["state_dict"]["temperature_"] = torch.tensor(B_TEMPERATURE)
    save_checkpoint_atomically(checkpoint, path)
    return runs


@pytest.fixture(scope="module")
def weighted(members):
    """The ensemble of a and b, weights 1:3."""
    return api.ensemble([members["a"], members["b"]], members["a"].parent / "ab", weights=[1, 3], progress=False)


def split_waves(run_dir, split: str = "test"):
    """(items, waves (N, n_samples)) of a run's split, decoded as the run hears audio."""
    from earmark.data.prepared import decode_listed
    from earmark.data.splits import load_splits
    from earmark.rundir import RunDir

    items = load_splits(RunDir(run_dir).splits)
    items, cache = decode_listed(items[items["split"] == split], RunDir(run_dir).load_config().data, progress=False)
    return items, cache.waves[items["row"].to_numpy()]


def probabilities(run_dir, waves, temperature: float | None = None) -> np.ndarray:
    """A run's calibrated probabilities (or softmax(logits / temperature) when given)."""
    from earmark.evaluate.calibration import softmax
    from earmark.predict.torch_predictor import Predictor

    predictor = Predictor.from_run(run_dir, device="cpu")
    if temperature is None:
        return predictor.predict_waves(waves)
    return softmax(predictor.predict_logits(waves), temperature)


def test_probabilities_are_the_weighted_mean_of_the_members_calibrated_ones(members, weighted):
    from earmark.files import sha256_of
    from earmark.train.checkpoint_file import load_checkpoint_dict

    items, waves = split_waves(weighted.run_dir)
    member_a, member_b = probabilities(members["a"], waves), probabilities(members["b"], waves)
    ensemble = probabilities(weighted.run_dir, waves)
    np.testing.assert_allclose(ensemble, 0.25 * member_a + 0.75 * member_b, atol=1e-6)
    uncalibrated = 0.25 * member_a + 0.75 * probabilities(members["b"], waves, temperature=1.0)
    assert np.abs(ensemble - uncalibrated).max() > 1e-3  # b's temperature is in the average
    # the run's own evaluation scored exactly these probabilities
    table = pd.read_csv(weighted.run_dir / "predictions.csv")
    labels = json.loads((weighted.run_dir / "labels.json").read_text())
    assert table["path"].tolist() == items["path"].tolist()
    np.testing.assert_allclose(table[[f"p_{label}" for label in labels]].to_numpy(), ensemble, atol=2e-6)
    accuracy = float(np.mean(np.asarray(labels)[ensemble.argmax(1)] == items["label"].to_numpy()))
    assert weighted.metrics["accuracy"] == pytest.approx(accuracy)
    # the members, recorded: each best.ckpt's sha256, the weights scaled to 1
    record = json.loads((weighted.run_dir / "ensemble.json").read_text())["members"]
    assert [row["checkpoint_sha256"] for row in record] == [sha256_of(members[k] / "checkpoints" / "best.ckpt")
                                                           for k in "ab"]
    assert [row["weight"] for row in record] == [0.25, 0.75] and record[1]["temperature"] == B_TEMPERATURE
    assert weighted.metrics["ensemble"]["members"] == record and "Ensemble members" in (
        weighted.run_dir / "report.md").read_text()
    # an ordinary run folder whose checkpoint holds every member, read without unpickling code
    checkpoint = load_checkpoint_dict(weighted.run_dir / "checkpoints" / "best.ckpt")
    assert checkpoint["hyper_parameters"]["model_name"] == "ensemble"
    assert {"model.members.0.temperature_", "model.members.1.temperature_"} <= set(checkpoint["state_dict"])
    assert (weighted.run_dir / "splits" / "test.csv").read_text() == (members["a"] / "splits" / "test.csv").read_text()


def test_the_ensemble_run_evaluates_and_predicts_like_any_run(weighted):
    items, waves = split_waves(weighted.run_dir)
    again = api.evaluate(weighted.run_dir, out_dir=weighted.run_dir / "again")
    assert again["accuracy"] == pytest.approx(weighted.metrics["accuracy"])
    expected = probabilities(weighted.run_dir, waves[:1])[0]
    predicted = api.predict(weighted.run_dir, [items["path"].iloc[0]], backend="torch").files.iloc[0]
    labels = json.loads((weighted.run_dir / "labels.json").read_text())
    assert predicted["label"] == labels[int(expected.argmax())]
    assert predicted["probability"] == pytest.approx(float(expected.max()), abs=1e-5)


def test_the_ensemble_run_serves(weighted):
    from fastapi.testclient import TestClient

    from earmark.serve.app import create_app, load_model

    items, _ = split_waves(weighted.run_dir)
    path = items["path"].iloc[0]
    expected = api.predict(weighted.run_dir, [path], backend="torch").files.iloc[0]
    with TestClient(create_app(load_model(weighted.run_dir, threads=1))) as client, open(path, "rb") as handle:
        body = client.post("/predict?top_k=2", files={"file": ("clip.wav", handle, "audio/wav")}).json()
    assert body["label"] == expected["label"]
    assert body["probability"] == pytest.approx(expected["probability"], abs=1e-5)


@pytest.mark.slow
def test_the_ensemble_exports_as_one_onnx_graph_matching_torch(weighted):
    from earmark.predict.onnx_predictor import OnnxPredictor
    from earmark.predict.torch_predictor import load_predictor

    result = api.export(weighted.run_dir, log=lambda text: None)
    assert result.parity["fp32"]["passed"] and result.parity["fp32"]["top1_differs"] == 0
    _, waves = split_waves(weighted.run_dir)
    np.testing.assert_allclose(OnnxPredictor(result.model_path).predict_waves(waves),
                               probabilities(weighted.run_dir, waves), atol=1e-4)
    assert "current ONNX export" in load_predictor(weighted.run_dir, device="cpu").source  # predict/serve use it


def test_members_at_different_rates_each_hear_their_own(members, tmp_path):
    run = api.ensemble([members["a"], members["c"]], tmp_path / "ac", progress=False)
    config = yaml_config(run.run_dir)
    assert config.data.sample_rate_hz == 16000  # the highest member rate: no member hears less than it trained on
    items, waves = split_waves(run.run_dir)
    alone = []
    for key in "ac":  # each member decodes the files at its own rate
        member_items, member_waves = split_waves(members[key])
        assert member_items["path"].tolist() == items["path"].tolist()
        alone.append(probabilities(members[key], member_waves))
    # inside the ensemble, member a's 8 kHz comes from the 16 kHz input, resampled in the graph
    np.testing.assert_allclose(probabilities(run.run_dir, waves), (alone[0] + alone[1]) / 2, atol=2e-3)


def yaml_config(run_dir):
    from earmark.rundir import RunDir

    return RunDir(run_dir).load_config()


def test_other_labels_or_other_splits_are_refused_naming_the_run(members, tmp_path, monkeypatch, capsys):
    relabelled = tmp_path / "relabelled"
    shutil.copytree(members["b"], relabelled)
    labels = json.loads((relabelled / "labels.json").read_text())
    (relabelled / "labels.json").write_text(json.dumps(labels[::-1]))
    with pytest.raises(EarmarkError, match=f"{relabelled}.*different labels"):
        api.ensemble([members["a"], relabelled], tmp_path / "out", progress=False)
    resplit = tmp_path / "resplit"
    shutil.copytree(members["b"], resplit)
    test, train = (pd.read_csv(resplit / "splits" / f"{name}.csv") for name in ("test", "train"))
    moved = test.iloc[:1].assign(split="train")
    test.iloc[1:].to_csv(resplit / "splits" / "test.csv", index=False)
    pd.concat([train, moved]).to_csv(resplit / "splits" / "train.csv", index=False)
    with pytest.raises(EarmarkError, match=f"run {resplit} was trained on other splits.*same data, split"):
        api.ensemble([members["a"], resplit], tmp_path / "out", progress=False)
    with pytest.raises(EarmarkError, match="2 weight.*for 3 runs"):
        api.ensemble([members["a"], members["b"], members["c"]], tmp_path / "out", weights=[1, 1], progress=False)
    assert not (tmp_path / "out").exists()  # every check runs before the folder is made
    from earmark.cli import main

    monkeypatch.setattr(sys, "argv", ["earmark", "ensemble", str(members["a"]), str(relabelled), "--out",
                                      str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        main()  # what `earmark ensemble ...` runs
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and stderr.startswith("error: runs ") and len(stderr.strip().splitlines()) == 1


def test_the_command_line_makes_an_ensemble_run(members, tmp_path):
    from typer.testing import CliRunner

    from earmark.cli import app

    out = tmp_path / "cli"
    outcome = CliRunner().invoke(app, ["ensemble", str(members["a"]), str(members["b"]), "--out", str(out),
                                       "--weights", "0.5,1.5"])
    assert outcome.exit_code == 0, outcome.output
    assert "ensemble test accuracy" in outcome.output and f"member {members['b']}" in outcome.output
    assert [m["weight"] for m in json.loads((out / "ensemble.json").read_text())["members"]] == [0.25, 0.75]
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()


def test_validation_scores_without_touching_the_test_split(members, weighted, tmp_path):
    from earmark.workflows.ensemble import validation_probabilities

    run = api.ensemble([members["a"], members["b"]], weights=[1, 3], evaluate_test=False, progress=False)
    assert run.metrics["test_evaluated"] is False and not (run.run_dir / "predictions.csv").exists()
    assert run.run_dir.parent == members["a"].parent and run.run_dir.name.startswith("folder-ensemble-")
    assert yaml_config(run.run_dir).name == run.run_dir.name  # config.yaml names its own folder
    probabilities_, targets = validation_probabilities(run.run_dir)
    items, waves = split_waves(run.run_dir, "val")
    np.testing.assert_allclose(probabilities_, probabilities(weighted.run_dir, waves), atol=1e-6)
    labels = json.loads((run.run_dir / "labels.json").read_text())
    assert targets.tolist() == [labels.index(label) for label in items["label"]]


def test_an_ensemble_is_made_not_trained():
    with pytest.raises(EarmarkError, match="earmark ensemble RUN RUN"):
        api.train(overrides=["model.name=ensemble"])
