"""Integration on the shared Free Spoken Digit Dataset (skipped where ../shared is absent)."""

import json

from conftest import FSDD_ROOT, needs_fsdd
from earmark import api
from earmark.config import load_config


@needs_fsdd
def test_fsdd_prepares_once_with_the_official_and_speaker_splits(tmp_path):
    common = ["data.source=fsdd", f"data.path={FSDD_ROOT}", f"data.cache_dir={tmp_path / 'cache'}",
              f"workspace={tmp_path / 'ws'}", "data.sample_rate_hz=8000"]
    official = api.prepare(load_config(overrides=common), progress=False)
    assert official.cache.stats.n_decoded == 3000 and official.cache.stats.n_bad == 0
    counts = official.items["split"].value_counts().to_dict()
    assert counts["test"] == 300 and counts["train"] + counts["val"] == 2700
    takes = official.items.loc[official.items["split"] == "test", "path"].str.extract(r"_(\d+)\.wav$")[0].astype(int)
    assert takes.max() <= 4  # the data set's own split: takes 0-4 are test

    speaker = api.prepare(load_config(overrides=common + ["split.use_predefined=false", "split.group_by=speaker"]),
                          progress=False)
    assert speaker.cache.stats.n_decoded == 0  # same audio settings: nothing decoded again
    speakers = speaker.items.groupby("split")["group"].apply(set)
    assert not speakers["train"] & speakers["test"] and not speakers["val"] & speakers["test"]
    stats = json.loads((speaker.split_dir / "split_stats.json").read_text())
    assert stats["leakage"]["ok"]
