import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from earmark.augment import (
    BackgroundNoise,
    BatchAugmenter,
    BatchMix,
    GaussianNoise,
    RandomGain,
    RandomShift,
    SpecAugment,
    SpeedPerturb,
    WaveAugment,
    mixed_loss,
    pitch_shift,
    resample_by,
    stack_views,
    time_stretch,
)
from earmark.augment.tempo import stretch_fft_size
from earmark.config import AugmentConfig, FeaturesConfig, load_config
from earmark.errors import EarmarkError

RATE_HZ = 8000
OFF = dict(shift_s=0, gain_db=0)  # AugmentConfig with the two default-on transforms switched off


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def burst(frequency_hz: float = 500.0, start_s: float = 0.2, duration_s: float = 0.3, length_s: float = 1.0
          ) -> torch.Tensor:
    """(T,) a sine burst in silence."""
    t = np.arange(int(RATE_HZ * length_s)) / RATE_HZ
    wave = np.where((t >= start_s) & (t < start_s + duration_s), np.sin(2 * np.pi * frequency_hz * t), 0.0)
    return torch.tensor(wave, dtype=torch.float32)


def peak_hz(wave: torch.Tensor) -> float:
    """Frequency of the FFT peak, zero-padded to ~0.03 Hz bins."""
    x = wave.numpy().astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), 1 << 18))
    return float(np.argmax(spectrum) * RATE_HZ / (1 << 18))


def active_s(wave: torch.Tensor) -> float:
    """Seconds where the 10 ms moving power exceeds half the burst's steady level (exactly at a sharp edge)."""
    power = np.convolve(wave.numpy().astype(np.float64) ** 2, np.ones(80) / 80, mode="same")
    steady = np.median(power[power > 0.1 * power.max()])  # not the max: a phase vocoder overshoots at onsets
    return float((power > 0.5 * steady).sum() / RATE_HZ)


