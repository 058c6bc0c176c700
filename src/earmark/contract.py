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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputContract":
        data = dict(data)
        data["labels"] = tuple(str(label) for label in data["labels"])
        return cls(**data)
