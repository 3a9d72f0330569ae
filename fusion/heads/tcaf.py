"""TCaF: audio and video time steps that attend across modalities, read out by a class token.

Paper: Mercea et al., ECCV 2022, "Temporal and Cross-modal Attention for Audio-Visual Zero-Shot Learning". As
TCAF-GZSL runs it (`src/model_sequence.py` Multimodal_Sequence_Transformer, `config/best/best_main/*.yaml`;
ExplainableML/TCAF-GZSL, MIT licence), written anew here:

- encoders A_enc, V_enc per time step: Da (Dv) -> hidden -> BN -> ReLU -> Dropout -> 300 -> BN -> ReLU -> Dropout;
- each step's embedding: a modality vector (audio 0, video 1) plus a Fourier time embedding, Linear(64) of
  [sin, cos](2 pi t [1, 1] R) with R a fixed random (2, 32) matrix of scale 10, concatenated to the step and mapped
  back to 300 (a 1x1 convolution, here a Linear), then dropout;
- a class token, then the audio and the video steps, through a pre-norm transformer whose layers share one
  LayerNorm between attention and MLP; the attention is cross-modal only: an audio step attends to the class token
  and the video steps, a video step to the class token and the audio steps, the class token to all;
- theta_o = O_proj(class token): 300 -> 512 -> 64 (BN, ReLU, Dropout after each); theta_w = W_proj(w): E -> 64;
  decoders D_o: 64 -> 512 -> E, D_w: 64 -> E;
- losses: cross-entropy over the training classes of the scores theta_o . W_proj(w_c), MSE(theta_o, theta_w),
  MSE(w, D_o(theta_o)) + MSE(w, D_w(theta_w)); Adam with weight decay 1e-5;
- test time: the Euclidean distance of theta_o to theta_w (one embedding; the peers' audio, video and both betas are
  all theta_o's, so their mean is theta_o's best validation beta, which calibrated stacking's own rule picks: the
  peers' beta rule is not offered).

The time steps are `fusion.heads.inputs.clip_steps`'. A step's time t is in seconds: step i of an imported store at
i * `video_step_s` (`audio_step_s`), TCAF-GZSL's rule (SeLaVi one step a second, the defaults; C3D 0.64, VGGish
0.96); on an extracted store the centre of the step's stretch of a clip of `clip_s` seconds, as the temporal views
and AST's grid columns split the clip evenly. `import-avca` keeps `sequence_tokens` segment means of a clip's steps:
the times are the source's only when that count is the features' step count (otherwise a segment spans several
steps and the times shrink by that factor: set the step lengths to the segments').

Where this differs from TCAF-GZSL's code on purpose:
- its `F.normalize(v)` of (B, T, D) features normalises each feature over time, and it divides audio by 255 even
  for SeLaVi features (which are not bytes): the steps are taken as stored, unless `peer_input_scaling` (which
  `import-peer-model` sets, so an imported checkpoint sees what it was trained on);
- its evaluation calls the embedding without the time positions that training used, so a test step i sits at t = i
  whatever its time in training (the same only at one step a second): here every pass uses the same times;
- it pads a batch's sequences to the longest; our stores hold a fixed number of steps per clip, so there is no
  padding and its padding embedding is not kept (an imported checkpoint's is dropped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError
from common.settings import setting
from fusion.heads import register_head
from fusion.heads.avca import _layer, _mlp
from fusion.heads.head import ClipBatch, ComparisonHead, HeadLosses, from_peer_names, peer_tensor
from fusion.heads.inputs import clip_steps
from fusion.heads.training import HeadTrainingConfig
from fusion.model import ModelDims

__all__ = ["TCaFConfig", "TCaF", "RECIPES", "tcaf", "peer_weights", "cross_modal_mask"]


@dataclass(frozen=True)
class TCaFConfig(HeadTrainingConfig):
    """TCaF's sizes, dropouts and time steps (the UCF main-split configuration by default)."""

    encoder_hidden_dim: int = setting(256, help="Hidden width of the step encoders (`embeddings_hidden_size`).")
    # not `width`: that is the MZST head's, and a benchmark hands a shared option to every method that has it
    token_dim: int = setting(300, help="Width of the transformer's tokens (`transformer_dim`).")
    depth: int = setting(5, help="Transformer layers (`transformer_depth`).")
    attention_heads: int = setting(8, help="Attention heads (`transformer_heads`).")
    attention_head_dim: int = setting(64, help="Width of each attention head (`transformer_dim_head`).")
    mlp_dim: int = setting(128, help="Hidden width of the transformer's MLP (`transformer_mlp_dim`).")
    time_dim: int = setting(64, help="Width of the modality and time embeddings (`transformer_embedding_dim`).")
    fourier_scale: float = setting(10.0, help="Scale of the Fourier time embedding's random frequencies.")
    decoder_hidden_dim: int = setting(512, help="Hidden width of O_proj and D_o (`decoder_hidden_size`).")
    output_dim: int = setting(64, help="Width of the joint space (`dim_out`).")
    embedding_dropout: float = setting(0.4, help="Dropout in the step encoders.")
    step_dropout: float = setting(0.2, help="Dropout after a step's embedding (`transformer_embedding_dropout`).")
    transformer_dropout: float = setting(0.3, help="Dropout in the transformer.")
    decoder_dropout: float = setting(0.2, help="Dropout in O_proj and D_o.")
    additional_dropout: float = setting(0.1, help="Dropout in W_proj and D_w.")
    video_step_s: float = setting(1.0, help="Seconds between video steps of an imported store (SeLaVi 1, C3D 0.64).")
    audio_step_s: float = setting(1.0, help="Seconds between audio steps of an imported store (SeLaVi 1, VGGish "
                                            "0.96).")
    clip_s: float = setting(10.0, help="Clip length in seconds that an extracted store's steps split evenly.")
    peer_input_scaling: bool = setting(False, help="Audio / 255 and video L2-normalised over time, as TCAF-GZSL "
                                                   "feeds its model (for its checkpoints).")
    crops: int = setting(1, help="Spatial crops per temporal view: the training store's (set by the trainer).")
    audio_bands: int = setting(1, help="Frequency bands of the store's AST grid (set by the trainer).")

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = (self.encoder_hidden_dim, self.token_dim, self.depth, self.attention_heads, self.attention_head_dim,
                 self.mlp_dim, self.decoder_hidden_dim, self.output_dim, self.crops, self.audio_bands)
        if min(sizes) < 1 or self.time_dim < 2 or self.time_dim % 2:
            raise InputError(f"TCaF's sizes must be >= 1 and time_dim even, got {sizes}, {self.time_dim}")
        dropouts = (self.embedding_dropout, self.step_dropout, self.transformer_dropout, self.decoder_dropout,
                    self.additional_dropout)
        if not all(0 <= p < 1 for p in dropouts):
            raise InputError(f"dropouts must be in [0, 1), got {dropouts}")
        if min(self.video_step_s, self.audio_step_s, self.clip_s) <= 0:
            raise InputError(f"step and clip lengths must be > 0, got {self.video_step_s}, {self.audio_step_s}, "
                             f"{self.clip_s}")


