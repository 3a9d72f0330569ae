"""CJME: audio, video and text encoders into one space, triplets weighted by a learned audio / video gate.

Paper: Parida et al. 2020, "Coordinated Joint Multimodal Embeddings for Generalized Audio-Visual Zero-shot
Classification and Retrieval of Videos". As AVCA-GZSL runs it (`src/model.py` CJME, `src/loss.py` CJMELoss and
CompositeCJMETripletLoss, `src/utils.py` evaluation; ExplainableML/AVCA-GZSL, MIT licence), written anew here:

- encoders: audio Da -> 1024 -> BN -> ReLU -> Dropout -> 64 -> ReLU, video the same from Dv, text E -> E -> BN ->
  ReLU -> Dropout -> 64 -> ReLU (AVCA-GZSL: 300 -> 300 -> 64); the gate alpha = sigmoid(Linear(BN([a; v]))) on the
  clip's input vectors, the weight of the video branch;
- losses: the gated triplet (1 - alpha) trip(t, a, a-) + alpha trip(t, v, v-) (anchor the clip's class in text
  space, negatives the encoded vectors of a clip of another class; L2 triplet margin 1.0), MSE(a, v), and the gate's
  MSE to an entropy target: 1 (video) when the audio branch's class posterior has the higher entropy by more than
  0.1, 0 (audio) when the video branch's has, 0.5 otherwise; the posteriors are softmaxes of dot products with the
  encoded training classes, without gradient;
- test time: alpha rounded to 0 or 1 picks one branch per clip, and the distance is (1 - alpha) ||a - t|| +
  alpha ||v - t||, which is the distance of the picked branch's embedding: the head gives a, v and the picked one
  ("gated") as branches and decides on "gated"; the peers' beta rule averages the best betas of a, v and gated (their
  audio, video and both evaluations).

Where we differ, on purpose: the gated triplet weights each clip's triplets by that clip's alpha. AVCA-GZSL
multiplies the (B, 1) gate by the (B,) triplet losses, which broadcasts to (B, B) and weights every clip by the batch
means; its gate then learns one preference per batch, not per clip as the paper's loss says.
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

__all__ = ["CJMEConfig", "GatedTripletLoss", "gate_targets", "CJME", "RECIPES", "peer_weights", "cjme"]


@dataclass(frozen=True)
class CJMEConfig(HeadTrainingConfig):
    """CJME's sizes, dropout, BatchNorm momentum and loss constants."""

    hidden_dim: int = setting(1024, help="Hidden width of the audio and video encoders.")
    output_dim: int = setting(64, help="Width of the joint space.")
    dropout: float = setting(0.2, help="Dropout in every encoder (AVCA-GZSL's `dropout_baselines`).")
    batchnorm_momentum: float = setting(0.1, help="Momentum of the BatchNorm layers (torch's default, as CJME).")
    margin: float = setting(1.0, help="Margin of the L2 triplet losses.")
    entropy_margin: float = setting(0.1, help="Entropy difference above which the gate's target picks a branch.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_dim < 1 or self.output_dim < 1:
            raise InputError(f"hidden_dim and output_dim must be >= 1, got {self.hidden_dim}, {self.output_dim}")
        if not 0 <= self.dropout < 1 or not 0 < self.batchnorm_momentum <= 1 or self.margin < 0:
            raise InputError("dropout must be in [0, 1), batchnorm_momentum in (0, 1] and margin >= 0")


# The AVCA-GZSL run scripts (`run_scripts/{UCF,ActivityNet,VGGSound}-GZSL/cjme.sh`): the shared training settings
# and a dropout of 0.2 on UCF and ActivityNet, none on VGGSound.
RECIPES: dict[str, dict] = {
    "ucf": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.2},
    "activitynet": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.2},
    "vggsound": {**PEER_TRAINING, "n_batches": 500, "dropout": 0.0},
}


def _encoder(inputs: int, hidden: int, outputs: int, config: CJMEConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden, momentum=config.batchnorm_momentum),
                         nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(hidden, outputs), nn.ReLU())


def gate_targets(audio_scores: torch.Tensor, video_scores: torch.Tensor, entropy_margin: float) -> torch.Tensor:
    """The gate's target per clip: 1 (video) where the audio posterior is the more uncertain by more than the margin,
    0 (audio) where the video posterior is, 0.5 otherwise.

    Shapes:
        audio_scores (B, C), video_scores (B, C) class scores (softmaxed here) -> (B, 1)
    """
    entropy_audio = torch.distributions.Categorical(logits=audio_scores).entropy()  # (B,)
    entropy_video = torch.distributions.Categorical(logits=video_scores).entropy()
    target = torch.full_like(entropy_audio, 0.5)
    target[entropy_audio - entropy_video > entropy_margin] = 1.0
    target[entropy_video - entropy_audio > entropy_margin] = 0.0
    return target.unsqueeze(1)  # (B,) -> (B, 1)


class GatedTripletLoss(nn.Module):
    """(1 - alpha) trip(t, a, a-) + alpha trip(t, v, v-) per clip, mean over clips (L2 triplets with a margin)."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.triplet = nn.TripletMarginLoss(margin=margin, reduction="none")

    def forward(self, text: torch.Tensor, audio: torch.Tensor, audio_negative: torch.Tensor, video: torch.Tensor,
                video_negative: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Shapes: text, audio, audio_negative, video, video_negative (B, D), alpha (B, 1) -> ()."""
        weight = alpha.squeeze(1)  # (B, 1) -> (B,)
        audio_term = self.triplet(text, audio, audio_negative)  # (B,)
        video_term = self.triplet(text, video, video_negative)
        return ((1 - weight) * audio_term + weight * video_term).mean()


