"""DeViSE, ALE and SJE: one linear map of the clip into the class-embedding space, three ranking losses.

Papers: Frome et al. 2013, "DeViSE: A Deep Visual-Semantic Embedding Model"; Akata et al. 2016, "Label-Embedding
for Image Classification" (ALE); Akata et al. 2015, "Evaluation of Output Embeddings for Fine-Grained Image
Classification" (SJE). As AVCA-GZSL runs them (`src/model.py` DeviseModel, `src/loss.py` ClsContrastiveLoss,
`main.py`; ExplainableML/AVCA-GZSL, MIT licence), written anew here:

- the model: theta(x) = W [v; a], a bias-free linear map of the concatenated video and audio vectors to E (300 for
  word2vec), with dropout on its input (and, with `normalise_inputs`, the concatenation L2-normalised first, as
  AVCA-GZSL's `--norm_inputs`); a class is phi(c) itself (theta_w is the identity);
- the training score of clip x and seen class c is the dot product theta(x) . phi(c), both under dropout;
- the loss is a hinge on the ranking of the true class against every other seen class, margin 0.1: DeViSE sums the
  violations, ALE weights them by its rank weight (the harmonic number of the true class's rank over that rank),
  SJE takes only the largest;
- at test time AVCA-GZSL compares theta(x) with phi(c) by Euclidean distance (`src/utils.py`,
  `evaluate_dataset_baseline`), which is the "plain" rule here: the methods train on dot products and are
  evaluated on distances, as their published numbers were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError
from common.settings import setting
from fusion.heads import register_head
from fusion.heads.head import ClipBatch, ComparisonHead, HeadLosses, from_peer_names, peer_tensor
from fusion.heads.training import PEER_TRAINING, HeadTrainingConfig
from fusion.model import ModelDims

__all__ = ["RankingConfig", "RankingLoss", "LinearCompatibility", "RECIPES", "PEER_FEATURE_WIDTHS", "peer_weights",
           "devise", "ale", "sje"]


@dataclass(frozen=True)
class RankingConfig(HeadTrainingConfig):
    """DeViSE / ALE / SJE: the dropout of their linear map and the margin of their ranking loss."""

    dropout: float = setting(0.2, help="Dropout on the clip vector and on the class embeddings in training "
                                       "(AVCA-GZSL's `dropout_baselines`).")
    margin: float = setting(0.1, help="Margin of the ranking hinge.")
    normalise_inputs: bool = setting(False, help="L2-normalise the concatenated clip vector before the map "
                                                 "(AVCA-GZSL's `--norm_inputs`, set in its runs on the C3D / VGGish "
                                                 "features of cls_split).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.dropout < 1 or self.margin < 0:
            raise InputError(f"dropout must be in [0, 1) and margin >= 0, got {self.dropout}, {self.margin}")


# The AVCA-GZSL run scripts (`run_scripts/{UCF,ActivityNet,VGGSound}-GZSL/{devise,ale,sje}.sh`): the shared
# training settings, and a dropout of 0.2 on UCF and ActivityNet, none on VGGSound.
RECIPES: dict[str, dict] = {
    "ucf": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.2},
    "activitynet": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.2},
    "vggsound": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.0},
}

_REDUCTIONS = ("sum", "rank_weighted", "max")


class RankingLoss(nn.Module):
    """Hinge ranking of each clip's true class against the other classes, from compatibility scores.

    cost[b, j] = max(0, margin + s[b, j] - s[b, y_b]) for j != y_b; per clip "sum" (DeViSE) adds them, "max"
    (SJE) keeps the largest, "rank_weighted" (ALE) adds them times L(r) / r, with r the number of violating classes
    and L(r) = 1 + 1/2 + ... + 1/r; the loss is the mean over clips.
    """

    def __init__(self, margin: float, reduction: str) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.margin = margin
        self.reduction = reduction

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Shapes: scores (B, C) compatibility, labels (B,) -> ()."""
        true = scores.gather(1, labels.unsqueeze(1))  # (B, C) -> (B, 1)
        cost = (self.margin + scores - true).clamp(min=0)  # (B, C)
        cost = cost.masked_fill(nn.functional.one_hot(labels, scores.shape[1]).bool(), 0.0)
        if self.reduction == "max":
            per_clip = cost.max(dim=1).values  # (B, C) -> (B,)
        elif self.reduction == "sum":
            per_clip = cost.sum(dim=1)
        else:
            rank = (cost > 0).sum(dim=1)  # (B,) violating classes
            harmonic = torch.cumsum(1.0 / torch.arange(1, scores.shape[1] + 1, device=scores.device), 0)  # L(1..C)
            weight = torch.where(rank > 0, harmonic[(rank - 1).clamp(min=0)] / rank.clamp(min=1), 0.0)
            per_clip = cost.sum(dim=1) * weight
        return per_clip.mean()


