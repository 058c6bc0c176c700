"""Tiny real training runs on synthetic tones, for tests that need a run directory (a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from conftest import TONES_HZ, tone_clip


def tone_dataset(root: Path, rate_hz: int = 8000, seconds: float = 0.5, per_class: int = 12) -> Path:
    """3 classes × `per_class` tones (default: 12 half-second 8 kHz ones), one folder per class."""
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for take in range(per_class):
            sf.write(root / label / f"{label}_{take}.wav",
                     tone_clip(frequency, rate_hz, seconds, class_index * 100 + take), rate_hz)
    return root


def train_tiny_run(base: Path, name: str, max_epochs: int = 1, extra: tuple[str, ...] = ()):
    """Train simple_cnn (width 4) on the tones under `base`; runs sharing `base` share data and splits."""
    from earmark import api
    from earmark.config import load_config

    root = base / "tones"
    if not root.exists():
        tone_dataset(root)
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
                 "data.sample_rate_hz=8000", "data.duration_s=0.5", f"data.cache_dir={base / 'ws' / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.25", "features.n_fft=256",
                 "features.n_mels=32", "model.params.width=4", f"train.max_epochs={max_epochs}",
                 "train.batch_size=8", "train.lr=0.005", "train.progress=false", f"name={name}", *extra]
    return api.train(load_config(overrides=overrides))
