"""ClipClap: the concatenated CLIP image and CLAP audio embedding and the concatenated class vectors, each encoded,
then TCaF's projections, decoders and four losses.

Paper: Kurzendoerfer et al., CVPR workshops 2024, "Audio-Visual Generalized Zero-Shot Learning using Pre-Trained
Large Multi-Modal Models". As ClipClap-GZSL runs it (`src/clipclap_model.py` ClipClap_model, `config/clipclap.yaml`,
the README's commands; dkurzend/ClipClap-GZSL, MIT licence), written anew here:

- O_enc: concat(video, audio) (CLIP's 512 then CLAP's 1024 in its setting) -> 512 -> BN -> ReLU -> Dropout 0.1;
- W_enc: the class vector (CLIP's and CLAP's text embeddings concatenated, 1536) -> 512, laid out as O_enc;
- theta_o = O_proj(O_enc(x)): 512 -> 512 -> 64, theta_w = W_proj(W_enc(w)): 512 -> 64, decoders D_o: 64 -> 512 ->
  512, D_w: 64 -> 512 (BN, ReLU, Dropout after each layer), as in TCaF;
- TCaF's four losses (`fusion.heads.tcaf.text_space_losses`) with W_enc(w) as the class vector: cross-entropy of
  theta_o . theta_w over the training classes, MSE(theta_o, theta_w), MSE(W_enc(w), D_o(theta_o)) +
  MSE(W_enc(w), D_w(theta_w)) (the target is not detached: W_enc learns from the reconstructions too);
- Adam with weight decay 1e-5, the plateau schedule (`lr_scheduler: true`); test time: the Euclidean distance of
  theta_o to theta_w (one embedding; as for TCaF the peers' beta rule is not offered).

Its input is the per-clip pair of `fusion.heads.inputs` (the CLIP and CLAP embeddings on a store of that setting);
its class vectors are whatever `--embeddings` gives (ClipClap's own: the CLIP and CLAP text towers' prompt-ensembled
embeddings, concatenated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from common.errors import InputError
from common.settings import setting
from fusion.heads import register_head
from fusion.heads.avca import _layer, _mlp
from fusion.heads.head import ClipBatch, ComparisonHead, HeadLosses, from_peer_names, peer_tensor
from fusion.heads.tcaf import text_space_losses
from fusion.heads.training import HeadTrainingConfig
from fusion.model import ModelDims

__all__ = ["ClipClapConfig", "ClipClap", "RECIPES", "clipclap", "peer_weights"]


@dataclass(frozen=True)
class ClipClapConfig(HeadTrainingConfig):
    """ClipClap's sizes and dropouts (`config/clipclap.yaml`)."""

    encoder_dim: int = setting(512, help="Width of O_enc and W_enc (and of D_o's and D_w's output).")
    encoder_dropout: float = setting(0.1, help="Dropout in O_enc and W_enc.")
    decoder_hidden_dim: int = setting(512, help="Hidden width of O_proj and D_o (`decoder_hidden_size`).")
    output_dim: int = setting(64, help="Width of the joint space (`dim_out`).")
    decoder_dropout: float = setting(0.1, help="Dropout in O_proj and D_o.")
    additional_dropout: float = setting(0.1, help="Dropout in W_proj and D_w.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.encoder_dim, self.decoder_hidden_dim, self.output_dim) < 1:
            raise InputError(f"ClipClap's sizes must be >= 1, got {self.encoder_dim}, {self.decoder_hidden_dim}, "
                             f"{self.output_dim}")
        dropouts = (self.encoder_dropout, self.decoder_dropout, self.additional_dropout)
        if not all(0 <= p < 1 for p in dropouts):
            raise InputError(f"dropouts must be in [0, 1), got {dropouts}")


# ClipClap-GZSL's `config/clipclap.yaml` (batches of 64, 300 per epoch, Adam with weight decay 1e-5, the plateau
# schedule) with the README's epochs and lr per dataset.
_CLIPCLAP_TRAINING = {"batch_size": 64, "weight_decay": 1e-5, "grad_clip_norm": 0.0, "n_batches": 300}
RECIPES: dict[str, dict] = {
    "ucf": {**_CLIPCLAP_TRAINING, "epochs": 20, "lr": 7e-5},
    "activitynet": {**_CLIPCLAP_TRAINING, "epochs": 15, "lr": 1e-4},
    "vggsound": {**_CLIPCLAP_TRAINING, "epochs": 15, "lr": 1e-4},
}


class ClipClap(ComparisonHead):
    """O_enc and W_enc, then TCaF's projections and decoders.

    Shapes:
        video (B, Dv), audio (B, Da) -> theta_o (B, output_dim); class embeddings (C, E) -> theta_w (C, output_dim)
    """

    method = "clipclap"

    def __init__(self, config: ClipClapConfig, dims: ModelDims, extracted: bool) -> None:
        super().__init__(config, dims, extracted)
        c, width = config, config.encoder_dim
        self.clip_encoder = _layer(dims.video_dim + dims.audio_dim, width, c.encoder_dropout)
        self.text_encoder = _layer(dims.embedding_dim, width, c.encoder_dropout)
        self.output_projection = _mlp(width, c.decoder_hidden_dim, c.output_dim, c.decoder_dropout, 0.1)
        self.output_decoder = _mlp(c.output_dim, c.decoder_hidden_dim, width, c.decoder_dropout, 0.1)
        self.text_projection = _layer(width, c.output_dim, c.additional_dropout)
        self.text_decoder = _layer(c.output_dim, width, c.additional_dropout)

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.output_projection(self.clip_encoder(torch.cat([video, audio], dim=1)))  # video first, as theirs

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_encoder(class_embeddings))

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        theta_o = self.embed_clips(batch.video, batch.audio)
        w = self.text_encoder(class_embeddings[batch.labels])  # the peers' call order: the batch's, then all
        return text_space_losses(self, theta_o, w, batch.labels, self.text_encoder(class_embeddings))


