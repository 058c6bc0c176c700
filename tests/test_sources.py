"""Metadata sources: folders, CSV/TSV, presets, and the errors users hit first.

Audio files are empty placeholders: sources never decode.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import FSDD_ROOT as FSDD
from earmark.config import ColumnMap, DataConfig
from earmark.data import sources
from earmark.data.sources import STANDARD_COLUMNS, bundled_sample_dir, load_source, load_table
from earmark.errors import EarmarkError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_table(path: Path, rows: list[list], sep: str = ",") -> Path:
    return touch(path, "\n".join(sep.join(str(v) for v in row) for row in rows) + "\n")


def test_folder_tree_finds_files_recursively_and_skips_hidden_and_sidecars(tmp_path):
    touch(tmp_path / "dog" / "a.wav")
    touch(tmp_path / "dog" / "session1" / "b.flac")
    touch(tmp_path / "dog" / "notes.txt")
    touch(tmp_path / "dog" / ".DS_Store")
    touch(tmp_path / "dog" / ".hidden" / "c.wav")
    touch(tmp_path / "cat" / "c.wav")
    touch(tmp_path / "cat" / "d.xyz")  # not audio: kept, the decoder reports it
    touch(tmp_path / ".git" / "x.wav")
    touch(tmp_path / "README.md")
    touch(tmp_path / "stray.wav")

    table, info = load_source(DataConfig(source="folder", path=tmp_path))

    assert list(table.columns[:5]) == list(STANDARD_COLUMNS)
    assert sorted(table["label"].unique()) == ["cat", "dog"]
    names = [Path(p).name for p in table["path"]]
    assert sorted(names) == ["a.wav", "b.flac", "c.wav", "d.xyz"]
    assert all(Path(p).is_absolute() for p in table["path"])
    assert list(table["path"]) == sorted(table["path"])
    assert table["group"].isna().all() and table["split"].isna().all()
    root_files = info.ignored["files in the root folder (not in a class folder)"]
    assert sorted(Path(p).name for p in root_files) == ["README.md", "stray.wav"]
    assert any("root folder" in note for note in info.notes())


def test_folder_follows_linked_folders_once(tmp_path):
    outside = touch(tmp_path / "elsewhere" / "far.wav").parent
    root = tmp_path / "data"
    touch(root / "dog" / "a.wav")
    touch(root / "cat" / "b.wav")
    (root / "dog" / "more").symlink_to(outside)  # an external folder: followed
    (root / "dog" / "loop").symlink_to(root)  # back inside the data: would list files twice
    table = load_table(DataConfig(source="folder", path=root))
    assert sorted(Path(p).name for p in table["path"]) == ["a.wav", "b.wav", "far.wav"]
    assert str(root / "dog" / "more" / "far.wav") in set(table["path"])


def test_folder_with_split_folders_on_top(tmp_path):
    for split in ("train", "test"):
        for label in ("yes", "no"):
            touch(tmp_path / split / label / f"{split}_{label}.wav")
    table = load_table(DataConfig(source="folder", path=tmp_path))
    assert sorted(table["label"].unique()) == ["no", "yes"]
    assert table["split"].value_counts().to_dict() == {"test": 2, "train": 2}


def test_csv_with_detected_columns_keeps_other_columns(tmp_path):
    csv = write_table(tmp_path / "meta.csv", [
        ["Filename", "Word", "Speaker", "Set", "path_original_note", "label"],
        ["clips/b.wav", 1, "ann", "Training", "x", "other"],
        ["clips/a.wav", 0, "bob", "testing", "y", "other"],
        ["clips/c.wav", 0, "ann", "dev", "z", "other"],
    ])
    table = load_table(DataConfig(source="csv", path=csv, columns=ColumnMap(label="Word")))
    assert list(table["path"]) == [str(tmp_path / "clips" / n) for n in ("a.wav", "b.wav", "c.wav")]
    assert list(table["label"]) == ["0", "1", "0"]
    assert list(table["group"]) == ["bob", "ann", "ann"]
    assert list(table["split"]) == ["test", "train", "val"]
    assert table["fold"].isna().all()
    # the original columns stay; a standard name used for something else is renamed, not clobbered
    assert {"Filename", "Word", "Speaker", "Set", "label_original"} <= set(table.columns)
    assert list(table["label_original"]) == ["other"] * 3


def test_csv_prefers_class_name_over_class_id(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["file", "classID", "class"], ["a.wav", 3, "dog"], ["b.wav", 5, "siren"]])
    assert list(load_table(DataConfig(source="csv", path=csv))["label"]) == ["dog", "siren"]


def test_tsv_and_sniffed_semicolons_and_audio_root(tmp_path):
    tsv = write_table(tmp_path / "m.tsv", [["path", "label"], ["x y.wav", "a"], ["z.wav", "b"]], sep="\t")
    audio_root = tmp_path / "audio"
    table = load_table(DataConfig(source="csv", path=tsv, audio_root=audio_root))
    assert list(table["path"]) == [str(audio_root / "x y.wav"), str(audio_root / "z.wav")]
    semicolons = write_table(tmp_path / "m2.csv", [["path", "label"], ["/abs/a.wav", "a"], ["b.wav", "b"]], sep=";")
    table = load_table(DataConfig(source="csv", path=semicolons))
    assert list(table["path"]) == ["/abs/a.wav", str(tmp_path / "b.wav")]


def test_explicit_column_mapping_wins(tmp_path):
    csv = write_table(tmp_path / "m.csv", [
        ["where", "what", "who", "label", "k"],
        ["a.wav", "cat", "p1", "ignored", 1],
        ["b.wav", "dog", "p2", "ignored", 2],
    ])
    columns = ColumnMap(path="where", label="what", group="who", fold="k")
    table = load_table(DataConfig(source="csv", path=csv, columns=columns))
    assert list(table["label"]) == ["cat", "dog"]
    assert list(table["group"]) == ["p1", "p2"]
    assert list(table["fold"]) == ["1", "2"]
    assert "label_original" in table.columns


def test_missing_audio_listed_in_csv_is_kept(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label"], ["gone.wav", "a"], ["also_gone.wav", "b"]])
    assert len(load_table(DataConfig(source="csv", path=csv))) == 2


def test_esc50_layout(tmp_path):
    write_table(tmp_path / "meta" / "esc50.csv", [
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
        ["1-100-A-0.wav", 1, 0, "dog", True, 100, "A"],
        ["1-100-B-0.wav", 1, 0, "dog", True, 100, "B"],
        ["5-200-A-1.wav", 5, 1, "rooster", False, 200, "A"],
    ])
    table = load_table(DataConfig(source="esc50", path=tmp_path))
    names = ("1-100-A-0.wav", "1-100-B-0.wav", "5-200-A-1.wav")
    assert list(table["path"]) == [str(tmp_path / "audio" / n) for n in names]
    assert list(table["label"]) == ["dog", "dog", "rooster"]
    assert list(table["fold"]) == ["1", "1", "5"]
    assert list(table["group"]) == ["100", "100", "200"]
    assert {"target", "category", "esc10", "src_file", "take"} <= set(table.columns)


def test_urbansound8k_layout(tmp_path):
    write_table(tmp_path / "metadata" / "UrbanSound8K.csv", [
        ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
        ["100032-3-0-0.wav", 100032, 0.0, 0.3, 1, 5, 3, "dog_bark"],
        ["100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 10, 2, "children_playing"],
    ])
    for fold, name in ((5, "100032-3-0-0.wav"), (10, "100263-2-0-117.wav")):
        touch(tmp_path / "audio" / f"fold{fold}" / name)
    table = load_table(DataConfig(source="urbansound8k", path=tmp_path))
    assert all(Path(p).is_file() for p in table["path"])
    # sorted by path: audio/fold10/... comes before audio/fold5/...
    assert list(table["label"]) == ["children_playing", "dog_bark"]
    assert list(table["group"]) == ["100263", "100032"]
    assert list(table["fold"]) == ["10", "5"]
    assert list(table["start"]) == [58.5, 0.0]


def test_fsdd_from_file_names_when_metadata_is_missing(tmp_path):
    for digit in ("0", "1"):
        for take in (0, 7):
            touch(tmp_path / "recordings" / f"{digit}_theo_{take}.wav")
    touch(tmp_path / "recordings" / "odd name.wav")
    table, info = load_source(DataConfig(source="fsdd", path=tmp_path))
    assert len(table) == 4 and set(table["group"]) == {"theo"}
    assert table.groupby("split").size().to_dict() == {"test": 2, "train": 2}  # takes 0-4 are the official test
    assert len(info.ignored["files not named {digit}_{speaker}_{take}.wav"]) == 1


def test_bundled_sample_is_read_like_a_csv(tmp_path, monkeypatch):
    assert bundled_sample_dir().parts[-2:] == ("earmark", "sample")
    write_table(tmp_path / "metadata.csv", [["file_path", "word", "speaker"],
                                            ["recordings/0_a_0.wav", 0, "a"], ["recordings/1_b_0.wav", 1, "b"]])
    monkeypatch.setattr(sources, "bundled_sample_dir", lambda: tmp_path)
    table = load_table(DataConfig(source="sample"))
    assert list(table["path"]) == [str(tmp_path / "recordings" / n) for n in ("0_a_0.wav", "1_b_0.wav")]
    assert list(table["label"]) == ["0", "1"] and list(table["group"]) == ["a", "b"]
    monkeypatch.setattr(sources, "bundled_sample_dir", lambda: tmp_path / "gone")
    expect_error(DataConfig(source="sample"), "bundled sample", "gone", "reinstall")


@pytest.mark.integration  # needs ../shared: skipped where it is absent (tests/conftest.py)
def test_fsdd_preset_on_the_shared_data_set():
    table = load_table(DataConfig(source="fsdd", path=FSDD))
    assert len(table) == 3000
    assert table["label"].nunique() == 10 and sorted(table["label"].unique()) == [str(d) for d in range(10)]
    assert table["group"].nunique() == 6
    assert table["split"].value_counts().to_dict() == {"train": 2700, "test": 300}
    assert Path(table["path"].iloc[0]).is_file()


# ---------------------------------------------------------------- errors name the field, the file and the fix


def expect_error(data: DataConfig, *fragments: str) -> str:
    with pytest.raises(EarmarkError) as caught:
        load_table(data)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_error_missing_path(tmp_path):
    expect_error(DataConfig(source="folder", path=tmp_path / "nope"), "data.path", "nope", "does not exist")
    expect_error(DataConfig(source="csv", path=tmp_path / "nope.csv"), "data.path", "nope.csv")


def test_error_folder_without_class_folders_or_files(tmp_path):
    touch(tmp_path / "a.wav")
    expect_error(DataConfig(source="folder", path=tmp_path), "no class sub-folders", str(tmp_path))
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat").mkdir()
    expect_error(DataConfig(source="folder", path=tmp_path), "no files", "dog")


def test_error_unreadable_or_empty_csv(tmp_path):
    empty = touch(tmp_path / "empty.csv")
    expect_error(DataConfig(source="csv", path=empty), "empty.csv", "empty")
    header_only = touch(tmp_path / "header.csv", "path,label\n")
    expect_error(DataConfig(source="csv", path=header_only), "header.csv", "no rows")
    ragged = touch(tmp_path / "ragged.csv", "path,label\na.wav,x\nb.wav,y,z,w\n")
    expect_error(DataConfig(source="csv", path=ragged), "ragged.csv", "could not be read")
    expect_error(DataConfig(source="csv", path=tmp_path), "data.path", "data.source=folder")


def test_error_no_path_or_label_column(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["sound", "word"], ["a.wav", "x"], ["b.wav", "y"]])
    expect_error(DataConfig(source="csv", path=csv), "no path column", "m.csv", "sound, word", "data.columns.path=")
    csv = write_table(tmp_path / "n.csv", [["file", "kind"], ["a.wav", "x"], ["b.wav", "y"]])
    expect_error(DataConfig(source="csv", path=csv), "no label column", "file, kind", "data.columns.label=")


def test_error_explicit_column_not_found(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label"], ["a.wav", "x"], ["b.wav", "y"]])
    expect_error(DataConfig(source="csv", path=csv, columns=ColumnMap(group="speaker")),
                 "data.columns.group='speaker'", "m.csv", "path, label")


def test_error_unknown_split_values(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label", "split"], ["a.wav", "x", "train"], ["b.wav", "y", "hold"]])
    expect_error(DataConfig(source="csv", path=csv), "'split'", "'hold'", "m.csv")


def test_detected_set_column_without_split_names_is_left_alone(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label", "set"], ["a.wav", "x", "A"], ["b.wav", "y", "B"]])
    table = load_table(DataConfig(source="csv", path=csv))
    assert table["split"].isna().all() and list(table["set"]) == ["A", "B"]


def test_error_fewer_than_two_classes(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label"], ["a.wav", "x"], ["b.wav", "x"]])
    expect_error(DataConfig(source="csv", path=csv), "fewer than 2 classes", "'x'", "m.csv")
    touch(tmp_path / "tree" / "only" / "a.wav")
    expect_error(DataConfig(source="folder", path=tmp_path / "tree"), "fewer than 2 classes", "'only'")


def test_error_conflicting_labels_for_one_file(tmp_path):
    csv = write_table(tmp_path / "m.csv", [["path", "label"], ["a.wav", "x"], ["a.wav", "y"], ["b.wav", "y"]])
    expect_error(DataConfig(source="csv", path=csv), "m.csv", "a.wav", "one label per file")


@pytest.mark.parametrize("source, expected", [
    ("esc50", "meta/esc50.csv"), ("urbansound8k", "metadata/UrbanSound8K.csv"), ("fsdd", "metadata.csv")])
def test_error_preset_without_metadata(tmp_path, source, expected):
    expect_error(DataConfig(source=source, path=tmp_path), f"data.source={source}", expected, "data.path")


def test_preset_accepts_the_metadata_file_itself(tmp_path):
    meta = write_table(tmp_path / "meta" / "esc50.csv", [
        ["filename", "fold", "target", "category", "src_file"], ["a.wav", 1, 0, "dog", 1], ["b.wav", 2, 1, "cat", 2]])
    table = load_table(DataConfig(source="esc50", path=meta))
    assert table["path"].iloc[0] == str(tmp_path / "audio" / "a.wav")
    assert isinstance(table, pd.DataFrame)
