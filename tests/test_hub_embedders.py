"""Hub and local backbones through the embedding path: tiny randomly initialised models saved locally."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.models.hub_frontends import AstFbank, ClapLogMel, WhisperLogMel
from earmark.models.registry import create_model
from tiny_runs import tone_dataset

pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")


def tiny_wav2vec2(folder):
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=[16, 16], conv_kernel=[10, 4], conv_stride=[5, 4], num_feat_extract_layers=2)
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(folder)
    return folder


def tiny_whisper(folder):
    config = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                           vocab_size=60000, max_source_positions=1500, max_target_positions=32)
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    return folder


def tiny_ast(folder):
    torch.manual_seed(0)
    ASTModel(ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_length=100)).save_pretrained(folder)
    ASTFeatureExtractor(max_length=100).save_pretrained(folder)  # what a hub AST folder holds beside the weights
    return folder


def tiny_clap(folder):
    config = ClapConfig(text_config={"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 40},
                        audio_config={"patch_embeds_hidden_size": 8, "depths": [1, 1], "num_attention_heads": [1, 2],
                                      "hidden_size": 16, "window_size": 8}, projection_dim=8)
    torch.manual_seed(0)
    ClapModel(config).save_pretrained(folder)
    ClapFeatureExtractor(truncation="rand_trunc", frequency_min=50).save_pretrained(folder)
    return folder


def overrides(base, name, *extra):
    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
            "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}", "data.workers=1",
            "split.val_fraction=0.2", "split.test_fraction=0.25", "train.progress=false", f"name={name}", *extra]


def test_a_local_wav2vec2_probes_caches_and_reloads_without_its_folder(tmp_path):
    folder = tiny_wav2vec2(tmp_path / "w2v")
    backbone = ["model.name=hf_audio", f"model.params.model_name_or_path={folder}"]
    first = api.train(load_config(overrides=overrides(tmp_path, "w2v", *backbone)))
    config = load_config(first.run_dir / "config.yaml")
    assert config.data.sample_rate_hz == 16000 and config.features.kind == "waveform"
    assert first.metrics["probe"]["embedded_now"] == 36 and first.metrics["probe"]["backbone"].startswith("hf-wav2vec2")
    second = api.train(load_config(overrides=overrides(tmp_path, "again", *backbone, "model.params.head=mlp")))
    assert second.metrics["probe"]["embedded_now"] == 0
    shutil.rmtree(folder)  # the run's checkpoint rebuilds the encoder from its saved config
    clip = str(tmp_path / "tones" / "high" / "high_0.wav")
    assert len(api.predict(first.run_dir, [clip]).files) == 1


def test_whisper_log_mel_matches_transformers_feature_extractor():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    expected = WhisperFeatureExtractor(feature_size=80)(wave, sampling_rate=16000, return_tensors="np").input_features
    ours = WhisperLogMel(80)(torch.from_numpy(wave)[None]).numpy()
    assert ours.shape == expected.shape == (1, 80, 3000)
    assert np.abs(ours - expected).max() < 2e-3


def test_a_local_whisper_encoder_embeds_a_clip(tmp_path):
    model = create_model("hf_audio", 3, (1, 8000), model_name_or_path=str(tiny_whisper(tmp_path / "whisper")))
    assert model.backbone_id.startswith("hf-whisper") and model.embedding_dim == 32
    assert model.forward_features(torch.randn(2, 1, 8000)).shape == (2, 32)


def test_panns_cnn14_needs_its_checkpoint_file_and_builds_narrow_without(tmp_path):
    with pytest.raises(EarmarkError, match="checkpoint_path"):
        create_model("panns_cnn14", 3, (1, 32000))
    with pytest.raises(EarmarkError, match="does not exist"):
        create_model("panns_cnn14", 3, (1, 32000), checkpoint_path=str(tmp_path / "Cnn14.pth"))
    model = create_model("panns_cnn14", 3, (1, 32000), width_div=16)
    assert model(torch.randn(2, 1, 32000)).shape == (2, 3)
    rebuilt = create_model("panns_cnn14", 3, (1, 32000), **model.offline_params({"width_div": 16}))
    assert rebuilt.embedding_dim == model.embedding_dim


def test_a_hub_backbone_offline_is_one_error_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "earmark", "train", *overrides(tmp_path, "x", "model.name=hf_audio")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: pretrained weights for model 'hf_audio'") and "hf download" in lines[-1]
    assert "Traceback" not in done.stderr


def test_ast_fbank_matches_transformers_feature_extractor():
    wave = (0.1 * np.random.default_rng(1).standard_normal(16000 * 3)).astype(np.float32)
    extractor = ASTFeatureExtractor(max_length=400)  # 4 s of frames: the 3-s clip is padded, as AST pads
    expected = extractor(wave, sampling_rate=16000, return_tensors="np").input_values
    ours = AstFbank(extractor)(torch.from_numpy(wave)[None]).numpy()
    assert ours.shape == expected.shape == (1, 400, 128)
    assert np.abs(ours - expected).max() < 1e-3


@pytest.mark.parametrize("truncation", ["fusion", "rand_trunc"])
def test_clap_log_mel_matches_transformers_feature_extractor(truncation):
    wave = (0.1 * np.random.default_rng(2).standard_normal(48000 * 2)).astype(np.float32)  # repeated to 10 s
    extractor = ClapFeatureExtractor(truncation=truncation)
    expected = extractor(wave, sampling_rate=48000, return_tensors="np").input_features
    ours = ClapLogMel(extractor)(torch.from_numpy(wave)[None]).numpy()
    assert ours.shape == expected.shape == (1, 4 if truncation == "fusion" else 1, 1001, 64)
    assert np.abs(ours - expected).max() < 1e-3


def test_a_local_ast_probes_and_reloads_without_its_folder(tmp_path):
    folder = tiny_ast(tmp_path / "ast")
    backbone = ["model.name=hf_audio", f"model.params.model_name_or_path={folder}"]
    run = api.train(load_config(overrides=overrides(tmp_path, "ast", *backbone)))
    assert run.metrics["probe"]["backbone"].startswith("hf-audio-spectrogram-transformer")
    assert run.metrics["probe"]["embedded_now"] == 36
    clip = str(tmp_path / "tones" / "high" / "high_0.wav")
    before = api.predict(run.run_dir, [clip]).files.iloc[0]
    shutil.rmtree(folder)  # the checkpoint rebuilds the encoder and its fbank settings from the run's config
    after = api.predict(run.run_dir, [clip]).files.iloc[0]
    assert after["label"] == before["label"] and abs(after["probability"] - before["probability"]) < 1e-5


def test_a_local_clap_probes_at_48_khz(tmp_path):
    folder = tiny_clap(tmp_path / "clap")
    run = api.train(load_config(overrides=overrides(tmp_path, "clap", "model.name=clap_audio",
                                                    f"model.params.model_name_or_path={folder}")))
    config = load_config(run.run_dir / "config.yaml")
    assert config.data.sample_rate_hz == 48000 and run.metrics["probe"]["backbone"].startswith("clap-")
    with pytest.raises(EarmarkError, match="clap_audio"):
        create_model("hf_audio", 3, (1, 16000), model_name_or_path=str(folder))


def test_clap_from_the_hub_offline_says_how_to_supply_it(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EarmarkError, match=r"pretrained weights for model 'clap_audio'(.|\n)*hf download"):
        create_model("clap_audio", 3, (1, 48000))
