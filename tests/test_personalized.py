"""The speaker-personalized model: two-phase training, the before/after report, group-aware prediction.

Synthetic "speakers" say three tone "words"; each speaker's voice shifts every tone by its own factor,
so one frequency means different words for different speakers (900 Hz is ann's c, bob's b, cyd's a):
the base model cannot tell them apart, a speaker embedding can.
"""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from conftest import tone_clip
from earmark import api
from earmark.config import load_config
from earmark.data.batches import AudioDataModule
from earmark.errors import EarmarkError
from earmark.models.registry import MODELS, create_model
from earmark.predict.torch_predictor import Predictor

WORD_HZ = {"a": 400.0, "b": 600.0, "c": 900.0}
VOICE_FACTORS = {"ann": 1.0, "bob": 1.5, "cyd": 2.25}
UNSEEN_SPEAKER, UNSEEN_FACTOR = "dave", 1.2  # in the test split only
TAKES = 5  # take 0: test, take 1: val, the rest: train
SUMMARY_KEYS = {"group_column", "n_clips", "basic_accuracy", "personalized_accuracy", "improvement", "seen_groups",
                "per_group", "unseen_groups", "clips_without_group", "train_groups", "settings"}


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    """metadata.csv (file, label, speaker, split) + audio/: 3 speakers x 3 words x 5 takes, and dave's 3 tests."""
    root = tmp_path_factory.mktemp("speakers")
    (root / "audio").mkdir()
    rows = []
    for s, (speaker, factor) in enumerate(VOICE_FACTORS.items()):
        for w, (word, hz) in enumerate(WORD_HZ.items()):
            for take in range(TAKES):
                name = f"audio/{speaker}_{word}_{take}.wav"
                sf.write(root / name, tone_clip(hz * factor, 8000, 0.5, 100 * s + 10 * w + take), 8000)
                rows.append((name, word, speaker, "test" if take == 0 else "val" if take == 1 else "train"))
    for w, (word, hz) in enumerate(WORD_HZ.items()):
        name = f"audio/{UNSEEN_SPEAKER}_{word}.wav"
        sf.write(root / name, tone_clip(hz * UNSEEN_FACTOR, 8000, 0.5, 900 + w), 8000)
        rows.append((name, word, UNSEEN_SPEAKER, "test"))
    pd.DataFrame(rows, columns=["file", "label", "speaker", "split"]).to_csv(root / "metadata.csv", index=False)
    return root


def common_overrides(root, work) -> list[str]:
    return [f"runs_dir={work / 'runs'}", f"workspace={work / 'ws'}", f"data.cache_dir={work / 'cache'}",
            "data.source=csv", f"data.path={root / 'metadata.csv'}", "data.sample_rate_hz=8000",
            "data.duration_s=0.5", "data.workers=1", "features.n_fft=256", "features.n_mels=32",
            "train.batch_size=8", "train.progress=false"]


@pytest.fixture(scope="module")
def run(speakers, tmp_path_factory):
    work = tmp_path_factory.mktemp("personalized")
    overrides = common_overrides(speakers, work) + [
        "name=voices", "model.name=personalized", "model.params.base_params={width: 8}",
        "model.params.adapt_epochs=4", "train.max_epochs=6"]
    return api.train(None, overrides), work


def test_one_command_trains_both_phases_and_reports_before_and_after(run):
    result, _ = run
    run_dir = result.run_dir
    for name in ("metrics.json", "predictions.csv", "confusion.png", "report.md", "personalization.png",
                 "checkpoints/best.ckpt", "checkpoints/base.ckpt", "adapt/checkpoints/best.ckpt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "personalization.png").stat().st_size > 5000
    summary = json.loads((run_dir / "personalization.json").read_text())
    assert set(summary) == SUMMARY_KEYS and summary == result.personalization
    assert summary["unseen_groups"] == [UNSEEN_SPEAKER] and summary["train_groups"] == ["ann", "bob", "cyd"]
    assert {name: row["n_clips"] for name, row in summary["per_group"].items()} == {
        "ann": 3, "bob": 3, "cyd": 3, UNSEEN_SPEAKER: 3}
    assert not summary["per_group"][UNSEEN_SPEAKER]["seen_in_training"]
    for row in summary["per_group"].values():
        assert set(row) == {"n_clips", "basic_accuracy", "personalized_accuracy", "improvement", "seen_in_training"}
    unseen = summary["per_group"][UNSEEN_SPEAKER]
    assert unseen["basic_accuracy"] == unseen["personalized_accuracy"]  # the base model, unchanged
    assert summary["improvement"] == pytest.approx(summary["personalized_accuracy"] - summary["basic_accuracy"])
    # metrics.json is the personalized model's
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["personalized_accuracy"])
    assert metrics["n_clips"] == 12 and metrics["adapt_epochs"] == 4


