"""Typed configuration: pydantic models, YAML loading and dotted CLI overrides.

Every section forbids unknown keys, so a typo fails before any work starts, naming the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from earmark.config_messages import did_you_mean, error_origin, format_validation_error, parse_override, read_yaml
from earmark.errors import EarmarkError
from earmark.files import AUDIO_EXTENSIONS, MAX_RUN_NAME_BYTES

DataSource = Literal["sample", "folder", "csv", "esc50", "urbansound8k", "fsdd", "stream"]
METADATA_SUFFIXES = (".csv", ".tsv", ".txt")
ClipMode = Literal["pad", "crop", "chunk"]
DEFAULT_GROUP_BY = {"sample": "speaker", "esc50": "group", "urbansound8k": "group"}  # split.group_by when unset
FeatureKind = Literal["log_mel", "mfcc", "waveform"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMap(Section):
    """Names of the metadata columns; None means 'detect a common name'."""

    path: Optional[str] = None
    label: Optional[str] = None
    group: Optional[str] = None
    fold: Optional[str] = None
    split: Optional[str] = None


class DataConfig(Section):
    source: DataSource = "sample"
    path: Optional[Path] = Field(None, description="folder root, CSV/TSV file, or data set root")
    audio_root: Optional[Path] = Field(None, description="where relative paths in a CSV point (default: the CSV's folder)")
    columns: ColumnMap = ColumnMap()
    extensions: list[str] = list(AUDIO_EXTENSIONS)
    sample_rate_hz: int = Field(16000, gt=0, le=384000)
    duration_s: float = Field(1.0, gt=0, le=3600)
    clip: ClipMode = "pad"
    chunk_hop_s: Optional[float] = Field(None, gt=0, description="hop between chunks (default: duration_s)")
    min_duration_s: float = Field(0.02, ge=0)
    cache_dir: Path = Path(".earmark/cache")
    workers: Optional[int] = Field(None, ge=1, description="decode processes (default: CPU count)")

    @field_validator("extensions")
    @classmethod
    def _dotted_lower(cls, value: list[str]) -> list[str]:
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in value]

    @model_validator(mode="after")
    def _path_needed(self) -> "DataConfig":
        if self.path is not None and self.source == "sample":
            if "source" in self.model_fields_set:
                raise ValueError("data.source=sample is the bundled demo and reads no data.path; for your data set "
                                 "data.source=folder (one sub-folder per class) or csv, or leave data.source out")
            # data.path alone: a metadata table is a csv source, anything else a folder of class sub-folders
            self.source = "csv" if self.path.suffix.lower() in METADATA_SUFFIXES else "folder"
        if self.source in ("folder", "csv", "esc50", "urbansound8k", "fsdd", "stream") and self.path is None:
            raise ValueError(f"data.path is required when data.source is '{self.source}'")
        return self

    def audio_key(self) -> dict[str, Any]:
        """The settings that change decoded audio; anything else never re-decodes."""
        return {"sample_rate_hz": self.sample_rate_hz, "duration_s": self.duration_s, "clip": self.clip,
                "chunk_hop_s": self.chunk_hop_s if self.clip == "chunk" else None, "min_duration_s": self.min_duration_s}


class SplitConfig(Section):
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    group_by: Optional[str] = Field(None, description="metadata column whose values never straddle splits")
    use_predefined: bool = Field(True, description="respect a split or fold column when the data has one")
    test_fold: Optional[str] = Field(None, description="with a fold column: the fold held out for test (default: the last)")
    val_fold: Optional[str] = Field(None, description="with a fold column: the fold used for validation (default: carve from train)")

    @field_validator("test_fold", "val_fold", mode="before")
    @classmethod
    def _fold_as_text(cls, value: Any) -> Any:
        """`split.test_fold=4` and YAML's `test_fold: 2` are numbers; fold names are compared as text."""
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _fractions(self) -> "SplitConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("split.val_fraction + split.test_fraction must be below 1")
        return self


