"""AVCA: audio and video features that attend to each other, projected with the classes into one space.

Paper: Mercea et al., CVPR 2022, "Audio-visual Generalised Zero-shot Learning with Cross-modal Attention and
Language". As AVCA-GZSL runs it (`src/model_improvements.py` AVCA, `main.py`, `src/utils.py`
`evaluate_dataset_baseline`, `run_scripts/*-GZSL/avca.sh`; ExplainableML/AVCA-GZSL, MIT licence), written anew here:

- encoders phi_a, phi_v: Da (Dv) -> 512 -> BN -> ReLU -> Dropout -> F (300) -> BN -> ReLU -> Dropout;
- cross-modal attention: the two tokens [phi_a + p_a, phi_v + p_v] (p: two position vectors) through a pre-norm
  transformer (1 layer; 3 heads of width 100, the query / key / value map without bias; a GELU MLP of width 64), whose
  outputs are added back: phi_a' = phi_a + attn_a, phi_v' = phi_v + attn_v;
- projections theta_a, theta_v: F -> 512 -> BN -> ReLU -> Dropout -> 64 -> BN -> ReLU -> Dropout; the classes
  theta_w = W_proj(w): E -> 64 -> BN -> ReLU -> Dropout; decoders D (64 -> E, to w) and A_rec, V_rec (64 -> F, to
  phi_a, phi_v), each Linear -> BN -> ReLU -> Dropout;
- dropouts as the run scripts name them: `embedding_dropout` in the encoders and the transformer,
  `decoder_dropout` in the projections theta_a / theta_v, `additional_dropout` in W_proj, D, A_rec and V_rec.
  `batchnorm_momentum` is the momentum of the second BatchNorm of the encoders and projections only (the others keep
  torch's 0.1, as in AVCA-GZSL); 0.99 there keeps the statistics of about the last batch;
- losses with a clip's negative (a clip of another class, its class w-; L2 triplets, margin 1.0, MSE): the triplets
  trip(theta_w, theta_a, theta_a-) + trip(theta_a, theta_w, theta_w-) and the same with theta_v; the run scripts'
  additional triplets trip(theta_a, theta_w, theta_a-) + trip(theta_w, theta_a, theta_w-) and the same with theta_v;
  in D's space trip(D(theta_w), D(theta_a), D(theta_a-)) + the same with theta_v, and MSE(w, D(.)) of theta_v,
  theta_a and theta_w; and the regularisers MSE(A_rec(theta_a), phi_a) + MSE(V_rec(theta_v), phi_v) +
  MSE(theta_v, theta_w) + MSE(theta_a, theta_w), with phi before the attention;
- the optimiser: Adam with weight decay 1e-5 (the recipes) over every parameter but the two position vectors,
  which AVCA-GZSL's optimiser leaves out, so they keep their random initialisation (we do the same);
- test time: the video branch only, d(theta_v, theta_w) (`evaluate_dataset_baseline` returns the video evaluation
  as "audio", "video" and "both"): the head gives theta_a and theta_v as branches and decides on "video"; the peers'
  beta rule is then the video branch's best beta.

Two passes whose outputs nothing uses are kept, because they move the BatchNorm running statistics the test
normalises with: AVCA-GZSL passes the reconstructions A_rec(theta_a), V_rec(theta_v) through the projections in each
step, and after each optimiser step runs `get_embeddings` on the batch once more in training mode (`after_step`;
with momentum 0.99 that pass alone sets the statistics). The per-clip vectors are `fusion.heads.inputs`' (AVCA-GZSL's
per-clip average of its features).
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
from fusion.heads.avgzslnet import cross_modal_triplets
from fusion.heads.head import ClipBatch, ComparisonHead, HeadLosses, from_peer_names
from fusion.heads.training import PEER_TRAINING, HeadTrainingConfig
from fusion.model import ModelDims

__all__ = ["AVCAConfig", "CrossModalBlock", "AVCA", "RECIPES", "avca", "peer_weights"]


@dataclass(frozen=True)
class AVCAConfig(HeadTrainingConfig):
    """AVCA's sizes, dropouts, BatchNorm momentum and triplet margin (the run scripts' values by default: UCF's)."""

    encoder_hidden_dim: int = setting(512, help="Hidden width of the audio and video encoders "
                                                "(`embeddings_hidden_size`).")
    feature_dim: int = setting(300, help="Width of phi_a, phi_v and of the attention's tokens.")
    decoder_hidden_dim: int = setting(512, help="Hidden width of the projections theta_a, theta_v "
                                                "(`decoder_hidden_size`).")
    output_dim: int = setting(64, help="Width of the joint space (`dim_out`).")
    depth: int = setting(1, help="Transformer layers of the cross-modal attention (`depth_transformer`).")
    attention_heads: int = setting(3, help="Attention heads.")
    attention_head_dim: int = setting(100, help="Width of each attention head.")
    mlp_dim: int = setting(64, help="Hidden width of the transformer's MLP.")
    embedding_dropout: float = setting(0.2, help="Dropout in the encoders and the attention.")
    decoder_dropout: float = setting(0.3, help="Dropout in the projections theta_a, theta_v.")
    additional_dropout: float = setting(0.5, help="Dropout in W_proj, D, A_rec and V_rec.")
    batchnorm_momentum: float = setting(0.1, help="Momentum of the encoders' and projections' last BatchNorm.")
    margin: float = setting(1.0, help="Margin of the L2 triplet losses.")

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = (self.encoder_hidden_dim, self.feature_dim, self.decoder_hidden_dim, self.output_dim, self.depth,
                 self.attention_heads, self.attention_head_dim, self.mlp_dim)
        if min(sizes) < 1:
            raise InputError(f"AVCA's sizes and depth must be >= 1, got {sizes}")
        dropouts = (self.embedding_dropout, self.decoder_dropout, self.additional_dropout)
        if not all(0 <= p < 1 for p in dropouts) or self.margin < 0:
            raise InputError(f"dropouts must be in [0, 1) and margin >= 0, got {dropouts}, {self.margin}")
        if not 0 < self.batchnorm_momentum <= 1:
            raise InputError(f"batchnorm_momentum must be in (0, 1], got {self.batchnorm_momentum}")