class CJME(ComparisonHead):
    """Audio, video and text encoders into a `output_dim` space and a gate between the branches.

    Shapes:
        video (B, Dv), audio (B, Da) -> branch embeddings [a, v, gated] (B, 3 * output_dim), gated the branch the
        rounded gate picks; class embeddings (C, E) -> (C, output_dim)
    """

    method = "cjme"
    branches = ("audio", "video", "gated")
    decision = ("gated",)
    beta_modes = (("audio",), ("video",), ("gated",))

    def __init__(self, config: CJMEConfig, dims: ModelDims, extracted: bool) -> None:
        super().__init__(config, dims, extracted)
        self.audio_encoder = _encoder(dims.audio_dim, config.hidden_dim, config.output_dim, config)
        self.video_encoder = _encoder(dims.video_dim, config.hidden_dim, config.output_dim, config)
        self.text_encoder = _encoder(dims.embedding_dim, dims.embedding_dim, config.output_dim, config)
        inputs = dims.audio_dim + dims.video_dim
        self.gate = nn.Sequential(nn.BatchNorm1d(inputs, momentum=config.batchnorm_momentum), nn.Linear(inputs, 1),
                                  nn.Sigmoid())
        self.triplet = GatedTripletLoss(config.margin)

    def video_weight(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """alpha, the gate's weight of the video branch. Shapes: (B, Dv), (B, Da) -> (B, 1)."""
        return self.gate(torch.cat([audio, video], dim=1))  # (B, Da + Dv) -> (B, 1), AVCA-GZSL's order

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        picked = (self.video_weight(video, audio) >= 0.5).to(video.dtype)  # (B, 1): 1 video, 0 audio
        a, v = self.audio_encoder(audio), self.video_encoder(video)  # (B, D) each
        return torch.cat([a, v, picked * v + (1 - picked) * a], dim=1)  # (B, 3D)

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(class_embeddings)

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        audio, video = self.audio_encoder(batch.audio), self.video_encoder(batch.video)  # (B, D) each
        audio_negative, video_negative = self.audio_encoder(negatives.audio), self.video_encoder(negatives.video)
        classes = self.text_encoder(class_embeddings)  # (C, E) -> (C, D)
        text = classes[batch.labels]  # (B, D)
        alpha = self.video_weight(batch.video, batch.audio)  # (B, 1)
        triplet = self.triplet(text, audio, audio_negative, video, video_negative, alpha)
        agreement = F.mse_loss(audio, video)
        with torch.no_grad():
            classes = classes.detach()
            target = gate_targets(audio.detach() @ classes.T, video.detach() @ classes.T,  # (B, C) each
                                  self.config.entropy_margin)
        gate = F.mse_loss(alpha, target)
        return HeadLosses(total=triplet + agreement + gate, parts={"triplet": triplet, "av": agreement, "gate": gate})


# AVCA-GZSL's CJME names: its TripletNet's three `EmbeddingNetCJME` (audio, video, text; each an `fc` Sequential laid
# out as our encoders when trained with `--embedding_use_bn`, as all its CJME runs were) and the gate
# `attention_model`.
_PEER_NAMES = {"audio_encoder.": "triplet_net.embedding_net1.fc.", "video_encoder.": "triplet_net.embedding_net2.fc.",
               "text_encoder.": "triplet_net.embedding_net3.fc.", "gate.": "attention_model."}


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """An AVCA-GZSL CJME state_dict as this head's: the sizes from its encoders' first and last layers.

    Raises:
        InputError: another method's keys (or encoders without BatchNorm), missing or unexpected keys, or shapes
            that disagree with each other.
    """
    hidden_dim, audio_dim = peer_tensor(state_dict, _PEER_NAMES["audio_encoder."] + "0.weight", 2).shape
    video_dim = peer_tensor(state_dict, _PEER_NAMES["video_encoder."] + "0.weight", 2).shape[1]
    embedding_dim = peer_tensor(state_dict, _PEER_NAMES["text_encoder."] + "0.weight", 2).shape[1]
    output_dim = peer_tensor(state_dict, _PEER_NAMES["audio_encoder."] + "4.weight", 2).shape[0]
    values = {"hidden_dim": int(hidden_dim), "output_dim": int(output_dim)}
    dims = {"video_dim": int(video_dim), "audio_dim": int(audio_dim), "embedding_dim": int(embedding_dim)}
    head = CJME(CJMEConfig(**values), ModelDims(1, dims["video_dim"], 1, dims["audio_dim"], 1, dims["embedding_dim"]),
                False)
    return {**values, "dims": dims}, from_peer_names(state_dict, head, _PEER_NAMES, "CJME")


@register_head("cjme", config=CJMEConfig, recipes=RECIPES, peer_weights=peer_weights)
def cjme(config: CJMEConfig, dims: ModelDims, extracted: bool) -> CJME:
    """CJME with AVCA-GZSL's sizes."""
    return CJME(config, dims, extracted)
