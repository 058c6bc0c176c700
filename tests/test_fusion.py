"""`model.name=fusion` of pretrained views (aisfx + mfcc_stats) and the `mfcc_stats` embedder: probe runs on
per-view cached embeddings that evaluate, predict, serve and export like any run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from conftest import tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.models.mfcc_stats import EMBEDDING_DIM, MfccStatsEmbedder, deltas
from earmark.models.registry import MODELS, create_model
from tiny_runs import tone_dataset


def overrides(base, name: str, *extra: str) -> list[str]:
    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
            "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}", "data.workers=1",
            "split.val_fraction=0.2", "split.test_fraction=0.25", "train.progress=false", f"name={name}", *extra]


FUSION = ("model.name=fusion", "model.params.views=[aisfx,mfcc_stats]")


@pytest.fixture(scope="module")
def fusion_runs(tmp_path_factory):
    """An aisfx probe, then the average and concat fusions of aisfx + mfcc_stats on the same tones."""
    base = tmp_path_factory.mktemp("fusion")
    probe = api.train(load_config(overrides=overrides(base, "aisfx", "model.name=aisfx")))
    average = api.train(load_config(overrides=overrides(base, "average", *FUSION, "model.params.combine=average")))
    concat = api.train(load_config(overrides=overrides(base, "concat", *FUSION, "model.params.combine=concat",
                                                       "model.params.head=mlp")))
    return base, probe, average, concat


def test_deltas_of_a_ramp_are_its_slope_and_the_stats_ignore_the_level():
    ramp = torch.arange(20, dtype=torch.float32).repeat(1, 3, 1) * 0.5  # (1, 3, 20), slope 0.5 per frame
    np.testing.assert_allclose(deltas(ramp)[..., 2:-2].numpy(), 0.5, rtol=1e-6)
    embedder = MfccStatsEmbedder().eval()
    clip = torch.from_numpy(tone_clip(440.0, 16000, 1.0, 3))[None]  # (1, 16000)
    quiet, loud = embedder(clip * 0.01), embedder(clip)
    assert quiet.shape == (1, EMBEDDING_DIM) == (1, 240)
    torch.testing.assert_close(quiet, loud, rtol=1e-3, atol=1e-3)  # peak-normalised first
    level = MfccStatsEmbedder(peak_normalize=False).eval()
    assert (level(clip) - level(clip * 0.01)).abs().max() > 10  # 40 dB quieter log-mels


def test_a_fusion_takes_its_highest_view_rate_and_checks_its_views():
    assert MODELS.entry("fusion").rate_for({"views": ["aisfx", "mfcc_stats"]}) == 44100
    assert MODELS.entry("fusion").rate_for({"views": ["mfcc_stats"]}) == 16000
    with pytest.raises(EarmarkError, match="'simple_cnn' is not a pretrained embedder; choose from .*mfcc_stats"):
        create_model("fusion", 3, (1, 16000), views=["mfcc_stats", "simple_cnn"])
    with pytest.raises(EarmarkError, match="combine must be one of average, concat"):
        create_model("fusion", 3, (1, 16000), views=["mfcc_stats"], combine="sum")
    with pytest.raises(EarmarkError, match="names a view twice"):
        create_model("fusion", 3, (1, 16000), views=["mfcc_stats", "mfcc_stats"])


def test_a_fusion_rate_conflict_is_a_clear_error(tmp_path):
    with pytest.raises(EarmarkError, match="takes audio at 44100 Hz; set data.sample_rate_hz=44100"):
        api.prepare(None, overrides(tmp_path, "x", *FUSION, "data.sample_rate_hz=8000"))


@pytest.mark.slow  # the fixture trains three aisfx runs: ~100 s on a busy 2-core CPU
def test_fusions_embed_each_view_once_and_share_the_probe_cache(fusion_runs):
    base, probe, average, concat = fusion_runs
    assert probe.metrics["probe"]["embedded_now"] == 36
    assert average.metrics["probe"]["embedded_now"] == 36  # aisfx from the probe's cache: only mfcc_stats is new
    assert concat.metrics["probe"]["embedded_now"] == 0
    assert average.metrics["probe"]["combine"] == "average" and len(average.metrics["probe"]["views"]) == 2
    config = load_config(average.run_dir / "config.yaml")
    assert config.data.sample_rate_hz == 44100 and config.features.kind == "waveform"
    for run in (average, concat):
        assert run.metrics["accuracy"] >= 0.8  # three tones: easy


@pytest.mark.slow  # the fixture trains three aisfx runs: ~100 s on a busy 2-core CPU
def test_view_embeddings_are_the_vectors_the_fusion_cached(fusion_runs):
    from earmark.data.prepared import prepare_data
    from earmark.embed.views import view_embeddings

    base, _, average, _ = fusion_runs
    config = load_config(average.run_dir / "config.yaml")
    prepared = prepare_data(config, progress=False)
    vectors = view_embeddings(prepared, ["mfcc_stats", "aisfx"], 44100, progress=False)
    rows = prepared.items["row"].to_numpy()
    assert vectors["aisfx"].shape[1] == 1024 and vectors["mfcc_stats"].shape[1] == 240
    model = api_model(average.run_dir)
    clips = torch.from_numpy(np.asarray(prepared.cache.waves[rows[:4]]))[:, None]  # (4, 1, T)
    with torch.no_grad():
        fused = model.forward_features(clips).numpy()  # aisfx then mfcc_stats, the run's order
    np.testing.assert_allclose(fused, np.concatenate([vectors["aisfx"][rows[:4]], vectors["mfcc_stats"][rows[:4]]],
                                                     axis=1), rtol=1e-4, atol=1e-4)


def api_model(run_dir):
    from earmark.export.onnx import load_classifier

    return load_classifier(run_dir)[0].model


@pytest.mark.slow  # the fixture trains three aisfx runs: ~100 s on a busy 2-core CPU
def test_evaluate_and_predict_through_the_views_reproduce_the_cached_scores(fusion_runs, tmp_path):
    _, _, average, concat = fusion_runs
    for run in (average, concat):
        metrics = api.evaluate(run.run_dir, out_dir=tmp_path / run.run_dir.name)  # waves through every view
        assert metrics["accuracy"] == pytest.approx(run.metrics["accuracy"])
        cached = pd.read_csv(run.run_dir / "predictions.csv")
        again = pd.read_csv(tmp_path / run.run_dir.name / "predictions.csv")
        columns = [c for c in cached if c.startswith("p_")]
        np.testing.assert_allclose(again[columns].to_numpy(), cached[columns].to_numpy(), atol=1e-4)
    cached = pd.read_csv(average.run_dir / "predictions.csv")
    result = api.predict(average.run_dir, cached["path"].tolist(), top_k=1)
    assert result.files["label"].tolist() == cached["predicted"].astype(str).tolist()


@pytest.mark.slow  # the fixture trains three aisfx runs: ~100 s on a busy 2-core CPU
def test_a_fusion_exports_one_onnx_graph_with_parity_and_serves(fusion_runs, tmp_path):
    from fastapi.testclient import TestClient

    from earmark.serve.app import create_app, load_model
    from earmark.serve.audio import ServeLimits

    base, _, average, _ = fusion_runs
    exported = api.export(average.run_dir, tmp_path / "export", log=lambda text: None)
    assert exported.parity["fp32"]["passed"] and exported.parity["fp32"]["top1_agreement"] == 1.0
    path = tmp_path / "low.wav"
    sf.write(path, tone_clip(300.0, 8000, 0.5, 77), 8000)
    expected = api.predict(average.run_dir, [path], top_k=1).files.iloc[0]
    app = create_app(load_model(exported.model_path, threads=1), ServeLimits(), model_name="fusion",
                     model_path=str(exported.model_path))
    with TestClient(app) as client, open(path, "rb") as handle:
        body = client.post("/predict", files={"file": ("low.wav", handle, "audio/wav")}).json()
    assert body["label"] == expected["label"] == "low"
    assert body["probability"] == pytest.approx(expected["probability"], abs=1e-4)


def test_mfcc_stats_is_a_probe_and_an_embedder(tmp_path):
    run = api.train(load_config(overrides=overrides(tmp_path, "mfcc", "model.name=mfcc_stats")))
    assert run.metrics["accuracy"] >= 0.8 and run.metrics["probe"]["embedded_now"] == 36
    assert load_config(run.run_dir / "config.yaml").data.sample_rate_hz == 16000
    result = api.embed(None, overrides(tmp_path, "embed", "model.name=mfcc_stats"), out=tmp_path / "v.npy")
    assert np.load(result.out).shape == (36, 240) and result.embedded_now == 0
