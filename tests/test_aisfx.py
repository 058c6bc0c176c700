"""The aisfx port against the aisfx 0.1.2 package's own front-end and network.

tests/fixtures/aisfx_reference.npz was written by tools/make_aisfx_fixture.py in a separate venv with the
package installed: four FSDD clips resampled to 44.1 kHz as the package loads them, one synthetic 5-s clip,
their normalised log-mel frames and the package's block embeddings. Tolerances are ~4x what this port
reaches on x86 CPU (log-mels: max |diff| 2.4e-5; block embeddings: max |diff| 4.9e-5, cosine >= 0.99999994).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from earmark.errors import EarmarkError
from earmark.models import aisfx
from earmark.models.aisfx import AisfxEmbedder, AisfxNet, load_aisfx_weights
from earmark.models.aisfx_frontend import BLOCK_FRAMES, N_MELS, SAMPLE_RATE_HZ, AisfxFrontEnd, frame_blocks, n_blocks

FIXTURE = Path(__file__).parent / "fixtures" / "aisfx_reference.npz"
LOG_MEL_ATOL = 1e-4  # normalised log-mel units (values in [0, ~1])
EMBEDDING_ATOL = 2e-4  # block embeddings' entries reach ~10
MIN_COSINE = 0.99999


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ, duration_s: float = 5.0) -> np.ndarray:
    """A copy of tools/make_aisfx_fixture.py's synthetic_clip: tones, a chirp, a hashed-noise burst."""
    n = np.arange(int(sample_rate_hz * duration_s), dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0
    t = n.astype(np.float64) / sample_rate_hz
    chirp = np.sin(2 * np.pi * (200.0 * t + (8000.0 - 200.0) / (2 * duration_s) * t ** 2))
    burst = ((t >= 2.0) & (t < 3.0)).astype(np.float64)
    wave = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t) + 0.2 * chirp
    return (wave + 0.3 * burst * noise).astype(np.float32)


def package_blocking(data: np.ndarray, block_size: int = 100, hop_size: int = 50) -> np.ndarray:
    """aisfx 0.1.2's `preprocessing.blocking(..., drop_partial_block=True)`, reduced to what it computes."""
    num_blocks = int(np.ceil((data.shape[0] - block_size) / hop_size + 1))
    if (data.shape[0] - block_size) % hop_size != 0:
        num_blocks -= 1
    num_blocks = max(num_blocks, 1)
    data = np.vstack((data, np.zeros((block_size, data.shape[-1]))))
    return np.stack([data[i * hop_size:i * hop_size + block_size] for i in range(num_blocks)])


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, np.ndarray]]:
    """{clip: {wave, log_mel (frames, 96), n_blocks, block_embeddings (n_blocks, 512)}}."""
    with np.load(FIXTURE) as data:
        clips = {str(c): {key.split("/")[1]: data[key] for key in data.files if key.startswith(f"{c}/")}
                 for c in data["clips"]}
    synthetic = synthetic_clip()
    assert np.array_equal(synthetic[:256], clips["synthetic"].pop("head")), "synthetic_clip drifted from the fixture's"
    clips["synthetic"]["wave"] = synthetic
    return clips


