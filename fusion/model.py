"""The MZST AVT fusion head: cached audio / video tokens (and, in training, class-name words) -> f(x).

Paper: Doshi et al., "A Multimodal Benchmark and Improved Architecture for Zero Shot Learning" (the AVT fusion
network, eq. 2 and 5); bottleneck fusion as in MBT (Nagrani et al. 2021, google-research/scenic
`projects/mbt`, Apache-2.0): modality layers run on `[their tokens, bottleneck tokens]` and the copies of the
bottleneck that come out are averaged. Written for this project, no code copied.

Two passes, so that no label reaches the outputs used at inference (the text stream carries the class name):
- the AV-only pass (`forward_av`): per block only the AV+F layer on `[CLS_V, video, audio, fusion]`; the
  TASK logits and the SE output f(x) read its CLS_V. Inference runs this pass only; it has no text argument.
- the text pass (training only, for the MLM loss): per block the AV+F layer and the T+F layer on
  `[CLS_T, words, fusion]` both take the block's incoming fusion tokens, and their two outgoing copies are
  averaged (MBT); with `fusion_order="sequential"` the T+F layer takes the fusion tokens the block's AV+F layer
  put out (eq. 2 as written). Its AV outputs are discarded; its text outputs predict the masked words. Block 1's
  AV+F output is the AV-only pass's (same input), so with K blocks the text pass adds K-1 AV+F layers (the
  parallel order does not read the last one).

Cached tokens have lost their positions, so each modality gets a LayerNorm + linear adapter, a learned position
embedding per token index and a learned modality embedding. A clip without audio has its audio tokens masked
as attention keys in every layer, so they cannot influence any other token (silence would be a real, meaningless input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion.config import FusionConfig

__all__ = ["ModelDims", "AVOutput", "FusionOutput", "FusionModel", "build_model", "count_parameters"]


@dataclass(frozen=True)
class ModelDims:
    """Sizes the data fixes (the token layout of the store, the class list, the embedding source, the words)."""

    video_tokens: int  # Nv, tokens per video view
    video_dim: int  # Dv
    audio_tokens: int  # Na
    audio_dim: int  # Da
    num_classes: int  # C, training (seen) classes of the TASK head
    embedding_dim: int  # E, the class-name embedding dimension f(x) regresses
    vocab_size: int = 0  # MLM vocabulary incl. the special words (0 without the text stream)
    max_text_tokens: int = 0  # 1 + the most words of a training class name (0 without the text stream)

    def __post_init__(self) -> None:
        for name in ("video_tokens", "video_dim", "audio_tokens", "audio_dim", "num_classes", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model dims: {name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class AVOutput:
    """Outputs of the AV-only pass.

    Shapes:
        embedding (B, E): f(x); task_logits (B, C).
    """

    embedding: torch.Tensor
    task_logits: torch.Tensor


@dataclass
class FusionOutput(AVOutput):
    """Outputs of the training forward: the AV-only pass plus the text pass's word logits.

    Shapes:
        mlm_logits (B, L, vocab) or None when no text was given; L counts CLS_T.
    """

    mlm_logits: torch.Tensor | None = None


class _Adapter(nn.Module):
    """LayerNorm + linear from a backbone's token width to the head's."""

    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class _Attention(nn.Module):
    """Multi-head self-attention with a key mask (False = this token may not be attended to)."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> (B, N, 3, H, D/H) -> (3, B, H, N, D/H)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = None if key_keep is None else key_keep[:, None, None, :]  # (B, N) -> (B, 1, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, H, N, D/H) -> (B, N, H, D/H) -> (B, N, D)