class LinearCompatibility(ComparisonHead):
    """theta(x) = W [v; a] (bias-free), compared with phi(c) as it is.

    Shapes:
        video (B, Dv), audio (B, Da) -> theta(x) (B, E); class embeddings (C, E) -> (C, E)
    """

    def __init__(self, config: RankingConfig, dims: ModelDims, extracted: bool, method: str, reduction: str) -> None:
        super().__init__(config, dims, extracted)
        self.method = method
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(dims.video_dim + dims.audio_dim, dims.embedding_dim, bias=False)
        self.loss = RankingLoss(config.margin, reduction)

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        features = torch.cat([video, audio], dim=1)  # (B, Dv) + (B, Da) -> (B, Dv+Da), AVCA-GZSL's order
        if self.config.normalise_inputs:
            features = F.normalize(features, dim=1)
        return self.projection(self.dropout(features))  # (B, E)

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return class_embeddings

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        scores = self.embed_clips(batch.video, batch.audio) @ self.dropout(class_embeddings).T  # (B, E) x (E, C)
        loss = self.loss(scores, batch.labels)
        return HeadLosses(total=loss, parts={"rank": loss})


# AVCA-GZSL's feature widths (video, audio): its DeviseModel maps their concatenation, so its weight gives only the
# sum; SeLaVi's on main_split, C3D's and VGGish's on cls_split.
PEER_FEATURE_WIDTHS: dict[int, tuple[int, int]] = {512 + 512: (512, 512), 4096 + 128: (4096, 128)}


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """An AVCA-GZSL DeviseModel state_dict (DeViSE, ALE and SJE alike: only their losses differ) as this head's.

    Its one parameter `bilinear.weight` (E, Dv + Da) is `projection.weight`; the video and audio widths come from
    `PEER_FEATURE_WIDTHS` (the weight gives only their sum).

    Raises:
        InputError: another method's keys, missing or unexpected keys, or a width of no AVCA-GZSL feature set.
    """
    embedding_dim, width = peer_tensor(state_dict, "bilinear.weight", 2).shape
    if width not in PEER_FEATURE_WIDTHS:
        raise InputError(f"bilinear.weight maps {width} features; AVCA-GZSL's are "
                         f"{' or '.join(f'{v} + {a}' for v, a in PEER_FEATURE_WIDTHS.values())} (video + audio), so "
                         "which of them are video cannot be told")
    video_dim, audio_dim = PEER_FEATURE_WIDTHS[width]
    dims = {"video_dim": video_dim, "audio_dim": audio_dim, "embedding_dim": int(embedding_dim)}
    head = devise(RankingConfig(), ModelDims(1, video_dim, 1, audio_dim, 1, int(embedding_dim)), False)
    return {"dims": dims}, from_peer_names(state_dict, head, {"projection.": "bilinear."}, "DeviseModel")


@register_head("devise", config=RankingConfig, recipes=RECIPES, peer_weights=peer_weights)
def devise(config: RankingConfig, dims: ModelDims, extracted: bool) -> LinearCompatibility:
    """DeViSE: every violating class counts."""
    return LinearCompatibility(config, dims, extracted, "devise", "sum")


@register_head("ale", config=RankingConfig, recipes=RECIPES, peer_weights=peer_weights)
def ale(config: RankingConfig, dims: ModelDims, extracted: bool) -> LinearCompatibility:
    """ALE: violations weighted by the rank of the true class."""
    return LinearCompatibility(config, dims, extracted, "ale", "rank_weighted")


@register_head("sje", config=RankingConfig, recipes=RECIPES, peer_weights=peer_weights)
def sje(config: RankingConfig, dims: ModelDims, extracted: bool) -> LinearCompatibility:
    """SJE: only the most violating class counts."""
    return LinearCompatibility(config, dims, extracted, "sje", "max")

