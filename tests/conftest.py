"""Shared fixtures: tiny synthetic audio written to disk, and the shared FSDD location."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FSDD_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD_ROOT / "metadata.csv").is_file(),
                                reason="the shared FSDD data set is absent (a user's clone)")

TONES_HZ = {"low": 300.0, "mid": 900.0, "high": 2400.0}


def tone_clip(frequency_hz: float, rate_hz: int, duration_s: float, seed: int) -> np.ndarray:
    """A sine tone with random phase, amplitude and a little noise: (n,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate_hz * duration_s)) / rate_hz
    amplitude = rng.uniform(0.2, 0.8)
    clip = amplitude * np.sin(2 * np.pi * frequency_hz * t + rng.uniform(0, 2 * np.pi))
    return (clip + rng.normal(0, 0.01, len(t))).astype(np.float32)


@pytest.fixture
def tone_folder(tmp_path: Path) -> Path:
    """folder-per-class tree: 3 classes × 12 files, 8 kHz mono WAV and some FLAC, 0.3–0.7 s."""
    root = tmp_path / "tones"
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True)
        for take in range(12):
            seed = class_index * 100 + take
            duration = 0.3 + 0.4 * ((take * 7) % 12) / 11
            suffix = ".flac" if take % 4 == 0 else ".wav"
            sf.write(root / label / f"{label}_{take}{suffix}", tone_clip(frequency, 8000, duration, seed), 8000)
    return root


@pytest.fixture
def tone_config(tone_folder: Path, tmp_path: Path) -> Path:
    """A YAML config training a small CNN on the tone folder for a few epochs."""
    config = tmp_path / "tones.yaml"
    config.write_text(
        f"""
name: tones
runs_dir: {tmp_path / 'runs'}
workspace: {tmp_path / 'ws'}
data:
  source: folder
  path: {tone_folder}
  sample_rate_hz: 8000
  duration_s: 0.5
  cache_dir: {tmp_path / 'ws' / 'cache'}
  workers: 1
split:
  val_fraction: 0.2
  test_fraction: 0.25
features:
  n_fft: 256
  n_mels: 32
model:
  params: {{width: 8}}
train:
  max_epochs: 4
  batch_size: 8
  lr: 0.005
  progress: false
"""
    )
    return config
