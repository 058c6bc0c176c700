"""Loading pretrained weights: from the usual caches or a local path, or one clear message.

Machines without internet cannot download weights. A request that cannot be satisfied
fails with an EarmarkError that says how to supply them — never a stack trace, and never
silently random weights.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from earmark.errors import EarmarkError

T = TypeVar("T")


@contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face hub in offline mode within the block, as HF_HUB_OFFLINE=1 would make it: what
    is not in the local cache fails at once instead of after the hub's retries (a listing must not wait
    on the network). huggingface_hub reads the setting from `constants` at each request."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_pretrained(fetch: Callable[[], T], *, model: str, source: str, how_to_supply: str) -> T:
    """Run `fetch` (a timm/transformers loader); turn any failure into one actionable message."""
    try:
        return fetch()
    except EarmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, cache and format errors all mean "no weights here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EarmarkError(
            f"pretrained weights for model '{model}' could not be loaded from {source} ({reason[:300]}). "
            f"This machine may be offline. {how_to_supply}"
        ) from None


def local_weights(path: Optional[str | Path], *, field: str) -> Optional[Path]:
    """Validate a user-given local checkpoint path (named by its config `field`)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if not path.exists():
        raise EarmarkError(f"{field}={path} does not exist; give the path of a saved checkpoint or model folder")
    return path


TRUST_OPT_IN = "--trust-checkpoint (Python API: trust_checkpoint=True)"


def load_torch_file(path: str | Path, *, trust: bool = False, allowed: Sequence[Any] = (),
                    opt_in: str = TRUST_OPT_IN) -> Any:
    """`torch.load` on the CPU that never runs code from the file: weights_only=True, with exactly the
    `allowed` extra globals, allowed for this one load only (torch's `safe_globals`, scoped).

    A file weights_only refuses (a pickle that names other Python objects, random bytes, another
    program's format) is an EarmarkError naming the file and `opt_in`. `trust=True` is that opt-in:
    a full unpickle, for a file the user made or vouches for (it can run any code the file holds).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise EarmarkError(f"{path} does not exist or is not a file; give a checkpoint (.ckpt) written by earmark")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if trust:
            raise EarmarkError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)})") from None
        raise EarmarkError(f"{path} was not loaded: {_refusal_reason(path, exc)}. earmark loads checkpoints "
                           f"without running code from them; only if you made this file or trust its source, "
                           f"pass {opt_in}") from None
    except Exception as exc:  # noqa: BLE001 - truncated, empty, wrong format: all mean "not a checkpoint"
        raise EarmarkError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)}); it may be truncated "
                           f"or not a checkpoint at all") from None


def load_safetensors_into(net: Any, path: str | Path, *, sha256: Optional[str], model: str, fix: str,
                          loaded_as: str = "") -> None:
    """Load the safetensors file `path` into `net` (strict: exactly its tensors); safetensors cannot run code.

    sha256: the digest the file must have (unchecked when None, e.g. fine-tuned weights). A missing,
    corrupt, modified or mismatched file raises one EarmarkError naming `model`'s weights, the path and `fix`
    (and `loaded_as`, e.g. " as capacity=full", where one network takes several files).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from earmark.files import sha256_of

    path = Path(path)
    if not path.is_file():
        raise EarmarkError(f"{model} weights not found at {path}; {fix}")
    if sha256 is not None and (actual := sha256_of(path)) != sha256.lower():
        raise EarmarkError(f"{model} weights at {path} are corrupt or modified (sha256 {actual[:16]}..., "
                           f"expected {sha256.lower()[:16]}...); {fix}")
    try:
        net.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise EarmarkError(f"{model} weights at {path} cannot be loaded{loaded_as} ({reason}); {fix}") from None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _refusal_reason(path: Path, exc: BaseException) -> str:
    """Why weights_only refused `path`: the Python objects it names, or that it is no PyTorch checkpoint."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not torch's zip format: look at the error itself
        names = re.findall(r"GLOBAL (\S+)", str(exc))
    if names:
        return f"it holds Python objects beyond tensors and plain values ({', '.join(names[:4])}), which could run code"
    return "it is corrupt, or not a PyTorch checkpoint that holds only tensors and plain values"
