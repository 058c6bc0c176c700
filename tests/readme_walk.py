"""The commands of README.md and the docs pages (tests/doc_pages.py), run in page order as a reader would, in a
folder holding tiny stand-ins for the data they name (tones instead of drones, a 6-speaker FSDD of tones, an
ESC-50 layout, ...). Used by tests/test_readme_commands.py::test_readme_walkthrough (slow).

What the walk changes, and why, is written here and nowhere else:
- SKIPPED: commands that need the internet, hardware, a cluster, a server left running or minutes each; each
  with the test that covers it instead.
- REWRITES: literal text replaced (fewer trials, a real folder for `/data`).
- every `earmark train|cv|tune` without `--resume` trains one epoch (`train.max_epochs=1` appended, replacing a
  README value) and gives `auto` 20 s (`train.time_budget_s=20`; the demo's own budget is 240 s): the walk checks that commands work, not how well a model learns.
- python blocks run after the bash ones (they use runs those train), each after PYTHON_PRELUDE (the names the
  fragments take from the prose around them), with PYTHON_REWRITES; blocks that download are in PYTHON_SKIPPED.
- `runs/<name>` is the newest run the walk has trained: in the personalization commands (`--group NAME`, a list
  with a speaker column) the newest personalized run; in a command naming `speaker` the newest other run whose data
  has speakers (the demo, FSDD); elsewhere the newest other run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from conftest import TONES_HZ, tone_clip
from tiny_runs import tone_dataset

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]

SKIPPED = {  # command prefix → why the walk does not run it, and what covers it
    "pip install": "CI installs exactly so (.ci/run); tests/test_light_install.py does the --no-deps install",
    "python -m pytest": "the suite itself",
    "lint-imports": "tests/test_layout.py runs it",
    "ruff check": "tests/test_layout.py runs it",
    "pre-commit install": "installs a git hook",
    "earmark fetch": "downloads; tests/test_fetch_*.py fetch from a local server",
    "torchrun": "a multi-node launch",
    "srun": "a SLURM cluster",
    "export AWS_": "a bucket's endpoint; tests/test_stream.py starts an S3 server for the two commands below",
    "earmark prepare cfg.yaml --to s3://": "a bucket; tests/test_stream.py prepares to a moto S3 server",
    "earmark train cfg.yaml data.source=stream": "a bucket; tests/test_stream.py trains streaming from one",
    "arecord": "a microphone",
    "earmark serve": "runs until interrupted; tests/test_serve.py serves and posts these requests",
    "curl": "needs `earmark serve` running; tests/test_serve.py posts the same requests",
    "python benchmarks/": "minutes each; benchmarks are run by hand (README, Benchmarks)",
}
REWRITES = {  # README text → what the walk runs
    "find /data -name '*.flac'": "find recordings -name '*.flac'",
    "--trials 30": "--trials 2",
    "--trials 50": "--trials 3",
    "earmark predict model.onnx": "earmark predict deploy/model.onnx",  # the README's deploy section's model
}
PYTHON_SKIPPED = {  # text in a README python block → why the walk does not run that block
    "api.fetch(": "downloads; tests/test_fetch_*.py call api.fetch against a local server",
    "from_pretrained(": "downloads pretrained weights; tests save tiny models locally instead",
}
PYTHON_REWRITES = {
    '"model.onnx"': '"deploy/model.onnx"',
    '"train.max_epochs=30"': '"train.max_epochs=1"',
    '"train.max_epochs=5"': '"train.max_epochs=1"',
    "trials=30": "trials=2",
    # the prelude's run_b is personalized, which an ensemble refuses: the two runs the Ensembles section trains
    "api.ensemble([run_a, run_b]": 'api.ensemble(["runs/sample-aisfx", "runs/sample-cnn"]',
}
# names the README's python fragments use without defining them (the prose around them does)
PYTHON_PRELUDE = """import numpy as np
from earmark import api
from earmark.predict.torch_predictor import Predictor
waves = np.zeros((3, 8000), np.float32)
run_a, run_b = "runs/basic", "runs/personalized"
"""
TRAINING = re.compile(r"(?:^|\s)earmark (train|cv|tune)\b")


def write_tones(folder: Path, rate_hz: int = 8000, seconds: float = 0.5, per_class: int = 12) -> list[Path]:
    """tiny_runs.tone_dataset's tones in `folder/<class>/`; returns the files."""
    return sorted(tone_dataset(folder, rate_hz, seconds, per_class).glob("*/*.wav"))


def fake_fsdd(root: Path) -> None:
    """FSDD's layout: recordings/<digit>_<speaker>_<take>.wav, three 'digits' (tones), six speakers."""
    (root / "recordings").mkdir(parents=True)
    for class_index, frequency in enumerate(TONES_HZ.values()):
        for speaker_index, speaker in enumerate(SPEAKERS):
            for take in range(8):  # takes 0-4 are FSDD's predefined test split
                clip = tone_clip(frequency, 8000, 0.5, 1000 + class_index * 100 + speaker_index * 10 + take)
                sf.write(root / "recordings" / f"{class_index}_{speaker}_{take}.wav", clip, 8000)


