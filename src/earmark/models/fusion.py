"""fusion: several embedders' views of one clip, combined into one probe (`model.name=fusion`).

`model.params.views` names any registered embedders (an entry with a sample rate, built as an
`EmbeddingClassifier`); the fusion takes audio at the highest of their rates, so no view loses bandwidth,
and resamples inside the graph (`Resample`) for each view that wants less:

    wave (B, samples) at max(view rates)
      -> per view: Resample(rate, view rate) -> the view's embedder       (B, D_v) each
      -> ++ over views                                                     (B, sum D_v)
      -> combine=concat:  one EmbeddingHead on every view's standardised embedding   → logits (B, C)
         combine=average: one EmbeddingHead per view, their probabilities averaged   → log(mean p) (B, C)

Each view's embeddings are cached under its own backbone id (plus the input rate when it is resampled), so
a fusion after an aisfx probe on the same data embeds nothing new for aisfx, and fusions of different view
lists share caches. It is always frozen: the probe path fits the head(s) on the cached vectors.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.embedding import EmbeddingHead
from earmark.models.registry import MODELS, create_model, register_model
from earmark.models.resample import Resample, resampled_length

COMBINE_KINDS = ("average", "concat")
DEFAULT_VIEWS = ("aisfx", "mfcc_stats")
DEFAULT_COMBINE = "average"  # measured: see the README's "Fusion of views" (concat loses on the small sample)
PROBABILITY_FLOOR = 1e-12  # log(0) would be -inf for a class no view predicts


def checked_views(views: Sequence[str] | None, view_params: Optional[dict] = None) -> list[str]:
    """The view names, checked: a non-empty list of distinct registered embedders (a fusion is not a view)."""
    names = list(DEFAULT_VIEWS if views is None else views)
    if isinstance(views, str) or not names or not all(isinstance(name, str) for name in names):
        raise EarmarkError(f"model.params.views must be a list of embedder names, e.g. [{', '.join(DEFAULT_VIEWS)}];"
                           f" got {views!r}")
    if len(set(names)) != len(names):
        raise EarmarkError(f"model.params.views names a view twice: {names}; list each embedder once")
    for name in names:
        entry = MODELS.entry(name)  # an unknown name lists the available models
        if name == "fusion" or entry.rate_for({}) is None:
            embedders = [n for n in MODELS.names() if n != "fusion" and MODELS.entry(n).rate_for({}) is not None]
            raise EarmarkError(f"model.params.views: '{name}' is not a pretrained embedder; choose from "
                               f"{', '.join(embedders)}")
    unknown = sorted(set(view_params or {}) - set(names))
    if unknown:
        raise EarmarkError(f"model.params.view_params names {', '.join(unknown)}, which are not in model.params.views "
                           f"({', '.join(names)})")
    return names


def fusion_sample_rate_hz(views: Sequence[str] | None = None, view_params: Optional[dict] = None) -> int:
    """The rate a fusion of `views` takes: the highest of the views' rates."""
    names = checked_views(views, view_params)
    return max(MODELS.entry(name).rate_for((view_params or {}).get(name) or {}) for name in names)


def _rate_for(params: dict[str, Any]) -> int:
    return fusion_sample_rate_hz(params.get("views"), params.get("view_params"))


