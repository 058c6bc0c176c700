"""Front-ends: numbers against an independent NumPy reference (and librosa when present),
shapes, batch independence, fitted normalisation, config errors, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earmark.config import FeaturesConfig
from earmark.errors import EarmarkError
from earmark.features import build_frontend, dct_matrix, hz_to_mel, mel_filterbank, mel_to_hz

SR = 16000

# (sample_rate_hz, FeaturesConfig fields): the default, and a short odd-sized window with a band limit
SPECTRAL_SETUPS = [
    (16000, dict(n_fft=512, win_ms=25.0, hop_ms=10.0, n_mels=64)),
    (8000, dict(n_fft=256, win_ms=20.0, hop_ms=12.5, n_mels=40, f_min_hz=60.0, f_max_hz=3800.0)),
]


def tone(freq_hz: float, n_samples: int, sample_rate_hz: int = SR, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n_samples) / sample_rate_hz)).astype(np.float32)


def tone_plus_noise(n_samples: int, sample_rate_hz: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = 0.05 * rng.standard_normal(n_samples)
    tones = tone(440.0, n_samples, sample_rate_hz) + tone(2500.0, n_samples, sample_rate_hz, 0.2)
    return (tones + noise).astype(np.float32)


def features_of(frontend, wave: np.ndarray) -> np.ndarray:
    """(T,) -> the clip's features without the batch dim, as float64 NumPy."""
    with torch.no_grad():
        return frontend(torch.from_numpy(wave)[None])[0].double().numpy()


# ---------------------------------------------------------------- independent NumPy reference

def np_hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + np.log(np.maximum(f, 1e-3) / 1000.0) * 27.0 / np.log(6.4))