# TCAF-GZSL's `config/best/best_main/best_{ucf,anet,vggsound}.yaml` (the SeLaVi main split): batches of 64, 300 per
# epoch, 50 epochs, Adam with weight decay 1e-5. UCF and VGGSound run without the plateau schedule
# (`lr_scheduler: false`): a patience of the whole run never drops the lr.
_TCAF_TRAINING = {"epochs": 50, "batch_size": 64, "weight_decay": 1e-5, "grad_clip_norm": 0.0, "n_batches": 300}
RECIPES: dict[str, dict] = {
    "ucf": {**_TCAF_TRAINING, "lr": 5e-5, "plateau_patience": 50, "depth": 5, "attention_heads": 8,
            "attention_head_dim": 64, "encoder_hidden_dim": 256, "embedding_dropout": 0.4, "decoder_dropout": 0.2,
            "additional_dropout": 0.1, "transformer_dropout": 0.3},
    "activitynet": {**_TCAF_TRAINING, "lr": 7e-5, "plateau_patience": 3, "depth": 8, "attention_heads": 3,
                    "attention_head_dim": 128, "encoder_hidden_dim": 128, "embedding_dropout": 0.2,
                    "decoder_dropout": 0.1, "additional_dropout": 0.1, "transformer_dropout": 0.3},
    "vggsound": {**_TCAF_TRAINING, "lr": 7e-5, "plateau_patience": 50, "depth": 8, "attention_heads": 6,
                 "attention_head_dim": 128, "encoder_hidden_dim": 128, "embedding_dropout": 0.2,
                 "decoder_dropout": 0.2, "additional_dropout": 0.2, "transformer_dropout": 0.5},
}


