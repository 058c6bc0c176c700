"""What went wrong with a source: the per-row error, its reason, and fetch_failures.csv."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from earmark.errors import EarmarkError
from earmark.files import atomic_write_text

FAILURES_FILE = "fetch_failures.csv"
NO_NETWORK = "no network?"  # every unreachable-host reason holds this phrase


class FetchError(EarmarkError):
    """One source (or one file inside it) could not be fetched; `reason` goes to fetch_failures.csv.

    Within a sources list it does not stop the run (the other rows go on); anywhere else it is
    an EarmarkError like any other, which the CLI prints as one `error:` line.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def unreachable(host: str, detail: str) -> FetchError:
    return FetchError(f"cannot reach {host}: {NO_NETWORK} ({detail}); check the connection or proxy "
                      f"and run the same command again (finished items are kept)")


@dataclass(frozen=True)
class Failure:
    line: int  # line of the row in the sources file (0 for a preset)
    source: str  # the URL, with '#member' for one file of an archive or folder
    reason: str

    @property
    def is_offline(self) -> bool:
        return NO_NETWORK in self.reason


def write_failures(path: Path, failures: list[Failure]) -> None:
    """Rewritten on every run (header only when nothing failed), atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["line", "source", "reason"])
    writer.writerows([failure.line, failure.source, failure.reason] for failure in failures)
    atomic_write_text(path, text.getvalue())


@dataclass
class FetchResult:
    """What `earmark fetch` did; `overrides` point `earmark prepare`/`train` at the result."""

    to: Path
    overrides: list[str]  # e.g. ['data.source=csv', 'data.path=DIR/metadata.csv']
    n_sources: int
    n_downloaded: int = 0  # sources downloaded (a preset: laid out) in this run
    n_reused: int = 0  # sources an earlier run already downloaded (a preset: laid out)
    n_clips: int = 0  # WAV clips listed in metadata.csv (0 for a preset)
    audio_s: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    metadata: Path | None = None  # DIR/metadata.csv of a sources list
    root: Path | None = None  # the laid-out data set of a preset

    @property
    def failures_file(self) -> Path:
        return self.to / FAILURES_FILE