# ClipClap-GZSL's names: ClipClap_model's six EmbeddingNets (`fc` Sequentials laid out as ours).
_PEER_NAMES = {"clip_encoder.": "O_enc.fc.", "text_encoder.": "W_enc.fc.", "output_projection.": "O_proj.fc.",
               "output_decoder.": "D_o.fc.", "text_projection.": "W_proj.fc.", "text_decoder.": "D_w.fc."}


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A ClipClap-GZSL ClipClap_model state_dict (`--modality both`) as this head's: the sizes from its layers.

    Its O_enc takes CLIP's 512 then CLAP's 1024 values (the input width gives only their sum): video 512, audio the
    rest, as its code concatenates them.

    Raises:
        InputError: another method's keys, missing or unexpected keys, or shapes that disagree with each other.
    """
    encoder_dim, input_dim = peer_tensor(state_dict, "O_enc.fc.0.weight", 2).shape
    embedding_dim = peer_tensor(state_dict, "W_enc.fc.0.weight", 2).shape[1]
    decoder_hidden, output_dim = (peer_tensor(state_dict, "O_proj.fc.0.weight", 2).shape[0],
                                  peer_tensor(state_dict, "O_proj.fc.4.weight", 2).shape[0])
    if input_dim <= 512:
        raise InputError(f"O_enc takes {input_dim} values, not CLIP's 512 and an audio embedding (a model of one "
                         "modality, its `modality` audio or video, is not offered)")
    values = {"encoder_dim": int(encoder_dim), "decoder_hidden_dim": int(decoder_hidden),
              "output_dim": int(output_dim)}
    dims = {"video_dim": 512, "audio_dim": int(input_dim) - 512, "embedding_dim": int(embedding_dim)}
    head = ClipClap(ClipClapConfig(**values), ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims), False)
    return {**values, "dims": dims}, from_peer_names(state_dict, head, _PEER_NAMES, "ClipClap_model",
                                                     "ClipClap-GZSL")


@register_head("clipclap", config=ClipClapConfig, recipes=RECIPES, peer_weights=peer_weights)
def clipclap(config: ClipClapConfig, dims: ModelDims, extracted: bool) -> ClipClap:
    """ClipClap with ClipClap-GZSL's sizes."""
    return ClipClap(config, dims, extracted)
