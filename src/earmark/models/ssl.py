"""Self-supervised / pretrained audio transformers from Hugging Face: wav2vec2 (waveform) and AST (log-mel).

wav2vec2 was pretrained on 16 kHz speech: with pretrained weights set data.sample_rate_hz=16000 (the
model cannot tell the rate from a clip's length, so this is the user's job). The pretrained AST took
128-bin Kaldi fbanks at a 10 ms hop, at most 1024 frames: set features.n_mels=128, features.hop_ms=10,
and data.duration_s <= 10.24; shorter clips use the first columns of its time position table.

Both take (B, C, ...) with C = 1, or 2 when features.stack_augmented stacks clean + augmented views;
the encoders are single-channel, so the channels are averaged. Their own in-model SpecAugment and
LayerDrop are off: earmark augments in `augment.*`, and these draw from global RNGs a resumed run
would not restore (and LayerDrop leaves parameters unused, which DDP rejects).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.models.base import PooledClassifier
from earmark.models.registry import register_model
from earmark.models.transformer import HF_SOURCE, check_choice, hf_pretrained, hf_source

WAV2VEC2_HUB_ID = "facebook/wav2vec2-base"
AST_HUB_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
WAV2VEC2_POOLINGS = ("mean", "attention")
POS_CONV_GROUPS = 16  # wav2vec2's convolutional position embedding: hidden_size must divide into these groups
NORMALIZE_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon


class AttentiveStatsPool(nn.Module):
    """(B, T, D) → (B, 2D): attention-weighted mean and standard deviation over time (Okabe et al., 2018)."""

    def __init__(self, dim: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, bottleneck), nn.Tanh(), nn.Linear(bottleneck, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()  # the variance is a difference of squares: keep it out of half precision
        weights = torch.softmax(self.attention(hidden), dim=1)  # (B, T, 1)
        mean = (weights * hidden).sum(dim=1)  # (B, D)
        variance = (weights * hidden * hidden).sum(dim=1) - mean * mean
        return torch.cat([mean, variance.clamp(min=1e-6).sqrt()], dim=1)  # (B, 2D)


class Wav2Vec2Classifier(PooledClassifier):
    """Input (B, C, samples) → logits (B, n_classes); `self.wav2vec2` is a transformers Wav2Vec2Model."""

    def __init__(self, n_classes: int, wav2vec2: nn.Module, pooling: str = "mean", dropout: float = 0.1,
                 normalize_input: bool = True) -> None:
        super().__init__()
        self.wav2vec2 = wav2vec2
        hidden_size = wav2vec2.config.hidden_size
        self.pool = AttentiveStatsPool(hidden_size) if pooling == "attention" else None
        self.normalize_input = normalize_input
        self.num_features = hidden_size * (2 if pooling == "attention" else 1)
        self._init_head(n_classes, dropout)

    def offline_params(self, params: dict) -> dict:
        """Params that rebuild this architecture with nothing fetched (weights come from the checkpoint)."""
        return {**params, "pretrained": False, "hf_config": self.wav2vec2.config.to_dict()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, samples) → (B, num_features)."""
        wave = x.mean(dim=1)  # (B, samples)
        if self.normalize_input:
            wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True) + NORMALIZE_EPS)
        hidden = self.wav2vec2(wave).last_hidden_state  # (B, frames, hidden_size)
        return hidden.mean(dim=1) if self.pool is None else self.pool(hidden)

    def set_trainable(self, freeze_feature_encoder: bool, trainable_layers: Optional[int]) -> None:
        """Which wav2vec2 parameters learn: the conv feature encoder, and all / none / the last N layers."""
        encoder = self.wav2vec2
        if trainable_layers is not None:
            encoder.requires_grad_(False)
            layers = encoder.encoder.layers
            for layer in layers[len(layers) - trainable_layers:]:
                layer.requires_grad_(True)
            if trainable_layers and encoder.config.do_stable_layer_norm:  # its final norm sits above the layers
                encoder.encoder.layer_norm.requires_grad_(True)
        if freeze_feature_encoder or trainable_layers is not None:
            encoder.freeze_feature_encoder()  # also stops it from tracking gradients for its input
        if getattr(encoder, "masked_spec_embed", None) is not None:
            encoder.masked_spec_embed.requires_grad_(False)  # only used by the in-model SpecAugment (off)


def conv_frames(n_samples: int, kernels: list[int], strides: list[int]) -> int:
    """Frames out of wav2vec2's conv feature encoder (no padding) for `n_samples` input samples."""
    for kernel, stride in zip(kernels, strides):
        n_samples = (n_samples - kernel) // stride + 1
    return n_samples