def cross_modal_mask(audio_steps: int, video_steps: int, device: torch.device) -> torch.Tensor:
    """Which token may attend to which: [class, audio..., video...]; a step attends to the class token and the other
    modality's steps only (not to its own modality, itself included), the class token to every token.

    Shapes:
        -> (1 + Ta + Tv, 1 + Ta + Tv) bool, True: attends
    """
    modality = torch.tensor([0] + [1] * audio_steps + [2] * video_steps, device=device)
    return (modality[:, None] != modality[None, :]) | (modality[:, None] == 0) | (modality[None, :] == 0)


class CrossModalLayer(nn.Module):
    """A pre-norm transformer layer with one LayerNorm before both the attention and the MLP (TCAF-GZSL's).

    Shapes:
        x (B, T, W), mask (T, T) -> (B, T, W)
    """

    def __init__(self, width: int, heads: int, head_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, head_dim ** -0.5
        self.norm = nn.LayerNorm(width)
        self.query = nn.Linear(width, heads * head_dim, bias=False)
        self.key = nn.Linear(width, heads * head_dim, bias=False)
        self.value = nn.Linear(width, heads * head_dim, bias=False)
        self.output = nn.Sequential(nn.Linear(heads * head_dim, width), nn.Dropout(dropout))
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed = self.norm(x)
        q, k, v = (proj(normed).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, T, d) each
                   for proj in (self.query, self.key, self.value))
        scores = (q @ k.transpose(-1, -2) * self.scale).masked_fill(~mask, -torch.finfo(q.dtype).max)
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).flatten(2)  # (B, T, H*d)
        x = x + self.output(attended)
        return x + self.mlp(self.norm(x))


