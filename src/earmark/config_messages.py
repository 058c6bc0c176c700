"""Reading override text (`train.max_epochs=5`) and explaining configuration errors: the dotted key, what is
wrong, and a near-miss suggestion."""

from __future__ import annotations

import difflib
import re
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
            expected = str(item.get("ctx", {}).get("expected", ""))
            message = (f"must be one of {expected}; got {item.get('input')!r}"
                       + did_you_mean(str(item.get("input")), re.findall(r"'([^']*)'", expected)))
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (PyYAML keeps the last, silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: the constructor below says so
            continue
        if seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first given on line "
                                                    f"{first_line[key] + 1}): keep one", key_node.start_mark)
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, origin: str) -> Any:
    """YAML text → its value, as yaml.safe_load, but a duplicate key is refused; errors name `origin`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise EarmarkError(f"{origin} is not valid YAML: {exc}") from None


def read_text(path, what: str = "file") -> str:
    """A text file as UTF-8, or one EarmarkError naming it (not found, unreadable, not UTF-8)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EarmarkError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise EarmarkError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EarmarkError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           f"save it as UTF-8") from None


def read_yaml(path, what: str = "file") -> Any:
    """A UTF-8 YAML file's value (`read_text`, then `parse_yaml`): every problem one EarmarkError naming it."""
    return parse_yaml(read_text(path, what), str(path))
