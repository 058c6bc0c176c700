"""personalized: a base classifier conditioned on a learned embedding per speaker (or any group).

The group's embedding is mapped to a FiLM scale and shift of the base model's pooled features:
`h' = h * (1 + gamma(e)) + beta(e)` with `gamma`, `beta` linear and bias-free, so a zero embedding
(an unseen group, or none given) leaves the base model's logits exactly as they were. Training has
two phases (see `earmark.train.personalization`): the base model alone, then the embeddings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.registry import MODELS, check_model_config, create_model, register_model

UNKNOWN_GROUP = -1  # the id of a clip whose group is missing or was not in the training split


@dataclass(frozen=True)
class PersonalizedSettings:
    """`model.params` of `personalized`, validated when they arrive."""

    base: str = "simple_cnn"
    base_params: Optional[dict] = None
    group_column: str = "group"
    embedding_dim: int = 16
    adapt_epochs: int = 10
    adapt_lr: float = 1e-2
    freeze_base: bool = True

    def __post_init__(self) -> None:
        def bad(field: str, allowed: str) -> EarmarkError:
            return EarmarkError(f"model.params.{field} must be {allowed}; got {getattr(self, field)!r}")

        if not isinstance(self.base, str) or not self.base:
            raise bad("base", "the name of a registered spectrogram model, e.g. simple_cnn")
        if self.base_params is not None and not isinstance(self.base_params, dict):
            raise bad("base_params", "a mapping of the base model's parameters, e.g. {width: 8}")
        if not isinstance(self.group_column, str) or not self.group_column:
            raise bad("group_column", "a metadata column name, e.g. group or speaker")
        for field in ("embedding_dim", "adapt_epochs"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(field, "a whole number of at least 1")
        if isinstance(self.adapt_lr, bool) or not isinstance(self.adapt_lr, (int, float)) or self.adapt_lr <= 0:
            raise bad("adapt_lr", "a learning rate above 0")
        if not isinstance(self.freeze_base, bool):
            raise bad("freeze_base", "true or false")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "PersonalizedSettings":
        settings = cls(**params)
        base_entry = MODELS.entry(settings.base)
        if base_entry.needs_groups or base_entry.input_kind != "spectrogram":
            spectrogram = [e.name for e in (MODELS.entry(n) for n in MODELS.names())
                           if e.input_kind == "spectrogram" and not e.needs_groups]
            raise EarmarkError(f"model.params.base='{settings.base}' cannot be personalized: it must be a spectrogram "
                               f"model without groups; available: {', '.join(spectrogram)}")
        check_model_config(settings.base, settings.base_params or {}, "log_mel")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PersonalizedClassifier(nn.Module):
    """forward: x (B, C, n_bins, frames), groups (B,) int64 ids into `groups_` or None → logits (B, n_classes).

    `groups_` (fitted: the training split's groups, sorted) names the rows of the embedding table;
    id `UNKNOWN_GROUP` (-1) and `groups=None` give the base model's logits exactly.
    """

    def __init__(self, base: nn.Module, embedding_dim: int, freeze_base: bool, group_column: str) -> None:
        super().__init__()
        for method in ("forward_features", "forward_head"):
            if not callable(getattr(base, method, None)) or not hasattr(base, "num_features"):
                raise EarmarkError(f"the base model {type(base).__name__} has no {method}/num_features; "
                                   f"personalization conditions pooled features, so pick a PooledClassifier")
        self.base = base
        self.num_features = base.num_features
        self.embedding_dim = embedding_dim
        self.freeze_base = freeze_base
        self.group_column = group_column
        self.adapting = False
        self.film = nn.Linear(embedding_dim, 2 * self.num_features, bias=False)
        nn.init.zeros_(self.film.weight)  # phase 2 starts exactly at the base model
        self.fit_groups([])

    def fit_groups(self, groups: Sequence[str]) -> "PersonalizedClassifier":
        """Name the embedding rows: one per training group (a fresh table)."""
        self.groups_ = sorted({str(group) for group in groups})
        self._group_index = {group: i for i, group in enumerate(self.groups_)}
        self.embedding = nn.Embedding(max(1, len(self.groups_)), self.embedding_dim)  # a spare row if none
        self.set_adapting(self.adapting)
        return self

    def group_ids(self, groups: Sequence[Optional[str]]) -> torch.Tensor:
        """Group names (None: unknown) → (N,) int64 ids; names not seen in training get UNKNOWN_GROUP."""
        ids = [self._group_index.get(str(group), UNKNOWN_GROUP) if group is not None else UNKNOWN_GROUP
               for group in groups]
        return torch.tensor(ids, dtype=torch.long)

    def set_adapting(self, adapting: bool) -> None:
        """Phase 1 (False): only the base learns. Phase 2 (True): the embeddings learn; the base too
        unless `freeze_base`, and a frozen base also keeps its batch-norm statistics and skips dropout."""
        self.adapting = adapting
        for module in (self.embedding, self.film):
            module.requires_grad_(adapting)
        self.base.requires_grad_(not (adapting and self.freeze_base))
        self.train(self.training)

    def train(self, mode: bool = True) -> "PersonalizedClassifier":
        super().train(mode)
        if self.adapting and self.freeze_base:
            self.base.eval()  # Lightning calls train() every epoch: a frozen base stays exactly as phase 1 left it
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.forward_features(x)  # (B, num_features)

    def condition(self, features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """FiLM: features (B, F), groups (B,) → (B, F); rows of unknown groups come back unchanged."""
        known = (groups != UNKNOWN_GROUP).to(features.dtype)[:, None]  # (B, 1)
        embedded = self.embedding(groups.clamp(min=0)) * known  # (B, d), zeros for unknown groups
        gamma, beta = self.film(embedded).chunk(2, dim=1)  # (B, F) each
        return features * (1 + gamma) + beta

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.base.forward_head(x, pre_logits=pre_logits)

    def reset_classifier(self, n_classes: int) -> None:
        self.base.reset_classifier(n_classes)

    def forward(self, x: torch.Tensor, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
        features = self.forward_features(x)  # (B, F)
        if groups is not None:
            features = self.condition(features, groups.to(features.device))
        return self.forward_head(features)  # (B, n_classes)


@register_model("personalized", input_kind="spectrogram", needs_groups=True,
                description="a base model + a learned embedding per speaker/group (FiLM), trained in two phases")
def personalized(n_classes: int, input_shape: tuple[int, ...], base: str = "simple_cnn",
                 base_params: Optional[dict] = None, group_column: str = "group", embedding_dim: int = 16,
                 adapt_epochs: int = 10, adapt_lr: float = 1e-2, freeze_base: bool = True) -> PersonalizedClassifier:
    settings = PersonalizedSettings.from_params(dict(
        base=base, base_params=base_params, group_column=group_column, embedding_dim=embedding_dim,
        adapt_epochs=adapt_epochs, adapt_lr=adapt_lr, freeze_base=freeze_base))
    base_model = create_model(settings.base, n_classes, input_shape, **(settings.base_params or {}))
    return PersonalizedClassifier(base_model, settings.embedding_dim, settings.freeze_base, settings.group_column)