# The AVCA-GZSL run scripts (`run_scripts/{UCF,ActivityNet,VGGSound}-GZSL/avca.sh`, main_features): the shared
# training settings with weight decay 1e-5 (AVCA's own optimiser), batches of 64 on VGGSound, and per dataset the
# three dropouts and the BatchNorm momentum.
RECIPES: dict[str, dict] = {
    "ucf": {**PEER_TRAINING, "weight_decay": 1e-5, "n_batches": 500, "embedding_dropout": 0.2,
            "decoder_dropout": 0.3, "additional_dropout": 0.5, "batchnorm_momentum": 0.1},
    "activitynet": {**PEER_TRAINING, "weight_decay": 1e-5, "n_batches": 500, "embedding_dropout": 0.2,
                    "decoder_dropout": 0.2, "additional_dropout": 0.1, "batchnorm_momentum": 0.99},
    "vggsound": {**PEER_TRAINING, "weight_decay": 1e-5, "batch_size": 64, "n_batches": 500, "embedding_dropout": 0.0,
                 "decoder_dropout": 0.0, "additional_dropout": 0.1, "batchnorm_momentum": 0.1},
}


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float, momentum: float) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Dropout -> Linear -> BN(momentum) -> ReLU -> Dropout (`EmbeddingNet` with a hidden
    layer)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, outputs), nn.BatchNorm1d(outputs, momentum=momentum), nn.ReLU(),
                         nn.Dropout(dropout))


def _layer(inputs: int, outputs: int, dropout: float) -> nn.Sequential:
    """Linear -> BN -> ReLU -> Dropout (`EmbeddingNet` without a hidden layer)."""
    return nn.Sequential(nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU(), nn.Dropout(dropout))


class CrossModalBlock(nn.Module):
    """A pre-norm transformer layer: x + attention(LN(x)), then x + MLP(LN(x)).

    Shapes:
        (B, T, F) -> (B, T, F)
    """

    def __init__(self, width: int, heads: int, head_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.output = nn.Linear(heads * head_dim, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, width),
                                 nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(self.attention_norm(x)).reshape(b, t, 3, self.heads, -1)  # (B, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d)
        weights = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)  # (B, H, T, T)
        attended = (weights @ v).transpose(1, 2).reshape(b, t, -1)  # (B, H, T, d) -> (B, T, H*d)
        x = x + self.dropout(self.output(attended))
        return x + self.mlp(self.mlp_norm(x))


