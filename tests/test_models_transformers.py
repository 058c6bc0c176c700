"""cnn_gpt2, wav2vec2 and ast: shapes, training through the API, local/offline weights, freezing schedules.

Every model is tiny; nothing is downloaded (the hub is forced offline with an empty cache).
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import soundfile as sf
import torch

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.models.registry import create_model
from earmark.predict.torch_predictor import Predictor

TINY = {
    "cnn_gpt2": {"n_layer": 2, "n_head": 2, "n_embd": 32, "cnn_channels": 8},
    "wav2vec2": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                 "conv_dim": [32, 32], "conv_kernel": [10, 4], "conv_stride": [5, 4]},
    "ast": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
}
SPECTROGRAM = (32, 51)  # n_mels, frames: 0.5 s at 8 kHz, 10 ms hop
N_SAMPLES = 4000


def clip_shape(name: str, channels: int = 1) -> tuple[int, ...]:
    return (channels, N_SAMPLES) if name == "wav2vec2" else (channels, *SPECTROGRAM)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache, whatever the machine has."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once at import: patch the live value too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


def tiny_gpt2(n_positions: int = 64):
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(vocab_size=8, n_positions=n_positions, n_layer=2, n_head=2, n_embd=32,
                                bos_token_id=0, eos_token_id=0))


def tiny_wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    params = TINY["wav2vec2"]
    return Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, conv_dim=params["conv_dim"],
                                        conv_kernel=params["conv_kernel"], conv_stride=params["conv_stride"]))


def tiny_ast(n_mels: int = 32, max_length: int = 64):
    from transformers import ASTConfig, ASTModel

    return ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              num_mel_bins=n_mels, max_length=max_length))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("name", ["cnn_gpt2", "wav2vec2", "ast"])
def test_models_map_a_batch_to_logits_and_share_methods(name, channels):
    shape = clip_shape(name, channels)
    model = create_model(name, n_classes=5, input_shape=shape, **TINY[name])
    x = torch.randn(3, *shape)
    logits = model(x)
    assert logits.shape == (3, 5)
    logits.sum().backward()  # every trainable parameter is used: DDP rejects unused ones
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    embedding = model.forward_features(x)
    assert embedding.shape == (3, model.num_features)
    assert model.forward_head(embedding, pre_logits=True).shape == (3, model.num_features)
    model.reset_classifier(4)
    assert model(x).shape == (3, 4)


@pytest.mark.parametrize("name, params", [("cnn_gpt2", {"pooling": "last"}), ("wav2vec2", {"pooling": "attention"})])
def test_other_poolings_give_embeddings_of_the_stated_size(name, params):
    model = create_model(name, n_classes=3, input_shape=clip_shape(name), **TINY[name], **params)
    assert model.forward_features(torch.randn(2, *clip_shape(name))).shape == (2, model.num_features)


@pytest.fixture(scope="module")
def tone_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer_tones") / "tones"
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(8):
            sf.write(root / label / f"{label}_{take}.wav", tone_clip(frequency, 8000, 0.5, class_index * 100 + take),
                     8000)
    return root


def pipeline_overrides(root, tmp_path, name: str) -> list[str]:
    overrides = [f"runs_dir={tmp_path / 'runs'}", f"workspace={tmp_path / 'ws'}", "data.source=folder",
                 f"data.path={root}", "data.sample_rate_hz=8000", "data.duration_s=0.5",
                 f"data.cache_dir={tmp_path / 'ws' / 'cache'}", "data.workers=1", "split.val_fraction=0.2",
                 "split.test_fraction=0.25", "features.n_fft=256", "features.n_mels=32", "train.max_epochs=1",
                 "train.batch_size=8", "train.progress=false", f"model.name={name}", f"name={name}"]
    if name == "wav2vec2":
        overrides.append("features.kind=waveform")
    return overrides + [f"model.params.{key}={value}" for key, value in TINY[name].items()]


@pytest.mark.parametrize("name", ["cnn_gpt2", "wav2vec2", "ast"])
def test_one_epoch_through_the_api_and_the_run_predicts_the_same(name, tone_root, tmp_path):
    extra = []
    if name == "cnn_gpt2":  # the fine-tuning recipe: local GPT-2, frozen until epoch 1, its own learning rate
        gpt2 = tiny_gpt2()
        gpt2.save_pretrained(tmp_path / "gpt2")
        extra = ["model.params.pretrained=true", f"model.params.gpt2_path={tmp_path / 'gpt2'}",
                 "model.params.unfreeze_epochs=[1]", "train.param_groups=[{prefix: model.gpt2, lr: 0.001}]",
                 "train.lr=0.01"]
    result = api.train(load_config(overrides=pipeline_overrides(tone_root, tmp_path, name) + extra))
    if name == "cnn_gpt2":  # the checkpoint alone rebuilds the model: the weights folder is no longer needed
        shutil.rmtree(tmp_path / "gpt2")

    predictions = pd.read_csv(result.run_dir / "predictions.csv")
    predictor = Predictor.from_run(result.run_dir)
    table = predictor.predict_files(predictions["path"], top_k=3).files.set_index("path")
    for row in predictions.itertuples():
        found = table.loc[row.path]
        again = {found["label"]: found["probability"], found["top2_label"]: found["top2_probability"],
                 found["top3_label"]: found["top3_probability"]}
        assert again == pytest.approx({label: getattr(row, f"p_{label}") for label in TONES_HZ}, abs=2e-6)
    if name == "cnn_gpt2":  # epoch 0 of the schedule: GPT-2 frozen, so its weights are the loaded ones
        state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert torch.equal(state["model.gpt2.h.1.attn.c_attn.weight"], gpt2.h[1].attn.c_attn.weight)
        assert torch.equal(state["model.gpt2.wpe.weight"], gpt2.wpe.weight)


@pytest.mark.parametrize("name", ["cnn_gpt2", "wav2vec2", "ast"])
def test_pretrained_weights_load_from_a_local_folder(name, tmp_path):
    folder = tmp_path / name
    if name == "cnn_gpt2":
        source = tiny_gpt2()
        params = {"gpt2_path": str(folder)}
    else:
        source = tiny_wav2vec2() if name == "wav2vec2" else tiny_ast()
        params = {"model_name_or_path": str(folder)}
    source.save_pretrained(folder)
    model = create_model(name, n_classes=3, input_shape=clip_shape(name), pretrained=True, **params)
    encoder = {"cnn_gpt2": "gpt2", "wav2vec2": "wav2vec2", "ast": "ast"}[name]
    loaded = dict(getattr(model, encoder).named_parameters())
    expected = dict(source.named_parameters())
    layer_weights = [key for key in expected if key.startswith(("h.1.", "encoder.layers.1.", "layers.0."))
                     and key.endswith("weight")]
    assert layer_weights and all(torch.equal(loaded[key], expected[key]) for key in layer_weights)
    assert all(module.training for module in model.modules())  # from_pretrained's eval mode is undone
    assert model(torch.randn(2, *clip_shape(name))).shape == (2, 3)


def test_a_shorter_clip_keeps_the_first_time_positions_of_a_pretrained_ast(tmp_path):
    source = tiny_ast(max_length=64)  # 2 x 5 patches; 51 frames give 2 x 4
    source.save_pretrained(tmp_path / "ast")
    model = create_model("ast", 3, clip_shape("ast"), pretrained=True, model_name_or_path=str(tmp_path / "ast"))
    table, grid = model.ast.embeddings.position_embeddings, source.embeddings.position_embeddings
    assert table.shape == (1, 2 + 2 * 4, 32)
    assert torch.equal(table[:, 2:].reshape(2, 4, 32), grid[:, 2:].reshape(2, 5, 32)[:, :4])


@pytest.mark.parametrize("name, field", [("cnn_gpt2", "model.params.gpt2_path"),
                                         ("wav2vec2", "model.params.model_name_or_path"),
                                         ("ast", "model.params.model_name_or_path")])
def test_a_hub_id_offline_fails_with_how_to_supply_the_weights(name, field):
    shape = (1, 128, 51) if name == "ast" else clip_shape(name)
    with pytest.raises(EarmarkError) as error:
        create_model(name, n_classes=3, input_shape=shape, pretrained=True)
    message = str(error.value)
    assert field in message and "HF_HOME" in message and "Traceback" not in message


def test_local_paths_that_are_missing_or_not_a_model_are_named(tmp_path):
    with pytest.raises(EarmarkError, match="model.params.gpt2_path=.*does not exist"):
        create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), pretrained=True, gpt2_path=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EarmarkError, match="local folder .*empty.*model.params.model_name_or_path"):
        create_model("wav2vec2", 3, clip_shape("wav2vec2"), pretrained=True, model_name_or_path=str(tmp_path / "empty"))
    with pytest.raises(EarmarkError, match="pretrained=true"):
        create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), gpt2_path=str(tmp_path))


def test_clips_longer_than_gpt2_positions_fail_at_build_time(tmp_path):
    tiny_gpt2(n_positions=40).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(EarmarkError, match="data.duration_s.*features.hop_ms"):
        create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), pretrained=True, gpt2_path=str(tmp_path / "gpt2"))


def gpt2_trainable(model) -> list[bool]:
    return [all(p.requires_grad for p in block.parameters()) for block in model.gpt2.h]


def test_gradual_unfreezing_follows_the_schedule_top_block_first():
    model = create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), unfreeze_epochs=[1, 2], **TINY["cnn_gpt2"])
    states = {}
    for epoch in (0, 1, 2, 1):
        model.set_epoch(epoch)
        states[epoch] = gpt2_trainable(model)
        assert all(p.requires_grad for p in model.cnn.parameters()) and model.head.weight.requires_grad
    assert states == {0: [False, False], 1: [False, True], 2: [True, True]}
    model.set_epoch(0)
    assert not model.gpt2.ln_f.weight.requires_grad and not model.gpt2.wpe.weight.requires_grad

    resumed = create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), unfreeze_epochs=[1, 2], **TINY["cnn_gpt2"])
    resumed.set_epoch(2)  # a run resumed at epoch 2 has every group trainable at once
    assert gpt2_trainable(resumed) == [True, True] and resumed.gpt2.wpe.weight.requires_grad
    assert not resumed.gpt2.wte.weight.requires_grad  # never read (inputs_embeds), never trained


def test_bad_unfreezing_and_pooling_params_are_named():
    with pytest.raises(EarmarkError, match="unfreeze_epochs lists 3 epochs but GPT-2 has 2 blocks"):
        create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), unfreeze_epochs=[1, 2, 3], **TINY["cnn_gpt2"])
    with pytest.raises(EarmarkError, match="ascending"):
        create_model("cnn_gpt2", 3, clip_shape("cnn_gpt2"), unfreeze_epochs=[2, 1], **TINY["cnn_gpt2"])
    with pytest.raises(EarmarkError, match="model.params.pooling must be one of mean, attention"):
        create_model("wav2vec2", 3, clip_shape("wav2vec2"), pooling="max", **TINY["wav2vec2"])


def wav2vec2_trainable(model) -> set[str]:
    return {name for name, p in model.wav2vec2.named_parameters() if p.requires_grad}


def test_wav2vec2_trainable_layers_and_the_frozen_feature_encoder():
    default = create_model("wav2vec2", 3, clip_shape("wav2vec2"), **TINY["wav2vec2"])
    trainable = wav2vec2_trainable(default)
    assert not any(name.startswith("feature_extractor.") for name in trainable)
    assert any(name.startswith("encoder.layers.0.") for name in trainable)
    assert any(name.startswith("feature_projection.") for name in trainable)

    frozen = create_model("wav2vec2", 3, clip_shape("wav2vec2"), trainable_layers=0, **TINY["wav2vec2"])
    assert wav2vec2_trainable(frozen) == set() and frozen.head.weight.requires_grad

    top = create_model("wav2vec2", 3, clip_shape("wav2vec2"), trainable_layers=1, **TINY["wav2vec2"])
    assert wav2vec2_trainable(top) and all(name.startswith("encoder.layers.1.") for name in wav2vec2_trainable(top))
    logits = top(torch.randn(2, *clip_shape("wav2vec2")))
    logits.sum().backward()
    assert top.wav2vec2.encoder.layers[1].attention.q_proj.weight.grad is not None
    assert top.wav2vec2.encoder.layers[0].attention.q_proj.weight.grad is None

    with pytest.raises(EarmarkError, match="trainable_layers must be between 0 and 2"):
        create_model("wav2vec2", 3, clip_shape("wav2vec2"), trainable_layers=3, **TINY["wav2vec2"])


def test_pretrained_ast_mismatches_name_the_setting_to_change(tmp_path):
    tiny_ast(n_mels=32, max_length=40).save_pretrained(tmp_path / "ast")
    folder = str(tmp_path / "ast")
    with pytest.raises(EarmarkError, match="features.n_mels=32"):
        create_model("ast", 3, (1, 64, 40), pretrained=True, model_name_or_path=folder)
    with pytest.raises(EarmarkError, match="data.duration_s"):
        create_model("ast", 3, (1, 32, 51), pretrained=True, model_name_or_path=folder)
