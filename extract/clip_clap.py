"""The CLIP image tower and the CLAP audio tower: ClipClap-GZSL's feature setting, from `transformers`.

What ClipClap-GZSL extracts (read from its `clip_feature_extraction/get_clip_features_*.py`):
- video: the clip's middle frame (index `frame_count // 2`), CLIP ViT-B/32's preprocessing (short side to 224,
  centre crop 224, CLIP's mean and std), `encode_image`, L2-normalised: one 512-d vector per clip;
- audio: the clip resampled to 32 kHz mono, zero-padded at the end or cut to the centred 10 s, WavCaps' HTSAT
  (`HTSAT_BERT_zero_shot.pt`) `encode_audio`: one 1024-d vector per clip.

Here the image tower is transformers' `CLIPVisionModelWithProjection` (OpenAI's ViT-B/32 weights in HF's
layout: `openai/clip-vit-base-patch32`), run on the frames the views already decode; each view's vector is the
mean of its frames' L2-normalised image embeddings (one frame: exactly ClipClap's vector). The audio tower is
transformers' `ClapAudioModelWithProjection` (LAION's HTSAT, `laion/clap-htsat-unfused`: 48 kHz, 64 mel bins,
10 s), L2-normalised. WavCaps' HTSAT layout is refused with a message: no maintained library loads it, and
its forward is not transformers' CLAP. Neither tower has classifier logits: a store of these has
`kinetics_classes: 0`, one token per view and one audio token, no token grid (`grid` is None).

Weights load strictly (`extract.weights.load_strict`) in one detected format each, from a file or a model
folder (`save_pretrained` / `huggingface-cli download`; without a path, the repository's file in the standard HF
cache): `hf-clip` (a `CLIPModel` or
`CLIPVisionModelWithProjection` state dict: `vision_model.*`, `visual_projection.*`; the text tower's keys are
dropped by name) and `hf-clap` (`ClapModel` or `ClapAudioModelWithProjection`: `audio_model.*`,
`audio_projection.*`). The architecture comes from this module's configs, never from a folder's config.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from torch import nn
from transformers import (
    ClapAudioConfig,
    ClapAudioModelWithProjection,
    ClapFeatureExtractor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from common.errors import InputError
from extract import weights as weight_files
from extract.config import CLAP_ARCHITECTURES, CLIP_ARCHITECTURES, AudioConfig, VideoConfig

__all__ = [
    "CLIP_REPO",
    "CLAP_REPO",
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIPImageBackbone",
    "CLAPAudioBackbone",
    "clip_vision_config",
    "clap_audio_config",
    "clap_features",
    "tower_state",
    "frozen_tower",
    "hf_cache_weights",
    "build_clip_image",
    "build_clap_audio",
]

logger = logging.getLogger(__name__)

CLIP_REPO = "openai/clip-vit-base-patch32"  # where the weights of the clipclap profile are found in the HF cache
CLAP_REPO = "laion/clap-htsat-unfused"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's preprocessing (CLIPImageProcessor's defaults)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CLAP_HOP = 480  # samples per mel frame at 48 kHz (10 ms), ClapFeatureExtractor's
_CLAP_FFT = 1024
# Keys of the other tower in a full CLIPModel / ClapModel file, dropped by name; anything else unknown is an error.
_CLIP_KEEP, _CLIP_DROP = ("vision_model.", "visual_projection."), ("text_model.", "text_projection.", "logit_scale")
_CLAP_KEEP, _CLAP_DROP = ("audio_model.", "audio_projection."), ("text_model.", "text_projection.", "logit_scale")
_WAVCAPS_PREFIX = "audio_encoder.audio_enc."  # WavCaps' ASE checkpoints (HTSAT_BERT_zero_shot.pt)
_OPENAI_PREFIX = "visual."  # OpenAI / open_clip state dicts


def clip_vision_config(config: VideoConfig) -> CLIPVisionConfig:
    """The image tower of `config.architecture`: ViT-B/32 as OpenAI's weights, or a tiny one for CPU tests."""
    if config.architecture == "clip_vit_b32":
        return CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                patch_size=32, image_size=224, projection_dim=512, hidden_act="quick_gelu")
    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            patch_size=16, image_size=config.crop_size_px, projection_dim=16, hidden_act="quick_gelu")


