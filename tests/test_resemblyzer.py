"""The resemblyzer port against the Resemblyzer 0.1.4 package's own front-end and network.

tests/fixtures/resemblyzer_reference.npz was written by tools/make_resemblyzer_fixture.py in a separate venv
with the package installed: four FSDD clips resampled to 16 kHz as the package resamples them, the four
joined (two partials of speech) and one synthetic 5-s clip (six partials, the last dropped by the coverage
rule); the mel frames `embed_utterance` hands its network, the kept partials' embeddings and the utterance
embedding. Tolerances are ~5-10x what this port reaches on x86 CPU (mel power: max |diff| 3.3e-6, at most
2.1e-5 of |value| + 1e-6 x the clip's peak; embeddings, entries in [0, 1]: max |diff| 2.5e-7).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from earmark import api
from earmark.cli.app import app
from earmark.config import load_config
from earmark.errors import EarmarkError
from earmark.files import sha256_of
from earmark.models import resemblyzer
from earmark.models.resemblyzer import ResemblyzerEmbedder, VoiceEncoderNet, load_resemblyzer_weights
from earmark.models.resemblyzer_frontend import PARTIAL_FRAMES, SAMPLE_RATE_HZ, TARGET_RMS, n_partials, normalize_volume
from tiny_runs import tone_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "resemblyzer_reference.npz"
MEL_RTOL, MEL_ATOL_OF_PEAK = 1e-4, 1e-5  # |diff| <= 1e-4 |value| + 1e-5 x the clip's largest mel value
EMBEDDING_ATOL = 2e-6
MIN_COSINE = 0.999999


def synthetic_clip(sample_rate_hz: int = SAMPLE_RATE_HZ, duration_s: float = 5.0) -> np.ndarray:
    """A copy of tools/make_resemblyzer_fixture.py's synthetic_clip: tones, a chirp, a hashed-noise burst."""
    n = np.arange(int(sample_rate_hz * duration_s), dtype=np.uint64)
    h = n * np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    noise = (h >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2.0 - 1.0
    t = n.astype(np.float64) / sample_rate_hz
    chirp = np.sin(2 * np.pi * (100.0 * t + (7000.0 - 100.0) / (2 * duration_s) * t ** 2))
    burst = ((t >= 2.0) & (t < 3.0)).astype(np.float64)
    wave = 0.04 * np.sin(2 * np.pi * 220.0 * t) + 0.02 * np.sin(2 * np.pi * 3000.0 * t) + 0.02 * chirp
    return (wave + 0.03 * burst * noise).astype(np.float32)


def package_partial_starts(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """Resemblyzer 0.1.4's `VoiceEncoder.compute_partial_slices`, reduced to the start frames it keeps."""
    samples_per_frame = 160
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = int(np.round((16000 / rate) / samples_per_frame))
    starts = list(range(0, max(1, n_frames - 160 + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * samples_per_frame) / (160 * samples_per_frame)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, np.ndarray]]:
    """{clip: {wave, mel (frames, 40), partial_starts, partial_embeddings (n, 256), embedding (256,), ...}}."""
    with np.load(FIXTURE) as data:
        clips = {str(c): {key.split("/")[1]: data[key] for key in data.files if key.startswith(f"{c}/")}
                 for c in data["clips"]}
    synthetic = synthetic_clip()
    assert np.array_equal(synthetic[:256], clips["synthetic"].pop("head")), "synthetic_clip drifted from the fixture's"
    clips["synthetic"]["wave"] = synthetic
    clips["speech"]["wave"] = np.concatenate([clips[c]["wave"] for c in list(clips)[:4]])
    return clips


@pytest.fixture(scope="module")
def embedder() -> ResemblyzerEmbedder:
    torch.set_num_threads(1)  # an LSTM's small steps gain nothing from a second thread on a busy machine
    return load_resemblyzer_weights(ResemblyzerEmbedder()).eval()


def embed(embedder: ResemblyzerEmbedder, wave: np.ndarray | torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return embedder(torch.as_tensor(wave).reshape(-1, np.shape(wave)[-1])).numpy()


def test_the_fixture_covers_padding_joined_speech_and_a_dropped_partial(reference):
    assert [len(reference[c]["partial_starts"]) for c in reference] == [1, 1, 1, 1, 2, 5]
    assert n_partials(len(reference["synthetic"]["wave"])) == 6  # the sixth covers 72% < 75%: dropped


def test_frontend_partials_match_package_mel_frames(reference, embedder):
    for name, clip in reference.items():
        with torch.no_grad():
            partials, keep = embedder.frontend(torch.from_numpy(clip["wave"])[None])  # (1, n, 160, 40), (n,)
        starts = clip["partial_starts"]
        assert keep.sum() == len(starts) and keep[:len(starts)].all(), name
        expected = np.stack([clip["mel"][s:s + PARTIAL_FRAMES] for s in starts])  # (kept, 160, 40)
        np.testing.assert_allclose(partials[0, :len(starts)].numpy(), expected, rtol=MEL_RTOL,
                                   atol=MEL_ATOL_OF_PEAK * clip["mel"].max(), err_msg=name)


def test_partial_and_utterance_embeddings_match_package(reference, embedder):
    for name, clip in reference.items():
        with torch.no_grad():
            partials, keep = embedder.partial_embeddings(torch.from_numpy(clip["wave"])[None])
        kept = partials[0, keep].numpy()  # (kept, 256)
        assert kept.shape == clip["partial_embeddings"].shape, name
        assert np.abs(kept - clip["partial_embeddings"]).max() <= EMBEDDING_ATOL, name
        utterance = embed(embedder, clip["wave"])[0]  # (256,)
        assert np.abs(utterance - clip["embedding"]).max() <= EMBEDDING_ATOL, name
        assert utterance @ clip["embedding"] > MIN_COSINE and abs(np.linalg.norm(utterance) - 1) < 1e-5, name


def test_leaving_out_webrtcvad_trimming_changes_the_embedding_a_little(reference, embedder):
    """The package's full preprocess_wav also trims silences; on these clips the cosine to that stays >= 0.96."""
    cosines = [embed(embedder, clip["wave"])[0] @ clip["trimmed_embedding"] for clip in reference.values()]
    assert min(cosines) > 0.96 and min(cosines) < MIN_COSINE  # close, and not the same: trimming is left out


@pytest.mark.parametrize("n_samples", [1, 159, 160, 4_514, 16_000, 25_439, 25_440, 25_600, 31_999, 32_000,
                                       37_390, 44_639, 44_640, 80_000, 123_457])
def test_partials_follow_the_package_slicing(embedder, n_samples):
    starts = package_partial_starts(n_samples)
    with torch.no_grad():
        partials, keep = embedder.frontend(torch.zeros(1, n_samples))
    assert partials.shape == (1, n_partials(n_samples), PARTIAL_FRAMES, 40)
    assert keep.tolist() == [True] * len(starts) + [False] * (n_partials(n_samples) - len(starts))


def test_short_clip_is_one_partial_padded_with_silence(reference, embedder):
    """Under 1.6 s, the package zero-pads to one partial: adding the silence first gives the same embedding
    when volume normalisation leaves the clip alone (it is louder than -30 dBFS)."""
    clip = torch.from_numpy(reference["synthetic"]["wave"][:8_000]) * 10  # 0.5 s, loud
    assert clip.square().mean().sqrt() > TARGET_RMS
    silent_tail = torch.nn.functional.pad(clip, (0, PARTIAL_FRAMES * 160 - 8_000))
    np.testing.assert_allclose(embed(embedder, clip), embed(embedder, silent_tail), rtol=0, atol=1e-6)


def test_volume_is_raised_to_minus_30_dbfs_never_lowered(embedder):
    wave = torch.from_numpy(synthetic_clip()[:16_000])[None]  # rms ~ -30.5 dBFS
    quiet = wave * 0.01
    rms = normalize_volume(quiet).square().mean().sqrt()
    assert rms == pytest.approx(TARGET_RMS, rel=1e-5)
    assert torch.equal(normalize_volume(wave * 10), wave * 10)  # loud: unchanged
    np.testing.assert_allclose(embed(embedder, quiet), embed(embedder, quiet * 3), rtol=0, atol=1e-5)
    assert np.isfinite(embed(embedder, torch.zeros(1, 16_000))).all()


def test_batch_members_are_embedded_independently(embedder):
    waves = torch.from_numpy(np.stack([synthetic_clip()[i * 4_000:i * 4_000 + 30_000] for i in range(3)]))
    together = embed(embedder, waves)  # (3, 256)
    alone = np.concatenate([embed(embedder, w[None]) for w in waves])
    assert together.shape == (3, 256)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


@pytest.mark.slow  # torch.export of the LSTM with a dynamic length: 46 s on the shared 2-core machine
def test_onnx_export_matches_torch_with_dynamic_batch_and_length(embedder, tmp_path):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "resemblyzer.onnx"
    dims = {"wave": {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("samples", min=1)}}
    program = torch.onnx.export(embedder, (torch.randn(2, 40_000),), None, input_names=["wave"],
                                output_names=["embedding"], dynamic_shapes=dims, dynamo=True, verbose=False)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, n_samples in [(1, 500), (3, SAMPLE_RATE_HZ), (1, 25_600), (2, 80_000)]:  # 1 to 6 partials
        wave = 0.1 * torch.randn(batch, n_samples, generator=generator)
        (actual,) = session.run(None, {"wave": wave.numpy()})
        assert actual.shape == (batch, 256)
        np.testing.assert_allclose(actual, embed(embedder, wave), rtol=0, atol=1e-5)


def test_bundled_weights_load_strictly_and_match_recorded_sha256():
    assert sha256_of(resemblyzer.WEIGHTS_PATH) == resemblyzer.RESEMBLYZER_SHA256
    net = load_resemblyzer_weights(VoiceEncoderNet())
    assert sum(p.numel() for p in net.parameters()) == 1_423_616  # 3 LSTM layers + the 256 x 256 linear layer
    assert net.linear.bias.abs().sum() > 0 and not torch.allclose(net.lstm.weight_hh_l2, torch.zeros(1))


def test_tampered_bundled_weights_raise(tmp_path, monkeypatch):
    tampered = tmp_path / "resemblyzer.safetensors"
    data = bytearray(resemblyzer.WEIGHTS_PATH.read_bytes())
    data[-1000] ^= 0x01  # one bit of one weight: still a valid safetensors file, so only the checksum sees it
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(resemblyzer, "WEIGHTS_PATH", tampered)
    with pytest.raises(EarmarkError, match="resemblyzer weights .* corrupt or modified.*convert_resemblyzer"):
        load_resemblyzer_weights(ResemblyzerEmbedder())
    monkeypatch.setattr(resemblyzer, "WEIGHTS_PATH", tmp_path / "gone.safetensors")
    with pytest.raises(EarmarkError, match="resemblyzer weights not found at .*gone.safetensors; reinstall earmark"):
        resemblyzer.resemblyzer(n_classes=3, input_shape=(16_000,))


def test_user_weights_checked_when_a_digest_is_given(tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(resemblyzer.WEIGHTS_PATH, copy)
    load_resemblyzer_weights(VoiceEncoderNet(), copy, sha256=resemblyzer.RESEMBLYZER_SHA256)
    with pytest.raises(EarmarkError, match="corrupt or modified"):
        load_resemblyzer_weights(VoiceEncoderNet(), copy, sha256="0" * 64)


def test_missing_truncated_or_foreign_weights_raise(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(EarmarkError, match="not found"):
        load_resemblyzer_weights(VoiceEncoderNet(), tmp_path / "absent.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(resemblyzer.WEIGHTS_PATH.read_bytes()[:4096])
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_resemblyzer_weights(VoiceEncoderNet(), truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"lstm.weight_ih_l0": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(EarmarkError, match="cannot be loaded"):
        load_resemblyzer_weights(VoiceEncoderNet(), foreign)
    with pytest.raises(EarmarkError, match="takes a VoiceEncoderNet"):
        load_resemblyzer_weights(torch.nn.Linear(2, 2))


def test_backbone_id_names_the_weights(tmp_path):
    bundled = resemblyzer.resemblyzer(n_classes=3, input_shape=(16_000,))
    assert bundled.backbone_id == f"resemblyzer-{resemblyzer.RESEMBLYZER_SHA256[:12]}" and bundled.frozen
    state = {k: v + 0.01 for k, v in VoiceEncoderNet().state_dict().items()}  # "fine-tuned" weights
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "tuned.safetensors"))
    tuned_path = str(tmp_path / "tuned.safetensors")
    tuned = resemblyzer.resemblyzer(n_classes=3, input_shape=(16_000,), weights_path=tuned_path)
    assert tuned.backbone_id != bundled.backbone_id  # its own embedding cache


def probe_overrides(base: Path, name: str, *extra: str) -> list[str]:
    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    return [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
            "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}", "data.workers=1",
            "split.val_fraction=0.2", "split.test_fraction=0.25", "model.name=resemblyzer", "train.progress=false",
            f"name={name}", *extra]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """`earmark train model.name=resemblyzer` on 36 half-second tones (3 pitches), through the CLI (in process)."""
    base = tmp_path_factory.mktemp("probe")
    outcome = CliRunner().invoke(app, ["train", *probe_overrides(base, "linear")])
    assert outcome.exit_code == 0, outcome.output[-2000:]
    assert "test accuracy" in outcome.output
    return base, base / "runs" / "linear"


def test_a_probe_run_trains_from_cached_embeddings_and_predicts(probe_run):
    base, run_dir = probe_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["probe"]["backbone"] == f"resemblyzer-{resemblyzer.RESEMBLYZER_SHA256[:12]}"
    assert metrics["probe"]["embedded_now"] == 36 and metrics["accuracy"] >= 0.8  # three pitches: easy
    config = load_config(run_dir / "config.yaml")
    assert config.data.sample_rate_hz == SAMPLE_RATE_HZ and config.features.kind == "waveform"
    cached = pd.read_csv(run_dir / "predictions.csv")
    result = api.predict(run_dir, cached["path"].tolist(), top_k=1)  # decoded, resampled, backbone, head
    assert result.files["label"].tolist() == cached["predicted"].astype(str).tolist()
    top = cached[[c for c in cached if c.startswith("p_")]].max(axis=1).to_numpy()
    np.testing.assert_allclose(result.files["probability"].to_numpy(), top, atol=1e-4)


@pytest.mark.slow  # torch.export of the whole chain: 60 s on the shared 2-core machine
def test_a_probe_run_exports_to_onnx_with_parity(probe_run, tmp_path):
    _, run_dir = probe_run
    exported = api.export(run_dir, tmp_path / "export", log=lambda text: None)
    assert exported.parity["fp32"]["passed"] and exported.parity["fp32"]["max_abs_prob_diff"] <= 1e-4
    assert exported.parity["fp32"]["top1_agreement"] == 1.0


def test_fine_tuning_unfreezes_the_linear_layer_first_then_the_lstm():
    model = resemblyzer.resemblyzer(n_classes=3, input_shape=(16_000,), freeze=False, unfreeze_epochs=[0, 1])
    model.set_epoch(0)
    assert all(p.requires_grad for p in model.embedder.net.linear.parameters())
    assert not any(p.requires_grad for p in model.embedder.net.lstm.parameters())
    model.set_epoch(1)
    assert all(p.requires_grad for p in model.embedder.parameters())
    with pytest.raises(EarmarkError, match="unfreeze_epochs takes at most 2 epochs"):
        resemblyzer.resemblyzer(n_classes=3, input_shape=(16_000,), freeze=False, unfreeze_epochs=[0, 1, 2])
