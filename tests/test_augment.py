import numpy as np
import pytest
import torch

from earmark.augment import GaussianNoise, RandomGain, RandomShift, WaveAugment
from earmark.config import AugmentConfig


def test_shift_moves_a_click_by_at_most_the_limit():
    waves = torch.zeros(64, 1000)
    waves[:, 500] = 1.0
    shifted = RandomShift(max_shift_s=0.1, sample_rate_hz=1000, p=1.0)(waves, torch.Generator().manual_seed(0))
    positions = shifted.argmax(dim=1) - 500
    assert positions.abs().max() <= 100
    assert len(set(positions.tolist())) > 10  # really random per clip
    assert torch.equal(shifted.sum(dim=1), waves.sum(dim=1))  # circular: nothing lost


def test_gain_stays_within_its_range_in_db():
    waves = torch.ones(256, 10)
    out = RandomGain(max_gain_db=6.0, p=1.0)(waves, torch.Generator().manual_seed(0))
    gain_db = 20 * torch.log10(out[:, 0])
    assert gain_db.min() >= -6.0 - 1e-4 and gain_db.max() <= 6.0 + 1e-4
    assert gain_db.std() > 2.0


def test_noise_has_the_stated_std_and_probability_zero_is_identity():
    waves = torch.zeros(8, 20000)
    noisy = GaussianNoise(std=0.05, p=1.0)(waves, torch.Generator().manual_seed(0))
    assert noisy.std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.equal(GaussianNoise(std=0.05, p=0.0)(waves, torch.Generator()), waves)


def test_same_generator_seed_same_augmentation():
    augment = WaveAugment(AugmentConfig(noise_std=0.01), sample_rate_hz=8000)
    waves = torch.randn(4, 8000)
    a = augment(waves, torch.Generator().manual_seed(5))
    b = augment(waves, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, waves)


def test_disabled_augmentation_has_no_steps():
    augment = WaveAugment(AugmentConfig(shift_s=0, gain_db=0, noise_std=0), sample_rate_hz=8000)
    waves = torch.randn(2, 100)
    assert len(augment.steps) == 0 and torch.equal(augment(waves), waves)
