"""cnn_gpt2: a small CNN over the log-mel, GPT-2 over its time frames, pooling over time, a linear head.

The CNN pools frequency away and keeps every frame, so GPT-2 reads one token per spectrogram frame
(fed as `inputs_embeds`; its word embeddings are never used and are shrunk to one frozen row).
GPT-2's position table bounds the clip: frames <= n_positions (1024 for the hub's `gpt2`).

Gradual unfreezing (`unfreeze_epochs`, ULMFiT's recipe): GPT-2's blocks are split into one group per
listed epoch, top blocks first; a group trains from its epoch on. The Trainer calls `set_epoch` at each
epoch start, after the optimizer was built with every parameter, so groups unfrozen later are in it.
Pair it with a smaller learning rate for GPT-2: `train.param_groups=[{prefix: model.gpt2, lr: 2e-5}]`.

This file also holds the Hugging Face loading helpers `ssl.py` shares (`hf_pretrained`, `hf_source`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model
from earmark.models.weights import load_pretrained, local_weights

HF_SOURCE = "Hugging Face hub"
FREQUENCY_BLOCKS = 3  # each halves the mel axis; the time axis is never pooled
POOLINGS = ("mean", "last")


def hf_source(name_or_path: str, field: str) -> tuple[str, bool]:
    """(source, is_local): a hub id as given, or a local folder checked to exist ('/x', './x', '~/x', or
    any path that exists)."""
    if name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).expanduser().exists():
        return str(local_weights(name_or_path, field=field)), True
    return name_or_path, False


def hf_how_to_supply(hub_id: str, model_class: str, field: str) -> str:
    return (f"Supply the weights offline in one of two ways: (1) fill the Hugging Face cache on a machine with "
            f"internet (`hf download {hub_id}`) and copy it here (HF_HOME, default ~/.cache/huggingface), or "
            f"(2) on that machine save them with `transformers.{model_class}.from_pretrained('{hub_id}')"
            f".save_pretrained(DIR)`, copy DIR here and set {field}=DIR.")


def hf_pretrained(fetch: Callable[[], nn.Module], *, model: str, hub_id: str, model_class: str, field: str,
                  local_folder: Optional[str] = None) -> nn.Module:
    """Run a transformers `from_pretrained` call; any failure becomes one EarmarkError saying how to supply."""
    source = f"the local folder {local_folder}" if local_folder else f"{HF_SOURCE} ({hub_id})"
    loaded = load_pretrained(fetch, model=model, source=source,
                             how_to_supply=hf_how_to_supply(hub_id, model_class, field))
    return loaded.train()  # from_pretrained returns eval mode; a new earmark model trains (dropout on)


def frequency_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, then 2x1 max pooling: halves the mel axis, keeps every frame."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d((2, 1), ceil_mode=True),
    )


class CnnGPT2(PooledClassifier):
    """Input (B, C, n_bins, frames) → logits (B, n_classes); `self.gpt2` is a transformers GPT2Model."""

    def __init__(self, n_classes: int, in_channels: int, n_bins: int, gpt2: nn.Module, cnn_channels: int = 64,
                 pooling: str = "mean", dropout: float = 0.1, unfreeze_epochs: Optional[list[int]] = None) -> None:
        super().__init__()
        widths = [in_channels, max(1, cnn_channels // 2)] + [cnn_channels] * (FREQUENCY_BLOCKS - 1)
        self.cnn = nn.Sequential(*(frequency_block(a, b) for a, b in zip(widths, widths[1:])))
        reduced_bins = n_bins
        for _ in range(FREQUENCY_BLOCKS):
            reduced_bins = -(-reduced_bins // 2)  # ceil_mode pooling
        self.gpt2 = gpt2
        self.project = nn.Linear(cnn_channels * reduced_bins, gpt2.config.n_embd)
        self.pooling = pooling
        self.unfreeze_epochs = list(unfreeze_epochs) if unfreeze_epochs is not None else None
        self.num_features = gpt2.config.n_embd
        self._init_head(n_classes, dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_bins, frames) → (B, n_embd)."""
        x = self.cnn(x)  # (B, cnn_channels, n_bins / 8, frames)
        tokens = x.flatten(1, 2).transpose(1, 2)  # (B, frames, cnn_channels * n_bins / 8)
        hidden = self.gpt2(inputs_embeds=self.project(tokens), use_cache=False).last_hidden_state  # (B, frames, n_embd)
        return hidden.mean(dim=1) if self.pooling == "mean" else hidden[:, -1]  # causal: the last frame saw all

    def unfreeze_groups(self) -> list[list[nn.Module]]:
        """One list of modules per `unfreeze_epochs` entry: top blocks (with the final norm) first,
        the bottom blocks (with the position table) last."""
        blocks = list(self.gpt2.h)[::-1]
        n_groups = len(self.unfreeze_epochs or ())
        sizes = [len(blocks) // n_groups + (i < len(blocks) % n_groups) for i in range(n_groups)]
        starts = [sum(sizes[:i]) for i in range(n_groups)]
        groups: list[list[nn.Module]] = [blocks[s:s + n] for s, n in zip(starts, sizes)]
        groups[0].append(self.gpt2.ln_f)
        groups[-1].append(self.gpt2.wpe)
        return groups

    def offline_params(self, params: dict) -> dict:
        """Params that rebuild this architecture with no download or local folder (weights come from the checkpoint)."""
        config = {**self.gpt2.config.to_dict(), "vocab_size": 1}  # the word table is never read
        return {**params, "pretrained": False, "gpt2_path": None, "hf_config": config}

    def set_epoch(self, epoch: int) -> None:
        """Apply the unfreezing schedule for `epoch`: a pure function of the epoch, so calling it twice,
        or first with a later epoch (a resumed run), gives the same state."""
        if self.unfreeze_epochs is None:
            return
        for start, modules in zip(self.unfreeze_epochs, self.unfreeze_groups()):
            for module in modules:
                module.requires_grad_(epoch >= start)


def check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EarmarkError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")


def build_gpt2(pretrained: bool, gpt2_name: str, gpt2_path: Optional[str], n_layer: int, n_head: int,
               n_embd: int, frames: int, hf_config: Optional[dict] = None) -> nn.Module:
    """GPT2Model from the hub / a local folder, or a small one from scratch sized for `frames` tokens.

    `hf_config` (saved in checkpoints) rebuilds a trained model's architecture without fetching weights.
    """
    from transformers import GPT2Config, GPT2Model

    if hf_config is not None:
        gpt2 = GPT2Model(GPT2Config.from_dict(hf_config))
        gpt2.wte.requires_grad_(False)
        return gpt2

    if gpt2_path is not None and not pretrained:
        raise EarmarkError("model.params.gpt2_path is set but model.params.pretrained is false; set "
                           "pretrained=true to load it, or drop gpt2_path to train GPT-2 from scratch")
    if pretrained:
        source = str(local_weights(gpt2_path, field="model.params.gpt2_path")) if gpt2_path else gpt2_name

        def fetch() -> nn.Module:
            config = GPT2Config.from_pretrained(source)
            if frames > config.n_positions:  # before loading hundreds of MB of weights
                raise EarmarkError(
                    f"clips give {frames} frames but GPT-2 '{source}' has {config.n_positions} positions; lower "
                    f"data.duration_s or raise features.hop_ms so that frames <= {config.n_positions}")
            return GPT2Model.from_pretrained(source, config=config, dtype=torch.float32)

        gpt2 = hf_pretrained(fetch, model="cnn_gpt2", hub_id=gpt2_name, model_class="GPT2Model",
                             field="model.params.gpt2_path", local_folder=source if gpt2_path else None)
        gpt2.set_input_embeddings(nn.Embedding(1, gpt2.config.n_embd))  # never read: inputs_embeds only
    else:
        if n_embd % n_head:
            raise EarmarkError(f"model.params.n_embd ({n_embd}) must be a multiple of model.params.n_head ({n_head})")
        config = GPT2Config(vocab_size=1, n_positions=frames, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                            bos_token_id=0, eos_token_id=0)
        gpt2 = GPT2Model(config)
    gpt2.wte.requires_grad_(False)
    return gpt2


@register_model("cnn_gpt2", input_kind="spectrogram", pretrained=f"{HF_SOURCE}: gpt2 (or model.params.gpt2_path)",
                description="CNN front-end over the log-mel, GPT-2 over its frames, pooled (gradual unfreezing)")
def cnn_gpt2(n_classes: int, input_shape: tuple[int, ...], pretrained: bool = False, gpt2_name: str = "gpt2",
             gpt2_path: Optional[str] = None, n_layer: int = 4, n_head: int = 4, n_embd: int = 256,
             cnn_channels: int = 64, pooling: Literal["mean", "last"] = "mean", dropout: float = 0.1,
             unfreeze_epochs: Optional[list[int]] = None, hf_config: Optional[dict] = None) -> CnnGPT2:
    in_channels, n_bins, frames = input_shape
    check_choice("model.params.pooling", pooling, POOLINGS)
    gpt2 = build_gpt2(pretrained, gpt2_name, gpt2_path, n_layer, n_head, n_embd, frames, hf_config)
    if unfreeze_epochs is not None:
        epochs = list(unfreeze_epochs)
        if not epochs or any(not isinstance(e, int) or e < 0 for e in epochs) or epochs != sorted(epochs):
            raise EarmarkError(f"model.params.unfreeze_epochs must be a non-empty ascending list of epochs >= 0 "
                               f"(e.g. [5, 10, 15]); got {unfreeze_epochs!r}")
        if len(epochs) > len(gpt2.h):
            raise EarmarkError(f"model.params.unfreeze_epochs lists {len(epochs)} epochs but GPT-2 has "
                               f"{len(gpt2.h)} blocks to unfreeze; give at most {len(gpt2.h)}")
    return CnnGPT2(n_classes, in_channels, n_bins, gpt2, cnn_channels=cnn_channels, pooling=pooling,
                   dropout=dropout, unfreeze_epochs=unfreeze_epochs)
