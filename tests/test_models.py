import pytest
import torch

from earmark.errors import EarmarkError
from earmark.models.registry import check_model_config, create_model, list_models


def test_registry_lists_the_spine_models():
    names = [entry.name for entry in list_models()]
    assert "simple_cnn" in names and "wave_cnn" in names


@pytest.mark.parametrize("name, shape", [("simple_cnn", (1, 64, 101)), ("wave_cnn", (1, 16000)),
                                         ("simple_cnn", (1, 20, 33))])
def test_models_map_a_batch_to_logits_and_share_methods(name, shape):
    model = create_model(name, n_classes=7, input_shape=shape, width=8)
    x = torch.randn(3, *shape)
    logits = model(x)
    assert logits.shape == (3, 7)
    embedding = model.forward_head(model.forward_features(x), pre_logits=True)
    assert embedding.shape == (3, model.num_features)
    model.reset_classifier(4)
    assert model(x).shape == (3, 4)
    logits.sum().backward()  # trainable end to end


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(EarmarkError) as error:
        check_model_config("resnet9000", {}, "log_mel")
    assert "simple_cnn" in str(error.value) and "wave_cnn" in str(error.value)


def test_unknown_model_param_is_caught_at_config_time():
    with pytest.raises(EarmarkError, match="widht"):
        check_model_config("simple_cnn", {"widht": 4}, "log_mel")


def test_feature_model_mismatch_is_caught_at_config_time():
    with pytest.raises(EarmarkError, match="features.kind=waveform"):
        check_model_config("wave_cnn", {}, "log_mel")
    with pytest.raises(EarmarkError, match="spectrogram"):
        check_model_config("simple_cnn", {}, "waveform")
