"""Pretrained backbones from the hub or local files, through the same embedding path as `aisfx`.

- `hf_audio` (16 kHz): a transformers audio encoder from a hub id or a local `save_pretrained` folder —
  wav2vec2, HuBERT, WavLM, data2vec-audio (raw waveform in), Whisper's encoder or the Audio Spectrogram
  Transformer (AST; their log-mel/fbank computed in torch, `hub_frontends`). Hidden states are pooled by mean
  and max over the frames that cover the clip; AST's pooled token ++ the mean of its patch tokens.
- `clap_audio` (48 kHz): CLAP's audio tower (HTSAT) from a hub id or local folder, its pooled output on CLAP's
  dB mel of the clip repeated to 10 s.
- `panns_cnn14` (32 kHz): PANNs' CNN14 from a local AudioSet checkpoint (`checkpoint_path`), its 2,048-d
  embedding on PANNs' log-mel (64 mels, window 1024, hop 320, 50–14,000 Hz).

Offline without the files, building either is one EarmarkError saying how to supply them. A trained
run's checkpoint rebuilds the architecture from its saved config (`hf_config`) with no download.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from earmark.errors import EarmarkError
from earmark.files import sha256_of
from earmark.models.embedding import EmbeddingClassifier
from earmark.models.hub_frontends import WHISPER_HOP, AstFbank, ClapLogMel, WhisperLogMel
from earmark.models.registry import register_model

RAW_WAVEFORM_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")
DEFAULT_HF_ID, DEFAULT_CLAP_ID = "facebook/wav2vec2-base", "laion/clap-htsat-unfused"


def pool_frames(hidden: torch.Tensor, n_frames: Optional[int] = None) -> torch.Tensor:
    """(B, T, H) → (B, 2H): mean ++ max over the first `n_frames` frames (all when None)."""
    if n_frames is not None:
        hidden = hidden[:, :n_frames]
    return torch.cat([hidden.mean(dim=1), hidden.amax(dim=1)], dim=1)


class RawWaveformEmbedder(nn.Module):
    """(B, samples) at 16 kHz → (B, 2H): each clip standardised (as the feature extractors do), then the encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True) + 1e-7)
        return pool_frames(self.encoder(wave).last_hidden_state)


class WhisperEmbedder(nn.Module):
    """(B, samples) at 16 kHz → (B, 2H): Whisper's encoder, pooled over the positions that cover the clip."""

    def __init__(self, encoder: nn.Module, n_mels: int) -> None:
        super().__init__()
        self.log_mel = WhisperLogMel(n_mels)
        self.encoder = encoder

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(self.log_mel(wave)).last_hidden_state  # (B, 1500, H): one position per 20 ms
        return pool_frames(hidden, max(1, math.ceil(wave.shape[1] / (2 * WHISPER_HOP))))


def _weights_digest(source: str, is_local: bool) -> str:
    """A short hash naming these weights in the embedding cache: the local weight files' bytes, or the hub id."""
    files = sorted(Path(source).glob("*.safetensors")) + sorted(Path(source).glob("*.bin")) if is_local else []
    return hashlib.sha256("\n".join([source, *map(sha256_of, files)]).encode()).hexdigest()[:12]


def load_hf_encoder(model_name_or_path: str, hf_config: Optional[dict], entry: str = "hf_audio",
                    default_id: str = DEFAULT_HF_ID):
    """(encoder module, its config, digest, source) from a hub id or a local folder; from `hf_config` alone (no
    weights: a trained run's checkpoint brings them; source None) when given."""
    from transformers import AutoConfig, AutoModel

    from earmark.models.transformer import hf_pretrained, hf_source

    if hf_config is not None:
        config = AutoConfig.for_model(**hf_config)
        return AutoModel.from_config(config), config, "from-checkpoint", None
    source, is_local = hf_source(model_name_or_path, "model.params.model_name_or_path")
    model = hf_pretrained(lambda: AutoModel.from_pretrained(source, dtype=torch.float32), model=entry,
                          hub_id=default_id if is_local else source, model_class="AutoModel",
                          field="model.params.model_name_or_path", local_folder=source if is_local else None)
    return model, model.config, _weights_digest(source, is_local), source


