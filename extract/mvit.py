"""The frozen video backbone: torchvision's MViT-v2-S (Li et al., "MViTv2: Improved Multiscale Vision Transformers
for Classification and Detection", CVPR 2022) as a token extractor.

Source: pytorch/vision `torchvision/models/video/mvit.py` (BSD-3-Clause), used as installed (torchvision 0.26);
`forward_tokens` runs the same modules in the same order as `MViT.forward` but returns the output of the final
`norm` (CLS + the T x H x W token grid) together with the Kinetics-400 logits of the classifier on the CLS token.
Weights: torchvision's `MViT_V2_S_Weights.KINETICS400_V1` file (`mvit_v2_s-ae3be167.pth`), from a local path or
the torch hub cache (never downloaded here). Preprocessing constants come from that weights entry's meta.
`mvit_tiny` is a small configuration of the same `MViT` class for CPU tests and demos (random weights only).
The attention of every block can run as one fused kernel instead (extract/mvit_attention.py), with the same
state dict.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models.video import MViT, MViT_V2_S_Weights, mvit_v2_s
from torchvision.models.video.mvit import MSBlockConfig

from common.errors import InputError
from extract import weights as weight_files
from extract.config import VideoConfig
from extract.mvit_attention import FusedMultiscaleAttention, pooled_grid

__all__ = [
    "KINETICS400_CATEGORIES",
    "VIDEO_MEAN",
    "VIDEO_STD",
    "WEIGHTS_URL",
    "MViTBackbone",
    "build_mvit",
    "hub_cache_path",
]

logger = logging.getLogger(__name__)

_WEIGHTS = MViT_V2_S_Weights.KINETICS400_V1
_TRANSFORMS = _WEIGHTS.transforms()
VIDEO_MEAN: tuple[float, ...] = tuple(_TRANSFORMS.mean)  # on [0, 1] RGB: 0.45 each
VIDEO_STD: tuple[float, ...] = tuple(_TRANSFORMS.std)  # 0.225 each
KINETICS400_CATEGORIES: tuple[str, ...] = tuple(_WEIGHTS.meta["categories"])
WEIGHTS_URL: str = _WEIGHTS.url
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")  # torchvision's file names carry a SHA-256 prefix

# mvit_tiny: (heads, input width, output width, query stride (T, H, W), key/value stride). Two spatial query
# poolings bring a 112 px crop (28 x 28 patches) to the same 7 x 7 grid as mvit_v2_s at 224 px; the first block
# already pools queries, which keeps it about 30x cheaper than starting at full resolution (measured).
_TINY_BLOCKS = (
    (1, 48, 96, (1, 2, 2), (1, 4, 4)),
    (2, 96, 192, (1, 2, 2), (1, 2, 2)),
    (4, 192, 384, (1, 1, 1), (1, 1, 1)),
)


class MViTBackbone(nn.Module):
    """A frozen torchvision `MViT` that returns its final-norm tokens and its classifier logits.

    Args:
        model: the torchvision model, taken over.
        attention: "torchvision" (its own attention forward) or a fused kernel of extract/mvit_attention.py
            ("sdpa", "sdpa-mask", "flex"), which replaces each block's `attn` by a `FusedMultiscaleAttention`
            sharing its modules and parameters: the state dict (keys and values) is unchanged.

    Attributes:
        model: the wrapped torchvision model (its state dict is torchvision's, under `model.`).
        grid: (T, H, W) of the output token grid (8, 7, 7 for mvit_v2_s).
        frames: input frames per view.
        crop_size_px: input side.
    """

    def __init__(self, model: MViT, attention: str = "torchvision") -> None:
        super().__init__()
        self.model = model
        self.attention = attention
        self.frames = model.pos_encoding.temporal_size * model.conv_proj.stride[0]
        self.crop_size_px = model.pos_encoding.spatial_size[0] * model.conv_proj.stride[1]
        thw = (model.pos_encoding.temporal_size, *model.pos_encoding.spatial_size)
        for block in model.blocks:
            if attention != "torchvision":
                block.attn = FusedMultiscaleAttention(block.attn, thw, attention)
            thw = pooled_grid(thw, block.attn.pool_q)
        self.grid = thw

    @property
    def width(self) -> int:
        """D: token width."""
        return self.model.norm.normalized_shape[0]

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Alias of `forward_tokens` (what `torch.compile(backbone)` compiles)."""
        return self.forward_tokens(video)

    def forward_tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens after the final norm and the classifier's logits.

        Args:
            video: normalised views (extract.views.make_views).

        Returns:
            (tokens: CLS then the T x H x W grid in T, H, W order; logits over the classifier's classes).

        Shapes:
            video: (B, 3, T_in, S, S). tokens: (B, 1 + T * H * W, D). logits: (B, C) (C = 400 for Kinetics).
        """
        expected = (3, self.frames, self.crop_size_px, self.crop_size_px)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"video must be (B, {', '.join(map(str, expected))}), got {tuple(video.shape)}")
        m = self.model
        x = m.conv_proj(video)  # (B, 3, T_in, S, S) -> (B, D0, T, H0, W0)
        x = x.flatten(2).transpose(1, 2)  # (B, D0, T, H0, W0) -> (B, T * H0 * W0, D0)
        x = m.pos_encoding(x)  # (B, N0, D0) -> (B, 1 + N0, D0): CLS first
        thw = (m.pos_encoding.temporal_size, *m.pos_encoding.spatial_size)
        for block in m.blocks:
            x, thw = block(x, thw)  # (B, 1 + N_i, D_i) -> (B, 1 + N_{i+1}, D_{i+1})
        tokens = m.norm(x)  # (B, 1 + T * H * W, D)
        return tokens, m.head(tokens[:, 0])  # head: (B, D) -> (B, C)



def _tiny(config: VideoConfig) -> MViT:
    blocks = [MSBlockConfig(num_heads=h, input_channels=i, output_channels=o, kernel_q=[3, 3, 3],
                            kernel_kv=[3, 3, 3], stride_q=list(sq), stride_kv=list(skv))
              for h, i, o, sq, skv in _TINY_BLOCKS]
    # The mvit_v2_s settings (torchvision's `mvit_v2_s` builder): pooling residual, relative positions.
    return MViT(spatial_size=(config.crop_size_px, config.crop_size_px), temporal_size=config.frames_per_view,
                block_setting=blocks, residual_pool=True, residual_with_cls_embed=False, rel_pos_embed=True,
                proj_after_attn=True, num_classes=len(KINETICS400_CATEGORIES))


def hub_cache_path() -> Path:
    """Where torchvision keeps the downloaded mvit_v2_s weights (respects TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS_URL).name


def build_mvit(config: VideoConfig, weights: Path | None, random_init: bool, seed: int,
               attention: str = "torchvision", kinetics_head: Path | None = None) -> tuple[MViTBackbone, dict]:
    """Build the frozen video backbone of `config` and describe where its weights came from.

    Args:
        config: architecture and input size.
        weights: torchvision-format state dict file (`mvit_v2_s-ae3be167.pth`, read with `weights_only`);
            None: that file in the torch hub cache.
        random_init: use seeded random weights instead (recorded as "random-init").
        seed: seed of the random weights; equal seeds give bit-identical models in any process.
        attention: the attention kernel (`MViTBackbone`); weights load the same for every kernel.
        kinetics_head: with `random_init`, a state dict of the model's `head` (`1.weight`, `1.bias`) fitted on
            this random-init backbone (`curate.pretrain`), so that its Kinetics logits mean something; recorded
            with its SHA-256.

    Returns:
        (backbone in eval mode without gradients, provenance dict).

    Raises:
        FileNotFoundError: no weights file and not `random_init`.
        ValueError: weights and `random_init` both given, a torchvision file whose hash prefix does not match,
            or weights that do not fit the architecture.
    """
    if random_init and weights is not None:
        raise InputError(f"both video weights ({weights}) and random init were asked for; choose one")
    if kinetics_head is not None and not random_init:
        raise InputError(f"{kinetics_head}: a fitted Kinetics head replaces a random-init backbone's head only; "
                         "a backbone with weights has its own")
    path = None
    if not random_init:  # checked before anything is built
        path = Path(weights) if weights is not None else hub_cache_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: MViT-v2-S weights not found. Download {WEIGHTS_URL} to {hub_cache_path()} (torchvision's "
                f"cache; TORCH_HOME moves it) or set `video_weights`, or `random_init=True` for random weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mvit_v2_s() if config.architecture == "mvit_v2_s" else _tiny(config)
    source = sha256 = "random-init"
    if path is not None:
        source, sha256 = str(path.resolve()), weight_files.sha256_file(path)
        expected = _HASH_IN_NAME.search(path.name)
        if expected and not sha256.startswith(expected.group(1)):
            raise InputError(f"{path}: SHA-256 does not start with {expected.group(1)} as its name says; the "
                             f"file is corrupt, fetch {WEIGHTS_URL} again")
        weight_files.load_strict(model, weight_files.read_state_dict(path), path)
        logger.info("video backbone %s: weights %s", config.architecture, path)
    head = {}
    if kinetics_head is not None:
        weight_files.load_strict(model.head, weight_files.read_state_dict(kinetics_head), Path(kinetics_head))
        head = {"kinetics_head": str(Path(kinetics_head).resolve()),
                "kinetics_head_sha256": weight_files.sha256_file(weight_files.weights_file(kinetics_head))}
        logger.info("video backbone %s: Kinetics head %s", config.architecture, kinetics_head)
    backbone = MViTBackbone(model, attention).eval().requires_grad_(False)
    return backbone, {
        "architecture": config.architecture,
        "weights": source,
        "sha256": sha256,
        "seed": seed if random_init else None,
        "parameters": sum(p.numel() for p in backbone.parameters()),
        **head,
    }
