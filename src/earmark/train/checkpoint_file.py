"""Reading a .ckpt without running code from it (torch's weights_only loader); no Lightning import."""

from __future__ import annotations

import os
from typing import Any

from earmark.errors import EarmarkError
from earmark.models.weights import load_torch_file

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