def load_feature_extractor(config, source: Optional[str], saved: Optional[dict]):
    """The transformers feature extractor whose settings (and filter banks) our torch front-end copies: a run's
    saved settings, else the model's own (folder or hub cache), else the defaults for its config."""
    import transformers

    if config.model_type == "clap":
        extractor_class = transformers.ClapFeatureExtractor
        defaults = {"feature_size": config.audio_config.num_mel_bins,
                    "truncation": "fusion" if config.audio_config.enable_fusion else "rand_trunc"}
    else:
        extractor_class = transformers.ASTFeatureExtractor
        defaults = {"num_mel_bins": config.num_mel_bins, "max_length": config.max_length}
    with warnings.catch_warnings():  # AST's own 128 Kaldi mels leave one empty filter; transformers says so each time
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        return _build_extractor(extractor_class, defaults, source, saved)


def _build_extractor(extractor_class, defaults: dict, source: Optional[str], saved: Optional[dict]):
    if saved is not None:
        return extractor_class(**{key: value for key, value in saved.items() if key != "feature_extractor_type"})
    if source is not None:
        try:
            return extractor_class.from_pretrained(source)
        except OSError:  # a folder or cache holding the model's weights only
            pass
    return extractor_class(**defaults)


def extractor_settings(extractor) -> dict:
    """The extractor's settings a checkpoint keeps to rebuild it offline (plain values only)."""
    plain = (str, int, float, bool, type(None))
    return {key: value for key, value in extractor.to_dict().items()
            if isinstance(value, plain) or (isinstance(value, list) and all(isinstance(v, plain) for v in value))}


class AstEmbedder(nn.Module):
    """(B, samples) at 16 kHz → (B, 2H): AST's pooled (CLS + distillation) token ++ the mean of its patch tokens."""

    def __init__(self, encoder: nn.Module, extractor) -> None:
        super().__init__()
        self.fbank = AstFbank(extractor)
        self.encoder = encoder

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        output = self.encoder(self.fbank(wave))
        return torch.cat([output.pooler_output, output.last_hidden_state[:, 2:].mean(dim=1)], dim=1)


class ClapEmbedder(nn.Module):
    """(B, samples) at 48 kHz → (B, D): CLAP's audio tower, its pooled output (before the text-aligned projection).
    `is_longer` is False for every clip: `ClapLogMel` never draws fusion crops."""

    def __init__(self, audio_model: nn.Module, extractor) -> None:
        super().__init__()
        self.log_mel = ClapLogMel(extractor)
        self.encoder = audio_model

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        features = self.log_mel(wave)
        is_longer = torch.zeros(features.shape[0], 1, dtype=torch.bool, device=features.device)
        return self.encoder(input_features=features, is_longer=is_longer).pooler_output