class FeaturesConfig(Section):
    kind: FeatureKind = "log_mel"
    n_fft: int = Field(512, ge=16, le=65536)
    win_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    n_mels: int = Field(64, ge=1, le=512)
    f_min_hz: float = Field(0.0, ge=0)
    f_max_hz: Optional[float] = Field(None, gt=0)
    n_mfcc: int = Field(20, ge=1, le=256)
    top_db: Optional[float] = Field(80.0, gt=0, description="floor each clip's log-mel this far below its peak (None: no floor)")
    normalize: bool = Field(True, description="standardise each feature bin with mean_/std_ fitted on the training split")
    clip_mean_norm: bool = Field(False, description="subtract each bin's mean over the clip's frames first (cepstral "
                                 "mean normalisation): removes a recording's fixed colouring (microphone, room, voice)")
    stack_augmented: bool = Field(False, description="2-channel input: the clean and the augmented view of each clip")

    @model_validator(mode="after")
    def _consistent(self) -> "FeaturesConfig":
        if self.f_max_hz is not None and self.f_max_hz <= self.f_min_hz:
            raise ValueError("features.f_max_hz must be above features.f_min_hz")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError(f"features.n_mfcc ({self.n_mfcc}) cannot exceed features.n_mels ({self.n_mels})")
        return self


Range = tuple[float, float]


