"""Tiny trained runs and their ONNX exports, shared by the export, ONNX-predictor and streaming tests.

Each run is trained once per test session into pytest's base temporary folder, whichever test
module asks first; the others find it there.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from conftest import TONES_HZ, tone_clip

RATE_HZ = 8000
CLIP_S = 0.5
MODEL_PARAMS = {"simple_cnn": ["model.params.width=8"], "wave_cnn": ["model.params.width=4"],
                "lite_cnn": ["model.params.width_mult=0.25"]}


def tone_root(base: Path) -> Path:
    """3 classes x 12 one-clip WAV files at 8 kHz, written once under `base`."""
    root = base / "tones"
    if not (root / "done").is_file():
        for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
            (root / label).mkdir(parents=True, exist_ok=True)
            for take in range(12):
                sf.write(root / label / f"{label}_{take}.wav",
                         tone_clip(frequency, RATE_HZ, CLIP_S, class_index * 100 + take), RATE_HZ)
        (root / "done").write_text("")
    return root


def trained_run(tmp_path_factory, model: str = "simple_cnn", extra: tuple[str, ...] = ()) -> Path:
    """runs/<model> of a few-epoch training on the tones (trained on first use in the session)."""
    from earmark import api
    from earmark.config import load_config

    base = tmp_path_factory.getbasetemp() / "earmark_onnx_runs"
    name = model + "".join(f"-{item}" for item in extra).replace("=", "_").replace(".", "_")
    run_dir = base / "runs" / name
    if (run_dir / "metrics.json").is_file():
        return run_dir
    root = tone_root(base)
    overrides = [f"runs_dir={base / 'runs'}", f"workspace={base / 'ws'}", "data.source=folder", f"data.path={root}",
                 f"data.sample_rate_hz={RATE_HZ}", f"data.duration_s={CLIP_S}", f"data.cache_dir={base / 'cache'}",
                 "data.workers=1", "split.val_fraction=0.2", "split.test_fraction=0.25", "features.n_fft=256",
                 "features.n_mels=32", f"model.name={model}", "train.max_epochs=12", "train.batch_size=8",
                 "train.lr=0.005", "train.progress=false", f"name={name}"]
    if model == "wave_cnn":
        overrides.append("features.kind=waveform")
    result = api.train(load_config(overrides=overrides + MODEL_PARAMS.get(model, []) + list(extra)))
    return result.run_dir


def exported_model(tmp_path_factory, model: str = "simple_cnn") -> Path:
    """model.onnx of `trained_run(model)`, exported once per session."""
    from earmark import api

    run_dir = trained_run(tmp_path_factory, model)
    path = run_dir / "export" / "model.onnx"
    if not path.is_file():
        api.export(run_dir, log=lambda text: None)
    return path
