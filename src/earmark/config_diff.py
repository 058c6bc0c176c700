"""What differs between two configs: resumed runs, CV and tuning refuse a changed config and say which keys changed."""

from __future__ import annotations

import json
from typing import Any

from earmark.config import Config


def flat_config(config: Config) -> dict[str, Any]:
    """{'train.max_epochs': 60, 'model.params.width': 8, ...}"""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(json.loads(config.model_dump_json()), "")
    return flat


def config_changes(old: Config, new: Config, may_change: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every setting that differs, sorted by key (None where a key
    is absent), leaving out the keys in `may_change`. Resumed runs, CV and tuning refuse a changed config."""
    old_flat, new_flat = flat_config(old), flat_config(new)
    return {key: (old_flat.get(key), new_flat.get(key)) for key in sorted(set(old_flat) | set(new_flat))
            if old_flat.get(key) != new_flat.get(key) and key not in may_change}


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 5) -> str:
    """'train.lr (0.001 → 0.01), seed (0 → 1)' for the first `limit` changes, and how many more."""
    shown = ", ".join(f"{key} ({old!r} → {new!r})" for key, (old, new) in list(changes.items())[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")
