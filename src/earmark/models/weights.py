"""Loading pretrained weights: from the usual caches or a local path, or one clear message.

Machines without internet cannot download weights. A request that cannot be satisfied
fails with an EarmarkError that says how to supply them — never a stack trace, and never
silently random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, TypeVar

from earmark.errors import EarmarkError

T = TypeVar("T")


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
