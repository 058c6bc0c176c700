"""lite_cnn, cnn14 and the timm backbones: shapes, shared methods, weight loading, training end to end."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import timm
import torch

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.config import load_config
from earmark.data.audio import load_segments
from earmark.errors import EarmarkError
from earmark.models.registry import create_model, list_models
from earmark.predict.torch_predictor import Predictor


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine spinning OpenMP threads
    made this file ~15x slower; restored afterwards for the other test files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = (32, 48)  # (n_bins, frames): small enough for CPU, big enough for every backbone after resizing
SMALL_PARAMS = {"cnn14": {"width_div": 16}, "lite_cnn": {"width_mult": 0.5}}
MODEL_NAMES = ["lite_cnn", "cnn14", "resnet18", "resnet34", "resnet50", "densenet121", "inception_v3",
               "efficientnetv2_s", "timm:mobilenetv3_small_050"]


def test_registry_lists_the_cnn_family_with_its_weight_sources():
    entries = {entry.name: entry for entry in list_models()}
    assert {name for name in MODEL_NAMES if ":" not in name} <= set(entries)
    assert "model.params.pretrained_path" in entries["resnet18"].pretrained
    assert "tf_efficientnetv2_s" in entries["efficientnetv2_s"].pretrained
    assert "checkpoint_path" in entries["cnn14"].pretrained
    assert entries["lite_cnn"].pretrained is None


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_map_a_batch_to_logits_and_share_methods(name, channels):
    shape = (channels, *TINY)
    model = create_model(name, n_classes=5, input_shape=shape, **SMALL_PARAMS.get(name, {}))
    x = torch.randn(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 5)
    embedding = model.forward_features(x)
    assert embedding.shape == (2, model.num_features)
    assert model.forward_head(embedding, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)


def test_repeat_mode_keeps_three_channel_weights_and_tiles_the_input():
    model = create_model("resnet18", n_classes=4, input_shape=(2, *TINY), channel_mode="repeat").eval()
    assert model.backbone.conv1.in_channels == 3
    x = torch.randn(2, 2, *TINY)
    tiled = torch.cat([x, x[:, :1]], dim=1)  # channels (0, 1, 0)
    torch.testing.assert_close(model.forward_features(x),
                               model.backbone.forward_head(model.backbone.forward_features(tiled), pre_logits=True))


def test_small_inputs_are_resized_up_to_the_network_minimum():
    model = create_model("inception_v3", n_classes=2, input_shape=(1, 20, 33))  # 20 MFCCs: below 75x75
    assert model.min_size == 75
    assert model(torch.randn(2, 1, 20, 33)).shape == (2, 2)
    assert create_model("resnet18", n_classes=2, input_shape=(1, *TINY)).min_size == 32


def test_lite_cnn_is_small_and_scales_with_width_mult():
    def n_params(width_mult):
        return sum(p.numel() for p in create_model("lite_cnn", 10, (1, 64, 101), width_mult=width_mult).parameters())

    assert n_params(1.0) < 250_000
    assert n_params(0.5) < n_params(1.0) / 2.5
    model = create_model("lite_cnn", 10, (1, 64, 101), width_mult=0.75)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths)
    allowed = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.Linear, torch.nn.Dropout,
               torch.nn.AdaptiveAvgPool2d, torch.nn.Sequential, type(model))
    assert all(isinstance(m, allowed) for m in model.modules())  # quantizable building blocks only


def test_bad_params_are_reported_with_the_field():
    with pytest.raises(EarmarkError, match="channel_mode"):
        create_model("resnet18", 2, (1, *TINY), channel_mode="rgb")
    with pytest.raises(EarmarkError, match="width_div"):
        create_model("cnn14", 2, (1, *TINY), width_div=3)
    with pytest.raises(EarmarkError, match="width_mult"):
        create_model("lite_cnn", 2, (1, *TINY), width_mult=0)


def test_unknown_timm_name_suggests_how_to_list_names():
    with pytest.raises(EarmarkError, match=r"timm\.list_models\('\*resnet\*'\)") as error:
        create_model("timm:resnet9000", 2, (1, *TINY))
    assert "resnet50" in str(error.value)  # a close name


@pytest.mark.parametrize("channels, suffix", [(1, ".pth"), (2, ".safetensors")])
def test_pretrained_path_loads_a_timm_state_dict_and_adapts_the_first_conv(tmp_path, channels, suffix):
    import timm

    source = timm.create_model("resnet18")  # 3 input channels, 1000 ImageNet classes
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    model = create_model("resnet18", 4, (channels, *TINY), pretrained_path=str(path))
    rgb = source.conv1.weight.detach()
    # timm's adaptation: one channel sums RGB; more channels repeat RGB and rescale by 3 / channels
    expected = rgb.sum(dim=1, keepdim=True) if channels == 1 else rgb[:, :channels] * 3 / channels
    torch.testing.assert_close(model.backbone.conv1.weight.detach(), expected)
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    torch.testing.assert_close(model.backbone.bn1.running_var, source.bn1.running_var)
    assert model.head.out_features == 4 and "loaded" in model.weights_report_


def test_pretrained_path_of_another_architecture_names_the_file(tmp_path):
    path = tmp_path / "lite.pth"
    torch.save(create_model("lite_cnn", 3, (1, *TINY)).state_dict(), path)
    with pytest.raises(EarmarkError, match="lite.pth.*missing key"):
        create_model("resnet18", 3, (1, *TINY), pretrained_path=str(path))
    with pytest.raises(EarmarkError, match="does not exist"):
        create_model("resnet18", 3, (1, *TINY), pretrained_path=str(tmp_path / "absent.pth"))


def test_pretrained_without_network_says_how_to_supply_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the hub reads its settings at import; patch them too, with an empty cache so no cached copy is found
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(EarmarkError) as error:
        create_model("resnet18", 3, (1, *TINY), pretrained=True)
    message = str(error.value)
    assert "model.params.pretrained_path" in message and "HF_HOME" in message and "resnet18" in message
    with pytest.raises(EarmarkError, match="no pretrained weights.*tf_efficientnetv2_s"):
        create_model("timm:efficientnetv2_s", 3, (1, *TINY), pretrained=True)


def _panns_checkpoint(model, path):
    """Save `model` in the layout of the official Cnn14_mAP=0.431.pth: {'model': state_dict} with
    PANNs' own front-end and AudioSet classifier beside the conv/fc weights."""
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("head.")}
    state.update({"fc_audioset.weight": torch.randn(527, 128), "fc_audioset.bias": torch.randn(527),
                  "logmel_extractor.melW": torch.randn(64, 513), "bn0.weight": torch.ones(64)})
    torch.save({"model": state, "iteration": 600000}, path)