def snr_db(clean: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(clean.pow(2).mean(1) / (mixed - clean).pow(2).mean(1))


def tones(batch: int = 16) -> torch.Tensor:
    """(B, T) tones of different frequencies and levels."""
    t = torch.arange(RATE_HZ) / RATE_HZ
    amplitude = torch.linspace(0.05, 0.9, batch)[:, None]
    return amplitude * torch.sin(2 * torch.pi * torch.linspace(200, 2000, batch)[:, None] * t)


@pytest.fixture
def background_folder(tmp_path):
    """A stereo 16 kHz noise file (1 s), a 0.2 s 8 kHz FLAC hum (shorter than a clip) and a non-audio file."""
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sf.write(folder / "street.wav", rng.normal(0, 0.1, (16000, 2)).astype(np.float32), 16000)
    hum = 0.3 * np.sin(2 * np.pi * 100 * np.arange(1600) / RATE_HZ)  # exactly 20 periods: loops seamlessly
    sf.write(folder / "hum.flac", hum.astype(np.float32), RATE_HZ)
    (folder / "notes.txt").write_text("not audio")
    return folder


# ---- waveform transforms ------------------------------------------------------------------------------------

def test_shift_is_bounded_and_circular():
    waves = torch.zeros(64, 1000)
    waves[:, 500] = 1.0
    shifted = RandomShift(max_shift_s=0.1, sample_rate_hz=1000, p=1.0)(waves, seeded())
    positions = shifted.argmax(dim=1) - 500
    assert positions.abs().max() <= 100
    assert len(set(positions.tolist())) > 10  # really random per clip
    ramp = torch.arange(1000.0).repeat(8, 1)
    rolled = RandomShift(max_shift_s=0.1, sample_rate_hz=1000, p=1.0)(ramp, seeded(1))
    assert torch.equal(rolled.sort(dim=1).values, ramp)  # circular: every sample kept, none invented


def test_gain_stays_within_its_range_in_db():
    out = RandomGain(max_gain_db=6.0, p=1.0)(torch.ones(256, 10), seeded())
    gain_db = 20 * torch.log10(out[:, 0])
    assert gain_db.min() >= -6.0 - 1e-4 and gain_db.max() <= 6.0 + 1e-4
    assert gain_db.std() > 2.0


def test_fixed_noise_has_the_stated_std():
    noisy = GaussianNoise(std=0.05, p=1.0)(torch.zeros(8, 20000), seeded())
    assert noisy.std().item() == pytest.approx(0.05, rel=0.02)


def test_white_noise_snr_matches_the_drawn_snr():
    waves = tones()
    noise = GaussianNoise(std=0.0, p=1.0, snr_db=(0.0, 20.0))
    drawn = noise.draw(tuple(waves.shape), seeded())["snr_db"].squeeze(1)
    measured = snr_db(waves, noise(waves, seeded()))
    assert (measured - drawn).abs().max() < 0.5
    assert drawn.min() >= 0 and drawn.max() <= 20 and drawn.std() > 3


def test_background_mixing_snr_matches_and_short_files_loop(background_folder):
    background = BackgroundNoise(background_folder, RATE_HZ, snr_db=(5.0, 15.0), p=1.0)
    assert len(background.bank) == RATE_HZ + 1600  # the 16 kHz stereo file resampled, mixed to mono
    waves = tones(32)
    drawn = background.draw(tuple(waves.shape), seeded(3))
    measured = snr_db(waves, background(waves, seeded(3)))
    assert (measured - drawn["snr_db"].squeeze(1)).abs().max() < 0.5
    hum_start = background.file_starts[background.file_lengths == 1600]
    excerpts = background.excerpts(hum_start + 700, RATE_HZ)  # starts inside the 0.2 s hum
    assert torch.allclose(excerpts[0, 1600:3200], excerpts[0, :1600])  # wraps within its own file


def test_background_folder_without_audio_raises_naming_it(tmp_path):
    empty = tmp_path / "empty_noise"
    empty.mkdir()
    with pytest.raises(EarmarkError, match="empty_noise"):
        BatchAugmenter(AugmentConfig(background_dir=empty), RATE_HZ)
    broken = tmp_path / "broken_noise"
    broken.mkdir()
    (broken / "hiss.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(EarmarkError, match="broken_noise.*hiss.wav"):
        BackgroundNoise(broken, RATE_HZ, (5, 20), 1.0)
    with pytest.raises(EarmarkError, match="not a folder"):
        BackgroundNoise(tmp_path / "missing", RATE_HZ, (5, 20), 1.0)


def test_noise_std_and_snr_range_together_raise():
    with pytest.raises(EarmarkError, match="noise_std.*noise_snr_db"):
        load_config(overrides=["augment.noise_std=0.01", "augment.noise_snr_db=[5, 10]"])


def test_speed_changes_frequency_and_duration_by_the_factor():
    waves = burst().repeat(2, 1)
    out = resample_by(waves, torch.tensor([0.8, 1.25]))
    assert out.shape == waves.shape
    for factor, clip in zip((0.8, 1.25), out):
        assert peak_hz(clip) == pytest.approx(500 * factor, rel=0.002)
        assert active_s(clip) == pytest.approx(0.3 / factor, abs=0.005)
    module = SpeedPerturb((0.8, 1.25), p=1.0)
    factors = module.draw(tuple(waves.shape), seeded())["factor"]
    assert torch.allclose(module(waves, seeded()), resample_by(waves, factors), atol=1e-6)


def test_pitch_shift_moves_the_peak_by_semitones_and_keeps_duration():
    waves = burst().repeat(3, 1)
    n_fft, hop = stretch_fft_size(RATE_HZ)
    semitones = torch.tensor([-5.0, 3.0, 7.0])
    out = pitch_shift(waves, semitones, n_fft, hop)
    assert out.shape == waves.shape
    for shift, clip in zip(semitones.tolist(), out):
        assert 12 * np.log2(peak_hz(clip) / 500) == pytest.approx(shift, abs=0.5)
        assert active_s(clip) == pytest.approx(0.3, abs=0.015)  # edges blur by about a vocoder frame


def test_time_stretch_keeps_pitch_and_scales_duration_by_the_rate():
    waves = burst().repeat(2, 1)
    n_fft, hop = stretch_fft_size(RATE_HZ)
    out = time_stretch(waves, torch.tensor([0.8, 1.25]), n_fft, hop)
    assert out.shape == waves.shape
    for rate, clip in zip((0.8, 1.25), out):
        assert peak_hz(clip) == pytest.approx(500, rel=0.02)
        assert active_s(clip) == pytest.approx(0.3 / rate, abs=0.01)


def test_time_stretch_matches_librosa_phase_vocoder():
    import librosa
    noise = np.random.default_rng(0).normal(0, 0.3, RATE_HZ)
    n_fft, hop = stretch_fft_size(RATE_HZ)
    ours = time_stretch(torch.tensor(noise)[None].repeat(2, 1), torch.tensor([0.8, 1.25]), n_fft, hop)
    for rate, clip in zip((0.8, 1.25), ours.numpy()):
        reference = librosa.effects.time_stretch(noise, rate=rate, n_fft=n_fft, hop_length=hop)
        compared = min(len(reference), RATE_HZ) - n_fft  # the last frame differs: librosa stops at fewer frames
        assert np.abs(clip[:compared] - reference[:compared]).max() < 1e-4


# ---- SpecAugment --------------------------------------------------------------------------------------------

def test_specaugment_zeroes_exactly_the_drawn_masks():
    features = torch.rand(32, 2, 40, 100) + 1  # never 0 before masking
    masks = SpecAugment(freq_masks=2, freq_mask_bins=8, time_masks=3, time_mask_frames=10, p=1.0)
    params = masks.draw(tuple(features.shape), seeded())
    out = masks(features, seeded())
    assert params["freq_width"].shape == (32, 2) and params["time_width"].shape == (32, 3)
    assert params["freq_width"].max() <= 8 and params["time_width"].max() <= 10
    for clip in range(32):
        expected = torch.zeros(40, 100, dtype=torch.bool)
        for start, width in zip(params["freq_start"][clip].tolist(), params["freq_width"][clip].tolist()):
            assert start + width <= 40
            expected[start:start + width, :] = True
        for start, width in zip(params["time_start"][clip].tolist(), params["time_width"][clip].tolist()):
            assert start + width <= 100
            expected[:, start:start + width] = True
        for channel in range(2):
            assert torch.equal(out[clip, channel] == 0, expected)
        assert torch.equal(out[clip][:, ~expected], features[clip][:, ~expected])
    waveform_features = torch.rand(4, 1, 800)
    assert masks(waveform_features, seeded()) is waveform_features


def test_specaugment_probability_picks_clips():
    features = torch.rand(200, 1, 40, 50) + 1
    out = SpecAugment(freq_masks=1, freq_mask_bins=8, time_masks=0, time_mask_frames=1, p=0.5)(features, seeded())
    touched = (out == 0).flatten(1).any(dim=1).float().mean().item()
    assert 0.3 < touched < 0.55  # 0.5 of the clips, fewer where a drawn width is 0


# ---- mixing -------------------------------------------------------------------------------------------------

def test_mixup_is_the_convex_combination_it_reports():
    inputs, targets = torch.randn(16, 1, 8, 50), torch.arange(16)
    mixed, targets_a, targets_b, lam = BatchMix(mixup_alpha=0.4, cutmix_alpha=0.0, p=1.0)(inputs, targets, seeded())
    assert torch.equal(targets_a, targets) and lam.shape == (16,)
    assert lam.min() >= 0 and lam.max() <= 1 and lam.std() > 0.05  # per clip
    expected = lam[:, None, None, None] * inputs + (1 - lam[:, None, None, None]) * inputs[targets_b]
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_cutmix_takes_one_time_region_from_b():
    inputs, targets = torch.randn(16, 1, 8, 50), torch.arange(16)
    mixed, _, targets_b, lam = BatchMix(mixup_alpha=0.0, cutmix_alpha=1.0, p=1.0)(inputs, targets, seeded())
    assert lam.min() >= 0 and lam.max() <= 1
    for clip in range(16):
        if targets_b[clip] == clip:
            continue  # mixed with itself: nothing to tell apart
        from_b = (mixed[clip] == inputs[targets_b[clip]]).all(dim=(0, 1))  # (frames,)
        from_a = (mixed[clip] == inputs[clip]).all(dim=(0, 1))
        assert torch.all(from_a ^ from_b)
        columns = from_b.nonzero().squeeze(1)
        if len(columns):
            assert columns[-1] - columns[0] + 1 == len(columns)  # one contiguous cut
        assert lam[clip].item() == pytest.approx(1 - len(columns) / 50)


def test_mixed_loss_equals_the_manual_computation():
    logits, targets_a, targets_b = torch.randn(8, 5), torch.randint(0, 5, (8,)), torch.randint(0, 5, (8,))
    lam = torch.rand(8)

    def per_clip(lg, y):
        return F.cross_entropy(lg, y, reduction="none")

    manual = (lam * per_clip(logits, targets_a) + (1 - lam) * per_clip(logits, targets_b)).mean()
    assert torch.allclose(mixed_loss(per_clip, logits, targets_a, targets_b, lam), manual)
    with pytest.raises(ValueError, match="reduction='none'"):
        mixed_loss(F.cross_entropy, logits, targets_a, targets_b, lam)


def test_stack_views_puts_clean_then_augmented_in_channels():
    clean, augmented = torch.zeros(4, 1, 8, 20), torch.ones(4, 1, 8, 20)
    stacked = stack_views(clean, augmented)
    assert stacked.shape == (4, 2, 8, 20) and stacked[:, 0].sum() == 0 and stacked[:, 1].min() == 1
    with pytest.raises(ValueError, match="same shape"):
        stack_views(clean, torch.ones(4, 1, 8, 21))


# ---- the whole augmenter ------------------------------------------------------------------------------------

EVERYTHING = dict(noise_snr_db=(5, 20), speed=(0.9, 1.1), stretch=(0.8, 1.25), pitch_semitones=2,
                  freq_masks=2, time_masks=2, mixup_alpha=0.4, cutmix_alpha=1.0)
PROBABILITIES = ("shift_p", "gain_p", "noise_p", "background_p", "speed_p", "pitch_p", "stretch_p",
                 "specaugment_p", "mix_p")


def run_all_stages(augmenter: BatchAugmenter, waves: torch.Tensor, generator: torch.Generator):
    out = augmenter.waveform(waves, generator)
    features = augmenter.spectrogram(out.reshape(len(out), 1, 80, 100), generator)
    return (out, features) + augmenter.mix(features, torch.arange(len(out)), generator)


def test_probability_zero_or_disabled_is_identity_and_draws_nothing(background_folder):
    waves = tones(4)
    settings = dict(EVERYTHING, background_dir=background_folder)
    for config in (AugmentConfig(**settings, **{p: 0.0 for p in PROBABILITIES}),
                   AugmentConfig(**settings, enabled=False)):
        augmenter = BatchAugmenter(config, RATE_HZ)
        generator = seeded()
        state = generator.get_state()
        waves_out, features, mixed, targets_a, targets_b, lam = run_all_stages(augmenter, waves, generator)
        assert not augmenter.active
        assert torch.equal(waves_out, waves) and torch.equal(mixed, waves.reshape(4, 1, 80, 100))
        assert torch.equal(targets_a, targets_b) and torch.equal(lam, torch.ones(4))
        assert torch.equal(generator.get_state(), state)


def test_default_config_runs_only_shift_then_gain():
    augmenter = BatchAugmenter(AugmentConfig(), RATE_HZ)
    assert [type(step) for step in augmenter.wave.steps] == [RandomShift, RandomGain]
    assert not augmenter.masks.active and not augmenter.mixer.active
    assert len(WaveAugment(AugmentConfig(**OFF), RATE_HZ).steps) == 0


def test_same_generator_seed_same_output(background_folder):
    config = AugmentConfig(**EVERYTHING, background_dir=background_folder, mix_p=1.0, speed_p=1.0)
    augmenter = BatchAugmenter(config, RATE_HZ)
    waves = tones(8)
    first = run_all_stages(augmenter, waves, seeded(5))
    again = run_all_stages(augmenter, waves, seeded(5))
    other = run_all_stages(augmenter, waves, seeded(6))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], waves) and not torch.equal(first[0], other[0])


def test_plot_augmentations_writes_a_png(tmp_path):
    from earmark.features import build_frontend
    from earmark.reports.plots import plot_augmentations

    frontend = build_frontend(FeaturesConfig(n_fft=256, n_mels=32), RATE_HZ)
    augmenter = BatchAugmenter(AugmentConfig(noise_snr_db=(5, 10), freq_masks=1, time_masks=1), RATE_HZ)
    path = plot_augmentations(tones(3).numpy(), frontend, augmenter, ["a", "b", "c"], tmp_path / "augment.png",
                              seeded())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
