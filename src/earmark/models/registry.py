"""One model registry: models register by decorator next to their definition.

Everything else asks the registry by name (timm's `create_model` habit). The list of
modules that define models is written here, so the registry is complete without
relying on who imported what.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from torch import nn

from earmark.config_messages import did_you_mean
from earmark.errors import EarmarkError

InputKind = Literal["spectrogram", "waveform"]

# Every module that registers models; imported on first use of the registry.
MODEL_MODULES = (
    "earmark.models.cnn",
    "earmark.models.wave",
    "earmark.models.lite",
    "earmark.models.cnn14",
    "earmark.models.backbones",
    "earmark.models.transformer",
    "earmark.models.ssl",
    "earmark.models.personalized",
    "earmark.models.embedding",
    "earmark.models.crepe",
    "earmark.models.hub_embedders",
    "earmark.models.ensemble",
    "earmark.models.resemblyzer",
    "earmark.models.mfcc_stats",
    "earmark.models.fusion",
)
BUILDER_ARGUMENTS = {"n_classes", "input_shape", "variant"}  # supplied by earmark, not by model.params


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_kind: InputKind
    description: str
    pretrained: Optional[str] = None  # where `pretrained: true` weights come from; None: none exist
    needs_groups: bool = False  # forward(x, groups) with a group id per clip (speaker-personalised models)
    sample_rate_hz: Optional[int] = None  # the only rate a pretrained backbone takes (None: any)
    sample_rate_for: Optional[Callable[[dict[str, Any]], int]] = None  # params → rate, where params decide it

    def rate_for(self, params: dict[str, Any]) -> Optional[int]:
        """The rate the model takes with these model.params (None: any rate; not an embedder)."""
        return self.sample_rate_for(params) if self.sample_rate_for is not None else self.sample_rate_hz

    def param_names(self) -> list[str]:
        return [p for p in inspect.signature(self.builder).parameters if p not in BUILDER_ARGUMENTS]

    def param_defaults(self) -> dict[str, Any]:
        signature = inspect.signature(self.builder).parameters
        return {name: signature[name].default for name in self.param_names()}


class ModelRegistry:
    """Name → builder. A builder takes `n_classes`, `input_shape` (per clip, no batch) and its own params."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._families: dict[str, ModelEntry] = {}  # "timm:" → builder(variant=...)

    def register(self, name: str, *, input_kind: InputKind, description: str, pretrained: Optional[str] = None,
                 needs_groups: bool = False, sample_rate_hz: Optional[int] = None,
                 sample_rate_for: Optional[Callable[[dict[str, Any]], int]] = None) -> Callable:
        """`sample_rate_hz`: the one rate the model takes; `sample_rate_for(params)`: the rate, where it
        depends on model.params (a fusion takes the highest rate of its views)."""
        def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            if name in self._entries:
                raise ValueError(f"model '{name}' is registered twice")
            self._entries[name] = ModelEntry(name, builder, input_kind, description, pretrained, needs_groups,
                                             sample_rate_hz, sample_rate_for)
            return builder

        return decorator

    def register_family(self, prefix: str, *, input_kind: InputKind, description: str,
                        pretrained: Optional[str] = None) -> Callable:
        """Names `<prefix><variant>` (e.g. 'timm:convnext_tiny') build with `builder(..., variant=variant)`."""
        def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            self._families[prefix] = ModelEntry(prefix + "<name>", builder, input_kind, description, pretrained)
            return builder

        return decorator

    def _load(self) -> None:
        for module in MODEL_MODULES:
            importlib.import_module(module)

    def entry(self, name: str) -> ModelEntry:
        self._load()
        for prefix, family in self._families.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                builder = functools.update_wrapper(functools.partial(family.builder, variant=name[len(prefix):]),
                                                   family.builder)
                return ModelEntry(name, builder, family.input_kind, family.description, family.pretrained)
        if name not in self._entries:
            names = sorted(self._entries) + [f.name for f in self._families.values()]
            raise EarmarkError(f"unknown model.name '{name}'{did_you_mean(name, names)}; available models: "
                               f"{', '.join(names)}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def families(self) -> list[ModelEntry]:
        self._load()
        return list(self._families.values())


MODELS = ModelRegistry()
register_model = MODELS.register


def list_models() -> list[ModelEntry]:
    return [MODELS.entry(name) for name in MODELS.names()]


def check_model_config(name: str, params: dict[str, Any], feature_kind: str) -> ModelEntry:
    """Validate a model choice against its builder and the front-end before any work starts."""
    entry = MODELS.entry(name)
    unknown = sorted(set(params) - set(entry.param_names()))
    if unknown:
        allowed = ", ".join(entry.param_names()) or "(none)"
        raise EarmarkError(f"model.params for '{name}' has unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
    wants_waveform = entry.input_kind == "waveform"
    if wants_waveform != (feature_kind == "waveform"):
        needed = "waveform" if wants_waveform else "log_mel or mfcc"
        raise EarmarkError(
            f"model '{name}' takes {entry.input_kind} input but features.kind is '{feature_kind}'; "
            f"set features.kind={needed.split()[0]}"
        )
    return entry


def create_model(name: str, n_classes: int, input_shape: tuple[int, ...], **params: Any) -> nn.Module:
    """Build a registered model for `n_classes` and clips of `input_shape` (no batch dim)."""
    entry = MODELS.entry(name)
    try:
        return entry.builder(n_classes=n_classes, input_shape=tuple(input_shape), **params)
    except TypeError as exc:
        raise EarmarkError(f"model.params for '{name}' are not valid: {exc}") from None


# Shapes `earmark models` counts parameters at: 1 s at 16 kHz, 64 mel bins, 10 ms hop.
DEFAULT_INPUT_SHAPES = {"spectrogram": (1, 64, 101), "waveform": (1, 16000)}


def describe_models(n_classes: int = 10, count_parameters: bool = False) -> list[dict[str, Any]]:
    """One row per registered model and family: input, pretrained source, and with `count_parameters`
    the parameter count at the default input (each model is built, seconds in all, with the hub offline:
    a model whose config is not in the local cache says so instead of waiting on the network)."""
    from earmark.models.weights import hub_offline

    rows = []
    for entry in list_models():
        n_params = None
        if count_parameters:
            try:
                with hub_offline():
                    model = create_model(entry.name, n_classes, DEFAULT_INPUT_SHAPES[entry.input_kind])
                n_params = sum(p.numel() for p in model.parameters())
            except EarmarkError as exc:  # a model that needs settings (or the hub) to build says so
                entry = dataclasses.replace(entry, description=f"{entry.description} ({exc})")
        rows.append({"name": entry.name, "input": entry.input_kind, "parameters": n_params,
                     "pretrained": entry.pretrained or "no", "description": entry.description,
                     "params": entry.param_defaults(), "needs_groups": entry.needs_groups})
    for family in MODELS.families():
        rows.append({"name": family.name, "input": family.input_kind, "parameters": None,
                     "pretrained": family.pretrained or "no", "description": family.description,
                     "params": family.param_defaults(), "needs_groups": False})
    return rows
