"""The frozen audio backbone: AST, the Audio Spectrogram Transformer (Gong et al., Interspeech 2021), as a token
extractor built from timm's `VisionTransformerDistilled` (DeiT-B distilled) with a 1-channel patch embedding of
stride 10 (overlapping 16 x 16 patches).

Sources (read to match semantics, not copied): YuanGongND/ast `src/models/ast_models.py` (BSD-3-Clause) for the
architecture and the ImageNet adaptation; HF transformers `models/audio_spectrogram_transformer` (Apache-2.0)
for its state-dict names (both the published 4.x names and transformers 5 in-memory names).

Weights load strictly through one named remap function per format:
- `ast-original`: AST's own checkpoints (`audioset_10_10_0.4593.pth`): keys `module.v.*` (timm names), plus the
  AudioSet heads `module.mlp_head.*`, `module.v.head*`, dropped by name;
- `hf-transformers`: `ASTModel` / `ASTForAudioClassification` state dicts, safetensors files or model folders
  (`classifier.*` dropped by name);
- `timm-deit`: ImageNet DeiT-B distilled 384 weights, adapted as AST does: the RGB patch-embedding kernels
  summed into one channel; the 24 x 24 position grid cut to its centre rows in frequency (rows 6:18 for 12) and
  interpolated (bilinear) to the time columns (101 for 1024 frames), or cut to its centre when narrower; the CLS
  and DIST position entries kept; the ImageNet heads dropped by name.
`ast_tiny` is a small configuration of the same classes for CPU tests and demos (random weights only).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from torch import nn

from common.errors import InputError
from extract import weights as weight_files
from extract.config import AudioConfig

__all__ = [
    "AST_PATCH_PX",
    "AST_STRIDE_PX",
    "WEIGHT_FORMATS",
    "ASTBackbone",
    "build_ast",
    "ast_state_dict",
    "remap_original_ast",
    "remap_hf_ast",
    "adapt_deit",
]

logger = logging.getLogger(__name__)

AST_PATCH_PX = 16
AST_STRIDE_PX = 10  # overlapping patches in frequency and time (AST's fstride = tstride = 10)
WEIGHT_FORMATS = ("ast-original", "hf-transformers", "timm-deit")
# (width, depth, heads). ast_vit_b is DeiT-B; ast_tiny is DeiT-Ti's width at a third of its depth.
_ARCHITECTURES = {"ast_vit_b": (768, 12, 12), "ast_tiny": (192, 4, 3)}
_AST_PREFIX = "module.v."
_AST_HEADS = ("module.mlp_head.", "module.v.head.", "module.v.head_dist.")  # AudioSet classifier, DeiT heads
_DEIT_HEADS = ("head.", "head_dist.")
_HF_PREFIX = "audio_spectrogram_transformer."
_HF_HEADS = ("classifier.",)
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Per-layer names: published (transformers 4.x files, also what 5.x writes) and transformers 5 in-memory.
_HF_LAYER = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_LAYER_KEY = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)")
_HF_QKV = re.compile(r"attention\.(?:attention\.(query|key|value)|([qkv])_proj)")


class _SpectrogramPatchEmbed(nn.Module):
    """AST's patch embedding: overlapping 16 x 16 patches of a 1-channel spectrogram (a timm `embed_layer`).

    timm's `PatchEmbed` ties the stride to the patch size; this module takes the stride separately and offers
    the attributes `VisionTransformer` reads (`num_patches`, `grid_size`, `feat_ratio`).
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, stride: int,
                 bias: bool = True, dynamic_img_pad: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        if in_chans != 1 or dynamic_img_pad:
            raise ValueError(f"the spectrogram patch embedding takes 1 channel without padding, got "
                             f"in_chans={in_chans}, dynamic_img_pad={dynamic_img_pad}")
        self.img_size = tuple(img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = tuple((n - patch_size) // stride + 1 for n in self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.stride = stride
        self.proj = nn.Conv2d(1, embed_dim, patch_size, stride=stride, bias=bias, device=device, dtype=dtype)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.stride if as_scalar else (self.stride, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: x (B, 1, F_in, S) -> (B, F * T, D), frequency-major."""
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, F, T) -> (B, F * T, D)


class ASTBackbone(nn.Module):
    """A frozen AST that returns its final-norm tokens.

    Attributes:
        vit: the timm `VisionTransformerDistilled` (its state dict uses timm's, i.e. AST's own, names).
        grid: (F, T) of the patch grid (12, 101 for 128 mel bins x 1024 frames).
    """

    def __init__(self, vit: VisionTransformerDistilled) -> None:
        super().__init__()
        self.vit = vit
        self.grid = tuple(vit.patch_embed.grid_size)
        self.num_mel_bins, self.target_frames = vit.patch_embed.img_size

    @property
    def width(self) -> int:
        """D: token width."""
        return self.vit.embed_dim

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Alias of `forward_tokens` (what `torch.compile(backbone)` compiles)."""
        return self.forward_tokens(fbank)

    def forward_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Tokens after the final norm, as HF `ASTModel.last_hidden_state`.

        Args:
            fbank: normalised log-mel filter banks (extract.spectrogram.log_mel), time first.

        Returns:
            CLS, DIST, then the F x T patch grid in frequency-major order.

        Shapes:
            fbank: (B, S, F_in). returns (B, 2 + F * T, D).
        """
        expected = (self.target_frames, self.num_mel_bins)
        if fbank.ndim != 3 or tuple(fbank.shape[1:]) != expected:
            raise ValueError(f"fbank must be (B, {expected[0]}, {expected[1]}), got {tuple(fbank.shape)}")
        x = fbank.unsqueeze(1).transpose(2, 3)  # (B, S, F_in) -> (B, 1, F_in, S): AST's image layout
        return self.vit.forward_features(x)  # (B, 2 + F * T, D)


def _vit(config: AudioConfig) -> VisionTransformerDistilled:
    width, depth, heads = _ARCHITECTURES[config.architecture]
    return VisionTransformerDistilled(
        img_size=(config.num_mel_bins, config.target_frames), patch_size=AST_PATCH_PX, in_chans=1, num_classes=0,
        embed_dim=width, depth=depth, num_heads=heads,
        embed_layer=functools.partial(_SpectrogramPatchEmbed, stride=AST_STRIDE_PX),
    )


# --- weight formats -------------------------------------------------------------------------------------


def _drop(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def remap_original_ast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AST's own checkpoint (`module.v.*`, timm names) -> our names; the classifier heads are dropped by name.

    Raises:
        ValueError: a key outside `module.v.` that is not a known head.
    """
    state = _drop(state, _AST_HEADS)
    stray = sorted(k for k in state if not k.startswith(_AST_PREFIX))
    if stray:
        raise InputError(f"keys outside {_AST_PREFIX!r} in an AST checkpoint: {stray[:5]}")
    return {k.removeprefix(_AST_PREFIX): v for k, v in state.items()}


def remap_hf_ast(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF transformers AST state dict (published or transformers 5 names, with or without the
    `audio_spectrogram_transformer.` prefix) -> our names; separate q / k / v become timm's fused `qkv`.

    Raises:
        ValueError: a key this mapping does not know, or a layer without all of q, k and v.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key, value in _drop(state, _HF_HEADS).items():
        key = key.removeprefix(_HF_PREFIX)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        match = _HF_LAYER_KEY.fullmatch(key)
        if match is None:
            raise InputError(f"unknown key {key!r} in an HF AST state dict")
        layer, name, kind = match.groups()
        projection = _HF_QKV.fullmatch(name)
        if projection is not None:
            which = "qkv".index((projection.group(1) or projection.group(2))[0])
            qkv.setdefault((layer, kind), {})[which] = value
        elif name in _HF_LAYER:
            out[f"blocks.{layer}.{_HF_LAYER[name]}.{kind}"] = value
        else:
            raise InputError(f"unknown key {key!r} in an HF AST state dict")
    for (layer, kind), parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            raise InputError(f"layer {layer} lacks one of query / key / value {kind}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]])  # 3 x (D, ...) -> (3D, ...)
    return out


def adapt_deit(state: dict[str, torch.Tensor], grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """ImageNet DeiT-distilled weights (timm names) -> AST's initialisation for a (F, T) patch grid.

    Args:
        state: timm `VisionTransformerDistilled` state dict with an RGB patch embedding and a square position grid.
        grid: (F, T) patch grid of the target AST.

    Raises:
        ValueError: no RGB patch embedding, or a position grid that is not square.

    Shapes:
        pos_embed: (1, 2 + G * G, D) -> (1, 2 + F * T, D). patch_embed.proj.weight: (D, 3, P, P) -> (D, 1, P, P).
    """
    state = _drop(state, _DEIT_HEADS)
    kernel, pos = state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if kernel is None or pos is None or kernel.shape[1] != 3:
        raise InputError("not a DeiT checkpoint with an RGB patch embedding and a position embedding")
    side = math.isqrt(pos.shape[1] - 2)
    if side * side != pos.shape[1] - 2:
        raise InputError(f"DeiT position embedding of {pos.shape[1] - 2} patches is not a square grid")
    freq, time = grid
    width = pos.shape[2]
    patches = pos[:, 2:].reshape(1, side, side, width).permute(0, 3, 1, 2)  # (1, G*G, D) -> (1, D, G, G)
    patches = _fit_axis(patches, time, axis=3)  # -> (1, D, G, T)
    patches = _fit_axis(patches, freq, axis=2)  # -> (1, D, F, T)
    patches = patches.reshape(1, width, freq * time).transpose(1, 2)  # (1, D, F, T) -> (1, F * T, D)
    return {
        **state,
        "patch_embed.proj.weight": kernel.sum(dim=1, keepdim=True),  # (D, 3, P, P) -> (D, 1, P, P)
        "pos_embed": torch.cat([pos[:, :2], patches], dim=1),  # -> (1, 2 + F * T, D)
    }


def _fit_axis(grid: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Cut the centre `size` entries of one axis of a (1, D, H, W) grid, or interpolate it up to `size` (AST)."""
    have = grid.shape[axis]
    if size <= have:
        start = have // 2 - size // 2
        return grid.narrow(axis, start, size)
    target = [grid.shape[2], grid.shape[3]]
    target[axis - 2] = size
    return F.interpolate(grid, size=tuple(target), mode="bilinear")


def ast_state_dict(path: Path, grid: tuple[int, int]) -> tuple[dict[str, torch.Tensor], str]:
    """Read AST weights in any supported format and return them in our names with the detected format.

    Args:
        path: checkpoint file (.pth / .pt / .bin / .safetensors) or Hugging Face model folder.
        grid: (F, T) patch grid of the target model (for the DeiT adaptation).

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: a format none of `WEIGHT_FORMATS` recognises.
    """
    state = weight_files.read_state_dict(path)
    if any(k.startswith(_AST_PREFIX) for k in state):
        return remap_original_ast(state), "ast-original"
    if any(k.removeprefix(_HF_PREFIX).startswith("embeddings.patch_embeddings.") for k in state):
        return remap_hf_ast(state), "hf-transformers"
    kernel = state.get("patch_embed.proj.weight")
    if kernel is not None and kernel.ndim == 4 and kernel.shape[1] == 3:
        return adapt_deit(state, grid), "timm-deit"
    raise InputError(f"{path}: not AST weights in a known format ({', '.join(WEIGHT_FORMATS)}); first keys: "
                     f"{sorted(state)[:5]}")


def build_ast(config: AudioConfig, weights: Path | None, random_init: bool, seed: int) -> tuple[ASTBackbone, dict]:
    """Build the frozen audio backbone of `config` and describe where its weights came from.

    Args:
        config: architecture and input size (mel bins x frames).
        weights: AST weights in one of `WEIGHT_FORMATS`; required unless `random_init`.
        random_init: use seeded random weights instead (recorded as "random-init").
        seed: seed of the random weights; equal seeds give bit-identical models in any process.

    Returns:
        (backbone in eval mode without gradients, provenance dict).

    Raises:
        FileNotFoundError: no weights and not `random_init`.
        ValueError: weights and `random_init` both given, or weights that do not fit the architecture.
    """
    if random_init and weights is not None:
        raise InputError(f"both audio weights ({weights}) and random init were asked for; choose one")
    if not random_init:
        if weights is None:
            raise FileNotFoundError(
                "no AST weights given: set `audio_weights` to AST's audioset_10_10_0.4593.pth (github.com/"
                "YuanGongND/ast), an HF MIT/ast-finetuned-audioset-10-10-0.4593 folder or safetensors file, or timm "
                "deit_base_distilled_patch16_384 ImageNet weights; or `random_init=True` for random weights")
        weight_files.weights_file(Path(weights))  # raises FileNotFoundError before anything is built
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vit = _vit(config)
    source = sha256 = weight_format = "random-init"
    if not random_init:
        path = Path(weights)
        state, weight_format = ast_state_dict(path, tuple(vit.patch_embed.grid_size))
        weight_files.load_strict(vit, state, path)
        source, sha256 = str(path.resolve()), weight_files.sha256_file(weight_files.weights_file(path))
        logger.info("audio backbone %s: %s weights %s", config.architecture, weight_format, path)
    backbone = ASTBackbone(vit).eval().requires_grad_(False)
    return backbone, {
        "architecture": config.architecture,
        "weights": source,
        "sha256": sha256,
        "format": weight_format,
        "seed": seed if random_init else None,
        "parameters": sum(p.numel() for p in backbone.parameters()),
    }