@pytest.fixture(scope="module")
def embedder() -> AisfxEmbedder:
    torch.set_num_threads(2)
    return load_aisfx_weights(AisfxEmbedder()).eval()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_htk_mel_filterbank_matches_librosa():
    import librosa

    from earmark.features import htk_mel_filterbank

    expected = librosa.filters.mel(sr=SAMPLE_RATE_HZ, n_fft=2048, n_mels=N_MELS, fmin=0.0, fmax=22_050.0, htk=True,
                                   norm=1.0)  # (96, 1025)
    filters = htk_mel_filterbank(SAMPLE_RATE_HZ, 2048, N_MELS, 0.0, 22_050.0).T.numpy()  # (96, 1025)
    np.testing.assert_allclose(filters, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(filters.sum(axis=1), 1.0, rtol=1e-5)


def test_frontend_matches_package_log_mels(reference):
    frontend = AisfxFrontEnd()
    for name, clip in reference.items():
        with torch.no_grad():
            log_mel = frontend.log_mel(torch.from_numpy(clip["wave"])[None])[0].numpy()  # (frames, 96)
        assert log_mel.shape == clip["log_mel"].shape, name
        np.testing.assert_allclose(log_mel, clip["log_mel"], rtol=0, atol=LOG_MEL_ATOL, err_msg=name)


def test_block_embeddings_match_package(reference, embedder):
    for name, clip in reference.items():
        with torch.no_grad():
            blocks = embedder.block_embeddings(torch.from_numpy(clip["wave"])[None])[0].numpy()  # (n_blocks, 512)
        expected = clip["block_embeddings"]
        assert blocks.shape == expected.shape == (int(clip["n_blocks"]), 512), name
        assert np.abs(blocks - expected).max() <= EMBEDDING_ATOL, name
        assert cosines(blocks, expected).min() > MIN_COSINE, name


def test_clip_embedding_is_mean_and_max_of_blocks(reference, embedder):
    clip = reference["synthetic"]
    with torch.no_grad():
        embedding = embedder(torch.from_numpy(clip["wave"])[None])[0].numpy()  # (1024,)
    expected = np.concatenate([clip["block_embeddings"].mean(0), clip["block_embeddings"].max(0)])
    assert embedding.shape == (1024,)
    assert np.abs(embedding - expected).max() <= EMBEDDING_ATOL
    assert cosines(embedding, expected) > MIN_COSINE


@pytest.mark.parametrize("frames", [1, 13, 99, 100, 101, 149, 150, 151, 216, 399])
def test_blocks_match_package_blocking(frames):
    log_mel = torch.rand(1, frames, N_MELS, generator=torch.Generator().manual_seed(frames))
    blocks = frame_blocks(log_mel)[0].numpy()  # (n_blocks, 100, 96)
    expected = package_blocking(log_mel[0].double().numpy())
    assert blocks.shape == expected.shape and n_blocks(frames) == len(expected)
    np.testing.assert_array_equal(blocks, expected.astype(np.float32))


# frames = 1 + samples // 1024; a second block starts at 150 frames (148 * 1024 + 1024 samples)
@pytest.mark.parametrize("n_samples, blocks", [(1, 1), (44_100, 1), (101_376, 1), (152_575, 1), (152_576, 2),
                                               (220_500, 3)])
def test_any_length_gives_whole_blocks(embedder, n_samples, blocks):
    wave = torch.randn(2, n_samples, generator=torch.Generator().manual_seed(n_samples))
    with torch.no_grad():
        assert embedder.block_embeddings(wave).shape == (2, blocks, 512)
        assert embedder(wave).shape == (2, 1024)


def test_short_clip_is_padded_like_trailing_silence(embedder):
    """Under one block, the zero frames added equal the frames of silence after the clip."""
    clip = torch.from_numpy(synthetic_clip()[:40 * 1024])[None]  # 41 frames; the last window reaches past the end
    silent_tail = torch.nn.functional.pad(clip, (0, (BLOCK_FRAMES - 41) * 1024))  # exactly 100 frames
    with torch.no_grad():
        np.testing.assert_allclose(embedder(clip).numpy(), embedder(silent_tail).numpy(), rtol=0, atol=1e-4)


def test_embedding_ignores_gain_and_survives_silence(embedder):
    wave = torch.from_numpy(synthetic_clip()[:88_200])[None]
    with torch.no_grad():
        np.testing.assert_allclose(embedder(0.01 * wave).numpy(), embedder(wave).numpy(), rtol=0, atol=1e-4)
        assert torch.isfinite(embedder(torch.zeros(1, 88_200))).all()


def test_without_peak_normalization_the_level_is_kept():
    frontend = AisfxFrontEnd(peak_normalize=False)
    wave = torch.from_numpy(synthetic_clip()[:88_200])[None]
    peak_one = wave / wave.abs().max()
    with torch.no_grad():
        np.testing.assert_allclose(frontend(peak_one).numpy(), AisfxFrontEnd()(wave).numpy(), rtol=0, atol=1e-6)
        quiet, loud = frontend(0.01 * peak_one), frontend(peak_one)
    assert (quiet <= loud).all() and loud.max() - quiet.max() > 0.3  # 40 dB quieter: ~0.4 lower where loud


def test_onnx_export_matches_torch_with_dynamic_batch_and_length(embedder, tmp_path):
    import onnx
    import onnxruntime as ort
    path = tmp_path / "aisfx.onnx"
    dims = {"wave": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("samples", min=1)}}
    program = torch.onnx.export(embedder, (torch.randn(2, 6 * SAMPLE_RATE_HZ),), None, input_names=["wave"],
                                output_names=["embedding"], dynamic_shapes=dims, dynamo=True, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, n_samples in [(1, 500), (3, SAMPLE_RATE_HZ), (1, 102_400), (2, 7 * SAMPLE_RATE_HZ)]:  # 1 to 6 blocks
        wave = torch.randn(batch, n_samples, generator=generator)
        with torch.no_grad():
            expected = embedder(wave).numpy()
        (actual,) = session.run(None, {"wave": wave.numpy()})
        assert actual.shape == (batch, 1024)
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def test_bundled_weights_load_strictly_and_match_recorded_sha256():
    assert aisfx.sha256_of(aisfx.WEIGHTS_PATH) == aisfx.AISFX_SHA256
    net = load_aisfx_weights(AisfxNet())
    assert sum(p.numel() for p in net.parameters()) == 4_686_144  # 8 convs without bias, 8 batch norms
    assert not torch.allclose(net.conv_block4.bn2.running_var, torch.ones(512))  # trained statistics, not init


def test_tampered_bundled_weights_raise(tmp_path, monkeypatch):
    tampered = tmp_path / "aisfx.safetensors"
    data = bytearray(aisfx.WEIGHTS_PATH.read_bytes())
    data[-1000] ^= 0x01  # one bit of one weight: still a valid safetensors file, so only the checksum sees it
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(aisfx, "WEIGHTS_PATH", tampered)
    with pytest.raises(EarmarkError, match="corrupt or modified"):
        load_aisfx_weights(AisfxEmbedder())


def test_user_weights_checked_when_a_digest_is_given(tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(aisfx.WEIGHTS_PATH, copy)
    load_aisfx_weights(AisfxNet(), copy, sha256=aisfx.AISFX_SHA256)
    with pytest.raises(EarmarkError, match="corrupt or modified"):
        load_aisfx_weights(AisfxNet(), copy, sha256="0" * 64)


def test_missing_truncated_or_foreign_weights_raise(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(EarmarkError, match="not found"):
        load_aisfx_weights(AisfxNet(), tmp_path / "absent.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(aisfx.WEIGHTS_PATH.read_bytes()[:4096])
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_aisfx_weights(AisfxNet(), truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_aisfx_weights(AisfxNet(), foreign)
