"""The crepe view against the torchcrepe 0.0.24 package's own front-end and network.

tests/fixtures/crepe_reference.npz was written by tools/make_crepe_fixture.py with the package installed
beside earmark's torch: four FSDD clips resampled to 16 kHz as the package does it (resampy), one
synthetic 2-s clip (a 220 Hz tone, a 110 -> 880 Hz sweep, noise), and per frame the package's activations
(360 bins) and its `embed` layer. Tolerances are ~7x what this port reaches on x86 CPU (activations: max
|diff| 1.3e-6; embeddings, whose entries reach ~6: max |diff| 8.6e-6).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from earmark.errors import EarmarkError
from earmark.models import crepe
from earmark.models.crepe import (
    HOP_SAMPLES,
    SAMPLE_RATE_HZ,
    CrepeEmbedder,
    CrepeNet,
    bin_cents,
    cents_to_hz,
    crepe_frames,
    decode_pitch,
    load_crepe_weights,
    pitch_statistics,
)
from earmark.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "crepe_reference.npz"
ACTIVATION_ATOL = 1e-5  # activations are in [0, 1]
EMBEDDING_ATOL = 6e-5
TINY_DIM = 6 + 2 * 256


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A copy of tools/make_crepe_fixture.py's synthetic_clip: tone, exponential sweep, hashed noise."""
    n = np.arange(2 * sample_rate_hz, dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0
    t = n.astype(np.float64) / sample_rate_hz
    tone = np.sin(2 * np.pi * 220.0 * t)
    ts = np.clip(t - 0.5, 0.0, 1.0)
    sweep = np.sin(2 * np.pi * 220.0 * 0.5 + 2 * np.pi * 110.0 * (2.0 ** (3.0 * ts) - 1.0) / (3.0 * np.log(2.0)))
    wave = np.where(t < 0.5, tone, np.where(t < 1.5, sweep, 0.3 * noise))
    return (0.5 * wave).astype(np.float32)


def tone(frequency_hz: float, duration_s: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = np.arange(int(SAMPLE_RATE_HZ * duration_s)) / SAMPLE_RATE_HZ
    return torch.from_numpy((amplitude * np.sin(2 * np.pi * frequency_hz * t + 0.3)).astype(np.float32))[None]


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, np.ndarray]]:
    """{clip: {wave, tiny_activations (frames, 360), tiny_embedding (frames, 256), [full_*]}}."""
    with np.load(FIXTURE) as data:
        clips = {str(c): {key.split("/")[1]: data[key] for key in data.files if key.startswith(f"{c}/")}
                 for c in data["clips"]}
    synthetic = synthetic_clip()
    assert np.array_equal(synthetic[:256], clips["synthetic"].pop("head")), "synthetic_clip drifted from the fixture's"
    clips["synthetic"]["wave"] = synthetic
    return clips


@pytest.fixture(scope="module")
def embedder() -> CrepeEmbedder:
    torch.set_num_threads(2)
    return load_crepe_weights(CrepeEmbedder()).eval()