def build_wav2vec2(pretrained: bool, model_name_or_path: str, hidden_size: int, num_layers: int, num_heads: int,
                   intermediate_size: int, conv_dim: Optional[list[int]], conv_kernel: Optional[list[int]],
                   conv_stride: Optional[list[int]], hf_config: Optional[dict] = None) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if hf_config is not None:  # a trained model's architecture, from its checkpoint: nothing fetched
        return Wav2Vec2Model(Wav2Vec2Config.from_dict(hf_config))
    quiet = dict(layerdrop=0.0, apply_spec_augment=False)
    if pretrained:
        source, is_local = hf_source(model_name_or_path, "model.params.model_name_or_path")
        return hf_pretrained(lambda: Wav2Vec2Model.from_pretrained(source, dtype=torch.float32, **quiet),
                             model="wav2vec2", hub_id=WAV2VEC2_HUB_ID if is_local else source,
                             model_class="Wav2Vec2Model", field="model.params.model_name_or_path",
                             local_folder=source if is_local else None)
    if hidden_size % num_heads or hidden_size % POS_CONV_GROUPS:
        raise EarmarkError(f"model.params.hidden_size ({hidden_size}) must be a multiple of model.params.num_heads "
                           f"({num_heads}) and of {POS_CONV_GROUPS}")
    conv = {name: list(value) for name, value in
            (("conv_dim", conv_dim), ("conv_kernel", conv_kernel), ("conv_stride", conv_stride)) if value is not None}
    if len({len(value) for value in conv.values()}) > 1 or (conv and len(conv) < 3):
        raise EarmarkError(f"model.params.conv_dim, conv_kernel and conv_stride must be given together, as lists of "
                           f"the same length (one entry per conv layer); got {conv}")
    config = Wav2Vec2Config(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                            intermediate_size=intermediate_size, mask_time_prob=0.0, **conv, **quiet)
    return Wav2Vec2Model(config)


@register_model("wav2vec2", input_kind="waveform", pretrained=f"{HF_SOURCE}: {WAV2VEC2_HUB_ID} (or a local folder "
                "in model.params.model_name_or_path)",
                description="wav2vec2 encoder on the raw 16 kHz waveform, mean or attentive-statistics pooling")
def wav2vec2(n_classes: int, input_shape: tuple[int, ...], model_name_or_path: str = WAV2VEC2_HUB_ID,
             pretrained: bool = False, hidden_size: int = 256, num_layers: int = 4, num_heads: int = 4,
             intermediate_size: int = 1024, conv_dim: Optional[list[int]] = None,
             conv_kernel: Optional[list[int]] = None, conv_stride: Optional[list[int]] = None,
             freeze_feature_encoder: bool = True, trainable_layers: Optional[int] = None,
             pooling: Literal["mean", "attention"] = "mean", dropout: float = 0.1,
             normalize_input: bool = True, hf_config: Optional[dict] = None) -> Wav2Vec2Classifier:
    check_choice("model.params.pooling", pooling, WAV2VEC2_POOLINGS)
    if trainable_layers is not None and not freeze_feature_encoder:
        raise EarmarkError("model.params.trainable_layers trains only the top layers, so the feature encoder stays "
                           "frozen; drop freeze_feature_encoder=false, or set trainable_layers=null to train all")
    encoder = build_wav2vec2(pretrained, model_name_or_path, hidden_size, num_layers, num_heads, intermediate_size,
                             conv_dim, conv_kernel, conv_stride, hf_config)
    config = encoder.config
    n_layers = len(encoder.encoder.layers)
    if trainable_layers is not None and not 0 <= trainable_layers <= n_layers:
        raise EarmarkError(f"model.params.trainable_layers must be between 0 and {n_layers} (the encoder's layers) "
                           f"or null for all; got {trainable_layers}")
    if conv_frames(input_shape[-1], list(config.conv_kernel), list(config.conv_stride)) < 1:
        raise EarmarkError(f"clips of {input_shape[-1]} samples are shorter than wav2vec2's conv receptive field; "
                           f"raise data.duration_s")
    model = Wav2Vec2Classifier(n_classes, encoder, pooling=pooling, dropout=dropout, normalize_input=normalize_input)
    model.set_trainable(freeze_feature_encoder, trainable_layers)
    return model


