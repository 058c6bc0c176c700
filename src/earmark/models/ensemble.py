"""ensemble: several trained runs in one model, averaging their calibrated probabilities.

`earmark ensemble RUN RUN ...` (`earmark.workflows.ensemble`) writes a run whose model is this one. Its
params hold each member's saved model entry (name, params, input contract), so `create_model` rebuilds
every member from the ensemble's own checkpoint, whose state dict holds every member's weights and
temperature. forward: waves at the ensemble's rate (the highest of its members') → each member gets its
own rate (`Resample`, in the graph) and clip length (crop or zero-pad at the end, as decoding does) →
its front-end and model → softmax(logits / its temperature) → the weighted mean over members → log, so
that softmax of the ensemble's logits is exactly that mean. One ONNX graph holds every member.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from earmark.contract import InputContract
from earmark.errors import EarmarkError
from earmark.models.assembly import build_network
from earmark.models.registry import register_model
from earmark.models.resample import Resample

ENSEMBLE_MODEL = "ensemble"
MIN_PROBABILITY = 1e-30  # log(0) guard: a class every member rules out gets logit log(1e-30) ≈ -69
MEMBER_KEYS = ("model_name", "model_params", "contract")
CHUNK_ONLY_KEYS = ("duration_s", "chunk_hop_s")


def ensemble_input(contracts: Sequence[InputContract]) -> dict[str, Any]:
    """The input an ensemble of members with `contracts` takes: sample_rate_hz (the highest member rate, so
    no member hears less than it was trained on), duration_s (the longest clip), clip and chunk_hop_s.

    Raises EarmarkError when the members cannot share one input: different labels, or chunked clips of
    different lengths or hops (a window of one would not be a window of the other)."""
    if len(contracts) < 2:
        raise EarmarkError(f"an ensemble needs at least 2 members; got {len(contracts)}")
    first = contracts[0]
    for index, contract in enumerate(contracts[1:], start=1):
        if list(contract.labels) != list(first.labels):
            raise EarmarkError(f"ensemble member {index} predicts the labels {list(contract.labels)}, member 0 "
                               f"{list(first.labels)}; every member needs the same labels in the same order")
    chunked = [contract.clip == "chunk" for contract in contracts]
    if any(chunked):
        same = all(chunked) and all((c.duration_s, c.chunk_hop_s) == (first.duration_s, first.chunk_hop_s)
                                    for c in contracts)
        if not same:
            described = "; ".join(f"member {i}: data.clip={c.clip}, data.duration_s={c.duration_s:g}, "
                                  f"data.chunk_hop_s={c.chunk_hop_s}" for i, c in enumerate(contracts))
            raise EarmarkError(f"members cut into chunks must all use data.clip=chunk with the same "
                               f"data.duration_s and data.chunk_hop_s ({described})")
    return {"sample_rate_hz": max(c.sample_rate_hz for c in contracts),
            "duration_s": max(c.duration_s for c in contracts),
            "clip": "chunk" if any(chunked) else first.clip, "chunk_hop_s": first.chunk_hop_s if any(chunked) else None}


class EnsembleMember(nn.Module):
    """One trained run inside an ensemble: waves (B, T) at `input_rate_hz` → calibrated probabilities (B, C).

    Holds the run's front-end, model and `temperature_` under the names its checkpoint uses
    (`frontend.*`, `model.*`, `temperature_`), so the run's state dict loads into it as it is.
    """

    def __init__(self, model_name: str, model_params: dict[str, Any], contract: dict[str, Any],
                 input_rate_hz: int) -> None:
        super().__init__()
        contract_ = InputContract.from_dict(contract)
        self.model_name = model_name
        self.n_samples = contract_.n_samples
        self.resample = Resample(input_rate_hz, contract_.sample_rate_hz)
        self.frontend, self.model, self.stack_views, uses_groups = build_network(contract_, model_name,
                                                                                 dict(model_params))
        if uses_groups:
            raise EarmarkError(f"model '{model_name}' takes a group per clip; an ensemble member cannot "
                               f"(ensemble its base runs instead)")
        self.register_buffer("temperature_", torch.ones(()))  # the member run's, loaded with its weights

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) at the ensemble's rate → (B, n_classes) probabilities."""
        wave = self.resample(wave)  # (B, T') at the member's rate
        wave = F.pad(wave, (0, self.n_samples))[:, :self.n_samples]  # (B, n_samples): crop or pad, export-safe
        features = self.frontend(wave)  # (B, 1, n_bins, frames) or (B, 1, T)
        if self.stack_views:
            features = torch.cat([features, features], dim=1)  # (B, 2, ...)
        return torch.softmax(self.model(features).float() / self.temperature_, dim=1)


class EnsembleClassifier(nn.Module):
    """waves (B, 1, T) at the ensemble's rate → log of the weighted mean of the members' probabilities (B, C)."""

    def __init__(self, members: Sequence[EnsembleMember], weights: Sequence[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.weights = [float(w) for w in weights]  # plain floats: constants in the exported graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) → (B, n_classes); softmax of the output is the weighted mean probability."""
        wave = x.flatten(1)  # (B, T)
        mean = sum(weight * member(wave) for weight, member in zip(self.weights, self.members))  # (B, C)
        return torch.log(mean.clamp(min=MIN_PROBABILITY))


def normalized_weights(weights: Optional[Sequence[float]], n_members: int) -> list[float]:
    """`weights` scaled to sum to 1 (None: equal weights); each must be >= 0, one > 0, one per member."""
    if weights is None:
        return [1.0 / n_members] * n_members
    weights = [float(w) for w in weights]
    if len(weights) != n_members:
        raise EarmarkError(f"--weights gives {len(weights)} weight(s) for {n_members} runs; give one per run, "
                           f"e.g. --weights {','.join(['1'] * n_members)}")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise EarmarkError(f"--weights must be numbers >= 0, at least one above 0; got {weights}")
    return [w / sum(weights) for w in weights]


@register_model(ENSEMBLE_MODEL, input_kind="waveform",
                description="several trained runs averaging their calibrated probabilities, not trained")
def ensemble(n_classes: int, input_shape: tuple[int, ...], members: Optional[list[dict[str, Any]]] = None,
             weights: Optional[list[float]] = None) -> EnsembleClassifier:
    """`members`: one dict per run: model_name, model_params, contract (the run's saved model entry);
    `weights`: one per member (default equal), scaled to sum to 1."""
    if not members:
        raise EarmarkError("model 'ensemble' is made from trained runs by `earmark ensemble RUN RUN ... --out DIR`; "
                           "it has no members to build here")
    missing = [f"member {i}: {key}" for i, member in enumerate(members) for key in MEMBER_KEYS if key not in member]
    if missing:
        raise EarmarkError(f"model.params.members lacks {', '.join(missing)}")
    contracts = [InputContract.from_dict(member["contract"]) for member in members]
    shared = ensemble_input(contracts)
    if len(contracts[0].labels) != n_classes:
        raise EarmarkError(f"the ensemble's members predict {len(contracts[0].labels)} classes, its contract "
                           f"{n_classes}")
    expected = round(shared["duration_s"] * shared["sample_rate_hz"])
    if input_shape[-1] != expected:
        raise EarmarkError(f"the ensemble takes {expected} samples per clip ({shared['duration_s']:g} s at "
                           f"{shared['sample_rate_hz']} Hz); its contract gives {input_shape[-1]}")
    built = [EnsembleMember(m["model_name"], m["model_params"], m["contract"], shared["sample_rate_hz"])
             for m in members]
    return EnsembleClassifier(built, normalized_weights(weights, len(members)))