def fake_esc50(root: Path) -> None:
    """ESC-50's layout: audio/<fold>-<src>-A-<target>.wav and meta/esc50.csv, 5 folds."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = []
    for class_index, (label, frequency) in enumerate(TONES_HZ.items()):
        for take in range(10):
            name = f"{take % 5 + 1}-{class_index * 100 + take}-A-{class_index}.wav"
            sf.write(root / "audio" / name, tone_clip(frequency, 8000, 1.0, 2000 + class_index * 100 + take), 8000)
            rows.append({"filename": name, "fold": take % 5 + 1, "target": class_index, "category": label,
                         "esc10": False, "src_file": class_index * 100 + take, "take": "A"})
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)


def metadata_csv(folder: Path, files: list[Path], label_column: str = "label", **columns) -> Path:
    rows = [{"path": f.relative_to(folder).as_posix(), label_column: f.parent.name,
             **{name: make(f) for name, make in columns.items()}} for f in files]
    path = folder / "metadata.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def build_world(base: Path) -> Path:
    """The reader's project folder (returned) with every file the README's commands name, and
    ../shared/datasets/fsdd beside it."""
    project = base / "project"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples", project / "examples")
    tones = write_tones(project / "recordings")
    for flac in tones[::6]:
        audio, rate = sf.read(flac)
        sf.write(flac.with_suffix(".flac"), audio, rate)
    write_tones(project / "my_clips")
    write_tones(project / "field_recordings", per_class=2)
    drones = write_tones(project / "data" / "drones", rate_hz=16000)
    metadata_csv(project / "data" / "drones", drones, group=lambda f: f"{f.parent.name}-rec{int(f.stem[-1]) // 3}")
    speech = write_tones(project / "data" / "speech_commands")
    metadata_csv(project / "data" / "speech_commands", speech, speaker=lambda f: SPEAKERS[int(f.stem.split("_")[1]) % 6])
    fake_esc50(project / "data" / "esc50")
    fake_fsdd(project / "data" / "fsdd")
    fake_fsdd(base / "shared" / "datasets" / "fsdd")
    other = write_tones(project / "other_site", per_class=2)
    table = pd.DataFrame({"path": [f.relative_to(project).as_posix() for f in other],
                          "label": [f.parent.name for f in other], "kind": [f.parent.name for f in other]})
    table.to_csv(project / "other_site.csv", index=False)
    low, high = (tone_clip(TONES_HZ[name], 8000, 3.0, 7) for name in ("low", "high"))
    sf.write(project / "long_take.flac", np.concatenate([low, high]), 8000)
    sf.write(project / "meeting.wav", np.concatenate([high, low]), 8000)
    sf.write(project / "long_recording.flac", np.concatenate([low, high, low]), 8000)
    sf.write(project / "capture.wav", low, 8000, subtype="PCM_16")
    for name, clip in {"clip.wav": low[:4000], "clip1.wav": low[:4000], "clip2.wav": high[:4000],
                       "a.wav": low[:8000], "b.wav": high[:8000], "b.flac": high[:8000],
                       "clip.flac": high[:4000], "long.flac": np.concatenate([low, high])}.items():
        sf.write(project / name, clip, 8000)
    fsdd_clips = sorted((project / "data" / "fsdd" / "recordings").glob("*.wav"))[:4]
    pd.DataFrame({"path": [str(f) for f in fsdd_clips],
                  "speaker": [f.stem.split("_")[1] for f in fsdd_clips]}).to_csv(project / "list.csv", index=False)
    (project / "cfg.yaml").write_text((project / "examples" / "fsdd.yaml").read_text())
    (project / "my.yaml").write_text((project / "examples" / "drones.yaml").read_text())
    return project


def skip_reason(command: str) -> str | None:
    for prefix, reason in SKIPPED.items():
        if command.startswith(prefix):
            return reason
    return None


def rewrite(command: str, runs: dict[str, str | None], rewrites: dict[str, str] = REWRITES) -> str:
    for text, replacement in rewrites.items():
        command = command.replace(text, replacement)
    if "runs/<name>" in command:
        personal = "--group " in command or " list.csv" in command or "groups=" in command
        run = runs["personalized" if personal else "speakers" if "speaker" in command else "other"]
        assert run, f"{command!r} names runs/<name> before the walk trained such a run"
        command = command.replace("runs/<name>", f"runs/{run}")
    if TRAINING.search(command) and "--resume" not in command:
        command = re.sub(r"\s*train\.max_epochs=\d+", "", command) + " train.max_epochs=1"
        command = re.sub(r"\s*train\.time_budget_s=\d+", "", command) + " train.time_budget_s=20"
    return command


def newest_runs(project: Path) -> dict[str, str | None]:
    """The newest trained run (by its checkpoints folder's time): personalized, other (on the tone stand-ins;
    the newest with speakers until one exists), and other with a speaker column (the bundled demo's or FSDD's data)."""
    newest: dict[str, str | None] = {"personalized": None, "other": None, "speakers": None}
    runs = [p for p in (project / "runs").glob("*") if (p / "checkpoints").is_dir()]
    for run in sorted(runs, key=lambda p: (p / "checkpoints").stat().st_mtime):
        config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
        if re.search(r"^\s+name: personalized$", config, re.M):
            newest["personalized"] = run.name
            continue
        if re.search(r"^\s+source: (sample|fsdd)$", config, re.M):
            newest["speakers"] = run.name
        else:  # the README's other data (drones, other_site.csv) is the walk's tones: `--data` needs their labels
            newest["other"] = run.name
    newest["other"] = newest["other"] or newest["speakers"]
    return newest


def python_skip_reason(code: str) -> str | None:
    return next((reason for text, reason in PYTHON_SKIPPED.items() if text in code), None)


def run_python(project: Path, code: str, runs: dict[str, str | None]) -> subprocess.CompletedProcess:
    """A README python block, rewritten, after PYTHON_PRELUDE, in the project folder."""
    source = PYTHON_PRELUDE + rewrite(code, runs, PYTHON_REWRITES)
    return subprocess.run([sys.executable, "-c", source], cwd=project, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def run_step(project: Path, command: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """One README command through bash in the project folder, with this Python's `earmark` first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
