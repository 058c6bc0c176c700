"""What `model.name=auto` tries, and the data each candidate hears.

Candidates come from the registry, never from a list written here: every *view* (a registered embedder
with a fixed input rate, a probe head and weights that ship with earmark, or none needed) is probed;
a registered `fusion` joins the views that ran; the from-zero CNN trains with `SMALL_DATA_RECIPE`;
the best view is fine-tuned where the budget leaves room for it. A view registered tomorrow joins by itself.

All candidates share one split: the data is prepared once, at the configured rate, and a candidate
that takes audio at another rate gets the same clips, in the same splits, decoded at its rate
(`SplitData.at`; decoding is cached, so a second auto run on the same data decodes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from earmark.config import Config, DataConfig, FeaturesConfig, ModelConfig, apply_overrides
from earmark.files import safe_name

AUTO_MODEL = "auto"
FROM_ZERO_MODEL = "simple_cnn"
FUSION_MODEL = "fusion"
# The from-zero CNN's small-data recipe (mixup, SpecAugment, strong waveform augmentation): dotted overrides on top
# of the user's config. The one place it is set; empty = the library's simple_cnn defaults.
SMALL_DATA_RECIPE: tuple[str, ...] = ()
# Fine-tuning a view end to end: a small learning rate for the pretrained layers (see benchmarks/transfer.py).
FINE_TUNE_RECIPE: tuple[str, ...] = ("model.params.freeze=false", "train.lr=0.0003")
FINE_TUNE_MAX_EPOCHS = 8
# A fine-tuning epoch costs about this many times one forward pass over its training clips (backward pass,
# augmentation, validation): measured with aisfx on the bundled sample (5 epochs of 280 clips in 352 s).
FINE_TUNE_COST_FACTOR = 3.5

Kind = Literal["probe", "fusion", "from_zero", "fine_tune", "ensemble"]


@dataclass(frozen=True)
class Candidate:
    name: str  # as the leaderboard shows it; its scratch run is RUN/candidates/<name>
    kind: Kind
    model: str  # the registry name it trains
    overrides: tuple[str, ...] = field(default=())

    @property
    def folder(self) -> str:
        return safe_name(self.name, "candidate")


def offline_views() -> list[str]:
    """Registered embedders `auto` can probe offline: a fixed input rate (`sample_rate_hz`), a probe head (a `head`
    parameter), and weights bundled with earmark or none at all (hub and local-checkpoint backbones are left out:
    they need a download or a file); a model that combines views (a `views` parameter) is not a view itself."""
    from earmark.models.registry import MODELS

    views = []
    for name in MODELS.names():
        entry = MODELS.entry(name)
        params = entry.param_names()
        offline = entry.pretrained is None or entry.pretrained.startswith("bundled")
        if entry.sample_rate_hz is not None and "head" in params and "views" not in params and offline:
            views.append(name)
    return views


def probe_candidates() -> list[Candidate]:
    return [Candidate(f"{view} probe", "probe", view) for view in offline_views()]


def mlp_head_candidate(view: str) -> Candidate:
    """`view`'s probe with a small MLP head instead of logistic regression (on the same cached embeddings)."""
    return Candidate(f"{view} probe, MLP head", "probe", view, ("model.params.head=mlp",))


def fusion_candidate(views: Sequence[str]) -> Candidate | None:
    """The registered fusion of `views` (the views whose probes ran), when there are two or more."""
    from earmark.models.registry import MODELS

    if FUSION_MODEL not in MODELS.names() or len(views) < 2:
        return None
    return Candidate(f"fusion ({'+'.join(views)})", "fusion", FUSION_MODEL,
                     (f"model.params.views=[{','.join(views)}]",))


def from_zero_candidate() -> Candidate:
    return Candidate(f"{FROM_ZERO_MODEL} from zero", "from_zero", FROM_ZERO_MODEL, SMALL_DATA_RECIPE)


def fine_tune_candidate(view: str) -> Candidate | None:
    """`view` trained end to end, if its builder can unfreeze (a `freeze` parameter)."""
    from earmark.models.registry import MODELS

    if "freeze" not in MODELS.entry(view).param_names():
        return None
    return Candidate(f"{view} fine-tuned", "fine_tune", view, FINE_TUNE_RECIPE)


def candidate_config(config: Config, candidate: Candidate, runs_dir: Path, extra: Sequence[str] = ()) -> Config:
    """The config `candidate` trains with: the user's, its model, the run folder runs_dir/<candidate>. A
    pretrained view takes raw audio at its own rate: the rate and front-end are left for `plan_model` to set."""
    update: dict = {"runs_dir": Path(runs_dir), "name": candidate.folder, "model": ModelConfig(name=candidate.model)}
    if candidate.kind != "from_zero":
        default_rate = DataConfig.model_fields["sample_rate_hz"].default
        update["data"] = config.data.model_copy(update={"sample_rate_hz": default_rate})
        update["features"] = FeaturesConfig()
    return apply_overrides(config.model_copy(update=update), [*candidate.overrides, *extra])


def single_model_config(config: Config) -> Config:
    """What a one-model verb (prepare, inspect) uses for `model.name=auto`: its from-zero candidate, which
    prepares the data (the same split every candidate then trains on); any other config as it is."""
    if config.model.name != AUTO_MODEL:
        return config
    return config.model_copy(update={"model": ModelConfig(name=FROM_ZERO_MODEL)})


class SplitData:
    """One preparation's clips and splits, handed to each candidate decoded at the rate it takes."""

    def __init__(self, prepared, rate_hz: int, group_by: str | None, progress: bool) -> None:
        self.base, self.group_by, self.progress = prepared, group_by, progress
        self._by_rate = {int(rate_hz): prepared}

    def at(self, config: Config):
        """`PreparedData` of the same clips and splits, decoded with `config.data` (its rate)."""
        from earmark.data.prepared import decode_listed, with_splits

        rate = int(config.data.sample_rate_hz)
        if rate not in self._by_rate:
            items, cache = decode_listed(self.base.items, config.data, progress=self.progress)
            split_dir = self.base.split_dir.with_name(f"{self.base.split_dir.name}-{rate}hz")
            self._by_rate[rate] = with_splits(items, self.base.labels, cache, split_dir, self.group_by)
        return self._by_rate[rate]