class FusionView(nn.Module):
    """One view: (B, samples) at the fusion's rate → (B, embedding_dim), through the view's own rate.

    `backbone_id` names its cached embeddings: the view's own id, plus the input rate when resampled."""

    def __init__(self, name: str, input_rate_hz: int, n_samples: int, params: Optional[dict] = None) -> None:
        super().__init__()
        params = dict(params or {})
        if params.get("freeze", True) is not True:
            raise EarmarkError(f"model.params.view_params.{name}.freeze: a fusion's views are frozen (a probe); "
                               f"fine-tune one backbone with model.name={name} model.params.freeze=false instead")
        view_rate_hz = MODELS.entry(name).rate_for(params)
        classifier = create_model(name, 1, (1, resampled_length(n_samples, input_rate_hz, view_rate_hz)), **params)
        if not all(hasattr(classifier, a) for a in ("embedder", "backbone_id", "embedding_dim")):
            raise EarmarkError(f"model.params.views: '{name}' does not build an embedder; choose a pretrained one")
        self.name = name
        self.embedding_dim = int(classifier.embedding_dim)
        self.embedder = nn.Sequential(Resample(input_rate_hz, view_rate_hz), classifier.embedder.requires_grad_(False))
        resampled = view_rate_hz != input_rate_hz
        self.backbone_id = classifier.backbone_id + (f"-from{input_rate_hz}hz" if resampled else "")
        offline = getattr(classifier, "offline_params", None)
        self.rebuild_params = offline(params) if callable(offline) else params  # rebuilds the view without files

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, samples) → (B, embedding_dim)."""
        return self.embedder(wave)


class AveragedHeads(nn.Module):
    """Late fusion: one `EmbeddingHead` per view on its columns of the (B, sum D_v) embedding; their softmax
    probabilities averaged, returned as log-probabilities (softmax of them gives the average back)."""

    def __init__(self, dims: list[int], n_classes: int, kind: str, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dims = list(dims)
        self.heads = nn.ModuleList(EmbeddingHead(dim, n_classes, kind, hidden, dropout) for dim in dims)
        self.kind = kind

    def members(self) -> list[tuple[EmbeddingHead, slice]]:
        """(head, its columns of the fused embedding) per view."""
        starts = [sum(self.dims[:i]) for i in range(len(self.dims))]
        return [(head, slice(start, start + dim)) for head, start, dim in zip(self.heads, starts, self.dims)]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, sum D_v) → (B, n_classes) log of the mean probability."""
        probabilities = torch.stack([torch.softmax(head(embeddings[:, columns]).float(), dim=1)
                                     for head, columns in self.members()]).mean(dim=0)  # (B, C)
        return torch.log(probabilities.clamp(min=PROBABILITY_FLOOR))


class FusionClassifier(nn.Module):
    """waves (B, 1, T) at the fusion's rate → logits (B, n_classes); `views` each embed, `head` combines."""

    frozen = True  # the probe path: embed once per view (cached), fit only the head(s)

    def __init__(self, views: list[FusionView], n_classes: int, combine: str, head: str, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        if combine not in COMBINE_KINDS:
            raise EarmarkError(f"model.params.combine must be one of {', '.join(COMBINE_KINDS)}; got {combine!r}")
        self.views = nn.ModuleList(views)
        self.combine = combine
        self.embedding_dim = sum(view.embedding_dim for view in views)
        self.backbone_id = "+".join(view.backbone_id for view in views)
        dims = [view.embedding_dim for view in views]
        self.head = EmbeddingHead(self.embedding_dim, n_classes, head, hidden, dropout) if combine == "concat" \
            else AveragedHeads(dims, n_classes, head, hidden, dropout)

    def train(self, mode: bool = True) -> "FusionClassifier":
        super().train(mode)
        self.views.eval()  # frozen backbones keep their BatchNorm statistics and no dropout
        return self

    def offline_params(self, params: dict) -> dict:
        """model.params that rebuild every view without the files it came from (the checkpoint has the weights)."""
        return {**params, "view_params": {view.name: view.rebuild_params for view in self.views}}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) → (B, sum D_v), the views' embeddings side by side in `views` order."""
        wave = x.flatten(1)  # (B, T)
        return torch.cat([view(wave) for view in self.views], dim=1)

    def forward_head(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, sum D_v) → (B, n_classes)."""
        return self.head(embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) → (B, n_classes)."""
        return self.forward_head(self.forward_features(x))


@register_model("fusion", input_kind="waveform", sample_rate_for=_rate_for,
                description="several embedders' views of each clip (model.params.views, e.g. [aisfx, mfcc_stats]) "
                            "combined into one probe: average (one head per view, probabilities averaged) or concat")
def fusion(n_classes: int, input_shape: tuple[int, ...], views: Sequence[str] = DEFAULT_VIEWS,
           combine: str = DEFAULT_COMBINE, head: str = "linear", hidden: int = 256, dropout: float = 0.2,
           view_params: Optional[dict] = None) -> FusionClassifier:
    """`views`: registered embedder names; `combine`: average | concat; `head`, `hidden`, `dropout`: each probe
    head's; `view_params`: {view name: its model.params}, e.g. {hf_audio: {model_name_or_path: ...}}."""
    names = checked_views(views, view_params)
    view_params = dict(view_params or {})
    rate = fusion_sample_rate_hz(names, view_params)
    n_samples = int(input_shape[-1])
    members = [FusionView(name, rate, n_samples, view_params.get(name)) for name in names]
    return FusionClassifier(members, n_classes, combine, head, hidden, dropout)
