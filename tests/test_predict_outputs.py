"""What `predict` loads and writes: no Lightning at prediction time, outputs named as asked."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_runs import train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    return base, train_tiny_run(base, "tiny").run_dir


def test_predictor_loads_without_lightning_and_matches_the_training_module(tiny_run):
    from earmark.predict.torch_predictor import Predictor
    from earmark.rundir import find_checkpoint
    from earmark.train.module import AudioClassifier

    base, run = tiny_run
    waves = np.random.default_rng(0).normal(0, 0.1, (4, 4000)).astype(np.float32)
    predictor = Predictor.from_run(run, device="cpu")
    lightning = Predictor(AudioClassifier.load_from_checkpoint(find_checkpoint(run, "best"), map_location="cpu",
                                                               weights_only=False), "cpu")
    np.testing.assert_allclose(predictor.predict_waves(waves), lightning.predict_waves(waves), rtol=1e-5, atol=1e-6)
    code = (f"import sys; from earmark.predict.torch_predictor import load_predictor; "
            f"load_predictor({str(run)!r}, device='cpu'); "
            "print(sorted(m for m in ('lightning', 'matplotlib', 'transformers', 'torchvision') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == "[]"


def test_timeline_only_when_asked_and_named_as_asked(tiny_run):
    from earmark import api
    from earmark.errors import EarmarkError

    base, run = tiny_run
    clip = base / "tones" / "low" / "low_0.wav"
    out = base / "out"
    plain = api.predict(run, [clip], out / "labels.csv")
    assert plain.timeline_path is None and sorted(p.name for p in out.iterdir()) == ["labels.csv"]
    chunked = api.predict(run, [clip], out / "timeline.csv", chunk_s=0.25, timeline_out=out / "windows.csv")
    assert chunked.timeline_path == out / "windows.csv" and len(chunked.timeline) == 2
    assert not (out / "timeline_timeline.csv").exists()
    api.predict(run, [clip], out / "preds.csv", chunk_s=0.25)
    assert (out / "preds_timeline.csv").is_file()  # the default beside --out, only because chunking was asked for
    with pytest.raises(EarmarkError, match="--chunk-s"):
        api.predict(run, [clip], out / "x.csv", timeline_out=out / "y.csv")


def test_a_run_where_every_input_fails_writes_no_timeline_file(tiny_run):
    from earmark import api

    base, run = tiny_run
    junk, out = base / "junk.wav", base / "failed"
    junk.write_bytes(b"junk")
    for timeline_out in (out / "windows.csv", None):  # asked for, or the default beside --out
        result = api.predict(run, [junk], out / "labels.csv", chunk_s=0.25, timeline_out=timeline_out)
        assert len(result.bad_files) == 1 and result.timeline_path is None
        assert not out.exists() or list(out.iterdir()) == []


def test_a_chunk_model_writes_no_timeline_unasked(tmp_path: Path):
    from earmark import api

    run = train_tiny_run(tmp_path, "chunky", extra=("data.clip=chunk", "data.duration_s=0.25", "train.scheduler=none")).run_dir
    out = tmp_path / "out" / "labels.csv"
    result = api.predict(run, [tmp_path / "tones" / "mid" / "mid_1.wav"], out)
    assert result.files["n_chunks"].iloc[0] == 2 and result.timeline_path is None
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.csv"]
