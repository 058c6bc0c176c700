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


ESC_CLASSES = {"dog": 300.0, "rain": 700.0, "crow": 1300.0, "siren": 2100.0, "clock": 3100.0}


def esc50_like(root: Path) -> Path:
    """ESC-50's layout in miniature: audio/{fold}-{src_file}-{take}-{target}.wav (0.2 s, 8 kHz) and
    meta/esc50.csv. Each class has 5 source recordings of 3 clips; 'clock' only 2 (too few for a split of
    train, val and test), and the predefined fold 5 holds a single recording (a degenerate test fold)."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, (category, hz) in enumerate(ESC_CLASSES.items()):
        for recording in range(2 if category == "clock" else 5):
            src_file = 1000 * (target + 1) + recording
            fold = 5 if (target, recording) == (0, 0) else 1 + recording % 4
            for take in "ABC":
                name = f"{fold}-{src_file}-{take}-{target}.wav"
                sf.write(root / "audio" / name, tone_clip(hz, 8000, 0.2, src_file * 3 + "ABC".index(take)), 8000)
                lines.append(f"{name},{fold},{target},{category},False,{src_file},{take}")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def esc_overrides(tmp_path: Path, root: Path) -> list[str]:
    return ["data.source=esc50", f"data.path={root}", "data.sample_rate_hz=8000", "data.duration_s=0.2",
            f"data.cache_dir={tmp_path / 'cache'}", "data.workers=1", f"workspace={tmp_path / 'ws'}"]


def test_esc50_keeps_source_recordings_whole_and_its_advice_leads_to_a_split_that_works(tmp_path):
    from earmark import api
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines

    root = esc50_like(tmp_path / "esc50")
    config = load_config(overrides=esc_overrides(tmp_path, root))
    assert config.split.group_by == "group"  # the preset's group column is src_file
    # the predefined test fold is degenerate: the advice names a random split of whole recordings
    text = "\n".join(split_plan_lines(api.prepare(config, progress=False).stats, config.split))
    assert "cannot score the model fairly" in text and "split.use_predefined=false" in text
    assert "whole groups of 'group'" in text and "note:" not in text  # the folds keep recordings apart
    # following it: no source recording in two splits, 'clock' (2 recordings) in train and test, named
    advised = load_config(overrides=[*esc_overrides(tmp_path, root), "split.use_predefined=false"])
    prepared = api.prepare(advised, progress=False)
    assert (prepared.items.groupby("src_file")["split"].nunique() == 1).all()
    assert prepared.stats["leakage"]["ok"] and prepared.stats["group_overlap"] is None
    assert set(prepared.items.loc[prepared.items["label"] == "clock", "split"]) == {"train", "test"}
    lines = split_plan_lines(prepared.stats, advised.split)
    assert any("'clock' (train and test)" in line for line in lines)
    assert not any("several splits" in line for line in lines)


def test_a_split_by_clip_reports_the_recordings_it_splits_and_the_fix_works(tmp_path):
    from earmark import api
    from earmark.config import load_config
    from earmark.data.split_plan import split_plan_lines

    root = esc50_like(tmp_path / "esc50")
    by_clip = load_config(overrides=[*esc_overrides(tmp_path, root), "split.use_predefined=false",
                                     "split.group_by=null"])
    prepared = api.prepare(by_clip, progress=False)
    shared = int((prepared.items.groupby("src_file")["split"].nunique() > 1).sum())
    assert shared > 0 and prepared.stats["group_overlap"]["count"] == shared
    warning = next(line for line in split_plan_lines(prepared.stats, by_clip.split) if "'group' column" in line)
    assert f"{shared} value(s)" in warning and "split.group_by=group" in warning
    fixed = load_config(overrides=[*esc_overrides(tmp_path, root), "split.use_predefined=false",
                                   "split.group_by=group"])
    assert (api.prepare(fixed, progress=False).items.groupby("src_file")["split"].nunique() == 1).all()