def np_mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def np_mel_filters(sr, n_fft, n_mels, f_min, f_max):
    """(n_mels, n_fft // 2 + 1): triangles between consecutive mel points, each scaled to area 1 in Hz / 2."""
    bins_hz = np.arange(n_fft // 2 + 1) * sr / n_fft
    points = np_mel_to_hz(np.linspace(np_hz_to_mel(f_min), np_hz_to_mel(f_max), n_mels + 2))
    filters = np.zeros((n_mels, bins_hz.size))
    for m in range(n_mels):
        lo, centre, hi = points[m : m + 3]
        up = (bins_hz - lo) / (centre - lo)
        down = (hi - bins_hz) / (hi - centre)
        filters[m] = np.maximum(0.0, np.minimum(up, down)) * 2.0 / (hi - lo)
    return filters


def np_log_mel(wave, sr, n_fft, win_length, hop_length, n_mels, f_min, f_max):
    """(T,) -> (n_mels, frames) dB, all in float64: pad, frame, window, rfft, |.|^2, mel, log."""
    padded = np.pad(wave.astype(np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]  # (frames, n_fft)
    window = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    window[left : left + win_length] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, n_freqs)
    mel = np_mel_filters(sr, n_fft, n_mels, f_min, f_max) @ power.T
    return 10 * np.log10(np.maximum(mel, 1e-10))


@pytest.mark.parametrize("sr, fields", SPECTRAL_SETUPS)
def test_log_mel_matches_numpy_reference(sr, fields):
    config = FeaturesConfig(kind="log_mel", normalize=False, **fields)
    wave = tone_plus_noise(sr // 2, sr)
    ours = features_of(build_frontend(config, sr), wave)[0]
    reference = np_log_mel(wave, sr, config.n_fft, round(config.win_ms * sr / 1000), round(config.hop_ms * sr / 1000),
                           config.n_mels, config.f_min_hz, config.f_max_hz or sr / 2)
    assert ours.shape == reference.shape
    # Tolerance: 1e-3 dB on every band within 80 dB of the loudest one (float32 conv vs float64 FFT;
    # measured ~5e-5 dB). Far quieter bands sit in float32 rounding noise and are not compared.
    loud = reference > reference.max() - 80
    assert loud.mean() > 0.95
    assert np.abs(ours - reference)[loud].max() < 1e-3


def test_mel_scale_is_slaney():
    hz = torch.tensor([0.0, 500.0, 1000.0, 4000.0, 8000.0])
    assert torch.allclose(hz_to_mel(hz), torch.from_numpy(np_hz_to_mel(hz.numpy())), atol=1e-9)
    assert hz_to_mel(1000.0).item() == pytest.approx(15.0)
    assert torch.allclose(mel_to_hz(hz_to_mel(hz)), hz.double(), atol=1e-6)


def test_dct_matrix_is_orthonormal_dct2():
    d = dct_matrix(32, 32).double()  # (n_mels, n_mfcc)
    assert torch.allclose(d.T @ d, torch.eye(32, dtype=torch.float64), atol=1e-6)
    from scipy import fft as scipy_fft
    x = np.random.default_rng(1).standard_normal(32)
    assert np.allclose(x @ dct_matrix(12, 32).double().numpy(), scipy_fft.dct(x, type=2, norm="ortho")[:12], atol=1e-5)


# ---------------------------------------------------------------- librosa (in the test extra)

@pytest.mark.parametrize("sr, n_fft, n_mels, f_min, f_max",
                         [(16000, 512, 64, 0.0, None), (22050, 1024, 40, 50.0, 7000.0), (8000, 256, 20, 300.0, 3000.0)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, f_min, f_max):
    import librosa
    ours = mel_filterbank(sr, n_fft, n_mels, f_min, f_max).numpy()
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, norm="slaney").T
    assert ours.shape == (n_fft // 2 + 1, n_mels)
    assert np.abs(ours - theirs).max() < 1e-6 * theirs.max()  # measured ~8e-8 relative


@pytest.mark.parametrize("sr, fields", SPECTRAL_SETUPS)
def test_log_mel_and_mfcc_match_librosa(sr, fields):
    import librosa
    wave = tone_plus_noise(sr // 2, sr, seed=3)
    config = FeaturesConfig(normalize=False, n_mfcc=13, **fields)
    stft = dict(sr=sr, n_fft=config.n_fft, win_length=round(config.win_ms * sr / 1000),
                hop_length=round(config.hop_ms * sr / 1000), n_mels=config.n_mels, fmin=config.f_min_hz,
                fmax=config.f_max_hz or sr / 2, center=True, pad_mode="constant")
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=wave, power=2.0, **stft), top_db=None)
    # librosa's mfcc clips at top_db=80 below the peak; this clip spans less, so no clipping happens
    assert mel_db.max() - mel_db.min() < 80
    mfcc = librosa.feature.mfcc(y=wave, n_mfcc=13, **stft)
    ours_mel = features_of(build_frontend(config.model_copy(update={"kind": "log_mel"}), sr), wave)[0]
    ours_mfcc = features_of(build_frontend(config.model_copy(update={"kind": "mfcc"}), sr), wave)[0]
    # Tolerance 1e-3 dB / 1e-3 MFCC units (librosa runs float32 STFT; measured ~5e-5)
    assert np.abs(ours_mel - mel_db).max() < 1e-3
    assert np.abs(ours_mfcc - mfcc).max() < 1e-3


# ---------------------------------------------------------------- behaviour

@pytest.mark.parametrize("freq_hz", [1000.0, 3000.0])
def test_tone_peaks_in_the_band_that_contains_it(freq_hz):
    config = FeaturesConfig(normalize=False)
    log_mel = features_of(build_frontend(config, SR), tone(freq_hz, SR // 4))[0]  # (n_mels, frames)
    edges_hz = np_mel_to_hz(np.linspace(0.0, np_hz_to_mel(SR / 2), config.n_mels + 2))
    peak = int(log_mel.mean(axis=1).argmax())
    assert edges_hz[peak] < freq_hz < edges_hz[peak + 2]  # band `peak` spans edges peak .. peak + 2
    assert abs(edges_hz[peak + 1] - freq_hz) < edges_hz[peak + 2] - edges_hz[peak]


@pytest.mark.parametrize("kind", ["log_mel", "mfcc", "waveform"])
@pytest.mark.parametrize("hop_ms", [10.0, 12.5, 32.0])
def test_output_shape_matches_forward(kind, hop_ms):
    frontend = build_frontend(FeaturesConfig(kind=kind, hop_ms=hop_ms), SR)
    hop = round(hop_ms * SR / 1000)
    for n_samples in (1, hop - 1, hop, 4000, 16001):
        with torch.no_grad():
            out = frontend(torch.zeros(2, n_samples))
        assert out.shape == (2, *frontend.output_shape(n_samples))
        if kind != "waveform":
            assert out.shape[-1] == 1 + n_samples // hop  # librosa's frame count for center=True
    assert build_frontend(FeaturesConfig(), SR).output_shape(SR) == (1, 64, 101)


def test_odd_n_fft_output_shape_matches_forward():
    frontend = build_frontend(FeaturesConfig(n_fft=401, win_ms=25.0), SR)
    with torch.no_grad():
        out = frontend(torch.zeros(1, 3000))
    assert out.shape[1:] == frontend.output_shape(3000)


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_clip_features_do_not_depend_on_the_rest_of_the_batch(kind):
    frontend = build_frontend(FeaturesConfig(kind=kind, normalize=False), SR)
    clip = tone_plus_noise(8000, seed=5)
    others = [np.zeros(8000, np.float32), (3.0 * np.random.default_rng(6).standard_normal(8000)).astype(np.float32)]
    alone = features_of(frontend, clip)
    with torch.no_grad():
        batched = frontend(torch.from_numpy(np.stack([others[0], clip, others[1]])))[1].numpy()
    assert np.abs(batched - alone).max() < 1e-3


def training_batches(n_batches: int = 4, batch_size: int = 3, n_samples: int = 8000):
    """A one-pass stream of (B, T) batches: noise at different levels plus tones."""
    rng = np.random.default_rng(7)
    for _ in range(n_batches):
        gains = rng.uniform(0.01, 1.0, size=(batch_size, 1))
        freqs = rng.uniform(200, 6000, size=(batch_size, 1))
        t = np.arange(n_samples) / SR
        wave = gains * rng.standard_normal((batch_size, n_samples)) + 0.3 * np.sin(2 * np.pi * freqs * t)
        yield torch.from_numpy(wave.astype(np.float32))


@pytest.mark.parametrize("kind", ["log_mel", "mfcc", "waveform"])
def test_fit_normalization_standardises_and_survives_state_dict(kind):
    config = FeaturesConfig(kind=kind, n_mfcc=13)
    frontend = build_frontend(config, SR)
    assert not bool(frontend.fitted_)
    assert frontend.fit_normalization(training_batches()) is frontend
    assert bool(frontend.fitted_)
    with torch.no_grad():
        normalized = torch.cat([frontend(batch) for batch in training_batches()]).double()
    bin_dims = tuple(d for d, size in enumerate(frontend.mean_.shape) if size == 1)
    n_bins = 1 if kind == "waveform" else normalized.shape[2]
    assert frontend.mean_.numel() == n_bins
    assert normalized.mean(dim=bin_dims).abs().max() < 1e-3
    assert (normalized.std(dim=bin_dims, unbiased=False) - 1).abs().max() < 1e-3

    fresh = build_frontend(config, SR)
    probe = next(training_batches(1))
    with torch.no_grad():
        assert not torch.allclose(fresh(probe), frontend(probe))
        fresh.load_state_dict(frontend.state_dict())
        assert torch.equal(fresh(probe), frontend(probe))
    assert bool(fresh.fitted_)
    assert set(frontend.state_dict()) == {"mean_", "std_", "fitted_"}


def test_fit_normalization_rejects_an_empty_stream():
    with pytest.raises(EarmarkError, match="training split"):
        build_frontend(FeaturesConfig(), SR).fit_normalization([])


def test_config_travels_with_the_frontend():
    frontend = build_frontend(FeaturesConfig(kind="mfcc", n_mfcc=13), 8000)
    assert (frontend.kind, frontend.sample_rate_hz) == ("mfcc", 8000)
    assert FeaturesConfig(**frontend.config) == FeaturesConfig(kind="mfcc", n_mfcc=13)


def test_window_longer_than_n_fft_is_reported_with_the_fix():
    with pytest.raises(EarmarkError, match=r"features\.win_ms.*features\.n_fft") as error:
        build_frontend(FeaturesConfig(n_fft=256, win_ms=25.0), SR)  # 400 samples > 256
    assert "at least 400" in str(error.value)


def test_f_max_above_nyquist_is_reported_with_the_fix():
    with pytest.raises(EarmarkError, match=r"features\.f_max_hz.*Nyquist") as error:
        build_frontend(FeaturesConfig(f_max_hz=9000.0), SR)
    assert "at most 8000" in str(error.value)


def test_too_many_mel_bands_for_the_fft_warn():
    with pytest.warns(UserWarning, match=r"features\.n_mels=128 with features\.n_fft=128"):
        build_frontend(FeaturesConfig(n_fft=128, win_ms=8.0, n_mels=128), SR)


def test_features_stay_float32_under_mixed_precision():
    frontend = build_frontend(FeaturesConfig(normalize=False), SR)
    wave = torch.from_numpy(tone_plus_noise(4000))[None]
    with torch.no_grad():
        expected = frontend(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = frontend(wave)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, expected, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    frontend = build_frontend(FeaturesConfig(normalize=False), SR)
    wave = torch.from_numpy(tone_plus_noise(8000))[None]
    with torch.no_grad():
        on_cpu = frontend(wave)
        on_gpu = frontend.to("cuda")(wave.cuda()).cpu()
    # 1e-2 dB: float32 on both sides agrees to ~1e-4 dB; TF32 rounding (cuDNN's default conv precision),
    # simulated on CPU for this clip, is off by 0.08 dB
    assert (on_gpu - on_cpu).abs().max() < 1e-2


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_onnx_export_matches_torch(kind, tmp_path):
    import onnx
    import onnxruntime as ort
    frontend = build_frontend(FeaturesConfig(kind=kind), SR).fit_normalization(training_batches(2)).eval()
    path = tmp_path / "frontend.onnx"
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=400)}
    torch.onnx.export(frontend, (torch.zeros(2, 8000),), str(path), input_names=["wave"], output_names=["features"],
                      dynamic_shapes={"wave": dims})
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wave = torch.from_numpy(np.stack([tone_plus_noise(5600, seed=s) for s in range(3)]))  # other batch and length
    with torch.no_grad():
        expected = frontend(wave).numpy()
    (got,) = session.run(None, {"wave": wave.numpy()})
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3


def test_top_db_floors_each_clip_below_its_own_peak():
    # A loud tone and a near-silent tail: without a floor the tail reaches -100 dB.
    loud = 20 * np.concatenate([tone(1000.0, SR // 2), np.zeros(SR // 2, dtype=np.float32)])
    floored = build_frontend(FeaturesConfig(normalize=False, top_db=80.0), SR)
    raw = build_frontend(FeaturesConfig(normalize=False, top_db=None), SR)
    with_floor, without = features_of(floored, loud), features_of(raw, loud)
    assert without.min() < without.max() - 80.0
    assert with_floor.min() == pytest.approx(with_floor.max() - 80.0, abs=1e-3)
    keep = with_floor > with_floor.min() + 1e-3  # above the floor nothing changes
    assert keep.mean() > 0.05
    assert np.allclose(with_floor[keep], without[keep], atol=1e-4)


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_clip_mean_norm_removes_a_recordings_fixed_gain_and_colouring(kind):
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t * (1 + t)) + rng.normal(0, 0.01, len(t))).astype(np.float32)
    coloured = np.convolve(wave, [1.0, 0.6], mode="same").astype(np.float32)  # a fixed filter: a mic's colouring
    config = dict(kind=kind, normalize=False, top_db=None)
    plain = build_frontend(FeaturesConfig(**config), 16000)
    normed = build_frontend(FeaturesConfig(**config, clip_mean_norm=True), 16000)
    waves = torch.from_numpy(np.stack([wave, 2.0 * wave, coloured]))
    with torch.no_grad():
        raw, out = plain(waves), normed(waves)
    assert torch.allclose(out.mean(dim=-1), torch.zeros(()), atol=1e-3)  # every bin centred on the clip
    assert (raw[1] - raw[0]).abs().mean() > 1.0  # +6 dB moves the plain features...
    torch.testing.assert_close(out[1], out[0], atol=1e-3, rtol=0)  # ...and not the normalised ones
    # a filter is a fixed offset per frequency: mostly gone after normalisation
    assert (out[2] - out[0]).abs().mean() < 0.25 * (raw[2] - raw[0]).abs().mean()