class ASTClassifier(PooledClassifier):
    """Input (B, C, n_mels, frames) → logits (B, n_classes); `self.ast` is a transformers ASTModel."""

    def __init__(self, n_classes: int, encoder: nn.Module, dropout: float = 0.1) -> None:
        super().__init__()
        self.ast = encoder
        self.num_features = encoder.config.hidden_size
        self._init_head(n_classes, dropout)

    def offline_params(self, params: dict) -> dict:
        """Params that rebuild this architecture with nothing fetched (weights come from the checkpoint)."""
        return {**params, "pretrained": False, "hf_config": self.ast.config.to_dict()}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_mels, frames) → (B, hidden_size): the mean of AST's CLS and distillation tokens."""
        spectrogram = x.mean(dim=1).transpose(1, 2)  # (B, frames, n_mels), as ASTModel expects
        return self.ast(input_values=spectrogram).pooler_output


def keep_first_time_positions(encoder: nn.Module, frames: int) -> None:
    """Shrink a pretrained AST to `frames` input frames: keep the first columns of its (freq, time) patch
    position grid (as the AST paper does for shorter clips) and record the new max_length."""
    embeddings = encoder.embeddings
    n_freq, n_time = embeddings.get_shape(encoder.config)
    encoder.config.max_length = frames
    _, new_time = embeddings.get_shape(encoder.config)
    table = embeddings.position_embeddings.data  # (1, 2 + n_freq * n_time, hidden): CLS, distillation, patches
    grid = table[:, 2:].reshape(1, n_freq, n_time, -1)[:, :, :new_time]  # patches flatten frequency-major
    embeddings.position_embeddings = nn.Parameter(torch.cat([table[:, :2], grid.flatten(1, 2)], dim=1))


def build_ast(pretrained: bool, model_name_or_path: str, n_mels: int, frames: int, hidden_size: int,
              num_layers: int, num_heads: int, hf_config: Optional[dict] = None) -> nn.Module:
    from transformers import ASTConfig, ASTModel

    if hf_config is not None:  # a trained model's architecture, from its checkpoint: nothing fetched
        return ASTModel(ASTConfig.from_dict(hf_config))

    if not pretrained:
        if hidden_size % num_heads:
            raise EarmarkError(f"model.params.hidden_size ({hidden_size}) must be a multiple of "
                               f"model.params.num_heads ({num_heads})")
        config = ASTConfig(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                           intermediate_size=4 * hidden_size, num_mel_bins=n_mels, max_length=frames)
        check_ast_input(config, n_mels, frames, "")
        return ASTModel(config)
    source, is_local = hf_source(model_name_or_path, "model.params.model_name_or_path")

    def fetch() -> nn.Module:
        config = ASTConfig.from_pretrained(source)
        check_ast_input(config, n_mels, frames, f"the pretrained AST '{source}' ")  # before loading the weights
        return ASTModel.from_pretrained(source, config=config, dtype=torch.float32)

    encoder = hf_pretrained(fetch, model="ast", hub_id=AST_HUB_ID if is_local else source, model_class="ASTModel",
                            field="model.params.model_name_or_path", local_folder=source if is_local else None)
    if frames < encoder.config.max_length:
        keep_first_time_positions(encoder, frames)
    return encoder


def check_ast_input(config, n_mels: int, frames: int, which: str) -> None:
    patch = config.patch_size
    if which and n_mels != config.num_mel_bins:
        raise EarmarkError(f"{which}takes {config.num_mel_bins} mel bins but the input has {n_mels}; set "
                           f"features.n_mels={config.num_mel_bins} (with features.kind=log_mel)")
    if which and frames > config.max_length:
        raise EarmarkError(f"clips give {frames} frames but {which}takes at most {config.max_length}; lower "
                           f"data.duration_s (the pretrained AST expects features.hop_ms=10)")
    if n_mels < patch or frames < patch:
        raise EarmarkError(f"AST cuts {patch}x{patch} patches but the input is {n_mels} bins x {frames} frames; "
                           f"raise features.n_mels and data.duration_s to at least {patch} bins and frames")


@register_model("ast", input_kind="spectrogram", pretrained=f"{HF_SOURCE}: {AST_HUB_ID} (or a local folder in "
                "model.params.model_name_or_path)",
                description="Audio Spectrogram Transformer on the log-mel (pretrained: 128 mels, <= 1024 frames)")
def audio_spectrogram_transformer(n_classes: int, input_shape: tuple[int, ...], model_name_or_path: str = AST_HUB_ID,
                                  pretrained: bool = False, hidden_size: int = 192, num_layers: int = 4,
                                  num_heads: int = 4, dropout: float = 0.1,
                                  hf_config: Optional[dict] = None) -> ASTClassifier:
    _, n_mels, frames = input_shape
    encoder = build_ast(pretrained, model_name_or_path, n_mels, frames, hidden_size, num_layers, num_heads, hf_config)
    return ASTClassifier(n_classes, encoder, dropout=dropout)