def test_the_checkpoint_round_trips_and_unseen_groups_get_exactly_the_base_model(run):
    result, _ = run
    config = load_config(result.run_dir / "config.yaml")
    prepared = api.prepare(config, progress=False)  # everything cached: nothing decoded
    test = prepared.items[prepared.items["split"] == "test"]
    waves, speakers = prepared.cache.waves[test["row"].to_numpy()], test["group"].tolist()
    predictor = Predictor.from_run(result.run_dir)
    assert predictor.uses_groups and predictor.known_groups == ["ann", "bob", "cyd"]
    personalized = predictor.predict_waves(waves, speakers)
    saved = pd.read_csv(result.run_dir / "predictions.csv")
    assert saved["group"].tolist() == speakers
    assert np.allclose(saved[["p_a", "p_b", "p_c"]].to_numpy(), personalized, atol=2e-6)

    base_predictor = Predictor.from_run(result.run_dir / "checkpoints" / "base.ckpt")  # phase 1
    # calibration is stored in the finished model only (here T = 1: fewer validation clips than a fit needs)
    calibration = json.loads((result.run_dir / "calibration.json").read_text())
    assert float(predictor.module.temperature_) == pytest.approx(calibration["temperature"])
    assert float(base_predictor.module.temperature_) == 1.0
    base_predictor.module.temperature_.copy_(predictor.module.temperature_)
    base = base_predictor.predict_waves(waves)
    assert np.array_equal(predictor.predict_waves(waves), base)  # no groups: the base model exactly
    assert np.array_equal(predictor.predict_waves(waves, ["nobody"] * len(waves)), base)
    assert np.array_equal(personalized[-3:], base[-3:])  # dave's clips (sorted last)
    assert not np.allclose(personalized[:-3], base[:-3], atol=1e-4)  # a known speaker changes the output


def test_predict_takes_a_group_for_every_file_or_from_a_csv_column(run, speakers, tmp_path):
    from typer.testing import CliRunner

    from earmark.cli import app

    result, _ = run
    files = [speakers / "audio" / "bob_a_0.wav", speakers / "audio" / "cyd_c_0.wav"]
    as_bob = api.predict(result.run_dir, files, groups="bob").files
    assert as_bob["group"].tolist() == ["bob", "bob"] and as_bob["personalized"].all()
    listing = tmp_path / "listing.csv"
    listing.write_text(f"path,speaker\n{files[0]},bob\n{files[1]},cyd\n")
    from_csv = api.predict(result.run_dir, [listing]).files
    assert from_csv["group"].tolist() == ["bob", "cyd"]
    assert from_csv.loc[0, "probability"] == pytest.approx(as_bob.loc[0, "probability"], abs=1e-6)
    plain = api.predict(result.run_dir, files).files
    assert plain["group"].isna().all() and not plain["personalized"].any()

    cli = CliRunner().invoke(app, ["predict", str(result.run_dir), *map(str, files), "--group", "bob",
                                   "--out", str(tmp_path / "out.csv")])
    assert cli.exit_code == 0, cli.output
    assert pd.read_csv(tmp_path / "out.csv")["group"].tolist() == ["bob", "bob"]


def test_cli_prints_a_before_after_summary(run, capsys):
    from earmark.cli.output import print_personalization as _print_personalization

    _print_personalization(run[0].personalization)
    printed = capsys.readouterr().out
    assert "base model" in printed and "personalized" in printed
    assert "ann:" in printed and f"unseen in training (predicted by the base model): {UNSEEN_SPEAKER}" in printed


