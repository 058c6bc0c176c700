from pathlib import Path

import pytest

from earmark.config import Config, load_config, parse_override
from earmark.errors import EarmarkError


def test_defaults_train_the_bundled_sample():
    config = load_config()
    assert config.data.source == "sample"
    assert config.model.name == "auto"  # the demo picks its model (tests/test_auto.py)
    assert config.split.val_fraction == 0.1 and config.split.test_fraction == 0.1


def test_the_demo_holds_out_speakers_unless_told_otherwise():
    assert load_config().split.group_by == "speaker"  # the first run scores voices it never heard
    assert load_config(overrides=["split.group_by=null"]).split.group_by is None
    assert load_config(overrides=["split.group_by=word"]).split.group_by == "word"
    folder = load_config(overrides=["data.source=folder", "data.path=."])
    assert folder.split.group_by is None  # only the bundled sample is known to have a speaker column


def test_dotted_overrides_are_typed():
    config = load_config(overrides=["train.max_epochs=5", "model.name=wave_cnn", "data.duration_s=2.5",
                                    "model.params.width=16", "split.group_by=speaker"])
    assert config.train.max_epochs == 5
    assert config.model.name == "wave_cnn"
    assert config.data.duration_s == 2.5
    assert config.model.params == {"width": 16}
    assert config.split.group_by == "speaker"


def test_yaml_then_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    (tmp_path / "audio").mkdir()
    path.write_text("data:\n  source: folder\n  path: audio\ntrain:\n  max_epochs: 3\n")
    config = load_config(path, ["train.max_epochs=7"])
    assert config.train.max_epochs == 7
    assert config.data.path == tmp_path / "audio"  # relative to the YAML file


@pytest.mark.parametrize("override, words", [
    ("train.max_epoch=5", ["train.max_epoch", "max_epochs"]),
    ("trian.lr=1", ["trian", "train"]),
    ("data.clip=pads", ["data.clip", "pad", "crop", "chunk"]),
    ("train.lr=-1", ["train.lr", "greater than 0"]),
    ("train.batch_size=many", ["train.batch_size", "integer"]),
    ("data.source=csv", ["data.path"]),
    ("split.val_fraction=0.95", ["split.test_fraction"]),
    ("features.n_mfcc=100", ["n_mfcc", "n_mels"]),
    ("noequals", ["section.key=value"]),
])
def test_bad_config_names_the_key_and_what_is_allowed(override, words):
    with pytest.raises(EarmarkError) as error:
        overrides = [override] if override != "features.n_mfcc=100" else ["features.kind=mfcc", override]
        load_config(overrides=overrides)
    for word in words:
        assert word in str(error.value)


def test_missing_and_malformed_config_files(tmp_path: Path):
    with pytest.raises(EarmarkError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(EarmarkError, match="mapping"):
        load_config(bad)


def test_resolved_config_round_trips_through_yaml(tmp_path: Path):
    config = load_config(overrides=["train.max_epochs=3", "features.kind=mfcc"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)


def test_audio_key_ignores_feature_settings():
    a = Config()
    b = load_config(overrides=["features.n_mels=40", "model.name=wave_cnn"])
    assert a.data.audio_key() == b.data.audio_key()
    c = load_config(overrides=["data.sample_rate_hz=8000"])
    assert a.data.audio_key() != c.data.audio_key()


@pytest.mark.parametrize("name", ["../..", "..", ".", "a/b", "/tmp/x", "a\\b"])
def test_a_run_name_cannot_leave_runs_dir(name):
    with pytest.raises(EarmarkError, match="name: must be a plain folder name inside runs_dir"):
        load_config(overrides=[f"name={name}"])
    assert load_config(overrides=["name=my-run.v2"]).name == "my-run.v2"


def test_fold_values_may_be_numbers(tmp_path: Path):
    assert load_config(overrides=["split.test_fold=4", "split.val_fold=3"]).split.test_fold == "4"
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  test_fold: 2\n  val_fold: 1.0\n")
    split = load_config(path).split
    assert (split.test_fold, split.val_fold) == ("2", "1.0")


def test_typos_get_a_suggestion_and_errors_say_where_they_came_from(tmp_path: Path):
    with pytest.raises(EarmarkError, match=r"did you mean 'max_epochs'"):
        load_config(overrides=["train.max_epoch=5"])
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  bach_size: 4\n")
    with pytest.raises(EarmarkError) as error:
        load_config(path, ["train.lr=0.1"])
    assert str(path) in str(error.value) and "did you mean 'batch_size'" in str(error.value)
    path.write_text("train:\n  batch_size: 4\n")
    with pytest.raises(EarmarkError, match=r"\(command-line override\)") as error:
        load_config(path, ["train.lr=-1"])
    assert str(path) not in str(error.value)
    path.write_text("data:\n  source: folder\n")  # the file is completed by an override
    assert load_config(path, [f"data.path={tmp_path}"]).data.path == tmp_path


def test_a_data_path_without_a_source_is_read_not_ignored(tmp_path: Path):
    """`earmark train data.path=my_clips/` once trained silently on the bundled demo (source defaulted to sample)."""
    assert load_config(overrides=["data.path=my_clips/"]).data.source == "folder"
    assert load_config(overrides=["data.path=lists/train.tsv"]).data.source == "csv"
    assert load_config(overrides=["data.path=data/esc50", "data.source=esc50"]).data.source == "esc50"
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("data:\n  path: meta.csv\n")
    assert load_config(config_file).data.source == "csv"
    with pytest.raises(EarmarkError, match="bundled demo and reads no data.path"):
        load_config(overrides=["data.source=sample", "data.path=my_clips/"])
