"""The in-graph resampler: soxr's numbers away from the edges, lengths, identity, batches, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch

from earmark.models.resample import Resample, resampled_length


def two_tones(rate_hz: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 1900 * t)).astype(np.float32)


@pytest.mark.parametrize("orig_hz,new_hz", [(16000, 44100), (44100, 16000), (8000, 16000), (16000, 8000),
                                            (22050, 16000)])
def test_resampling_agrees_with_soxr_away_from_the_edges(orig_hz, new_hz):
    wave = two_tones(orig_hz)
    ours = Resample(orig_hz, new_hz)(torch.from_numpy(wave)[None])[0].numpy()
    reference = soxr.resample(wave, orig_hz, new_hz)
    assert len(ours) == resampled_length(len(wave), orig_hz, new_hz)
    n = min(len(ours), len(reference))
    inner = slice(new_hz // 50, n - new_hz // 50)
    assert np.abs(ours[inner] - reference[inner]).max() < 0.02


def test_equal_rates_are_the_identity_and_batches_are_independent():
    wave = torch.from_numpy(np.stack([two_tones(16000), 0.1 * two_tones(16000)]))
    assert torch.equal(Resample(16000, 16000)(wave), wave)
    down = Resample(16000, 8000)
    both = down(wave)
    assert torch.allclose(both[1], down(wave[1:])[0], atol=1e-6)
    assert both.shape == (2, 8000)


def test_the_resampler_exports_to_onnx_with_any_length(tmp_path):
    import onnxruntime

    module = Resample(8000, 16000).eval()
    path = tmp_path / "resample.onnx"
    torch.onnx.export(module, (torch.zeros(1, 8000),), str(path), input_names=["wave"], output_names=["out"],
                      dynamic_axes={"wave": {0: "batch", 1: "samples"}}, dynamo=False)
    wave = two_tones(8000, 0.5)[None]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"wave": wave})
    expected = module(torch.from_numpy(wave)).numpy()
    assert out.shape == expected.shape == (1, 8000)
    assert np.abs(out - expected).max() < 1e-4