class RebuildableEmbeddingClassifier(EmbeddingClassifier):
    """An `EmbeddingClassifier` whose checkpoint rebuilds the backbone offline: `offline_updates` replace the
    params that point at files (the weights then come from the checkpoint)."""

    def __init__(self, *args, offline_updates: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.offline_updates = offline_updates

    def offline_params(self, params: dict) -> dict:
        return {**params, **self.offline_updates}


@register_model("hf_audio", input_kind="waveform", sample_rate_hz=16_000,
                description="a transformers audio encoder (wav2vec2, HuBERT, WavLM, Whisper's encoder, AST) as an "
                            "embedder + linear/MLP head; probe or fine-tune",
                pretrained="Hugging Face hub id or local folder in model.params.model_name_or_path")
def hf_audio(n_classes: int, input_shape: tuple[int, ...], model_name_or_path: str = DEFAULT_HF_ID,
             head: str = "linear", hidden: int = 256, dropout: float = 0.2, freeze: bool = True,
             hf_config: Optional[dict] = None, feature_extractor: Optional[dict] = None,
             ) -> RebuildableEmbeddingClassifier:
    model, config, digest, source = load_hf_encoder(model_name_or_path, hf_config)
    offline_updates = {"hf_config": config.to_dict()}
    if config.model_type == "whisper":
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        embedder, dim = WhisperEmbedder(encoder, config.num_mel_bins), 2 * config.d_model
    elif config.model_type in RAW_WAVEFORM_TYPES:
        embedder, dim = RawWaveformEmbedder(model), 2 * config.hidden_size
    elif config.model_type == "audio-spectrogram-transformer":
        extractor = load_feature_extractor(config, source, feature_extractor)
        embedder, dim = AstEmbedder(model, extractor), 2 * config.hidden_size
        offline_updates["feature_extractor"] = extractor_settings(extractor)
    else:
        hint = "; CLAP is model.name=clap_audio (48 kHz)" if config.model_type == "clap" else ""
        raise EarmarkError(f"model.params.model_name_or_path is a '{config.model_type}' model; hf_audio takes "
                           f"{', '.join(RAW_WAVEFORM_TYPES)}, whisper or audio-spectrogram-transformer{hint}")
    return RebuildableEmbeddingClassifier(embedder, dim, n_classes, f"hf-{config.model_type}-{digest}", head=head,
                                          hidden=hidden, dropout=dropout, freeze=freeze,
                                          offline_updates=offline_updates)


@register_model("clap_audio", input_kind="waveform", sample_rate_hz=48_000,
                description="CLAP's audio tower (HTSAT, transformers) as an embedder + linear/MLP head; probe or "
                            "fine-tune",
                pretrained="Hugging Face hub id or local folder in model.params.model_name_or_path")
def clap_audio(n_classes: int, input_shape: tuple[int, ...], model_name_or_path: str = DEFAULT_CLAP_ID,
               head: str = "linear", hidden: int = 256, dropout: float = 0.2, freeze: bool = True,
               hf_config: Optional[dict] = None, feature_extractor: Optional[dict] = None,
               ) -> RebuildableEmbeddingClassifier:
    model, config, digest, source = load_hf_encoder(model_name_or_path, hf_config, "clap_audio", DEFAULT_CLAP_ID)
    if config.model_type != "clap":
        raise EarmarkError(f"model.params.model_name_or_path is a '{config.model_type}' model; clap_audio takes a "
                           f"CLAP model (e.g. {DEFAULT_CLAP_ID}); other encoders are model.name=hf_audio")
    extractor = load_feature_extractor(config, source, feature_extractor)
    audio_model = model.audio_model
    return RebuildableEmbeddingClassifier(ClapEmbedder(audio_model, extractor), audio_model.audio_encoder.num_features,
                                          n_classes, f"clap-{digest}", head=head, hidden=hidden, dropout=dropout,
                                          freeze=freeze, offline_updates={"hf_config": config.to_dict(),
                                                                          "feature_extractor":
                                                                              extractor_settings(extractor)})


class PannsEmbedder(nn.Module):
    """(B, samples) at 32 kHz → (B, 2048): PANNs' log-mel, then CNN14's embedding."""

    def __init__(self, cnn14: nn.Module) -> None:
        super().__init__()
        from earmark.config import FeaturesConfig
        from earmark.features import build_frontend

        settings = FeaturesConfig(kind="log_mel", n_fft=1024, win_ms=32.0, hop_ms=10.0, n_mels=64, f_min_hz=50.0,
                                  f_max_hz=14_000.0, top_db=None, normalize=False)
        self.frontend = build_frontend(settings, 32_000)
        self.cnn14 = cnn14

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.cnn14.forward_features(self.frontend(wave))  # (B, 1, 64, frames) → (B, 2048)


@register_model("panns_cnn14", input_kind="waveform", sample_rate_hz=32_000,
                description="PANNs CNN14 (AudioSet) as an embedder + linear/MLP head; needs the checkpoint file",
                pretrained="local PANNs checkpoint in model.params.checkpoint_path (Cnn14_mAP=0.431.pth)")
def panns_cnn14(n_classes: int, input_shape: tuple[int, ...], checkpoint_path: Optional[str] = None,
                head: str = "linear", hidden: int = 256, dropout: float = 0.2, freeze: bool = True,
                trust_checkpoint: bool = False, width_div: int = 1,
                architecture_only: bool = False) -> RebuildableEmbeddingClassifier:
    """`width_div` > 1: a narrower, untrained CNN14 (tests); `architecture_only`: no weights (a checkpoint brings them)."""
    from earmark.models.cnn14 import Cnn14, load_panns_checkpoint

    cnn14 = Cnn14(n_classes=527, width_div=width_div)
    digest = "untrained"
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise EarmarkError(f"model.params.checkpoint_path={path} does not exist; download Cnn14_mAP=0.431.pth "
                               f"(zenodo.org/record/3987831) on a machine with internet and copy it here")
        load_panns_checkpoint(cnn14, path, trust=trust_checkpoint)
        digest = sha256_of(path)[:12]
    elif width_div == 1 and not architecture_only:
        raise EarmarkError("panns_cnn14 needs model.params.checkpoint_path=<Cnn14_mAP=0.431.pth> (PANNs' AudioSet "
                           "weights, zenodo.org/record/3987831); nothing is downloaded")
    return RebuildableEmbeddingClassifier(PannsEmbedder(cnn14), 2048 // width_div, n_classes, f"panns-cnn14-{digest}",
                                          head=head, hidden=hidden, dropout=dropout, freeze=freeze,
                                          offline_updates={"checkpoint_path": None, "architecture_only": True})