def clap_audio_config(config: AudioConfig) -> ClapAudioConfig:
    """The audio tower of `config.architecture`: LAION's HTSAT (unfused), or a tiny one for CPU tests."""
    if config.architecture == "clap_htsat_unfused":
        return ClapAudioConfig(spec_size=256, num_mel_bins=64, patch_size=4, window_size=8, hidden_size=768,
                               patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], num_attention_heads=[4, 8, 16, 32],
                               projection_dim=512, enable_fusion=False)
    # HTSAT folds time into frequency: spec_size / num_mel_bins folds of spec_size frames must hold the input
    return ClapAudioConfig(spec_size=64, num_mel_bins=config.num_mel_bins, patch_size=4, window_size=4, hidden_size=32,
                           patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], projection_dim=16,
                           enable_fusion=False)


class CLIPImageBackbone(nn.Module):
    """A frozen CLIP image tower over video views: per view, the mean of its frames' unit image embeddings.

    Attributes:
        model: transformers' `CLIPVisionModelWithProjection` (its state dict uses HF's names).
        grid: None (one vector per view, no token grid).
    """

    grid = None

    def __init__(self, model: CLIPVisionModelWithProjection) -> None:
        super().__init__()
        self.model = model

    @property
    def width(self) -> int:
        """D: the projection width (512 for ViT-B/32)."""
        return self.model.config.projection_dim

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per view the mean unit image embedding of its frames, and no logits.

        Shapes:
            video: (B, 3, T, S, S) normalised with CLIP's mean and std. returns (B, 1, D) and (B, 0).
        """
        batch, _, frames, size, _ = video.shape
        images = video.transpose(1, 2).reshape(batch * frames, 3, size, size)  # (B, 3, T, S, S) -> (B*T, 3, S, S)
        embeds = F.normalize(self.model(pixel_values=images).image_embeds.float(), dim=-1)  # (B*T, D)
        return embeds.view(batch, frames, -1).mean(dim=1, keepdim=True), embeds.new_zeros(batch, 0)


class CLAPAudioBackbone(nn.Module):
    """A frozen CLAP audio tower: the unit audio embedding of the clip's window.

    Attributes:
        model: transformers' `ClapAudioModelWithProjection`.
        grid: None (one vector, no token grid).
    """

    grid = None

    def __init__(self, model: ClapAudioModelWithProjection) -> None:
        super().__init__()
        self.model = model

    @property
    def width(self) -> int:
        """D: the projection width (512 for LAION's CLAP)."""
        return self.model.config.projection_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Shapes: features (B, S, F) from `clap_features` -> (B, 1, D)."""
        embeds = self.model(input_features=features.unsqueeze(1)).audio_embeds.float()  # (B, 1, S, F) -> (B, D)
        return F.normalize(embeds, dim=-1).unsqueeze(1)


def clap_features(waveform: torch.Tensor, config: AudioConfig) -> tuple[torch.Tensor, int]:
    """CLAP's log-mel input of a mono window (ClapFeatureExtractor, no random crop: the window already fits).

    Short clips are padded with zeros at the end, as ClipClap pads its audio (CLAP's own default repeats it).

    Returns:
        (features, mel frames that hold audio).

    Shapes:
        waveform: (S,) at `config.sample_rate_hz`, at most `config.window_samples`. features: (target_frames + 1, F).
    """
    extractor = ClapFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=config.sample_rate_hz,
                                     hop_length=_CLAP_HOP, fft_window_size=_CLAP_FFT, truncation="rand_trunc",
                                     padding="pad")
    audio = waveform.numpy().astype(np.float64)
    features = extractor(audio, sampling_rate=config.sample_rate_hz, max_length=config.window_samples,
                         return_tensors="pt").input_features
    valid = min(audio.size // _CLAP_HOP + 1, features.shape[2])
    return features[0, 0].float(), valid  # (1, 1, S, F) -> (S, F)


def tower_state(path: Path, keep: tuple[str, ...], drop: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """One tower's keys of a checkpoint (`keep` prefixes); the other tower's (`drop`) go by name.

    Raises:
        InputError: WavCaps' or OpenAI's layout, no key of the tower, or keys of neither tower.
    """
    state = weight_files.read_state_dict(path)
    if any(k.startswith(_WAVCAPS_PREFIX) for k in state):
        raise InputError(f"{path}: WavCaps' HTSAT layout; no maintained library loads it: use transformers' CLAP "
                         "weights (huggingface-cli download laion/clap-htsat-unfused)")
    if any(k.startswith(_OPENAI_PREFIX) for k in state):
        raise InputError(f"{path}: OpenAI / open_clip CLIP layout; use HF's (huggingface-cli download "
                         "openai/clip-vit-base-patch32)")
    kept = {k: v for k, v in state.items() if k.startswith(keep)}
    stray = sorted(k for k in state if not k.startswith(keep + drop))
    if not kept or stray:
        raise InputError(f"{path}: not {what} weights in HF's layout (keys {'/'.join(keep)}*); "
                         f"{len(stray)} other keys {stray[:4]}")
    return kept


def frozen_tower(model: nn.Module, state: dict[str, torch.Tensor] | None, path: Path | None) -> nn.Module:
    """`model` with `state` loaded strictly (None: as built), in eval mode without gradients."""
    if state is not None:  # files written by transformers 4 hold `position_ids` buffers that 5 no longer keeps
        own = set(model.state_dict())
        weight_files.load_strict(model, {k: v for k, v in state.items() if k in own or not k.endswith("position_ids")},
                                 path)
    return model.eval().requires_grad_(False)


def _provenance(architecture: str, weights: Path | None, weight_format: str, seed: int, model: nn.Module) -> dict:
    random_init = weights is None
    return {
        "architecture": architecture,
        "weights": "random-init" if random_init else str(weights.resolve()),
        "sha256": "random-init" if random_init else weight_files.sha256_file(weight_files.weights_file(weights)),
        "format": "random-init" if random_init else weight_format,
        "seed": seed if random_init else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def hf_cache_weights(repo: str) -> Path | None:
    """The weights file of `repo` in the standard Hugging Face cache, if a download put it there (never downloads)."""
    for name in weight_files.HF_FILES:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def _weights(weights: Path | None, random_init: bool, what: str, repo: str) -> Path | None:
    """The weights to load: the given path, else `repo`'s file in the HF cache; None with `random_init`."""
    if random_init and weights is not None:
        raise InputError(f"both {what} weights ({weights}) and random init were asked for; choose one")
    if random_init:
        return None
    weights = weights if weights is not None else hf_cache_weights(repo)
    if weights is None:
        raise FileNotFoundError(f"no {what} weights given and none in the Hugging Face cache: pass a model folder or "
                                f"its model.safetensors (huggingface-cli download {repo}), or `random_init=True`")
    weight_files.weights_file(Path(weights))  # raises FileNotFoundError before anything is built
    return Path(weights)


def build_clip_image(config: VideoConfig, weights: Path | None, random_init: bool, seed: int
                     ) -> tuple[CLIPImageBackbone, dict]:
    """Build the frozen CLIP image tower of `config` and describe where its weights came from.

    Raises:
        FileNotFoundError: no weights (given or in the HF cache) and not `random_init`.
        InputError: weights in another layout, or that do not fit the architecture.
    """
    if config.architecture not in CLIP_ARCHITECTURES:
        raise InputError(f"{config.architecture} is not a CLIP image tower ({CLIP_ARCHITECTURES})")
    return _build_tower(lambda: CLIPVisionModelWithProjection(clip_vision_config(config)), CLIPImageBackbone,
                        config.architecture, weights, random_init, seed, "CLIP image", CLIP_REPO, "hf-clip",
                        _CLIP_KEEP, _CLIP_DROP, "video")


def build_clap_audio(config: AudioConfig, weights: Path | None, random_init: bool, seed: int
                     ) -> tuple[CLAPAudioBackbone, dict]:
    """Build the frozen CLAP audio tower of `config` and describe where its weights came from.

    Raises:
        FileNotFoundError: no weights (given or in the HF cache) and not `random_init`.
        InputError: weights in another layout (WavCaps' included), or that do not fit the architecture.
    """
    if config.architecture not in CLAP_ARCHITECTURES:
        raise InputError(f"{config.architecture} is not a CLAP audio tower ({CLAP_ARCHITECTURES})")
    return _build_tower(lambda: ClapAudioModelWithProjection(clap_audio_config(config)), CLAPAudioBackbone,
                        config.architecture, weights, random_init, seed, "CLAP audio", CLAP_REPO, "hf-clap",
                        _CLAP_KEEP, _CLAP_DROP, "audio")


def _build_tower(make_model, wrapper, architecture: str, weights: Path | None, random_init: bool, seed: int,
                 what: str, repo: str, weight_format: str, keep: tuple[str, ...], drop: tuple[str, ...],
                 modality: str):
    """A tower built from its config (seeded), given its weights strictly, frozen and wrapped; and its provenance."""
    weights = _weights(weights, random_init, what, repo)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    state = None if weights is None else tower_state(weights, keep, drop, what)
    backbone = wrapper(frozen_tower(model, state, weights))
    if weights is not None:
        logger.info("%s backbone %s: %s weights %s", modality, architecture, weight_format, weights)
    return backbone, _provenance(architecture, weights, weight_format, seed, backbone)