class AugmentConfig(Section):
    """Training-only augmentations, computed in batches on the training device.

    Each transform has its own probability `*_p` (per clip); a range is [min, max].
    """

    enabled: bool = True
    # waveform
    shift_s: float = Field(0.1, ge=0, description="circular time shift of up to ± this many seconds")
    shift_p: float = Field(0.8, ge=0, le=1)
    gain_db: float = Field(6.0, ge=0, description="random gain within ± this many dB")
    gain_p: float = Field(0.8, ge=0, le=1)
    noise_std: float = Field(0.0, ge=0, description="white noise of this standard deviation (full scale = 1)")
    noise_snr_db: Optional[Range] = Field(None, description="white noise at an SNR drawn from this range instead")
    noise_p: float = Field(0.5, ge=0, le=1)
    background_dir: Optional[Path] = Field(None, description="folder of noise recordings mixed into clips")
    background_snr_db: Range = Field((5.0, 20.0), description="SNR range for background mixing")
    background_p: float = Field(0.5, ge=0, le=1)
    speed: Optional[Range] = Field(None, description="speed factor range, e.g. [0.9, 1.1] (changes pitch too)")
    speed_p: float = Field(0.5, ge=0, le=1)
    pitch_semitones: float = Field(0.0, ge=0, le=24, description="pitch shift within ± this many semitones")
    pitch_p: float = Field(0.5, ge=0, le=1)
    stretch: Optional[Range] = Field(None, description="time-stretch rate range, e.g. [0.8, 1.25] (pitch kept)")
    stretch_p: float = Field(0.5, ge=0, le=1)
    # spectrogram (SpecAugment); ignored for waveform features
    freq_masks: int = Field(0, ge=0, description="number of frequency masks per clip")
    freq_mask_bins: int = Field(8, ge=1, description="maximum width of a frequency mask, in bins")
    time_masks: int = Field(0, ge=0, description="number of time masks per clip")
    time_mask_frames: int = Field(10, ge=1, description="maximum width of a time mask, in frames")
    specaugment_p: float = Field(1.0, ge=0, le=1)
    # batch mixing (labels mixed in the loss)
    mixup_alpha: float = Field(0.0, ge=0, description="Beta(alpha, alpha) mixing weight; 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="Beta(alpha, alpha) for the cut length along time; 0 = off")
    mix_p: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentConfig":
        for name in ("noise_snr_db", "background_snr_db", "speed", "stretch"):
            if (value := getattr(self, name)) is not None and value[0] > value[1]:
                raise ValueError(f"augment.{name} must be [min, max] with min <= max; got {list(value)}")
        for name in ("speed", "stretch"):
            value = getattr(self, name)
            if value is not None and value[0] <= 0:
                raise ValueError(f"augment.{name} factors must be above 0; got {list(value)}")
        if self.noise_std > 0 and self.noise_snr_db is not None:
            raise ValueError("set augment.noise_std (fixed level) or augment.noise_snr_db (SNR range), not both")
        default_snr = type(self).model_fields["background_snr_db"].default
        if self.background_dir is None and tuple(self.background_snr_db) != default_snr:
            raise ValueError("augment.background_snr_db is set but augment.background_dir is not: "
                             "give a folder of noise recordings to mix in")
        return self


class ParamGroup(Section):
    """Parameters whose name starts with `prefix` (e.g. 'model.head') get their own learning rate."""

    prefix: str
    lr: float = Field(gt=0)
    weight_decay: Optional[float] = Field(None, ge=0)


class ModelConfig(Section):
    name: str = "simple_cnn"
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's builder")


class TrainConfig(Section):
    max_epochs: int = Field(60, ge=1)
    batch_size: int = Field(16, ge=1)
    # optimisation
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    nesterov: bool = Field(False, description="SGD only")
    param_groups: list[ParamGroup] = Field(default_factory=list, description="per-prefix learning rates")
    scheduler: Literal["onecycle", "cosine", "step", "plateau", "none"] = "onecycle"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up before cosine/step (onecycle has its own)")
    step_size_epochs: int = Field(10, ge=1, description="step scheduler: epochs between decays")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step/plateau scheduler: decay factor")
    plateau_patience: int = Field(3, ge=0, description="plateau scheduler: epochs without improvement")
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: Optional[float] = Field(None, gt=0)
    # loss and imbalance
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Union[Literal["none", "balanced"], dict[str, float]] = Field(
        "none", description="'balanced' (from training counts) or {label: weight}")
    sampler: Literal["shuffle", "weighted"] = Field("shuffle", description="'weighted' draws classes equally often")
    # checkpoints and stopping
    monitor: Literal["val_loss", "val_acc", "val_macro_f1"] = "val_loss"
    early_stopping_patience: Optional[int] = Field(10, ge=1)
    save_last_k: int = Field(5, ge=1, description="keep the last K epoch checkpoints besides the best")
    checkpoint_every_n_steps: Optional[int] = Field(None, ge=1, description="also checkpoint mid-epoch, for resume")
    max_time_s: Optional[float] = Field(None, gt=0, description="stop training after this many seconds")
    time_budget_s: float = Field(300.0, gt=0, description="model.name=auto: seconds to try candidates in (demo: 240)")
    # devices and speed
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp")
    num_nodes: int = Field(1, ge=1)
    precision: Optional[Literal["32", "32-true", "bf16-mixed", "16-mixed"]] = Field(
        None, description="default: bf16-mixed/16-mixed on GPU, 32 on CPU")
    compile: bool = Field(False, description="torch.compile the model")
    channels_last: bool = Field(False, description="channels-last memory format for 2-D models")
    memory_budget_gb: float = Field(4.0, ge=0, description="device memory the decoded clips may take; above it they stream")
    num_workers: int = Field(0, ge=0, description="DataLoader workers when streaming from the cache")
    deterministic: bool = False
    progress: bool = True


class EvaluationConfig(Section):
    """What every evaluation reports beyond the headline metrics, and what is fitted on validation."""

    group_by: list[str] = Field(default_factory=list, description="extra metadata columns analysed per group "
                                "(split.group_by and `group` are always analysed when they have values)")
    top_k: list[int] = Field([3, 5], description="top-k accuracies reported where there are more than k classes")
    worst_groups: int = Field(5, ge=1, description="how many worst groups each per-group table names")
    calibrate: bool = Field(True, description="fit temperature scaling on the validation split after training")
    ece_bins: int = Field(15, ge=2, le=100, description="equal-width confidence bins of the calibration error")
    reject_target_accuracy: Optional[float] = Field(
        None, gt=0, le=1, description="choose on validation the lowest confidence threshold whose accepted "
        "clips reach this accuracy; below it a prediction is 'unknown' (default: off)")
    reject_target_coverage: Optional[float] = Field(
        None, gt=0, le=1, description="or: the threshold that keeps this share of validation clips")
    positive_label: Optional[str] = Field(None, description="binary tasks: the positive class (default: the "
                                          "second label in sorted order)")
    threshold_metric: Literal["balanced_accuracy", "f1"] = Field(
        "balanced_accuracy", description="binary tasks: what the validation-chosen decision threshold maximises "
        "(f1: of the positive class)")

    @field_validator("top_k")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError(f"evaluation.top_k values must be 1 or more; got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _one_reject_target(self) -> "EvaluationConfig":
        if self.reject_target_accuracy is not None and self.reject_target_coverage is not None:
            raise ValueError("set evaluation.reject_target_accuracy or evaluation.reject_target_coverage, not both")
        return self


class Config(Section):
    name: Optional[str] = Field(None, description="run name (default: data source + model + time)")
    seed: int = 0
    runs_dir: Path = Path("runs")
    workspace: Path = Field(Path(".earmark"), description="generated splits live here; `earmark clean` removes it")
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    features: FeaturesConfig = FeaturesConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, name: Optional[str]) -> Optional[str]:  # the run folder stays inside runs_dir
        if name is not None and (name.strip() in ("", ".", "..") or any(c in name for c in "/\\\0")):
            raise ValueError(f"must be a plain folder name inside runs_dir, without /, \\ or '..'; got {name!r}")
        if name is not None and len(name.encode()) > MAX_RUN_NAME_BYTES:  # folder names stop at 255 bytes
            raise ValueError(f"is {len(name.encode())} bytes; at most {MAX_RUN_NAME_BYTES} (a folder name: give a shorter one)")
        return name

    @model_validator(mode="after")
    def _group_by_default(self) -> "Config":
        """Unless split.group_by is given, the demo holds out speakers (voices it never heard), ESC-50 and
        UrbanSound8K source recordings (`group`: src_file, fsID; several clips are cut from each); auto picks the
        demo's model (240 s) unless one is given."""
        default = DEFAULT_GROUP_BY.get(self.data.source)
        if default and "group_by" not in self.split.model_fields_set:
            object.__setattr__(self, "split", self.split.model_copy(update={"group_by": default}))
        if self.data.source == "sample" and "name" not in self.model.model_fields_set and not self.model.params:
            object.__setattr__(self, "model", self.model.model_copy(update={"name": "auto"}))
            budget = self.train.time_budget_s if "time_budget_s" in self.train.model_fields_set else 240.0
            object.__setattr__(self, "train", self.train.model_copy(update={"time_budget_s": budget}))
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False)

    def split_key(self) -> str:
        """A short hash of what decides the split, so generated splits are reused."""
        payload = {"data": json.loads(self.data.model_dump_json()), "split": self.split.model_dump(), "seed": self.seed}
        return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _apply_override(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    model: type[BaseModel] | None = Config
    node = tree
    for depth, part in enumerate(parts):
        dotted = ".".join(parts[: depth + 1])
        if model is not None and part not in model.model_fields:
            allowed = ", ".join(model.model_fields)
            raise EarmarkError(f"unknown config key '{dotted}'{did_you_mean(part, model.model_fields)}; "
                               f"allowed here: {allowed}")
        if depth == len(parts) - 1:
            node[part] = value
            return
        annotation = model.model_fields[part].annotation if model is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if (child := node.get(part)) is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise EarmarkError(f"config key '{dotted}' is a value, not a section; cannot set '{'.'.join(parts)}'")
        node = child


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply dotted overrides, validating everything."""
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EarmarkError(f"config file not found: {path}")
        loaded = read_yaml(path, "config file") or {}
        if not isinstance(loaded, dict):
            raise EarmarkError(f"{path} must hold a mapping of sections (data:, model:, ...), got {type(loaded).__name__}")
        tree, origin = loaded, str(path)
    overridden = []
    for text in overrides or []:
        parts, value = parse_override(text)
        _apply_override(tree, parts, value)
        overridden.append(parts)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise EarmarkError(format_validation_error(exc, Config, error_origin(exc, overridden, origin))) from None
    if path is not None:
        config = _resolve_relative_paths(config, Path(path).parent)
    return config


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """`config` with dotted overrides applied in memory, validated like a loaded file."""
    if not overrides:
        return config
    tree = json.loads(config.model_dump_json())
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(tree, parts, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise EarmarkError(format_validation_error(exc, Config, "command-line override")) from None


def as_config(config: Config | str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """A Config from an object, a YAML path or None (the defaults), with `overrides` applied."""
    if isinstance(config, Config):
        return apply_overrides(config, overrides)
    return load_config(config, list(overrides))


def resumable_config(config: Config | str | Path | None, overrides: Sequence[str], resume) -> Config | None:
    """`as_config`, except None when resuming (CV, tuning) with no config and no overrides: the saved one is used."""
    return None if resume is not None and config is None and not overrides else as_config(config, overrides)


def _resolve_relative_paths(config: Config, base: Path) -> Config:
    """Data paths in a YAML file are relative to the file, as users expect."""
    data = config.data
    updates = {}
    for field in ("path", "audio_root"):
        value = getattr(data, field)
        if value is not None and not value.is_absolute() and not value.exists():
            candidate = base / value
            if candidate.exists():
                updates[field] = candidate
    return config.model_copy(update={"data": data.model_copy(update=updates)}) if updates else config
