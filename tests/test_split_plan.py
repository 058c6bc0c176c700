"""The split plan said before training: the test fold, sizes, missing classes, and what to do instead."""

from pathlib import Path

import soundfile as sf

from conftest import TONES_HZ, tone_clip


def tone_csv(root: Path, rows_per_class: int, fold_of, split_of=None, speaker_of=None) -> Path:
    """metadata.csv over 8 kHz tones: path,label,fold (and split, speaker when given)."""
    root.mkdir(parents=True, exist_ok=True)
    header = ["path", "label", "fold"] + (["split"] if split_of else []) + (["speaker"] if speaker_of else [])
    lines = [",".join(header)]
    for c, (label, hz) in enumerate(TONES_HZ.items()):
        for i in range(rows_per_class):
            name = f"{label}_{i}.wav"
            sf.write(root / name, tone_clip(hz, 8000, 0.3, c * 100 + i), 8000)
            cells = [name, label, str(fold_of(c, i))]
            cells += [split_of(c, i)] if split_of else []
            cells += [speaker_of(c, i)] if speaker_of else []
            lines.append(",".join(cells))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "metadata.csv"


def common(tmp_path: Path, csv: Path) -> list[str]:
    return ["data.source=csv", f"data.path={csv}", "data.sample_rate_hz=8000", "data.duration_s=0.3",
            f"data.cache_dir={tmp_path / 'cache'}", "data.workers=1", f"workspace={tmp_path / 'ws'}",
            f"runs_dir={tmp_path / 'runs'}"]


def test_a_tiny_test_fold_is_named_and_advice_given(tmp_path):
    from earmark import api
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines

    # ESC-50-like: fold 5 (the default test fold) holds one clip of one class
    csv = tone_csv(tmp_path / "esc", 8, lambda c, i: 5 if (c, i) == (0, 0) else 1 + i % 4)
    config = load_config(overrides=common(tmp_path, csv) + ["split.val_fraction=0.2"])
    lines = split_plan_lines(api.prepare(config).stats, config.split)
    text = "\n".join(lines)
    assert "test = fold 5" in lines[0]
    assert "test 1 clips (1/3 classes)" in text
    assert "test lacks 2 of 3 classes" in text and "split.test_fold" in text and "use_predefined=false" in text
    ok = load_config(overrides=common(tmp_path, csv) + ["split.val_fraction=0.2", "split.test_fold=2"])
    assert not any("cannot score" in line for line in split_plan_lines(api.prepare(ok).stats, ok.split))


def test_an_explicit_group_by_under_a_split_column_gets_a_note(tmp_path):
    from earmark import api
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines

    # FSDD-like: a split column by take, speakers in both splits
    csv = tone_csv(tmp_path / "fsdd", 8, lambda c, i: 1, split_of=lambda c, i: "test" if i < 2 else "train",
                   speaker_of=lambda c, i: f"s{i % 2}")
    config = load_config(overrides=common(tmp_path, csv) + ["split.group_by=speaker", "split.val_fraction=0"])
    lines = split_plan_lines(api.prepare(config).stats, config.split)
    note = next(line for line in lines if line.startswith("note:"))
    assert "'split' column decides" in note and "split.use_predefined=false" in note
    assert any("appear in several splits" in line for line in lines)


def test_train_says_the_plan_before_training(tmp_path):
    from earmark import api

    csv = tone_csv(tmp_path / "esc", 8, lambda c, i: 1 + i % 4)
    said = []
    api.train(None, common(tmp_path, csv) + ["split.val_fraction=0.2", "split.test_fold=4", "train.max_epochs=1",
                                             "train.progress=false", "features.n_fft=256", "model.params.width=4",
                                             "train.scheduler=none"], log=said.append)
    assert said[0].startswith("split plan: fold column: test = fold 4")
    assert said[1].startswith("split sizes: train")


def test_cv_names_folds_that_cannot_test_every_class():
    import pandas as pd

    from earmark.data.split_plan import cv_plan_lines

    items = pd.DataFrame({"label": ["a", "b", "c", "a", "b", "c", "a"]})
    folds = pd.Series(["1", "1", "1", "2", "2", "2", "3"])
    lines = cv_plan_lines(items, folds, ["a", "b", "c"])
    assert lines[0] == "fold plan: test clips per fold: 1 3, 2 3, 3 1"
    assert "3 (1 clips, 1/3 classes)" in lines[1] and "--folds K" in lines[1]
