"""Output width: the terminal's, or a wide fixed one for logs and pipes (tables and progress lines)."""

import io

from earmark.console import PIPED_WIDTH, output_width


class FakeStdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_pipe_gets_the_wide_width_a_terminal_or_columns_its_own(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", FakeStdout(tty=False))
    assert output_width() == PIPED_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert output_width() is None  # rich reads COLUMNS itself
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr("sys.stdout", FakeStdout(tty=True))
    assert output_width() is None


def test_the_training_progress_bar_uses_it(monkeypatch, tmp_path):
    from earmark.config import load_config
    from earmark.train.trainer import build_callbacks

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout", FakeStdout(tty=False))
    callbacks = build_callbacks(load_config(overrides=["train.progress=true"]), tmp_path, has_validation=True)
    from lightning.pytorch.callbacks import RichProgressBar

    bars = [c for c in callbacks if isinstance(c, RichProgressBar)]
    assert len(bars) == 1 and bars[0]._console_kwargs == {"width": PIPED_WIDTH}