class AVCA(ComparisonHead):
    """Encoders, cross-modal attention and projections of audio and video; the classes' projection and decoders.

    Shapes:
        video (B, Dv), audio (B, Da) -> branch embeddings [theta_a, theta_v] (B, 2 * output_dim); class embeddings
        (C, E) -> theta_w (C, output_dim)
    """

    method = "avca"
    branches = ("audio", "video")
    decision = ("video",)
    beta_modes = (("video",),)  # AVCA-GZSL's audio, video and both evaluations are all the video one

    def __init__(self, config: AVCAConfig, dims: ModelDims, extracted: bool) -> None:
        super().__init__(config, dims, extracted)
        c, width, out, e = config, config.feature_dim, config.output_dim, dims.embedding_dim
        self.audio_encoder = _mlp(dims.audio_dim, c.encoder_hidden_dim, width, c.embedding_dropout,
                                  c.batchnorm_momentum)
        self.video_encoder = _mlp(dims.video_dim, c.encoder_hidden_dim, width, c.embedding_dropout,
                                  c.batchnorm_momentum)
        self.positions = nn.Parameter(torch.randn(2, width))  # audio, video
        self.attention = nn.ModuleList(CrossModalBlock(width, c.attention_heads, c.attention_head_dim, c.mlp_dim,
                                                       c.embedding_dropout) for _ in range(c.depth))
        self.audio_projection = _mlp(width, c.decoder_hidden_dim, out, c.decoder_dropout, c.batchnorm_momentum)
        self.video_projection = _mlp(width, c.decoder_hidden_dim, out, c.decoder_dropout, c.batchnorm_momentum)
        self.text_projection = _layer(e, out, c.additional_dropout)
        self.text_decoder = _layer(out, e, c.additional_dropout)
        self.audio_reconstruction = _layer(out, width, c.additional_dropout)
        self.video_reconstruction = _layer(out, width, c.additional_dropout)
        self.triplet = nn.TripletMarginLoss(margin=c.margin)

    def attend(self, phi_audio: torch.Tensor, phi_video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """phi_a', phi_v': each plus its token's output of the cross-modal attention.

        Shapes:
            phi_audio (B, F), phi_video (B, F) -> (B, F), (B, F)
        """
        tokens = torch.stack([phi_audio + self.positions[0], phi_video + self.positions[1]], dim=1)  # (B, 2, F)
        for block in self.attention:
            tokens = block(tokens)
        return phi_audio + tokens[:, 0], phi_video + tokens[:, 1]

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        audio_attended, video_attended = self.attend(self.audio_encoder(audio), self.video_encoder(video))
        theta_a, theta_v = self.audio_projection(audio_attended), self.video_projection(video_attended)
        return torch.cat([theta_a, theta_v], dim=1)  # 2 x (B, D) -> (B, 2D)

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_projection(class_embeddings)

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """Adam over every parameter but the position vectors (AVCA-GZSL's `optimizer_gen` lists the modules only)."""
        trained = [p for name, p in self.named_parameters() if name != "positions"]
        return torch.optim.Adam(trained, lr=lr, weight_decay=weight_decay)

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        w, w_negative = class_embeddings[batch.labels], class_embeddings[negatives.labels]  # (B, E) each
        # the peers' call order (BatchNorm statistics are per call)
        phi_a, phi_v = self.audio_encoder(batch.audio), self.video_encoder(batch.video)  # (B, F) each
        phi_a_negative, phi_v_negative = self.audio_encoder(negatives.audio), self.video_encoder(negatives.video)
        theta_w, theta_w_negative = self.text_projection(w), self.text_projection(w_negative)  # (B, D) each
        rho_w = self.text_decoder(theta_w)  # (B, E)
        audio_attended, video_attended = self.attend(phi_a, phi_v)
        audio_negative_attended, video_negative_attended = self.attend(phi_a_negative, phi_v_negative)
        theta_v = self.video_projection(video_attended)  # (B, D)
        theta_v_negative = self.video_projection(video_negative_attended)
        theta_a = self.audio_projection(audio_attended)
        theta_a_negative = self.audio_projection(audio_negative_attended)
        phi_v_reconstructed = self.video_reconstruction(theta_v)  # (B, F)
        phi_a_reconstructed = self.audio_reconstruction(theta_a)
        with torch.no_grad():  # unused outputs; the calls move the projections' BatchNorm statistics, as the peers'
            self.audio_projection(phi_a_reconstructed)
            self.video_projection(phi_v_reconstructed)
        rho_a, rho_a_negative = self.text_decoder(theta_a), self.text_decoder(theta_a_negative)
        rho_v, rho_v_negative = self.text_decoder(theta_v), self.text_decoder(theta_v_negative)
        trip = self.triplet
        triplets = (cross_modal_triplets(trip, theta_w, theta_a, theta_v, theta_w_negative, theta_a_negative,
                                         theta_v_negative)
                    + trip(theta_a, theta_w, theta_a_negative) + trip(theta_v, theta_w, theta_v_negative)  # additional
                    + trip(theta_w, theta_a, theta_w_negative) + trip(theta_w, theta_v, theta_w_negative))
        decoder = (F.mse_loss(rho_v, w) + F.mse_loss(rho_a, w) + F.mse_loss(rho_w, w)
                   + trip(rho_w, rho_a, rho_a_negative) + trip(rho_w, rho_v, rho_v_negative))
        regression = (F.mse_loss(phi_v_reconstructed, phi_v) + F.mse_loss(phi_a_reconstructed, phi_a)
                      + F.mse_loss(theta_v, theta_w) + F.mse_loss(theta_a, theta_w))
        return HeadLosses(total=triplets + decoder + regression,
                          parts={"triplet": triplets, "decoder": decoder, "regression": regression})


    @torch.no_grad()
    def after_step(self, batch: ClipBatch, class_embeddings: torch.Tensor) -> None:
        """AVCA-GZSL's `get_embeddings` of the batch in training mode after each step (its outputs unused)."""
        self.embed_clips(batch.video, batch.audio)
        self.text_projection(class_embeddings[batch.labels])


def _peer_names(depth: int) -> dict[str, str]:
    """AVCA-GZSL's parameter names -> ours (prefixes): its `EmbeddingNet`s hold our Sequential positions under
    `.fc`, and its transformer layer i is (PreNorm(Attention), PreNorm(FeedForward))."""
    names = {"A_enc.fc.": "audio_encoder.", "V_enc.fc.": "video_encoder.", "A_proj.fc.": "audio_projection.",
             "V_proj.fc.": "video_projection.", "W_proj.fc.": "text_projection.", "D.fc.": "text_decoder.",
             "A_rec.fc.": "audio_reconstruction.", "V_rec.fc.": "video_reconstruction.", "pos_emb1D": "positions"}
    for i in range(depth):
        peer = f"cross_attention.layers.{i}."
        names.update({f"{peer}0.norm.": f"attention.{i}.attention_norm.", f"{peer}0.fn.to_qkv.": f"attention.{i}.qkv.",
                      f"{peer}0.fn.to_out.0.": f"attention.{i}.output.", f"{peer}1.norm.": f"attention.{i}.mlp_norm.",
                      f"{peer}1.fn.net.": f"attention.{i}.mlp."})
    return names


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Our config values and weights from the state_dict of AVCA-GZSL's `AVCA` (`model_improvements.py`).

    The attention's head count is not in the shapes: AVCA-GZSL fixes 3, so its head width is the q / k / v width / 3.

    Returns:
        (config values the shapes fix, with "dims": video_dim, audio_dim, embedding_dim; our head's state_dict)

    Raises:
        InputError: missing or unexpected keys, or shapes that disagree (named).
    """
    needed = ["A_enc.fc.0.weight", "A_enc.fc.4.weight", "V_enc.fc.0.weight", "A_proj.fc.0.weight",
              "A_proj.fc.4.weight", "W_proj.fc.0.weight", "cross_attention.layers.0.0.fn.to_qkv.weight",
              "cross_attention.layers.0.1.fn.net.0.weight"]
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise InputError(f"not an AVCA-GZSL avca state_dict: missing keys: {', '.join(absent)}")
    shape = {key: tuple(state_dict[key].shape) for key in needed}
    depth = len({key.split(".")[2] for key in state_dict if key.startswith("cross_attention.layers.")})
    heads = 3
    qkv_width = shape["cross_attention.layers.0.0.fn.to_qkv.weight"][0]
    if qkv_width % (3 * heads):
        raise InputError(f"not an AVCA-GZSL avca state_dict: to_qkv has {qkv_width} rows, not 3 x {heads} heads")
    dims = {"audio_dim": shape["A_enc.fc.0.weight"][1], "video_dim": shape["V_enc.fc.0.weight"][1],
            "embedding_dim": shape["W_proj.fc.0.weight"][1]}
    values = {"encoder_hidden_dim": shape["A_enc.fc.0.weight"][0], "feature_dim": shape["A_enc.fc.4.weight"][0],
              "decoder_hidden_dim": shape["A_proj.fc.0.weight"][0], "output_dim": shape["A_proj.fc.4.weight"][0],
              "depth": depth, "attention_heads": heads, "attention_head_dim": qkv_width // (3 * heads),
              "mlp_dim": shape["cross_attention.layers.0.1.fn.net.0.weight"][0]}
    head = AVCA(AVCAConfig(**values), ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims),
                extracted=False)
    ours_to_peer = {ours: peer for peer, ours in _peer_names(depth).items()}
    return {**values, "dims": dims}, from_peer_names(state_dict, head, ours_to_peer, "AVCA")


@register_head("avca", config=AVCAConfig, recipes=RECIPES, peer_weights=peer_weights)
def avca(config: AVCAConfig, dims: ModelDims, extracted: bool) -> AVCA:
    """AVCA with AVCA-GZSL's sizes."""
    return AVCA(config, dims, extracted)
