"""Transfer learning: the bundled aisfx backbone as a probe (cached embeddings), embed, audit, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.workflows.embed import find_label_issues, out_of_fold_probabilities
from tiny_runs import tone_dataset

ROOT = Path(__file__).resolve().parents[1]


def probe_overrides(base: Path, name: str, *extra: str) -> list[str]:
    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
            "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}", "data.workers=1",
            "split.val_fraction=0.2", "split.test_fraction=0.25", "model.name=aisfx", "train.progress=false",
            f"name={name}", *extra]


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("probe")
    first = api.train(load_config(overrides=probe_overrides(base, "linear")))
    second = api.train(load_config(overrides=probe_overrides(base, "mlp", "model.params.head=mlp")))
    return base, first, second


def test_a_probe_learns_from_cached_embeddings_and_is_an_ordinary_run(probe_runs):
    base, first, second = probe_runs
    assert first.metrics["accuracy"] >= 0.8 and second.metrics["accuracy"] >= 0.8  # three tones: easy
    config = load_config(first.run_dir / "config.yaml")
    assert config.data.sample_rate_hz == 44100 and config.features.kind == "waveform"  # the backbone's input
    assert first.metrics["probe"]["embedded_now"] == 36  # every clip of the data, once
    assert second.metrics["probe"]["embedded_now"] == 0 and second.metrics["probe"]["head"] == "mlp"
    for run in (first, second):
        assert (run.run_dir / "checkpoints" / "best.ckpt").is_file()
        assert (run.run_dir / "embedding_map.png").stat().st_size > 5000
        assert "Test clips through the embedding" in (run.run_dir / "report.html").read_text()
        assert json.loads((run.run_dir / "calibration.json").read_text())["fitted"] is True


def test_evaluating_a_probe_through_the_backbone_reproduces_its_cached_scores(probe_runs, tmp_path):
    _, first, _ = probe_runs
    metrics = api.evaluate(first.run_dir, out_dir=tmp_path / "eval")  # waves through the whole chain
    assert metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])
    cached = pd.read_csv(first.run_dir / "predictions.csv")
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    columns = [c for c in cached if c.startswith("p_")]
    np.testing.assert_allclose(again[columns].to_numpy(), cached[columns].to_numpy(), atol=1e-4)


def test_predict_on_files_gives_the_probabilities_scored_from_the_cache(probe_runs):
    _, first, _ = probe_runs
    cached = pd.read_csv(first.run_dir / "predictions.csv")
    result = api.predict(first.run_dir, cached["path"].tolist(), top_k=1)  # decoded, backbone, head
    assert result.files["label"].tolist() == cached["predicted"].astype(str).tolist()
    top = cached[[c for c in cached if c.startswith("p_")]].max(axis=1).to_numpy()
    np.testing.assert_allclose(result.files["probability"].to_numpy(), top, atol=1e-4)


def test_a_probe_exports_to_onnx_with_parity(probe_runs, tmp_path):
    _, first, _ = probe_runs
    exported = api.export(first.run_dir, tmp_path / "export", log=lambda text: None)
    assert exported.parity["fp32"]["passed"] and exported.parity["fp32"]["max_abs_prob_diff"] <= 1e-4
    assert exported.parity["fp32"]["top1_agreement"] == 1.0


def test_embed_writes_one_vector_per_clip_from_the_cache(probe_runs, tmp_path):
    base, _, _ = probe_runs
    result = api.embed(None, probe_overrides(base, "embed"), out=tmp_path / "vectors.npy")
    vectors, index = np.load(result.out), pd.read_csv(result.index)
    assert vectors.shape == (36, 1024) and len(index) == 36 and result.embedded_now == 0
    assert set(index["label"]) == {"low", "mid", "high"} and {"path", "split"} <= set(index.columns)
    as_csv = api.embed(None, probe_overrides(base, "embed"), out=tmp_path / "vectors.csv")
    table = pd.read_csv(as_csv.out)
    np.testing.assert_allclose(table[[f"e{i}" for i in range(1024)]].to_numpy(), vectors, rtol=1e-5, atol=1e-6)


def test_audit_finds_a_flipped_label(tmp_path):
    root = tmp_path / "tones"
    tone_dataset(root)
    wrong = root / "high" / "low_flipped.wav"  # a low tone filed under high
    sf.write(wrong, tone_clip(300.0, 8000, 0.5, 4242), 8000)
    overrides = [o for o in probe_overrides(tmp_path, "audit") if not o.startswith("name=")]
    result = api.audit(None, overrides, out_dir=tmp_path / "audit", folds=3)
    suspects = pd.read_csv(tmp_path / "audit" / "suspect_labels.csv")
    assert len(result.suspects) >= 1 and str(wrong) in suspects["path"].head(3).tolist()
    flagged = suspects[suspects["path"] == str(wrong)].iloc[0]
    assert flagged["label"] == "high" and flagged["suggested"] == "low"


def test_cleanlab_finds_injected_flips_in_separable_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 32)) * 4
    y = np.repeat(np.arange(5), 60)
    x = centres[y] + rng.normal(0, 1, (len(y), 32))
    flipped = rng.choice(len(y), 30, replace=False)  # 10 % of the labels moved to another class
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 5, len(flipped))) % 5
    found = find_label_issues(out_of_fold_probabilities(x, noisy, None, 5), noisy)
    hits = found[flipped].sum()
    assert hits / len(flipped) >= 0.9 and hits / found.sum() >= 0.9  # recall and precision


def test_audit_lists_nothing_when_the_out_of_fold_probe_is_too_weak(tmp_path, monkeypatch):
    from earmark.workflows import embed as embed_workflow

    root = tmp_path / "tones"
    tone_dataset(root)
    overrides = [o for o in probe_overrides(tmp_path, "audit") if not o.startswith("name=")]
    # a probe that knows nothing: every clip equally likely to be any class (labels are correct)
    monkeypatch.setattr(embed_workflow, "out_of_fold_probabilities",
                        lambda x, y, groups, n, folds, seed: np.roll(np.eye(n)[y], 1, axis=1) * 0.5 + 0.5 / n)
    result = api.audit(None, overrides, out_dir=tmp_path / "audit", folds=3)
    assert result.too_weak and "too weak" in result.too_weak and result.oof_accuracy < 0.7
    assert result.suspects.empty


def test_a_backbone_rate_conflict_and_a_non_embedder_are_clear_errors(tmp_path):
    with pytest.raises(EarmarkError, match="data.sample_rate_hz=44100"):
        api.prepare(None, probe_overrides(tmp_path, "x", "data.sample_rate_hz=8000"))
    with pytest.raises(EarmarkError, match="not a pretrained embedder"):
        api.embed(None, probe_overrides(tmp_path, "x", "model.name=simple_cnn"), out=tmp_path / "v.npy")


def test_embed_from_the_command_line(probe_runs, tmp_path):
    base, _, _ = probe_runs
    out = tmp_path / "e.npy"
    done = subprocess.run([sys.executable, "-m", "earmark", "embed", *probe_overrides(base, "cli"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "36 clips × 1024 dimensions (0 embedded now" in done.stdout
    assert np.load(out).shape == (36, 1024)


def test_fine_tuning_trains_the_backbone_through_lightning_top_block_first(tmp_path):
    import torch

    from earmark.models.aisfx import WEIGHTS_PATH

    result = api.train(load_config(overrides=probe_overrides(
        tmp_path, "ft", "model.params.freeze=false", "train.max_epochs=1", "train.batch_size=8",
        "model.params.unfreeze_epochs=[0,0,1,1]")))  # epoch 0: the top two conv blocks and the head learn
    assert "probe" not in result.metrics and result.metrics["epochs"] >= 0
    state = torch.load(result.run_dir / "checkpoints" / "best.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    from safetensors.torch import load_file

    bundled = load_file(str(WEIGHTS_PATH))
    prefix = "model.embedder.net."
    assert not torch.equal(state[prefix + "conv_block4.conv2.weight"], bundled["conv_block4.conv2.weight"])
    assert torch.equal(state[prefix + "conv_block1.conv1.weight"], bundled["conv_block1.conv1.weight"])