class TCaF(ComparisonHead):
    """Step encoders, time and modality embeddings, a cross-modal transformer read by a class token, the projections
    and decoders of TCaF.

    Shapes:
        video (B, Tv, Dv), audio (B, Ta, Da) -> theta_o (B, output_dim); class embeddings (C, E) -> theta_w (C,
        output_dim)
    """

    method = "tcaf"

    def __init__(self, config: TCaFConfig, dims: ModelDims, extracted: bool) -> None:
        super().__init__(config, dims, extracted)
        c, width, e = config, config.token_dim, dims.embedding_dim
        self.audio_encoder = _mlp(dims.audio_dim, c.encoder_hidden_dim, width, c.embedding_dropout, 0.1)
        self.video_encoder = _mlp(dims.video_dim, c.encoder_hidden_dim, width, c.embedding_dropout, 0.1)
        self.modality_embedding = nn.Embedding(2, c.time_dim)  # audio, video
        self.register_buffer("fourier_frequencies", c.fourier_scale * torch.randn(2, c.time_dim // 2))
        self.time_embedding = nn.Linear(c.time_dim, c.time_dim)
        self.audio_step = nn.Linear(width + c.time_dim, width)
        self.video_step = nn.Linear(width + c.time_dim, width)
        self.step_dropout = nn.Dropout(c.step_dropout)
        self.class_token = nn.Parameter(torch.randn(1, 1, width))
        self.layers = nn.ModuleList(CrossModalLayer(width, c.attention_heads, c.attention_head_dim, c.mlp_dim,
                                                    c.transformer_dropout) for _ in range(c.depth))
        self.output_projection = _mlp(width, c.decoder_hidden_dim, c.output_dim, c.decoder_dropout, 0.1)
        self.output_decoder = _mlp(c.output_dim, c.decoder_hidden_dim, e, c.decoder_dropout, 0.1)
        self.text_projection = _layer(e, c.output_dim, c.additional_dropout)
        self.text_decoder = _layer(c.output_dim, e, c.additional_dropout)

    def clip_inputs(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                    has_audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return clip_steps(video_tokens, audio_tokens, has_audio, self.extracted, self.config.crops,
                          self.config.audio_bands)

    def step_times(self, steps: int, step_s: float, device: torch.device) -> torch.Tensor:
        """The times in seconds of a modality's steps (the module docstring's rule). Shapes: -> (steps,)"""
        index = torch.arange(steps, device=device, dtype=torch.float32)
        if self.extracted:
            return (index + 0.5) * (self.config.clip_s / steps)
        return index * step_s

    def embed_steps(self, steps: torch.Tensor, encoder: nn.Module, project: nn.Module, modality: int,
                    step_s: float) -> torch.Tensor:
        """One modality's steps as transformer tokens: encoded, their modality and time embeddings appended, mapped
        back to the width. Shapes: (B, T, D) -> (B, T, width)"""
        b, t, _ = steps.shape
        encoded = encoder(steps.flatten(0, 1)).unflatten(0, (b, t))  # per step: (B*T, D) -> (B, T, width)
        # t [1, 1] R as TCAF-GZSL writes it: the time times the sum of R's two rows
        frequencies = self.fourier_frequencies.sum(dim=0, keepdim=True)  # (1, time_dim / 2)
        angles = 2 * math.pi * self.step_times(t, step_s, steps.device)[:, None] @ frequencies  # (T, time_dim / 2)
        time = self.time_embedding(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))  # (T, time_dim)
        embedding = (time + self.modality_embedding.weight[modality]).expand(b, t, -1)
        return self.step_dropout(project(torch.cat([encoded, embedding], dim=-1)))

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        if self.config.peer_input_scaling:
            audio, video = audio / 255.0, F.normalize(video, dim=1)  # TCAF-GZSL's: video normalised over time
        audio_tokens = self.embed_steps(audio, self.audio_encoder, self.audio_step, 0, self.config.audio_step_s)
        video_tokens = self.embed_steps(video, self.video_encoder, self.video_step, 1, self.config.video_step_s)
        tokens = torch.cat([self.class_token.expand(audio.shape[0], -1, -1), audio_tokens, video_tokens], dim=1)
        mask = cross_modal_mask(audio.shape[1], video.shape[1], tokens.device)
        for layer in self.layers:
            tokens = layer(tokens, mask)
        return self.output_projection(tokens[:, 0])  # the class token -> theta_o (B, output_dim)

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_projection(class_embeddings)

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        return text_space_losses(self, self.embed_clips(batch.video, batch.audio), class_embeddings[batch.labels],
                                 batch.labels, class_embeddings)


def text_space_losses(head: nn.Module, theta_o: torch.Tensor, w: torch.Tensor, labels: torch.Tensor,
                      class_embeddings: torch.Tensor) -> HeadLosses:
    """TCaF's four losses (ClipClap's too, with its encoded class vectors as w): cross-entropy of theta_o . theta_w
    over the training classes, MSE(theta_o, theta_w), MSE(w, D_o(theta_o)) + MSE(w, D_w(theta_w)).

    Args:
        head: has `output_decoder` (D_o), `text_projection` (W_proj) and `text_decoder` (D_w).
        theta_o: the clips (B, D); w: their classes' vectors (B, E); labels (B,) rows of class_embeddings (C, E).
    """
    rho_o = head.output_decoder(theta_o)  # the peers' call order (BatchNorm statistics are per call)
    theta_w = head.text_projection(w)
    rho_w = head.text_decoder(theta_w)
    scores = theta_o @ head.text_projection(class_embeddings).T  # (B, C)
    cross_entropy = F.cross_entropy(scores, labels)
    regression = F.mse_loss(theta_o, theta_w)
    reconstruction = F.mse_loss(rho_o, w) + F.mse_loss(rho_w, w)
    return HeadLosses(total=cross_entropy + regression + reconstruction,
                      parts={"cross_entropy": cross_entropy, "regression": regression,
                             "reconstruction": reconstruction})


# TCAF-GZSL's names: Multimodal_Sequence_Transformer's EmbeddingNets (`fc` Sequentials laid out as ours), its
# AudioVisualEmbedding (`position_encoder_block`, also saved as its alias `audiovisual_embeddings`) and Transformer.
_PEER_NAMES = {"audio_encoder.": "A_enc.fc.", "video_encoder.": "V_enc.fc.", "output_projection.": "O_proj.fc.",
               "output_decoder.": "D_o.fc.", "text_projection.": "W_proj.fc.", "text_decoder.": "D_w.fc.",
               "class_token": "cls_token", "modality_embedding.": "position_encoder_block.modal_embedding.",
               "fourier_frequencies": "position_encoder_block.fourier_randn",
               "time_embedding.": "position_encoder_block.fourier_embeddings.",
               "audio_step.": "position_encoder_block.out_proj_audio.",
               "video_step.": "position_encoder_block.out_proj_video."}
_PEER_LAYER_NAMES = {"norm.": "norm.", "query.": "attn.to_q.", "key.": "attn.to_k.", "value.": "attn.to_v.",
                     "output.": "attn.to_out.", "mlp.": "ff.net."}


def peer_weights(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """A TCAF-GZSL Multimodal_Sequence_Transformer state_dict as this head's: the sizes from its layers' shapes.

    Its alias `audiovisual_embeddings.*` (the same module saved twice) and its padding embedding (our steps are
    never padded) are dropped; its step projections are 1x1 convolutions, our Linears.

    Raises:
        InputError: another method's keys, missing or unexpected keys, or shapes that disagree with each other.
    """
    hidden_dim, audio_dim = peer_tensor(state_dict, "A_enc.fc.0.weight", 2).shape
    video_dim = peer_tensor(state_dict, "V_enc.fc.0.weight", 2).shape[1]
    width = peer_tensor(state_dict, "A_enc.fc.4.weight", 2).shape[0]
    embedding_dim = peer_tensor(state_dict, "W_proj.fc.0.weight", 2).shape[1]
    output_dim, decoder_hidden = (peer_tensor(state_dict, "O_proj.fc.4.weight", 2).shape[0],
                                  peer_tensor(state_dict, "O_proj.fc.0.weight", 2).shape[0])
    time_dim = peer_tensor(state_dict, "position_encoder_block.modal_embedding.weight", 2).shape[1]
    mlp_dim = peer_tensor(state_dict, "Audio_visual_transformer.layers.0.ff.net.0.weight", 2).shape[0]
    inner = peer_tensor(state_dict, "Audio_visual_transformer.layers.0.attn.to_q.weight", 2).shape[0]
    depth = len({key.split(".")[2] for key in state_dict if key.startswith("Audio_visual_transformer.layers.")})
    # the heads are not in the shapes (only heads x head width): the configs' pairs, told apart by their product
    heads = {512: 8, 384: 3, 768: 6}.get(int(inner))
    if heads is None:
        raise InputError(f"attention of width {inner} is none of TCAF-GZSL's configurations (8 x 64, 3 x 128, "
                         "6 x 128): its head count is not in the weights")
    values = {"encoder_hidden_dim": int(hidden_dim), "token_dim": int(width), "depth": depth, "attention_heads": heads,
              "attention_head_dim": int(inner) // heads, "mlp_dim": int(mlp_dim), "time_dim": int(time_dim),
              "decoder_hidden_dim": int(decoder_hidden), "output_dim": int(output_dim), "peer_input_scaling": True}
    dims = {"video_dim": int(video_dim), "audio_dim": int(audio_dim), "embedding_dim": int(embedding_dim)}
    kept = {key: value for key, value in state_dict.items()
            if not key.startswith("audiovisual_embeddings.") and key != "position_encoder_block.pad_embedding.weight"}
    for name in ("audio", "video"):  # Conv1d (out, in, 1) -> Linear (out, in)
        key = f"position_encoder_block.out_proj_{name}.weight"
        kept[key] = peer_tensor(state_dict, key, 3).squeeze(-1)
    renames = {**_PEER_NAMES, **{f"layers.{i}.{ours}": f"Audio_visual_transformer.layers.{i}.{theirs}"
                                 for i in range(depth) for ours, theirs in _PEER_LAYER_NAMES.items()}}
    head = TCaF(TCaFConfig(**values), ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims), False)
    return {**values, "dims": dims}, from_peer_names(kept, head, renames, "Multimodal_Sequence_Transformer",
                                                     "TCAF-GZSL")


@register_head("tcaf", config=TCaFConfig, recipes=RECIPES, peer_weights=peer_weights)
def tcaf(config: TCaFConfig, dims: ModelDims, extracted: bool) -> TCaF:
    """TCaF with TCAF-GZSL's sizes."""
    return TCaF(config, dims, extracted)
