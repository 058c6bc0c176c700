"""`state.json`: what a folder of downloads already holds, so a second run needs no network for it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from earmark.errors import EarmarkError
from earmark.files import atomic_write_text

STATE_FILE = "state.json"
DOWNLOADS = "downloads"  # DIR/downloads/: raw downloads, unpacked archives and state.json


class DownloadState:
    """`<folder>/state.json`: finished downloads by key, plus free-form entries such as settings."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EarmarkError(f"{self.path} is damaged; delete it (finished downloads are then fetched again, "
                               f"files already there are never overwritten)") from None
        self.data.setdefault("downloads", {})

    def finished(self, key: str) -> Optional[Path]:
        """The file of a finished download, if it is still there with its recorded size."""
        entry = self.data["downloads"].get(key)
        if entry is None or "file" not in entry:
            return None
        path = self.folder / entry["file"]
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            return path
        return None

    def forget(self, key: str) -> None:
        self.data["downloads"].pop(key, None)
        self.save()

    def entry(self, key: str) -> Optional[dict]:
        return self.data["downloads"].get(key)

    def record(self, key: str, path: Path, n_bytes: Optional[int] = None, **extra: Any) -> None:
        """`path` (which may not exist yet when `n_bytes` is given) is the finished download of `key`."""
        n_bytes = path.stat().st_size if n_bytes is None else n_bytes
        self.data["downloads"][key] = {"file": os.path.relpath(path, self.folder), "bytes": n_bytes, **extra}
        self.save()

    def move(self, old_key: str, new_key: str) -> None:
        """The finished download of `old_key` becomes that of `new_key` (the file stays where it is)."""
        self.data["downloads"][new_key] = self.data["downloads"].pop(old_key)
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True))