def test_unseen_group_is_exactly_the_base_model_and_a_known_group_changes_it():
    model = create_model("personalized", n_classes=4, input_shape=(1, 32, 21), base_params={"width": 8})
    model.fit_groups(["bob", "ann"])
    model.set_adapting(True)
    assert model.groups_ == ["ann", "bob"]  # fitted, sorted
    torch.nn.init.normal_(model.film.weight)  # as if adapted
    model.eval()
    x = torch.randn(5, 1, 32, 21)
    base = model.base(x)
    ids = model.group_ids(["ann", "carl", None, "bob", "ann"])
    assert ids.tolist() == [0, -1, -1, 1, 0]
    logits = model(x, ids)
    assert torch.equal(model(x), base)
    assert torch.equal(logits[[1, 2]], base[[1, 2]])
    assert not torch.allclose(logits[[0, 3, 4]], base[[0, 3, 4]])
    # phase 2 trains the embeddings only; a frozen base stays in eval mode when Lightning calls train()
    model.train()
    assert not model.base.training and model.embedding.weight.requires_grad
    assert not any(p.requires_grad for p in model.base.parameters())
    assert MODELS.entry("personalized").needs_groups


def test_data_without_groups_fails_before_training_naming_the_fix(tone_folder, speakers, tmp_path):
    base = [f"runs_dir={tmp_path / 'runs'}", f"workspace={tmp_path / 'ws'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.sample_rate_hz=8000", "data.duration_s=0.5", "data.workers=1", "features.n_fft=256",
            "features.n_mels=32", "train.progress=false", "model.name=personalized"]
    with pytest.raises(EarmarkError, match=r"data\.columns\.group=<column>.*model\.params\.group_column"):
        api.train(None, base + ["data.source=folder", f"data.path={tone_folder}"])
    with pytest.raises(EarmarkError, match="group_column='accent' is not a column.*speaker"):
        api.train(None, base + ["data.source=csv", f"data.path={speakers / 'metadata.csv'}",
                                "model.params.group_column=accent"])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("params, message", [
    (["model.params.base=wave_cnn"], "cannot be personalized"),
    (["model.params.adapt_lr=0"], "adapt_lr must be a learning rate above 0"),
    (["model.params.adapt_epochs=0"], "adapt_epochs must be a whole number"),
    (["model.params.base_params={widht: 4}"], "widht"),
])
def test_bad_personalized_params_fail_before_any_decoding(params, message, tmp_path):
    config = load_config(overrides=["model.name=personalized", f"data.cache_dir={tmp_path / 'cache'}", *params])
    with pytest.raises(EarmarkError, match=message):
        api.train(config)
    assert not (tmp_path / "cache").exists()


def test_batches_carry_group_ids_on_both_paths():
    waves = np.arange(20 * 4, dtype=np.float32).reshape(20, 4)
    rows = {"train": np.arange(0, 12), "val": np.arange(12, 16), "test": np.arange(16, 20)}
    targets = {k: (v % 3).astype(np.int64) for k, v in rows.items()}
    groups = {k: (v % 2 - (v == 19)).astype(np.int64) for k, v in rows.items()}  # row 19: no group (-1)
    batches = {}
    for budget_gb in (1.0, 0.0):
        module = AudioDataModule(waves, rows, targets, batch_size=5, seed=0, memory_budget_gb=budget_gb,
                                 groups=groups)
        for split, loader in (("train", module.train_dataloader()), ("test", module.test_dataloader())):
            moved = [module.transfer_batch_to_device(b, torch.device("cpu"), 0) for b in loader]
            assert all(len(batch) == 3 for batch in moved)
            batches[budget_gb, split] = [torch.cat(column) for column in zip(*moved)]
    for split in ("train", "test"):
        resident, streamed = batches[1.0, split], batches[0.0, split]
        assert all(torch.equal(a, b) for a, b in zip(resident, streamed))
        row = (resident[0][:, 0] / 4).long()  # each clip's row number, from its first sample
        assert torch.equal(resident[2], row % 2 - (row == 19).long())  # the group travels with its clip


def test_a_resumed_run_whose_base_is_trained_runs_only_the_adaptation_again(run):
    result, _ = run
    base_before = (result.run_dir / "checkpoints" / "base.ckpt").read_bytes()
    resumed = api.train(resume=result.run_dir)
    assert (result.run_dir / "checkpoints" / "base.ckpt").read_bytes() == base_before  # phase 1 untouched
    assert resumed.metrics["epochs"] == 6 and resumed.metrics["adapt_epochs"] == 4
    assert resumed.personalization == result.personalization