def test_frames_are_centred_every_10_ms_and_normalised():
    wave = torch.randn(2, 3_000, generator=torch.Generator().manual_seed(0))
    frames = crepe_frames(wave)  # (2, 19, 1024)
    assert frames.shape == (2, 1 + 3_000 // HOP_SAMPLES, 1024)
    padded = np.pad(wave.numpy().astype(np.float64), ((0, 0), (512, 512)))
    for i in (0, 7, 18):  # frame i covers samples 160 i - 512 ... 160 i + 511
        raw = padded[1, HOP_SAMPLES * i:HOP_SAMPLES * i + 1024]
        expected = (raw - raw.mean()) / max(raw.std(ddof=1), 1e-10)
        np.testing.assert_allclose(frames[1, i].numpy(), expected, rtol=0, atol=1e-5)
    assert torch.equal(crepe_frames(torch.zeros(1, 800)), torch.zeros(1, 6, 1024))  # silence stays finite


def test_activations_and_embeddings_match_the_package(reference, embedder):
    for name, clip in reference.items():
        with torch.no_grad():
            activations, embedding = embedder.frame_outputs(torch.from_numpy(clip["wave"])[None])
        assert activations.shape[1:] == clip["tiny_activations"].shape == (1 + len(clip["wave"]) // 160, 360), name
        np.testing.assert_allclose(activations[0].numpy(), clip["tiny_activations"], rtol=0, atol=ACTIVATION_ATOL,
                                   err_msg=name)
        np.testing.assert_allclose(embedding[0].numpy(), clip["tiny_embedding"], rtol=0, atol=EMBEDDING_ATOL,
                                   err_msg=name)


def local_average_cents(activations: np.ndarray) -> np.ndarray:
    """CREPE's `to_local_average_cents` (crepe/core.py), in cents above 10 Hz: the weighted mean of bins
    peak-4 .. peak+4, one frame at a time."""
    cents = bin_cents().double().numpy()
    out = []
    for frame in activations.astype(np.float64):
        peak = int(frame.argmax())
        lo, hi = max(0, peak - 4), min(len(frame), peak + 5)
        out.append((frame[lo:hi] * cents[lo:hi]).sum() / frame[lo:hi].sum())
    return np.array(out)


def test_pitch_decoding_is_crepes_local_average_on_the_package_activations(reference):
    for name, clip in reference.items():
        cents, periodicity = decode_pitch(torch.from_numpy(clip["tiny_activations"]))
        np.testing.assert_allclose(cents.numpy(), local_average_cents(clip["tiny_activations"]), rtol=0, atol=1e-2,
                                   err_msg=name)
        np.testing.assert_array_equal(periodicity.numpy(), clip["tiny_activations"].max(1))


@pytest.mark.parametrize("frequency_hz", [110.0, 220.0, 440.0, 880.0])
def test_a_pure_tone_decodes_to_its_pitch_within_10_cents(embedder, frequency_hz):
    with torch.no_grad():
        activations, _ = embedder.frame_outputs(tone(frequency_hz, 0.5))
    cents, periodicity = decode_pitch(activations[0, 5:-5])  # frames away from the zero padding
    error_cents = 1200 * np.log2(cents_to_hz(cents).numpy() / frequency_hz)
    assert abs(np.median(error_cents)) < 10.0  # tiny: 0.7, 7.6, 1.2, -2.8 cents
    assert np.abs(error_cents).max() < 20.0 and periodicity.min() > 0.3


def test_pitch_statistics_of_a_tone_a_sweep_and_silence(embedder):
    with torch.no_grad():
        steady = pitch_statistics(embedder.frame_outputs(tone(220.0, 0.5))[0])[0]
        sweep = pitch_statistics(embedder.frame_outputs(torch.from_numpy(synthetic_clip()[8_000:24_000])[None])[0])[0]
        silent = embedder(torch.zeros(1, 4_000))[0]
    voiced, mean_cents, std_cents, slope, period_mean, _ = steady.tolist()
    assert voiced > 0.9 and abs(cents_to_hz(torch.tensor(mean_cents)) - 220.0) < 2.0 and std_cents < 10.0
    assert abs(slope) < 50.0 and period_mean > 0.5
    assert sweep[3] == pytest.approx(3_600.0, rel=0.05)  # 3 octaves in 1 s: 3,600 cents per second
    assert sweep[0] > 0.9 and sweep[2] > 500.0
    assert torch.isfinite(silent).all() and silent[:4].abs().max() == 0  # no voiced frame: no pitch statistics


@pytest.mark.parametrize("n_samples", [1, 159, 160, 4_000])
def test_any_length_gives_one_embedding(embedder, n_samples):
    wave = torch.randn(2, n_samples, generator=torch.Generator().manual_seed(n_samples))
    with torch.no_grad():
        activations, embedding = embedder.frame_outputs(wave)
        assert activations.shape == (2, 1 + n_samples // 160, 360) and embedding.shape[:2] == activations.shape[:2]
        assert embedder(wave).shape == (2, TINY_DIM) and embedder.embedding_dim == TINY_DIM


def test_clips_in_a_batch_do_not_affect_each_other(embedder):
    waves = torch.cat([tone(220.0, 0.3), tone(523.0, 0.3, amplitude=0.1), 0.2 * torch.randn(1, 4_800)])
    with torch.no_grad():
        together = embedder(waves)
        alone = torch.cat([embedder(wave[None]) for wave in waves])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


def test_chunked_eager_inference_equals_one_pass(embedder, monkeypatch):
    wave = tone(330.0, 0.3)
    with torch.no_grad():
        whole = embedder(wave)
        monkeypatch.setattr(embedder, "chunk_frames", 8)  # 31 frames in 4 chunks
        chunked = embedder(wave)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 10-25 s for torch.export on 2 cores (test_every_model exports the whole chain, also slow)
def test_onnx_export_matches_torch_with_dynamic_batch_and_length(embedder, tmp_path):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "crepe.onnx"
    dims = {"wave": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("samples", min=1)}}
    program = torch.onnx.export(embedder, (torch.randn(2, 8_000),), None, input_names=["wave"],
                                output_names=["embedding"], dynamic_shapes=dims, dynamo=True, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for wave in (tone(220.0, 0.3), torch.cat([tone(440.0, 0.7), 0.1 * torch.randn(2, 11_200)])):
        with torch.no_grad():
            expected = embedder(wave).numpy()
        (actual,) = session.run(None, {"wave": wave.numpy()})
        assert actual.shape == (len(wave), TINY_DIM)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-2)  # pitch statistics are in cents
        np.testing.assert_allclose(actual[:, 6:], expected[:, 6:], rtol=0, atol=1e-4)


def test_bundled_weights_load_strictly_and_match_recorded_sha256():
    assert crepe.sha256_of(crepe.WEIGHTS_PATH) == crepe.CREPE_TINY_SHA256
    net = load_crepe_weights(CrepeNet("tiny"))
    assert sum(p.numel() for p in net.parameters()) == 486_552
    assert not torch.allclose(net.conv6_BN.running_var, torch.ones(64))  # trained statistics, not init


def test_tampered_bundled_weights_raise(tmp_path, monkeypatch):
    tampered = tmp_path / "crepe_tiny.safetensors"
    data = bytearray(crepe.WEIGHTS_PATH.read_bytes())
    data[-1000] ^= 0x01  # one bit of one weight: a valid safetensors file, so only the checksum sees it
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(crepe, "WEIGHTS_PATH", tampered)
    with pytest.raises(EarmarkError, match="corrupt or modified"):
        load_crepe_weights(CrepeEmbedder())


def test_missing_truncated_foreign_or_wrong_capacity_weights_raise(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(EarmarkError, match="not found"):
        load_crepe_weights(CrepeNet(), tmp_path / "absent.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(crepe.WEIGHTS_PATH.read_bytes()[:4096])
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_crepe_weights(CrepeNet(), truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_crepe_weights(CrepeNet(), foreign)
    with pytest.raises(EarmarkError, match="cannot be loaded as capacity=full"):
        load_crepe_weights(CrepeNet("full"), crepe.WEIGHTS_PATH)  # tiny's tensors into the full network
    with pytest.raises(EarmarkError, match="is not bundled: convert it"):
        load_crepe_weights(CrepeNet("full"))
    with pytest.raises(EarmarkError, match="capacity must be one of tiny, full"):
        CrepeNet("small")
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(crepe.WEIGHTS_PATH, copy)
    load_crepe_weights(CrepeNet(), copy, sha256=crepe.CREPE_TINY_SHA256)
    with pytest.raises(EarmarkError, match="corrupt or modified"):
        load_crepe_weights(CrepeNet(), copy, sha256="0" * 64)


def test_the_registered_model_names_its_weights_and_rebuilds_from_a_checkpoint(tmp_path):
    bundled = create_model("crepe", 3, (1, 16_000))
    assert bundled.backbone_id == f"crepe-tiny-{crepe.CREPE_TINY_SHA256[:12]}" and bundled.embedding_dim == TINY_DIM
    from safetensors.torch import save_file

    own = tmp_path / "mine.safetensors"
    save_file({k: v.clone() for k, v in CrepeNet().state_dict().items()}, str(own))  # untrained: another digest
    mine = create_model("crepe", 3, (1, 16_000), weights_path=str(own))
    digest = crepe.sha256_of(own)
    assert mine.backbone_id == f"crepe-tiny-{digest[:12]}"
    offline = mine.offline_params({"weights_path": str(own)})  # what a run's checkpoint saves
    assert offline == {"weights_path": None, "weights_sha256": digest, "architecture_only": True}
    own.unlink()  # the checkpoint brings the weights: the file is no longer needed
    rebuilt = create_model("crepe", 3, (1, 16_000), **offline)
    assert rebuilt.backbone_id == mine.backbone_id
    rebuilt.load_state_dict(mine.state_dict())
    wave = tone(220.0, 0.3)[:, None]  # (1, 1, T)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wave), mine(wave))


def test_the_converter_check_reproduces_the_package_on_the_bundled_weights(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from convert_crepe import check_against_fixture
    finally:
        sys.path.remove(str(ROOT / "tools"))
    from safetensors.torch import save_file

    one_clip = tmp_path / "one_clip.npz"  # the first clip only: the full comparison is the test above
    with np.load(FIXTURE) as data:
        np.savez(one_clip, **{key: data[key] for key in data.files if not key.startswith(tuple(f"{c}/" for c in data["clips"][1:]))})
    worst = check_against_fixture(crepe.WEIGHTS_PATH, "tiny", one_clip)
    assert 0 < worst["activations"] < ACTIVATION_ATOL and 0 < worst["embedding"] < EMBEDDING_ATOL
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.clone() for k, v in CrepeNet().state_dict().items()}, str(broken))  # untrained weights
    with pytest.raises(EarmarkError, match="do not reproduce torchcrepe"):
        check_against_fixture(broken, "tiny", one_clip)


@pytest.mark.slow  # ~20 s quiet (the whole run: embed, fit, calibrate, report)
def test_a_crepe_probe_trains_and_predicts(tmp_path):
    from earmark import api
    from earmark.config import load_config
    from tiny_runs import tone_dataset

    root = tone_dataset(tmp_path / "tones", per_class=8)
    overrides = [f"runs_dir={tmp_path / 'runs'}", f"workspace={tmp_path / 'ws'}", "data.source=folder",
                 f"data.path={root}", "data.duration_s=0.5", f"data.cache_dir={tmp_path / 'ws' / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.25", "model.name=crepe",
                 "train.progress=false", "name=crepe"]
    result = api.train(load_config(overrides=overrides))
    config = load_config(result.run_dir / "config.yaml")
    assert config.data.sample_rate_hz == 16_000 and config.features.kind == "waveform"
    assert result.metrics["probe"]["embedded_now"] == 24 and result.metrics["accuracy"] >= 0.8  # three tones
    files = sorted(str(p) for p in (root / "low").glob("*.wav"))[:3]
    predicted = api.predict(result.run_dir, files, top_k=1)
    assert predicted.files["label"].tolist() == ["low"] * 3