class _Layer(nn.Module):
    """A pre-LN transformer layer (MSA + FFN, the paper's eq. 2)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.attention = _Attention(width, num_heads, attention_dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), key_keep))
        return x + self.drop(self.mlp(self.norm2(x)))


def _layers(config: FusionConfig) -> nn.ModuleList:
    """One pre-LN layer per block."""
    return nn.ModuleList(
        _Layer(config.width, config.num_heads, config.mlp_ratio, config.dropout, config.attention_dropout)
        for _ in range(config.num_blocks)
    )


class FusionModel(nn.Module):
    """The AVT fusion head (or, with `fusion_mode="concat"`, the Table 7 baseline without fusion).

    Build with `build_model`. The model owns no optimiser, loss or schedule.
    """

    def __init__(self, config: FusionConfig, dims: ModelDims) -> None:
        super().__init__()
        if config.use_text and (dims.vocab_size <= 4 or dims.max_text_tokens < 2):
            raise ValueError(f"the text stream needs a vocabulary and class-name words, got dims {dims}")
        self.config = config
        self.dims = dims
        width = config.width
        self.uses_video = config.modalities in ("av", "video")
        self.uses_audio = config.modalities in ("av", "audio")
        if self.uses_video:
            self.video_adapter = _Adapter(dims.video_dim, width)
        if self.uses_audio:
            self.audio_adapter = _Adapter(dims.audio_dim, width)
        if config.fusion_mode == "concat":
            if self.uses_audio:
                # Stands in for the pooled audio feature of a clip without audio: a learned "absent" input.
                self.missing_audio = nn.Parameter(torch.zeros(width))
            inputs = width * (int(self.uses_video) + int(self.uses_audio))
            self.concat_mlp = nn.Sequential(
                nn.Linear(inputs, width), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(width, width))
        else:
            if self.uses_video:
                self.video_position = nn.Parameter(torch.zeros(1, dims.video_tokens, width))
                self.video_modality = nn.Parameter(torch.zeros(1, 1, width))
            if self.uses_audio:
                self.audio_position = nn.Parameter(torch.zeros(1, dims.audio_tokens, width))
                self.audio_modality = nn.Parameter(torch.zeros(1, 1, width))
            self.cls_av = nn.Parameter(torch.zeros(1, 1, width))
            self.fusion_tokens = nn.Parameter(torch.zeros(1, config.num_fusion_tokens, width))
            self.av_layers = _layers(config)
        if config.use_text:
            self.word_embedding = nn.Embedding(dims.vocab_size, width)
            self.text_position = nn.Parameter(torch.zeros(1, dims.max_text_tokens, width))
            self.text_layers = _layers(config)
            self.text_norm = nn.LayerNorm(width)
            self.mlm_head = nn.Linear(width, dims.vocab_size)
        self.norm = nn.LayerNorm(width)
        self.head_dropout = nn.Dropout(config.dropout)
        self.task_head = nn.Linear(width, dims.num_classes)
        # f(x) of the SE loss is "the FFN output" in the paper: a two-layer FFN on the AV CLS.
        self.se_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dims.embedding_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=0.02)
        for name, parameter in self.named_parameters():
            if name == "fusion_tokens":
                nn.init.normal_(parameter, std=0.02)  # the paper's N(0, 0.02)
            elif name.endswith(("_position", "_modality")) or name == "cls_av":
                nn.init.trunc_normal_(parameter, std=0.02)

    # --- the AV-only pass (inference) -------------------------------------------------------------------

    def forward_av(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor) -> AVOutput:
        """The AV-only pass: f(x) and the TASK logits from audio and video alone.

        Args:
            video_tokens: one view's tokens per clip (pick or average views first; see `forward_views`).
            audio_tokens: the clip's audio tokens (any values where `has_audio` is False: they are masked).
            has_audio: whether the clip has audio.

        Shapes:
            video_tokens (B, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> embedding (B, E),
            task_logits (B, C)
        """
        self._check_inputs(video_tokens, audio_tokens, has_audio)
        if self.config.fusion_mode == "concat":
            return self._heads(self._concat_features(video_tokens, audio_tokens, has_audio))
        return self._encode_av(video_tokens, audio_tokens, has_audio)[0]

    def forward_views(
        self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor
    ) -> AVOutput:
        """Inference over all views: the view ensemble (mean of f(x) and logits) or one pass on averaged tokens.

        `config.view_mode` "ensemble" runs the AV-only pass once per view and averages its outputs (the paper's
        inference-time ensemble); "mean" averages the tokens over views and runs once.

        Shapes:
            video_tokens (B, V, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> embedding (B, E),
            task_logits (B, C)
        """
        if video_tokens.ndim != 4:
            raise ValueError(f"video_tokens must be (B, V, Nv, Dv), got shape {tuple(video_tokens.shape)}")
        if self.config.view_mode == "mean":
            return self.forward_av(video_tokens.mean(dim=1), audio_tokens, has_audio)  # (B, V, Nv, Dv) -> (B, Nv, Dv)
        b, v = video_tokens.shape[:2]
        out = self.forward_av(
            video_tokens.flatten(0, 1),  # (B, V, Nv, Dv) -> (B*V, Nv, Dv)
            audio_tokens.repeat_interleave(v, dim=0),  # (B, Na, Da) -> (B*V, Na, Da)
            has_audio.repeat_interleave(v, dim=0),  # (B,) -> (B*V,)
        )
        return AVOutput(
            embedding=out.embedding.reshape(b, v, -1).mean(dim=1),  # (B*V, E) -> (B, V, E) -> (B, E)
            task_logits=out.task_logits.reshape(b, v, -1).mean(dim=1),  # (B*V, C) -> (B, V, C) -> (B, C)
        )

    # --- the training forward ---------------------------------------------------------------------------

    def forward(
        self,
        video_tokens: torch.Tensor,
        audio_tokens: torch.Tensor,
        has_audio: torch.Tensor,
        text_ids: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Training forward: the AV-only pass (SE, TASK) and, given text, the text pass (MLM).

        The embedding and task logits come from the AV-only pass whatever `text_ids` holds.

        Args:
            video_tokens: one view's tokens per clip.
            audio_tokens: the clip's audio tokens.
            has_audio: whether the clip has audio.
            text_ids: `[CLS_T, words (some masked), PAD...]` ids of the clip's class name, or None.

        Shapes:
            video_tokens (B, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,), text_ids (B, L) ->
            embedding (B, E), task_logits (B, C), mlm_logits (B, L, vocab) or None
        """
        if text_ids is None:
            return FusionOutput(**vars(self.forward_av(video_tokens, audio_tokens, has_audio)))
        if not self.config.use_text:
            raise ValueError("this model has no text stream (use_text=False); call it without text_ids")
        self._check_inputs(video_tokens, audio_tokens, has_audio)
        av, start, first, keep = self._encode_av(video_tokens, audio_tokens, has_audio)
        return FusionOutput(embedding=av.embedding, task_logits=av.task_logits,
                            mlm_logits=self._text_pass(start, first, keep, text_ids))

    def _encode_av(
        self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor
    ) -> tuple[AVOutput, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The AV-only pass; also returns its input sequence, block 1's output and the key mask for the text pass."""
        start, keep = self._av_sequence(video_tokens, audio_tokens, has_audio)  # (B, 1+Nv+Na+K, D)
        first = x = self.av_layers[0](start, keep)
        for layer in self.av_layers[1:]:
            x = layer(x, keep)
        return self._heads(x[:, 0]), start, first, keep  # CLS_V: (B, N, D) -> (B, D)

    def _text_pass(
        self, start: torch.Tensor, first: torch.Tensor, keep: torch.Tensor, text_ids: torch.Tensor
    ) -> torch.Tensor:
        """Word logits of the text pass, given the AV-only pass's input `start` and block 1 output `first`.

        Block 1's AV+F layer sees the same input in both passes, so its output is shared (exact, not an
        approximation). The last block's AV+F output is read only by the sequential order.
        """
        b, length = text_ids.shape
        if length > self.dims.max_text_tokens:
            raise ValueError(f"text_ids has {length} positions, the model knows {self.dims.max_text_tokens}")
        if b != start.shape[0]:
            raise ValueError(f"text_ids has {b} rows for {start.shape[0]} clips")
        k = self.config.num_fusion_tokens
        t = self.word_embedding(text_ids) + self.text_position[:, :length]  # (B, L, D)
        text_keep = torch.cat([text_ids != 0, keep.new_ones(b, k)], dim=1)  # PAD (id 0) is masked: (B, L+K)
        sequential = self.config.fusion_order == "sequential"
        fusion_in, av_out = start[:, -k:], first  # block 1: its incoming fusion tokens and its AV+F output
        for block, text_layer in enumerate(self.text_layers):
            # parallel (MBT): the text layer reads the block's incoming fusion tokens, as the AV+F layer did;
            # sequential (eq. 2 as written): the fusion tokens the block's AV+F layer has just updated
            text_fusion = av_out[:, -k:] if sequential else fusion_in
            t_out = text_layer(torch.cat([t, text_fusion], dim=1), text_keep)  # (B, L, D) + (B, K, D) -> (B, L+K, D)
            t = t_out[:, :length]  # (B, L+K, D) -> (B, L, D)
            if block + 1 == len(self.text_layers):
                break
            fusion_in = (av_out[:, -k:] + t_out[:, length:]) / 2  # both streams are present: plain mean, (B, K, D)
            x = torch.cat([av_out[:, :-k], fusion_in], dim=1)  # (B, 1+Nv+Na, D) + (B, K, D) -> (B, 1+Nv+Na+K, D)
            av_out = self.av_layers[block + 1](x, keep)
        return self.mlm_head(self.text_norm(t))  # (B, L, D) -> (B, L, vocab)

    # --- pieces -----------------------------------------------------------------------------------------

    def _check_inputs(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor) -> None:
        d = self.dims
        if video_tokens.ndim != 3 or tuple(video_tokens.shape[1:]) != (d.video_tokens, d.video_dim):
            raise ValueError(f"video_tokens must be (B, {d.video_tokens}, {d.video_dim}), "
                             f"got {tuple(video_tokens.shape)}")
        if audio_tokens.ndim != 3 or tuple(audio_tokens.shape[1:]) != (d.audio_tokens, d.audio_dim):
            raise ValueError(f"audio_tokens must be (B, {d.audio_tokens}, {d.audio_dim}), "
                             f"got {tuple(audio_tokens.shape)}")
        if has_audio.shape != video_tokens.shape[:1] or audio_tokens.shape[0] != video_tokens.shape[0]:
            raise ValueError(f"batch sizes differ: video {video_tokens.shape[0]}, audio {audio_tokens.shape[0]}, "
                             f"has_audio {tuple(has_audio.shape)}")

    def _av_sequence(
        self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`[CLS_V, video, audio, fusion]` and its key mask; a modality the config leaves out is not included."""
        b = video_tokens.shape[0]
        parts = [self.cls_av.expand(b, -1, -1)]  # (B, 1, D)
        keep = [has_audio.new_ones(b, 1, dtype=torch.bool)]
        if self.uses_video:
            parts.append(self.video_adapter(video_tokens) + self.video_position + self.video_modality)  # (B, Nv, D)
            keep.append(has_audio.new_ones(b, self.dims.video_tokens, dtype=torch.bool))
        if self.uses_audio:
            parts.append(self.audio_adapter(audio_tokens) + self.audio_position + self.audio_modality)  # (B, Na, D)
            keep.append(has_audio.bool()[:, None].expand(b, self.dims.audio_tokens))  # (B,) -> (B, Na)
        parts.append(self.fusion_tokens.expand(b, -1, -1))  # (B, K, D)
        keep.append(has_audio.new_ones(b, self.config.num_fusion_tokens, dtype=torch.bool))
        return torch.cat(parts, dim=1), torch.cat(keep, dim=1)  # (B, 1+Nv+Na+K, D), (B, 1+Nv+Na+K)

    def _concat_features(
        self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor
    ) -> torch.Tensor:
        parts = []
        if self.uses_video:
            parts.append(self.video_adapter(video_tokens.mean(dim=1)))  # (B, Nv, Dv) -> (B, Dv) -> (B, D)
        if self.uses_audio:
            audio = self.audio_adapter(audio_tokens.mean(dim=1))  # (B, Na, Da) -> (B, Da) -> (B, D)
            parts.append(torch.where(has_audio.bool()[:, None], audio, self.missing_audio.to(audio.dtype)))
        return self.concat_mlp(torch.cat(parts, dim=1))  # (B, D) x modalities -> (B, D)

    def _heads(self, features: torch.Tensor) -> AVOutput:
        features = self.head_dropout(self.norm(features))  # (B, D)
        return AVOutput(embedding=self.se_head(features), task_logits=self.task_head(features))

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: weight matrices decay; norms, biases, embeddings and learned tokens do not."""
        decay, no_decay = [], []
        for name, parameter in self.named_parameters():
            is_matrix = parameter.ndim >= 2 and not name.startswith("word_embedding") and "." in name
            (decay if is_matrix else no_decay).append(parameter)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_model(config: FusionConfig, dims: ModelDims) -> FusionModel:
    """The fusion head for `config` and the data's `dims`, randomly initialised (seed torch first)."""
    return FusionModel(config, dims)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of `model`."""
    return sum(p.numel() for p in model.parameters())
