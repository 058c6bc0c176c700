"""timm image backbones on spectrograms: resnet18/34/50, densenet121, inception_v3, efficientnetv2_s
and `timm:<any timm model name>`.

The spectrogram (B, C, n_bins, frames) is the image. timm builds the network without its classifier
(`num_classes=0`); earmark adds its own dropout + Linear head, so every backbone shares
`forward_features` / `forward_head` / `reset_classifier` with the other families.
Pretrained ImageNet weights come from the Hugging Face hub cache (`pretrained: true`) or a local
state dict (`pretrained_path`); an offline machine without them gets one message saying so.
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.base import PooledClassifier
from earmark.models.registry import MODELS, register_model
from earmark.models.weights import load_pretrained, local_weights

ChannelMode = Literal["adapt", "repeat"]
CHANNEL_MODES = ("adapt", "repeat")
PRETRAINED_SOURCE = "timm / Hugging Face hub (ImageNet)"
HOW_TO_SUPPLY = (
    "Either put the weights in the Hugging Face cache (HF_HOME, default ~/.cache/huggingface) on a machine "
    "with internet, e.g. `python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\"`, then copy "
    "the cache over; or save a timm state dict (`torch.save(model.state_dict(), 'w.pth')`, or the hub's "
    "model.safetensors) and set model.params.pretrained_path=<file>; or set model.params.pretrained=false. "
    "Offline, HF_HUB_OFFLINE=1 makes this fail at once instead of after the hub's retries."
)
DEFAULT_MIN_SIZE = 32  # smallest n_bins / frames fed to a backbone (densenet121 needs 29)
MIN_SIZE = {"inception_v3": 75, "inception_v4": 75, "inception_resnet_v2": 75}  # by timm architecture
BACKBONES = (  # earmark name, timm name, hub weights that `pretrained: true` loads, description
    ("resnet18", "resnet18", "timm/resnet18.a1_in1k", "ResNet-18 (timm), 11 M params"),
    ("resnet34", "resnet34", "timm/resnet34.a1_in1k", "ResNet-34 (timm), 21 M params"),
    ("resnet50", "resnet50", "timm/resnet50.a1_in1k", "ResNet-50 (timm), 24 M params"),
    ("densenet121", "densenet121", "timm/densenet121.ra_in1k", "DenseNet-121 (timm), 7 M params"),
    ("inception_v3", "inception_v3", "timm/inception_v3.tv_in1k",
     "Inception-v3 (timm), 22 M params; inputs under 75x75 are resized up"),
    # timm's own `efficientnetv2_s` has no released weights; the TF port does
    ("efficientnetv2_s", "tf_efficientnetv2_s", "timm/tf_efficientnetv2_s.in21k_ft_in1k",
     "EfficientNetV2-S (timm tf_efficientnetv2_s), 20 M params"),
)


class TimmBackbone(PooledClassifier):
    """A timm network without its classifier, plus earmark's head.

    Input (B, C, n_bins, frames) → logits (B, n_classes). channel_mode 'repeat' tiles the C input
    channels to the 3 the network keeps; inputs smaller than `min_size` are resized up (bilinear).
    """

    def __init__(self, backbone: nn.Module, n_classes: int, repeat_to_rgb: bool, min_size: int,
                 dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.repeat_to_rgb = repeat_to_rgb
        self.min_size = min_size
        # pre-logits width: some heads (mobilenetv3) widen the pooled features with a conv before the classifier
        self.num_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.weights_report_: Optional[str] = None  # set when a pretrained_path was loaded
        self._init_head(n_classes, dropout)

    def offline_params(self, params: dict) -> dict:
        """Params that rebuild this architecture with nothing fetched (weights come from the checkpoint)."""
        return {**params, "pretrained": False, "pretrained_path": None}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_bins, frames) → (B, num_features)."""
        if self.repeat_to_rgb:
            x = x.repeat(1, -(-3 // x.shape[1]), 1, 1)[:, :3]  # (B, 3, n_bins, frames)
        n_bins, frames = x.shape[-2:]
        if n_bins < self.min_size or frames < self.min_size:
            size = (max(n_bins, self.min_size), max(frames, self.min_size))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (B, C', ≥min, ≥min)
        x = self.backbone.forward_features(x)  # (B, channels, h, w)
        return self.backbone.forward_head(x, pre_logits=True)  # (B, num_features): pooled


def _check_timm_name(timm_name: str) -> None:
    import timm

    if timm.is_model(timm_name):
        return
    pattern = (re.match(r"[a-z]+", timm_name.lower()) or [timm_name])[0]
    close = difflib.get_close_matches(timm_name, timm.list_models(), n=3)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise EarmarkError(f"model.name=timm:{timm_name}: timm {timm.__version__} has no model '{timm_name}'{hint}. "
                       f"List the names with `python -c \"import timm; print(timm.list_models('*{pattern}*'))\"`")


def _check_hub_weights_exist(timm_name: str) -> None:
    """timm registers architectures without released weights; asking for them is a config error, not offline."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is not None and (cfg.hf_hub_id or cfg.url or cfg.file):
        return
    architecture = timm_name.split(".")[0]
    with_weights = timm.list_models(f"*{architecture}*", pretrained=True)[:5]
    choices = f"; names with weights: {', '.join(with_weights)}" if with_weights else ""
    raise EarmarkError(f"timm has no pretrained weights for '{timm_name}'{choices}; choose one of those or set "
                       f"model.params.pretrained=false")


def load_state_dict_file(backbone: nn.Module, path: Path, in_chans: int) -> int:
    """Load a timm-format state dict (.pth/.safetensors) into `backbone`; returns how many tensors loaded.

    The classifier is dropped (earmark has its own head) and the first conv is adapted to `in_chans`
    with timm's `adapt_input_conv` (1 channel: sum over RGB; more: repeat and rescale), as
    `timm.create_model(..., pretrained=True, in_chans=...)` does.
    """
    from timm.models import adapt_input_conv, load_state_dict

    field = f"model.params.pretrained_path={path}"
    try:
        state = load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise EarmarkError(f"{field} is not a readable state dict (.pth or .safetensors): "
                           f"{type(exc).__name__} {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    cfg = backbone.pretrained_cfg
    classifiers = cfg.get("classifier") or ()
    classifier_prefixes = tuple(f"{c}." for c in ((classifiers,) if isinstance(classifiers, str) else classifiers))
    state = {key: value for key, value in state.items() if not key.startswith(classifier_prefixes)}
    first_convs = cfg.get("first_conv") or ()
    pretrained_chans = (cfg.get("input_size") or (3,))[0]
    own = backbone.state_dict()
    for conv in (first_convs,) if isinstance(first_convs, str) else first_convs:
        key = f"{conv}.weight"
        if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(in_chans, state[key], base_chans=pretrained_chans)
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise EarmarkError(f"{field} does not fit timm '{cfg.get('architecture')}': {detail[:300]}") from None
    if missing or unexpected:
        raise EarmarkError(
            f"{field} does not match timm '{cfg.get('architecture')}': {len(missing)} missing key(s) "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])}); "
            f"save the state dict of the same timm model")
    return len(state)


def timm_backbone(n_classes: int, input_shape: tuple[int, ...], variant: str, pretrained: bool = False,
                  pretrained_path: Optional[str] = None, channel_mode: ChannelMode = "adapt",
                  min_size: Optional[int] = None, drop_rate: float = 0.0) -> TimmBackbone:
    """Build timm model `variant` (a timm name, optionally with a weight tag: 'resnet18.tv_in1k').

    pretrained_path wins over pretrained; either way the weights must load, or an EarmarkError says why.
    """
    import timm

    in_channels = input_shape[0]
    if not isinstance(pretrained, bool):
        raise EarmarkError(f"model.params.pretrained must be true or false; got {pretrained!r}")
    if channel_mode not in CHANNEL_MODES:
        raise EarmarkError(f"model.params.channel_mode must be one of {', '.join(CHANNEL_MODES)}; "
                           f"got {channel_mode!r}")
    if channel_mode == "repeat" and in_channels > 3:
        raise EarmarkError(f"model.params.channel_mode=repeat tiles inputs to 3 channels; these have {in_channels}")
    if min_size is not None and (not isinstance(min_size, int) or min_size < 1):
        raise EarmarkError(f"model.params.min_size must be a positive integer or null; got {min_size!r}")
    if not 0 <= drop_rate < 1:
        raise EarmarkError(f"model.params.drop_rate must be in [0, 1); got {drop_rate}")
    _check_timm_name(variant)
    in_chans = in_channels if channel_mode == "adapt" else 3
    create = functools.partial(timm.create_model, variant, num_classes=0, in_chans=in_chans)
    path = local_weights(pretrained_path, field="model.params.pretrained_path")
    report = None
    if path is not None:
        backbone = create(pretrained=False)
        report = f"loaded {load_state_dict_file(backbone, path, in_chans)} tensors from {path}"
    elif pretrained:
        _check_hub_weights_exist(variant)
        backbone = load_pretrained(lambda: create(pretrained=True), model=variant, source=PRETRAINED_SOURCE,
                                   how_to_supply=HOW_TO_SUPPLY.format(timm_name=variant))
        report = f"loaded {backbone.pretrained_cfg.get('hf_hub_id') or variant} ImageNet weights via timm"
    else:
        backbone = create(pretrained=False)
    if min_size is None:
        min_size = MIN_SIZE.get(variant.split(".")[0], DEFAULT_MIN_SIZE)
    model = TimmBackbone(backbone, n_classes, repeat_to_rgb=channel_mode == "repeat", min_size=min_size,
                         dropout=drop_rate)
    model.weights_report_ = report
    return model


for _name, _timm_name, _hub_id, _description in BACKBONES:
    register_model(_name, input_kind="spectrogram", description=_description,
                   pretrained=f"{PRETRAINED_SOURCE}: {_hub_id}, or model.params.pretrained_path")(
        functools.partial(timm_backbone, variant=_timm_name))

MODELS.register_family(
    "timm:", input_kind="spectrogram", description="any timm model by name, e.g. timm:convnext_tiny",
    pretrained=f"{PRETRAINED_SOURCE} where timm has weights (timm.list_models(pretrained=True)), "
               f"or model.params.pretrained_path")(timm_backbone)
