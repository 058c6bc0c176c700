"""Prediction with an exported model.onnx: onnxruntime only (torch made unimportable), every kind of input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import TONES_HZ, tone_clip
from earmark import api
from earmark.errors import EarmarkError
from onnx_runs import RATE_HZ, exported_model

# Makes torch, lightning and torchaudio unimportable in the child process, then runs the CLI.
NO_TORCH_CLI = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "torchaudio"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, NoTorch())
    from earmark.cli import main
    sys.argv = ["earmark"] + sys.argv[1:]
    try:
        main()
    finally:
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning"))
        print("heavy modules loaded:", loaded, file=sys.stderr)
""")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return exported_model(tmp_path_factory)


@pytest.fixture
def tone_files(tmp_path):
    """One 0.5 s file per class at 16 kHz stereo (the model runs at 8 kHz mono), plus a corrupt file."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for index, (label, frequency) in enumerate(TONES_HZ.items()):
        mono = tone_clip(frequency, 16000, 0.5, 900 + index)
        sf.write(folder / f"{label}.wav", np.stack([mono, 0.5 * mono], axis=1), 16000)
    return folder


def run_without_torch(*args, stdin: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300, env=env)


def test_the_cli_predicts_with_onnxruntime_while_torch_cannot_be_imported(onnx_model, tone_files, tmp_path):
    out = tmp_path / "preds.csv"
    done = run_without_torch("predict", onnx_model, tone_files, "--out", out, "--top-k", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heavy modules loaded: []" in done.stderr
    table = pd.read_csv(out)
    assert [p.split("/")[-1] for p in table["path"]] == ["high.wav", "low.wav", "mid.wav"]
    assert list(table["label"]) == ["high", "low", "mid"]
    assert {"probability", "top2_label", "top2_probability"} <= set(table.columns)
    # the same figures as the run's torch predictor on the same files
    torch_preds = api.predict(onnx_model.parent.parent, [tone_files], top_k=2, device="cpu", backend="torch").files
    np.testing.assert_allclose(table["probability"], torch_preds["probability"], atol=1e-4)


def test_streaming_a_recording_with_onnxruntime_while_torch_cannot_be_imported(onnx_model, tone_files, tmp_path):
    recording = tmp_path / "three.wav"
    sf.write(recording, np.concatenate([tone_clip(f, RATE_HZ, 0.5, 70 + i) for i, f in enumerate(TONES_HZ.values())]),
             RATE_HZ)
    out = tmp_path / "stream.csv"
    done = run_without_torch("predict", onnx_model, "--stream", recording, "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heavy modules loaded: []" in done.stderr
    assert list(pd.read_csv(out)["label"]) == list(TONES_HZ)  # one window per tone, in order


def test_files_folders_csv_lists_and_stdin_lists_give_the_same_answers(onnx_model, tone_files, tmp_path):
    paths = sorted(tone_files.glob("*.wav"))
    listing = tmp_path / "list.csv"
    pd.DataFrame({"file_path": [str(p) for p in paths], "note": ["x"] * len(paths)}).to_csv(listing, index=False)
    from_folder = api.predict(onnx_model, [tone_files]).files
    from_files = api.predict(onnx_model, paths).files
    from_csv = api.predict(onnx_model, [listing]).files
    for other in (from_files, from_csv):
        pd.testing.assert_frame_equal(from_folder, other)
    done = run_without_torch("predict", onnx_model, "-", "--out", tmp_path / "stdin.csv",
                             stdin="\n".join(map(str, paths)) + "\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(pd.read_csv(tmp_path / "stdin.csv")["label"]) == list(from_folder["label"])


def test_batch_size_and_threads_do_not_change_the_probabilities(onnx_model):
    from earmark.predict.onnx_predictor import OnnxPredictor

    waves = np.stack([tone_clip(f, RATE_HZ, 0.5, i) for i, f in enumerate([300.0, 900.0, 2400.0] * 7)])
    reference = OnnxPredictor(onnx_model).predict_waves(waves, batch_size=256)
    for batch_size, threads in ((1, 1), (4, 2), (5, None)):
        got = OnnxPredictor(onnx_model, threads=threads).predict_waves(waves, batch_size=batch_size)
        np.testing.assert_allclose(got, reference, atol=1e-5)
    assert reference.shape == (21, 3) and np.allclose(reference.sum(axis=1), 1.0, atol=1e-5)


def test_a_long_file_gets_a_timeline_that_follows_the_audio(onnx_model, tmp_path):
    # 3 s: low for 1 s, high for 1 s, mid for 1 s
    wave = np.concatenate([tone_clip(TONES_HZ[name], RATE_HZ, 1.0, i) for i, name in enumerate(["low", "high", "mid"])])
    path = tmp_path / "long.wav"
    sf.write(path, wave, RATE_HZ)
    out = tmp_path / "preds.csv"
    done = run_without_torch("predict", onnx_model, path, "--chunk-s", "0.5", "--hop-s", "0.5", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    timeline = pd.read_csv(tmp_path / "preds_timeline.csv")
    assert list(timeline["start_s"]) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(timeline["end_s"]) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert list(timeline["label"]) == ["low", "low", "high", "high", "mid", "mid"]
    files = pd.read_csv(out)
    assert files.loc[0, "n_chunks"] == 6


def test_bad_files_are_reported_and_foreign_models_refused(onnx_model, tone_files, tmp_path):
    (tone_files / "broken.wav").write_bytes(b"RIFF but not really audio")
    result = api.predict(onnx_model, [tone_files])
    assert len(result.files) == 3
    assert list(result.bad_files["path"]) == [str(tone_files / "broken.wav")]
    assert "not a decodable audio file" in result.bad_files.loc[0, "reason"]
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(EarmarkError, match="not exported by `earmark export`"):
        api.predict(foreign, [tone_files])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    done = run_without_torch("predict", garbage, tone_files)
    assert done.returncode == 2 and "error: onnxruntime cannot load" in done.stderr
    assert "Traceback" not in done.stderr


def test_files_share_model_calls_batch_size_at_a_time(onnx_model, tmp_path):
    from earmark.predict.onnx_predictor import OnnxPredictor

    folder = tmp_path / "many"
    folder.mkdir()
    labels = ["low", "mid", "high", "low", "high"]
    for index, label in enumerate(labels):
        sf.write(folder / f"{index}.wav", tone_clip(TONES_HZ[label], RATE_HZ, 0.4 + 0.05 * index, 50 + index), RATE_HZ)
    (folder / "2b.wav").write_bytes(b"not audio")  # a bad file in the middle changes nothing
    predictor = OnnxPredictor(onnx_model)
    calls = []
    real = predictor.predict_waves
    predictor.predict_waves = lambda waves, *args, **kwargs: calls.append(len(waves)) or real(waves, *args, **kwargs)
    batched = predictor.predict_files(sorted(folder.glob("*.wav")), batch_size=2)
    assert calls == [2, 2, 1]  # 5 decodable files, 2 per model call
    calls.clear()
    one_by_one = predictor.predict_files(sorted(folder.glob("*.wav")), batch_size=1)
    assert calls == [1] * 5
    pd.testing.assert_frame_equal(batched.files, one_by_one.files, atol=1e-5)
    assert list(batched.files["label"]) == labels and list(batched.bad_files["path"]) == [str(folder / "2b.wav")]
