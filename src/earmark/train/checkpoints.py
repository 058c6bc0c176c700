"""Checkpoints: written atomically, read back into a module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from earmark.errors import EarmarkError
from earmark.train.checkpoint_file import load_checkpoint_dict
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


def save_module_checkpoint(module, path: str | os.PathLike, **extra: Any) -> None:
    """`module` (an AudioClassifier fitted without a Lightning loop: a probe, an ensemble) as Lightning
    writes a checkpoint: hyper-parameters + state dict, epoch 0, and the `extra` entries."""
    import lightning as L

    save_checkpoint_atomically({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                                "pytorch-lightning_version": L.__version__, "epoch": 0, "global_step": 0, **extra},
                               path)


def read_checkpoint(path: str | os.PathLike, trust: bool = False) -> tuple[dict[str, Any], AudioClassifier]:
    """(the checkpoint dict, the module it holds) on the CPU from one read of the file: what
    `AudioClassifier.load_from_checkpoint` builds, for callers that also write the checkpoint back."""
    checkpoint = load_checkpoint_dict(path, trust=trust)
    try:
        module = AudioClassifier(**checkpoint["hyper_parameters"])
        module.on_load_checkpoint(checkpoint)  # no trainer: only fills buffers older checkpoints lack
        module.load_state_dict(checkpoint["state_dict"])
    except EarmarkError as exc:
        raise EarmarkError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hyper-parameters or weights that do not fit together
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise EarmarkError(f"{path} is a damaged earmark checkpoint: its model cannot be rebuilt "
                           f"({type(exc).__name__}: {reason})") from None
    return checkpoint, module


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves with `save_checkpoint_atomically`.

    (Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system
    temp folder, so its final move is a copy, not a rename, when that is another file system.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_checkpoint_atomically(checkpoint, path)
