"""Checkpoints: written atomically, read back into a module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from earmark.errors import EarmarkError
from earmark.models.weights import load_torch_file
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


# The globals an earmark checkpoint may hold besides tensors and plain containers. Found by saving real runs
# (plain, calibrated, personalized, last.ckpt with its loops and optimizer) and loading them with
# weights_only=True: Lightning 2.x stores hyper_parameters as a plain dict and the module's constructor
# takes only dicts/str/lists, so none is needed. Keep it that way; add a type here only with a test.
CHECKPOINT_GLOBALS: tuple = ()
MODULE_KEYS = ("state_dict", "hyper_parameters")
HPARAM_KEYS = ("contract", "model_name", "model_params", "train")
RESUME_KEYS = ("epoch", "global_step", "loops", "optimizer_states")


def load_checkpoint_dict(path: str | os.PathLike, trust: bool = False,
                         need: tuple[str, ...] = MODULE_KEYS) -> dict[str, Any]:
    """An earmark checkpoint's dict, read on the CPU without running code from the file: the one way
    every stage (predict, evaluate, serve, export, --resume, phase 2) opens a .ckpt.

    trust: the user's explicit `--trust-checkpoint` (API: trust_checkpoint=True): a full unpickle.
    need: the keys the caller uses; a file without them (another program's) is an EarmarkError.
    """
    checkpoint = load_torch_file(path, trust=trust, allowed=CHECKPOINT_GLOBALS)
    missing = [key for key in need if not isinstance(checkpoint, dict) or key not in checkpoint]
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if "hyper_parameters" in need and not missing and not (
            isinstance(hparams, dict) and all(key in hparams for key in HPARAM_KEYS)):
        missing = [f"hyper_parameters.{key}" for key in HPARAM_KEYS if not isinstance(hparams, dict)
                   or key not in hparams]
    if missing:
        held = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise EarmarkError(f"{path} is not an earmark checkpoint: it lacks {', '.join(missing)} (it holds: "
                           f"{held or 'nothing'}); give a run directory or a .ckpt written by `earmark train`")
    return checkpoint


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
