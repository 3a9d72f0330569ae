"""AVGZSLNet: audio, video and text encoders into one space, cross-modal triplets and a decoder back to phi(c).

Paper: Mazumder et al. 2021, "AVGZSLNet: Audio-Visual Generalized Zero-Shot Learning by Reconstructing Label
Features from Multi-Modal Embeddings". As AVCA-GZSL runs it (`src/model.py` AVGZSLNet, `src/loss.py` AVGZSLLoss,
`src/utils.py` `evaluate_dataset`, `run_scripts/*-GZSL/avgzslnet.sh`; ExplainableML/AVCA-GZSL, MIT licence),
written anew here:

- encoders: audio Da -> 1024 -> BN -> ReLU -> Dropout 0.8 -> 64, video the same from Dv, text E -> E -> BN -> ReLU ->
  Dropout -> 64 (no activation at the end); a decoder 64 -> 64 -> BN -> ReLU -> Dropout 0.5 -> E, its outputs
  L2-normalised (the run scripts' `--normalize_decoder_outputs`);
- losses, with a clip's negative (a clip of another class) and that clip's class t- (L2 triplets, margin 1.0):
  the composite triplet trip(t, a, a-) + trip(a, t, t-) + trip(t, v, v-) + trip(v, t, t-); the reconstruction
  mean ||dec(t) - w|| + mean ||dec(a) - w|| + mean ||dec(v) - w|| (w = phi(c), Euclidean, not squared); and the
  decoder triplets trip(dec(t), dec(a), dec(a-)) + trip(dec(t), dec(v), dec(v-));
- test time: the distance of a clip to a class is d(a, t) + d(v, t) (`get_best_evaluation`, mode "both"), a sum of
  two Euclidean distances: the head gives a and v as branches and evaluation sums their distances
  (`eval.scoring.branch_distances`). The peers' beta rule averages the best betas of d(a, t), d(v, t) and the sum.

The per-clip vectors are `fusion.heads.inputs`' (AVCA-GZSL's per-clip average of its features).
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
from fusion.heads.head import ClipBatch, ComparisonHead, HeadLosses, from_peer_names
from fusion.heads.training import PEER_TRAINING, HeadTrainingConfig
from fusion.model import ModelDims

__all__ = ["AVGZSLNetConfig", "AVGZSLNet", "RECIPES", "PEER_NAMES", "cross_modal_triplets", "avgzslnet", "peer_weights"]


@dataclass(frozen=True)
class AVGZSLNetConfig(HeadTrainingConfig):
    """AVGZSLNet's sizes, dropouts, BatchNorm momentum and triplet margin (AVCA-GZSL's `src/args.py` defaults,
    which its run scripts keep)."""

    hidden_dim: int = setting(1024, help="Hidden width of the audio and video encoders (`embeddings_hidden_size`).")
    output_dim: int = setting(64, help="Width of the joint space.")
    decoder_hidden_dim: int = setting(64, help="Hidden width of the decoder (`decoder_hidden_size`).")
    dropout: float = setting(0.8, help="Dropout in the encoders (`embedding_dropout`).")
    decoder_dropout: float = setting(0.5, help="Dropout in the decoder (`decoder_dropout`).")
    batchnorm_momentum: float = setting(0.1, help="Momentum of the BatchNorm layers (torch's default, as AVGZSLNet).")
    margin: float = setting(1.0, help="Margin of the L2 triplet losses.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.hidden_dim, self.output_dim, self.decoder_hidden_dim) < 1:
            raise InputError(f"hidden_dim, output_dim and decoder_hidden_dim must be >= 1, got {self.hidden_dim}, "
                             f"{self.output_dim}, {self.decoder_hidden_dim}")
        if not (0 <= self.dropout < 1 and 0 <= self.decoder_dropout < 1) or self.margin < 0:
            raise InputError("dropout and decoder_dropout must be in [0, 1) and margin >= 0")
        if not 0 < self.batchnorm_momentum <= 1:
            raise InputError(f"batchnorm_momentum must be in (0, 1], got {self.batchnorm_momentum}")


# The AVCA-GZSL run scripts (`run_scripts/{UCF,ActivityNet,VGGSound}-GZSL/avgzslnet.sh`): the shared training
# settings on every dataset, and the argument defaults for sizes and dropouts (the scripts set none of them).
RECIPES: dict[str, dict] = {dataset: {**PEER_TRAINING, "n_batches": 500, "dropout": 0.8, "decoder_dropout": 0.5}
                            for dataset in ("ucf", "activitynet", "vggsound")}

# AVCA-GZSL's parameter names -> ours (prefixes): `TripletNet`'s three `EmbeddingNet`s and `DecoderNet`'s one; the
# indices inside them are the same Sequential positions as ours.
PEER_NAMES: dict[str, str] = {
    "triplet_net.embedding_net1.fc.": "audio_encoder.",
    "triplet_net.embedding_net2.fc.": "video_encoder.",
    "triplet_net.embedding_net3.fc.": "text_encoder.",
    "decoder_net.embedding_net.fc.": "decoder.",
}


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float, momentum: float) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Dropout -> Linear (AVCA-GZSL's `EmbeddingNet` with `use_bn`)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden, momentum=momentum), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, outputs))


def cross_modal_triplets(triplet: nn.TripletMarginLoss, text: torch.Tensor, audio: torch.Tensor, video: torch.Tensor,
                         text_negative: torch.Tensor, audio_negative: torch.Tensor,
                         video_negative: torch.Tensor) -> torch.Tensor:
    """trip(t, a, a-) + trip(a, t, t-) + trip(t, v, v-) + trip(v, t, t-): each modality pulled to its class and
    pushed from another clip's, the class pulled to the clip and pushed from another class (AVGZSLNet's composite
    triplet; AVCA's triplets in its joint space).

    Shapes:
        every input (B, D) -> ()
    """
    return (triplet(text, audio, audio_negative) + triplet(audio, text, text_negative)
            + triplet(text, video, video_negative) + triplet(video, text, text_negative))


class AVGZSLNet(ComparisonHead):
    """Audio, video and text encoders into an `output_dim` space, and a decoder from it back to the class space.

    Shapes:
        video (B, Dv), audio (B, Da) -> branch embeddings [a, v] (B, 2 * output_dim); class embeddings (C, E) ->
        (C, output_dim)
    """

    method = "avgzslnet"
    branches = ("audio", "video")
    decision = ("audio", "video")
    beta_modes = (("audio",), ("video",), ("audio", "video"))

    def __init__(self, config: AVGZSLNetConfig, dims: ModelDims, extracted: bool) -> None:
        super().__init__(config, dims, extracted)
        momentum, out = config.batchnorm_momentum, config.output_dim
        self.audio_encoder = _mlp(dims.audio_dim, config.hidden_dim, out, config.dropout, momentum)
        self.video_encoder = _mlp(dims.video_dim, config.hidden_dim, out, config.dropout, momentum)
        self.text_encoder = _mlp(dims.embedding_dim, dims.embedding_dim, out, config.dropout, momentum)
        self.decoder = _mlp(out, config.decoder_hidden_dim, dims.embedding_dim, config.decoder_dropout, momentum)
        self.triplet = nn.TripletMarginLoss(margin=config.margin)

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """The decoder's L2-normalised reconstruction of phi(c). Shapes: (B, output_dim) -> (B, E)."""
        return F.normalize(self.decoder(embedding), dim=1)

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.audio_encoder(audio), self.video_encoder(video)], dim=1)  # 2 x (B, D) -> (B, 2D)

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(class_embeddings)

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        w, w_negative = class_embeddings[batch.labels], class_embeddings[negatives.labels]  # (B, E) each
        # the peers' call order (BatchNorm statistics are per call): the clip's a, v, t, then the negative's
        a, v, t = self.audio_encoder(batch.audio), self.video_encoder(batch.video), self.text_encoder(w)  # (B, D)
        a_negative, v_negative = self.audio_encoder(negatives.audio), self.video_encoder(negatives.video)
        t_negative = self.text_encoder(w_negative)
        trip = self.triplet
        composite = cross_modal_triplets(trip, t, a, v, t_negative, a_negative, v_negative)
        decoded_a, decoded_v, decoded_t = self.decode(a), self.decode(v), self.decode(t)  # (B, E) each
        decoded_a_negative, decoded_v_negative = self.decode(a_negative), self.decode(v_negative)
        reconstruction = sum((decoded - w).norm(dim=1).mean() for decoded in (decoded_t, decoded_a, decoded_v))
        decoder_triplet = trip(decoded_t, decoded_a, decoded_a_negative) + trip(decoded_t, decoded_v,
                                                                               decoded_v_negative)
        return HeadLosses(total=composite + reconstruction + decoder_triplet,
                          parts={"triplet": composite, "reconstruction": reconstruction,
                                 "decoder_triplet": decoder_triplet})


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Our config values and weights from the state_dict of AVCA-GZSL's `AVGZSLNet` (trained with BatchNorm, as its
    run scripts train it).

    Returns:
        (config values the shapes fix, with "dims": video_dim, audio_dim, embedding_dim; our head's state_dict)

    Raises:
        InputError: missing or unexpected keys, or shapes that disagree (named).
    """
    needed = ["triplet_net.embedding_net1.fc.0.weight", "triplet_net.embedding_net2.fc.0.weight",
              "triplet_net.embedding_net3.fc.0.weight", "triplet_net.embedding_net1.fc.4.weight",
              "decoder_net.embedding_net.fc.0.weight"]
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise InputError(f"not an AVCA-GZSL avgzslnet state_dict: missing keys: {', '.join(absent)}")
    audio_first = state_dict["triplet_net.embedding_net1.fc.0.weight"]  # (hidden, Da)
    dims = {"audio_dim": int(audio_first.shape[1]),
            "video_dim": int(state_dict["triplet_net.embedding_net2.fc.0.weight"].shape[1]),
            "embedding_dim": int(state_dict["triplet_net.embedding_net3.fc.0.weight"].shape[1])}
    values = {"hidden_dim": int(audio_first.shape[0]),
              "output_dim": int(state_dict["triplet_net.embedding_net1.fc.4.weight"].shape[0]),
              "decoder_hidden_dim": int(state_dict["decoder_net.embedding_net.fc.0.weight"].shape[0])}
    head = AVGZSLNet(AVGZSLNetConfig(**values), ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims),
                     extracted=False)
    ours_to_peer = {ours: peer for peer, ours in PEER_NAMES.items()}
    return {**values, "dims": dims}, from_peer_names(state_dict, head, ours_to_peer, "AVGZSLNet")



@register_head("avgzslnet", config=AVGZSLNetConfig, recipes=RECIPES, peer_weights=peer_weights)
def avgzslnet(config: AVGZSLNetConfig, dims: ModelDims, extracted: bool) -> AVGZSLNet:
    """AVGZSLNet with AVCA-GZSL's sizes."""
    return AVGZSLNet(config, dims, extracted)
