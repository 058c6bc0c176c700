"""Shared fixtures: tiny synthetic audio written to disk, the shared FSDD location, and the skip policy.

Skips are honest: with EARMARK_STRICT_SKIPS=1 (CI sets it) a test that skips for a reason not on
ALLOWED_SKIP_REASONS fails instead, so a missing tool or data set in CI cannot pass as green.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# One thread per process (the tests' and their children's): on a 2-core machine torch's default (a thread per
# core) only adds contention; measured on test_models_cnn/_transformers, test_augment, test_training:
# 36.5 s against 40.8 s (two runs each, alternated). Set before torch is imported; an exported value wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_ROOT = Path(__file__).resolve().parents[2] / "shared"
FSDD_ROOT = SHARED_ROOT / "datasets" / "fsdd"
# The one gate for tests that read ../shared (present in CI and in the project's checkout, absent in a user's
# clone): the `integration` marker; pytest_collection_modifyitems skips those tests where it is absent.
needs_shared = needs_fsdd = pytest.mark.integration
SHARED_ABSENT = "../shared is absent (a user's clone): no shared FSDD data set"

# Skip reasons CI accepts under EARMARK_STRICT_SKIPS=1: only hardware a CI machine does not have.
ALLOWED_SKIP_REASONS = (re.compile(r"\b(CUDA|GPU)\b"),)

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


def pytest_collection_modifyitems(config, items):
    if (FSDD_ROOT / "metadata.csv").is_file():
        return
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.skip(reason=SHARED_ABSENT))


# --- the skip policy ---------------------------------------------------------------------------------------


def strict_skips() -> bool:
    return os.environ.get("EARMARK_STRICT_SKIPS") == "1"


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def _refuse_skip(report) -> None:
    """Turn a skip whose reason is not allowed into a failure that says why and how to fix it."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if any(pattern.search(reason) for pattern in ALLOWED_SKIP_REASONS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped under EARMARK_STRICT_SKIPS=1, and the reason is not on the allow-list "
                       f"(tests/conftest.py ALLOWED_SKIP_REASONS): {reason}\n"
                       f"Install what it needs (CI installs Chromium and ffmpeg and has ../shared), or unset "
                       f"EARMARK_STRICT_SKIPS on a machine that cannot.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if strict_skips():
        _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    if strict_skips():  # a module-level pytest.skip / importorskip
        _refuse_skip(outcome.get_result())
