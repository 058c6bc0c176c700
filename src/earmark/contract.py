"""The input contract that travels with every model: what audio it expects and what it predicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputContract:
    """Saved in every checkpoint, so a model file alone is enough to predict."""

    sample_rate_hz: int
    duration_s: float
    clip: str
    labels: tuple[str, ...]
    features: dict[str, Any] = field(default_factory=dict)
    chunk_hop_s: float | None = None

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate_hz))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    def disagreements(self, data: dict[str, Any], features: dict[str, Any]) -> list[str]:
        """'data.sample_rate_hz: 44100 here, 8000 in the model' for every audio or front-end setting of a
        config (its `data` and `features` sections as dicts) that differs from this contract: a config
        that says something else than the model it describes. Keys the contract does not hold are skipped."""
        ours = {f"data.{key}": getattr(self, key) for key in ("sample_rate_hz", "duration_s", "clip")}
        if self.clip == "chunk":
            ours["data.chunk_hop_s"] = self.chunk_hop_s
        ours.update({f"features.{key}": value for key, value in self.features.items()})
        theirs = {**{f"data.{k}": v for k, v in data.items()}, **{f"features.{k}": v for k, v in features.items()}}
        return [f"{key}: {theirs[key]!r} here, {value!r} in the model" for key, value in ours.items()
                if key in theirs and theirs[key] != value]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputContract":
        data = dict(data)
        data["labels"] = tuple(str(label) for label in data["labels"])
        return cls(**data)
