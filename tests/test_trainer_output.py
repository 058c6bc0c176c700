"""What training prints: no Lightning device inventory or step-counting notes, epochs counted from 1."""

import logging
from types import SimpleNamespace

from tiny_runs import train_tiny_run


def test_lightning_noise_is_dropped_from_a_run(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        train_tiny_run(tmp_path, "quiet")
    for line in ("GPU available", "TPU available", "Loading `train_dataloader`", "💡 Tip", "`Trainer.fit` stopped"):
        assert line not in caplog.text
    other = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not other.filters  # only while building and fitting


def test_the_progress_bar_counts_epochs_from_one_of_max_epochs():
    from earmark.train.trainer import _progress_bar

    bar = _progress_bar(None)
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(0).strip() == "Epoch 1/3"
    assert bar._get_train_description(2).strip() == "Epoch 3/3"
