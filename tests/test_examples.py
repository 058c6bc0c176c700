"""Every config on the README and the docs pages is a file under examples/, loads, and prepares tiny tone data.

A typo in a README config (an unknown key, a wrong type) or a README block that drifted from its
file fails here, not on a reader's machine.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from doc_pages import fenced_blocks, pages_text
from earmark.config import load_config
from tiny_runs import tone_dataset

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOT_CONFIGS = {"sources.yaml": "an `earmark fetch` sources list", "space.yaml": "an `earmark tune` search space"}
CONFIGS = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name not in NOT_CONFIGS)


def readme_yaml_blocks() -> list[str]:
    """Every ```yaml block of README.md and the docs pages."""
    return [code for _, _, code in fenced_blocks("yaml")]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """The tones laid out for each source kind: a folder, a metadata CSV with a group column, FSDD, ESC-50."""
    base = tmp_path_factory.mktemp("examples")
    tones = tone_dataset(base / "tones")
    files = sorted(tones.glob("*/*.wav"))
    rows = [{"path": f.relative_to(tones).as_posix(), "label": f.parent.name,
             "group": f"{f.parent.name}-rec{int(f.stem.split('_')[1]) // 2}"} for f in files]
    pd.DataFrame(rows).to_csv(tones / "metadata.csv", index=False)
    (base / "fsdd" / "recordings").mkdir(parents=True)
    (base / "esc50" / "audio").mkdir(parents=True)
    esc = []
    for digit, f in enumerate(files):
        label, take = f.parent.name, int(f.stem.split("_")[1])
        shutil.copy(f, base / "fsdd" / "recordings" / f"{sorted(set(r['label'] for r in rows)).index(label)}"
                                                      f"_s{take % 4}_{take // 4}.wav")
        shutil.copy(f, base / "esc50" / "audio" / f"{digit}-{label}.wav")
        esc.append({"filename": f"{digit}-{label}.wav", "fold": take % 5 + 1, "target": 0, "category": label,
                    "esc10": False, "src_file": digit, "take": "A"})
    (base / "esc50" / "meta").mkdir()
    pd.DataFrame(esc).to_csv(base / "esc50" / "meta" / "esc50.csv", index=False)
    return {"folder": tones, "csv": tones / "metadata.csv", "fsdd": base / "fsdd", "esc50": base / "esc50",
            "base": base}


def test_examples_exist():
    names = {p.name for p in CONFIGS}
    assert {"drones.yaml", "drones_metadata.yaml", "fsdd.yaml", "esc50.yaml", "gpt2_finetune.yaml"} <= names


@pytest.mark.parametrize("example", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads_and_prepares(example: Path, tiny_data, tmp_path):
    from earmark import api

    config = load_config(example)
    source = config.data.source if config.data.source != "sample" else "folder"  # the demo: tones, for speed
    overrides = [f"data.source={source}", f"data.path={tiny_data[source]}", f"workspace={tmp_path / 'ws'}",
                 f"data.cache_dir={tiny_data['base'] / 'cache'}", f"runs_dir={tmp_path / 'runs'}", "data.workers=1"]
    prepared = api.prepare(load_config(example, overrides), progress=False)
    assert set(prepared.items["split"]) == {"train", "val", "test"}
    assert prepared.stats["leakage"]["ok"], prepared.stats["leakage"]


def test_the_other_examples_load_with_their_own_readers():
    from earmark.fetch.sources import read_sources
    from earmark.workflows.search_space import load_space

    assert {row.label for row in read_sources(EXAMPLES / "sources.yaml")} >= {"drone", "car", "safe"}
    assert "train.lr" in {param.key for param in load_space(EXAMPLES / "space.yaml", load_config(overrides=["model.name=simple_cnn"]))}


def test_every_readme_yaml_block_is_an_example_file_and_valid(tmp_path):
    blocks = readme_yaml_blocks()
    assert len(blocks) >= 5
    for block in blocks:
        named = re.match(r"# (examples/[\w.-]+\.yaml)", block)
        assert named, f"a README yaml block does not start with '# examples/NAME.yaml':\n{block[:200]}"
        file = ROOT / named[1]
        assert file.is_file() and file.read_text(encoding="utf-8") == block, f"README block differs from {file}"
        if file.name not in NOT_CONFIGS:
            copy = tmp_path / file.name
            copy.write_text(block)
            load_config(copy)  # an unknown key or a wrong type raises EarmarkError


def test_readme_commands_on_examples_take_valid_overrides():
    """`earmark train examples/X.yaml key=value ...` lines: the file and every override validate."""
    lines = re.findall(r"^earmark (?:train|prepare|inspect|cv|tune|config) (examples/\S+\.yaml)(.*)$",
                       pages_text(), re.M)
    assert lines
    for file, rest in lines:
        words = shlex.split(rest.split("#")[0])
        load_config(ROOT / file, [w for w in words if "=" in w and not w.startswith("-")])
