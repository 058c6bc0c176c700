"""Checkpoints: written atomically, read back into a module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from earmark.train.module import AudioClassifier


def save_checkpoint_atomically(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `<name>.tmp` beside `path`, fsync, then rename over it: a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], AudioClassifier]:
    """(the checkpoint dict, the module it holds) on the CPU from one read of the file: what
    `AudioClassifier.load_from_checkpoint` builds, for callers that also write the checkpoint back."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    module = AudioClassifier(**checkpoint["hyper_parameters"])
    module.on_load_checkpoint(checkpoint)  # no trainer: only fills buffers older checkpoints lack
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint, module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves with `save_checkpoint_atomically`.

    (Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system
    temp folder, so its final move is a copy, not a rename, when that is another file system.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_checkpoint_atomically(checkpoint, path)
