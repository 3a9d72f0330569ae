"""The MZST losses: TASK (cross-entropy over seen classes), SE (embedding regression), MLM (masked words).

`L = task_weight * L_TASK + lambda_SE(epoch) * L_SE + sigma(epoch) * L_MLM` (the paper's eq. 5 with the
lambda1 / lambda2 schedule read as the weights of SE and MLM: the paper does not say; docs/fusion.md). The SE target is
`phi(s_v) + phi(s_t)`: s_t the clip's class name, s_v the Kinetics-400 class the video backbone predicts for
the clip (argmax of the view-averaged softmax of its logits), or `phi(s_t)` alone with se_target "class".
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from extract.outputs import kinetics_class as predicted_kinetics_class
from fusion.config import FusionConfig
from fusion.model import FusionOutput
from text.vocabulary import IGNORE_INDEX

__all__ = [
    "LossWeights",
    "LossParts",
    "loss_weights",
    "kinetics_class",
    "se_targets",
    "TaskLoss",
    "SemanticEmbeddingLoss",
    "MaskedWordLoss",
    "FusionLoss",
]


@dataclass(frozen=True)
class LossWeights:
    """The weight of each loss in one epoch."""

    task: float
    se: float
    mlm: float


@dataclass
class LossParts:
    """The total loss (differentiable) and its unweighted parts (detached; mlm None when not computed)."""

    total: torch.Tensor
    task: torch.Tensor
    se: torch.Tensor
    mlm: torch.Tensor | None


def loss_weights(config: FusionConfig, epoch: int) -> LossWeights:
    """The loss weights of a 1-based `epoch` under the config's step schedules.

    With milestones (20, 40) and weights (0.25, 0.1, 0.05): epochs 1-20 -> 0.25, 21-40 -> 0.1, 41- -> 0.05.
    """
    if epoch < 1:
        raise ValueError(f"epochs count from 1, got {epoch}")
    step = bisect.bisect_left(config.weight_milestones_epochs, epoch)  # number of milestones already passed

    def pick(weights: tuple[float, ...]) -> float:
        return float(weights[0] if len(weights) == 1 else weights[step])

    mlm = pick(config.mlm_weights) if config.use_text else 0.0
    return LossWeights(task=config.task_weight, se=pick(config.se_weights), mlm=mlm)


def kinetics_class(kinetics_logits: torch.Tensor) -> torch.Tensor:
    """s_v as a tensor on the logits' device (`extract.outputs.kinetics_class`, the one definition).

    Shapes:
        kinetics_logits (B, V, K) -> (B,) int64
    """
    if kinetics_logits.ndim != 3:
        raise ValueError(f"kinetics_logits must be (B, V, K), got shape {tuple(kinetics_logits.shape)}")
    classes = predicted_kinetics_class(kinetics_logits.detach().float().cpu().numpy())
    return torch.from_numpy(classes).to(kinetics_logits.device)


def se_targets(
    labels: torch.Tensor,
    class_embeddings: torch.Tensor,
    kinetics_pred: torch.Tensor | None = None,
    kinetics_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """The SE regression target: phi(s_t) (+ phi(s_v) when the Kinetics predictions are given).

    Shapes:
        labels (B,), class_embeddings (C, E), kinetics_pred (B,), kinetics_embeddings (K, E) -> (B, E)
    """
    target = class_embeddings[labels]  # (C, E) -> (B, E)
    if (kinetics_pred is None) != (kinetics_embeddings is None):
        raise ValueError("pass both kinetics_pred and kinetics_embeddings, or neither")
    if kinetics_pred is not None:
        target = target + kinetics_embeddings[kinetics_pred]  # (K, E) -> (B, E)
    return target


class TaskLoss(nn.Module):
    """Cross-entropy of the TASK logits over the seen (training) classes."""

    def forward(self, task_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Shapes: task_logits (B, C), labels (B,) -> scalar."""
        return F.cross_entropy(task_logits.float(), labels)


class SemanticEmbeddingLoss(nn.Module):
    """`|| f(x) - target ||^2`: squared Euclidean distance summed over the embedding, mean over clips."""

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Shapes: embedding (B, E), target (B, E) -> scalar."""
        if embedding.shape != target.shape:
            raise ValueError(f"SE: prediction {tuple(embedding.shape)} and target {tuple(target.shape)} differ")
        return (embedding.float() - target.float()).pow(2).sum(dim=-1).mean()


class MaskedWordLoss(nn.Module):
    """Cross-entropy of the masked words' ids (positions whose target is IGNORE_INDEX do not count)."""

    def forward(self, mlm_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shapes: mlm_logits (B, L, vocab), targets (B, L) -> scalar."""
        return F.cross_entropy(mlm_logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


class FusionLoss(nn.Module):
    """The weighted sum of TASK, SE and (when the output has word logits) MLM."""

    def __init__(self) -> None:
        super().__init__()
        self.task = TaskLoss()
        self.se = SemanticEmbeddingLoss()
        self.mlm = MaskedWordLoss()

    def forward(
        self,
        output: FusionOutput,
        labels: torch.Tensor,
        se_target: torch.Tensor,
        weights: LossWeights,
        mlm_targets: torch.Tensor | None = None,
    ) -> LossParts:
        """Combine the losses of one batch.

        Shapes:
            output: embedding (B, E), task_logits (B, C), mlm_logits (B, L, vocab) or None; labels (B,);
            se_target (B, E); mlm_targets (B, L) -> scalars
        """
        task = self.task(output.task_logits, labels)
        se = self.se(output.embedding, se_target)
        total = weights.task * task + weights.se * se
        mlm = None
        if output.mlm_logits is not None:
            if mlm_targets is None:
                raise ValueError("the output has word logits but no mlm_targets were given")
            mlm = self.mlm(output.mlm_logits, mlm_targets)
            total = total + weights.mlm * mlm
        return LossParts(total=total, task=task.detach(), se=se.detach(), mlm=None if mlm is None else mlm.detach())
