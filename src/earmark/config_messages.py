"""Reading override text (`train.max_epochs=5`) and explaining configuration errors: the dotted key, what is
wrong, and a near-miss suggestion."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from earmark.errors import EarmarkError


def did_you_mean(name: str, allowed) -> str:
    """' (did you mean 'max_epochs'?)' for a near miss of an allowed key, else ''."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _allowed_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed in the section that `loc` (a pydantic error location) points into."""
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def format_validation_error(error: ValidationError, root: type[BaseModel], origin: str) -> str:
    """One line per problem, each naming the dotted key; `origin` says where the values came from."""
    lines = [f"invalid configuration ({origin}):"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(str(item["loc"][-1]), _allowed_at(root, item["loc"]))
        elif item["type"] == "literal_error":
            message = f"must be one of {item.get('ctx', {}).get('expected', '')}; got {item.get('input')!r}"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def error_origin(error: ValidationError, overridden: list[list[str]], origin: str) -> str:
    """"command-line override" when every failing key was set by one (or lies under one), else `origin`."""
    def from_override(loc: tuple) -> bool:
        path = [str(p) for p in loc]
        return any(path[:len(parts)] == parts or parts[:len(path)] == path for parts in overridden)
    return "command-line override" if all(from_override(item["loc"]) for item in error.errors()) else origin


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.max_epochs=5' -> (['train', 'max_epochs'], 5); the value is read as YAML."""
    if "=" not in text:
        raise EarmarkError(f"override '{text}' must look like section.key=value (e.g. train.max_epochs=5)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise EarmarkError(f"override '{text}' has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value