def test_cnn14_loads_a_panns_checkpoint_and_rejects_a_mismatch(tmp_path):
    source = create_model("cnn14", 527, (1, *TINY), width_div=16)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_()
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    _panns_checkpoint(source, path)
    model = create_model("cnn14", 5, (1, *TINY), width_div=16, checkpoint_path=str(path))
    torch.testing.assert_close(model.conv_block1.conv1.weight, source.conv_block1.conv1.weight)
    torch.testing.assert_close(model.conv_block6.bn2.bias, source.conv_block6.bn2.bias)
    torch.testing.assert_close(model.fc1.weight, source.fc1.weight)
    n_tensors = len([k for k in source.state_dict() if not k.startswith("head.")])
    assert model.weights_report_.startswith(f"loaded {n_tensors} tensors")
    two_channels = create_model("cnn14", 5, (2, *TINY), width_div=16, checkpoint_path=str(path))
    torch.testing.assert_close(two_channels.conv_block1.conv1.weight,
                               source.conv_block1.conv1.weight.repeat(1, 2, 1, 1) / 2)

    with pytest.raises(EarmarkError, match=r"Cnn14_mAP=0\.431\.pth.*width_div"):
        create_model("cnn14", 5, (1, *TINY), width_div=8, checkpoint_path=str(path))  # other widths
    other = tmp_path / "not_panns.pth"
    torch.save({"model": create_model("lite_cnn", 3, (1, *TINY)).state_dict()}, other)
    with pytest.raises(EarmarkError, match="not_panns.pth.*missing key"):
        create_model("cnn14", 5, (1, *TINY), width_div=16, checkpoint_path=str(other))


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory):
    """3 classes × 8 sine-tone WAVs (8 kHz, 0.5 s) and a cache folder shared by the training runs."""
    base = tmp_path_factory.mktemp("cnn_tones")
    for class_index, (label, frequency_hz) in enumerate(TONES_HZ.items()):
        (base / "tones" / label).mkdir(parents=True)
        for take in range(8):
            sf.write(base / "tones" / label / f"{label}_{take}.wav",
                     tone_clip(frequency_hz, 8000, 0.5, class_index * 100 + take), 8000)
    return base


@pytest.mark.parametrize("name, params", [("lite_cnn", []), ("cnn14", ["model.params.width_div=8"]),
                                          ("resnet18", []), ("timm:mobilenetv3_small_050", ["local weights"])])
def test_one_epoch_trains_and_the_run_predicts_what_it_saved(tone_data, tmp_path, name, params):
    weights = tmp_path / "weights.pth"
    if params == ["local weights"]:  # trained from a local file, which is gone by prediction time
        torch.save(timm.create_model("mobilenetv3_small_050").state_dict(), weights)
        params = [f"model.params.pretrained_path={weights}"]
    overrides = [f"runs_dir={tmp_path / 'runs'}", f"workspace={tmp_path / 'ws'}", "data.source=folder",
                 f"data.path={tone_data / 'tones'}", "data.sample_rate_hz=8000", "data.duration_s=0.5",
                 f"data.cache_dir={tone_data / 'cache'}", "data.workers=1", "split.val_fraction=0.2",
                 "split.test_fraction=0.25", "features.n_fft=256", "features.n_mels=32", "train.max_epochs=1",
                 "train.batch_size=8", "train.progress=false", f"model.name={name}", *params]
    config = load_config(overrides=overrides)
    result = api.train(config)
    saved = pd.read_csv(result.run_dir / "predictions.csv")
    assert len(saved) >= 3
    weights.unlink(missing_ok=True)  # a checkpoint alone is enough to predict
    predictor = Predictor.from_run(result.run_dir, device="cpu")
    waves = np.concatenate([load_segments(path, config.data)[0] for path in saved["path"]])
    probabilities = predictor.predict_waves(waves)
    expected = saved[[f"p_{label}" for label in predictor.labels]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
