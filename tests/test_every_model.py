"""Every registered model, at a tiny size: builds, trains a step, round-trips its state_dict, exports to ONNX.

The models come from the registry, not from a list written here; TINY_PARAMS says how small each one is
built. A new model must add a row to it (the test names the model and says so).
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from conftest import tone_clip
from earmark.config import FeaturesConfig, TrainConfig
from earmark.contract import InputContract
from earmark.export.onnx import export_graph
from earmark.models.registry import list_models
from earmark.train.module import AudioClassifier

RATE_HZ, CLIP_S, LABELS = 8000, 0.5, ("a", "b", "c")
GROUPS = ["ann", "bob"]  # for models registered with needs_groups

# model name → model.params that make it tiny (seconds on a CPU). Every registered model needs a row.
TINY_PARAMS: dict[str, dict] = {
    "simple_cnn": {"width": 4},
    "wave_cnn": {"width": 4, "first_kernel": 16, "first_stride": 4},
    "lite_cnn": {"width_mult": 0.25},
    "cnn14": {"width_div": 32},
    "resnet18": {},
    "resnet34": {},
    "resnet50": {},
    "densenet121": {},
    "efficientnetv2_s": {},
    "inception_v3": {},
    "ast": {"hidden_size": 16, "num_layers": 1, "num_heads": 2},
    "cnn_gpt2": {"n_layer": 1, "n_head": 2, "n_embd": 16, "cnn_channels": 4},
    "wav2vec2": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                 "conv_dim": [16, 16], "conv_kernel": [10, 4], "conv_stride": [5, 4]},
    "personalized": {"base_params": {"width": 4}},
    "aisfx": {"head": "linear"},  # a fixed pretrained network (4.7 M): only the head is small
    "resemblyzer": {"head": "linear"},  # a fixed pretrained LSTM (1.4 M)
    "crepe": {"head": "linear"},  # the bundled tiny CREPE (487 k)
    "mfcc_stats": {"head": "linear"},  # nothing learned before the head
    "fusion": {"views": ["mfcc_stats"], "combine": "average"},  # tests/test_fusion.py fuses aisfx too
    "hf_audio": {"hf_config": {"model_type": "wav2vec2", "hidden_size": 16, "num_hidden_layers": 1,  # no download:
                               "num_attention_heads": 2, "intermediate_size": 32,  # built from its config
                               "conv_dim": [16, 16], "conv_kernel": [10, 4], "conv_stride": [5, 4],
                               "num_feat_extract_layers": 2}},
    "panns_cnn14": {"width_div": 16},
    "clap_audio": {"hf_config": {"model_type": "clap", "projection_dim": 8,  # text tower built, unused
                                 "text_config": {"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 1,
                                                 "num_attention_heads": 2, "intermediate_size": 32,
                                                 "max_position_embeddings": 40},
                                 "audio_config": {"patch_embeds_hidden_size": 8, "depths": [1, 1],
                                                  "num_attention_heads": [1, 2], "hidden_size": 16,
                                                  "window_size": 8}}},
    # two tiny members: one at the input's rate and length, one resampled to 4 kHz and cut to 0.25 s in the graph
    "ensemble": {"members": [
        {"model_name": "simple_cnn", "model_params": {"width": 4}, "contract": InputContract(
            RATE_HZ, CLIP_S, "pad", LABELS, FeaturesConfig(kind="log_mel", n_fft=256, n_mels=32).model_dump()).to_dict()},
        {"model_name": "wave_cnn", "model_params": {"width": 4, "first_kernel": 16, "first_stride": 4},
         "contract": InputContract(4000, 0.25, "pad", LABELS, FeaturesConfig(kind="waveform").model_dump()).to_dict()}],
        "weights": [1.0, 3.0]},
}
# full-size ImageNet backbones (no width parameter): seconds for a step, minutes to export on a CPU. They run
# with `-m slow`; resnet18 stands for them in the default run.
FULL_SIZE = {"resnet34", "resnet50", "densenet121", "efficientnetv2_s", "inception_v3"}
SLOW_EXPORTS = FULL_SIZE | {"ast", "cnn14", "aisfx", "clap_audio", "resemblyzer", "crepe"}  # 10-30 s for torch.export even when tiny (aisfx: tests/test_transfer.py exports it in the quick half, resemblyzer: tests/test_resemblyzer.py)

ENTRIES = {entry.name: entry for entry in list_models()}


def build(name: str, seed: int) -> AudioClassifier:
    entry = ENTRIES[name]
    if name not in TINY_PARAMS:
        pytest.fail(f"model '{name}' is registered but has no row in TINY_PARAMS in {__file__}: add the "
                    f"model.params that build it tiny (seconds on a CPU), so every model is built, trained, "
                    f"saved, loaded and exported by this test")
    kind = "waveform" if entry.input_kind == "waveform" else "log_mel"
    contract = InputContract(RATE_HZ, CLIP_S, "pad", LABELS, FeaturesConfig(kind=kind, n_fft=256, n_mels=32).model_dump())
    torch.manual_seed(seed)
    return AudioClassifier(contract.to_dict(), name, TINY_PARAMS[name], TrainConfig().model_dump(),
                           groups=GROUPS if entry.needs_groups else None)


def clips(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """waves (n, samples) of tones at different pitches, targets (n,)."""
    waves = np.stack([tone_clip(300.0 * (1 + i), RATE_HZ, CLIP_S, seed=i) for i in range(n)])
    return torch.from_numpy(waves), torch.arange(n) % len(LABELS)


def model_inputs(module: AudioClassifier, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if not module.uses_groups:
        return (waves,)
    return waves, torch.tensor([0, 1, -1, 0][:len(waves)], dtype=torch.long)  # -1: no group, the base model


def prepared(name: str, seed: int = 0) -> AudioClassifier:
    module = build(name, seed)
    module.frontend.fit_normalization([clips()[0]])
    if module.uses_groups:
        torch.nn.init.normal_(module.model.film.weight, std=0.5)  # make the groups matter
    return module


def parametrize_models(slow: set[str] = frozenset()):
    return pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in slow else [])
                                            for name in sorted(ENTRIES)])


def test_the_table_names_only_registered_models():
    stale = sorted(set(TINY_PARAMS) - set(ENTRIES))
    assert not stale, f"TINY_PARAMS has rows for models that are not registered: {stale}"


@parametrize_models(slow=FULL_SIZE)
def test_one_training_step_moves_the_weights_and_the_state_dict_round_trips(name):
    module = prepared(name)
    waves, targets = clips()
    inputs = model_inputs(module, waves)
    module.train()
    trainable = {key: p.detach().clone() for key, p in module.named_parameters() if p.requires_grad}
    assert trainable, f"{name} has no trainable parameters"
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    loss = F.cross_entropy(module(*inputs), targets)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in module.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), f"{name}: no or non-finite gradients"
    optimizer.step()
    moved = [key for key, p in module.named_parameters() if p.requires_grad and not torch.equal(p, trainable[key])]
    assert moved, f"{name}: one optimizer step changed no weight"

    module.eval()
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    loaded = build(name, seed=1).eval()  # other random weights until the state_dict replaces them
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        expected, actual = module(*inputs), loaded(*inputs)
    assert expected.shape == (len(waves), len(LABELS))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@parametrize_models(slow=SLOW_EXPORTS)
@pytest.mark.timeout(600)  # efficientnetv2_s: 260 s on a quiet 2-core machine (densenet121 37 s)
def test_exports_to_onnx_and_onnxruntime_matches_torch(name, tmp_path, capfd):
    module = prepared(name).eval()
    waves, _ = clips()
    inputs = model_inputs(module, waves)
    path = tmp_path / "model.onnx"
    how = export_graph(module, path)  # earmark's exporter: dynamo, its fixed-length fallback, then TorchScript
    printed = capfd.readouterr()
    assert "Error" not in printed.err + printed.out and "Traceback" not in printed.err, printed.err[-2000:]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"wave": waves.numpy()}
    if module.uses_groups:
        feeds["group"] = inputs[1].numpy()
    probabilities, logits = session.run(None, feeds)
    with torch.no_grad():
        expected_logits = module(*inputs).float()
    expected = torch.softmax(expected_logits / module.temperature_, dim=1).numpy()
    scale = max(1.0, float(expected_logits.abs().max()))  # an untrained inception_v3 gives logits of ~1e6
    assert np.abs(logits - expected_logits.numpy()).max() < 1e-3 * scale, how
    assert np.abs(probabilities - expected).max() < 1e-4, how
    assert (probabilities.argmax(axis=1) == expected.argmax(axis=1)).all(), how
