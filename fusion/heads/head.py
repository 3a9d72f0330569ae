"""The interface every comparison head implements, and what the trainer and evaluation ask of it.

A comparison head (the AVCA-GZSL family) does not regress the class embedding phi(c) as MZST does: it embeds a
clip, theta(x), and a class, theta_w(phi(c)), into one learned space and recognises the class nearest in the
Euclidean distance (AVCA-GZSL's `torch.cdist`). So a head gives evaluation two embeddings, never a score of its
own: `embed_clips` (through `forward_views`, the AV pass `fusion.predict` runs) and `embed_classes`, and every
distance is `eval.metrics`' "plain" rule between them. A head that scores several branches (AVGZSLNet sums the
distances of its audio and of its video embedding) gives them side by side in `embed_clips` and names them in
`branches`; `decision` says which distances its test-time rule sums (`eval.scoring.branch_distances`).
The trainer asks the head for its losses (`training_losses`) and its optimiser (`optimizer`); the batches and the
schedule are `fusion.heads.training`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from common.errors import InputError
from fusion.heads.inputs import clip_vectors
from fusion.model import AVOutput, ModelDims

__all__ = ["ClipBatch", "HeadLosses", "ComparisonHead", "config_values", "peer_tensor", "from_peer_names"]


@dataclass
class ClipBatch:
    """Per-clip inputs of a batch and their class ids (rows of the training classes' embeddings): the head's
    `clip_inputs`, vectors for most heads, time steps for a temporal one (TCaF).

    Shapes:
        video (B, Dv) or (B, Tv, Dv), audio (B, Da) or (B, Ta, Da), labels (B,) int64
    """

    video: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor


@dataclass
class HeadLosses:
    """One step's losses: `total` is what the optimiser minimises, `parts` its named terms (unweighted, logged)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


class ComparisonHead(nn.Module):
    """A head that compares clips and classes in a learned space (subclasses: one module per method).

    Attributes:
        method: the registry name (`fusion.heads.create_head`).
        config: the method's frozen config dataclass.
        dims: the sizes the data fixes (the store's token layout, the classes, the embedding dimension E).
        extracted: the store's tokens are extracted ones (CLS first), not imported time segments
            (`fusion.heads.inputs`).
        branches: the per-clip embeddings `embed_clips` gives side by side, each of width D; empty: one theta(x).
        decision: the branches whose distances to a class the test-time rule sums.
        beta_modes: for the peers' beta rule (`eval.gzsl`), the branch sets whose best betas on validation the peers
            average ("audio", "video" and "both" in AVCA-GZSL's `get_evaluation.py`); empty: the head cannot take
            that rule.
    """

    method: str
    branches: tuple[str, ...] = ()
    decision: tuple[str, ...] = ()
    beta_modes: tuple[tuple[str, ...], ...] = ()

    def __init__(self, config: Any, dims: ModelDims, extracted: bool) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.extracted = extracted

    def clip_inputs(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                    has_audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the head takes of a clip's tokens: the per-clip vectors (`fusion.heads.inputs.clip_vectors`); a
        temporal head overrides it with time steps.

        Shapes:
            video_tokens (B, V, Nv, Dv) or (B, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> video (B, Dv),
            audio (B, Da)
        """
        return clip_vectors(video_tokens, audio_tokens, has_audio, self.extracted)

    def embed_clips(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """theta(x), the clip in the comparison space (a head with `branches`: theirs side by side).

        Shapes:
            video (B, Dv), audio (B, Da) (`clip_inputs`) -> (B, D), or (B, len(branches) * D)
        """
        raise NotImplementedError

    def embed_classes(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """theta_w(phi(c)), the classes in the comparison space. Shapes: (C, E) -> (C, D)."""
        raise NotImplementedError

    def training_losses(self, batch: ClipBatch, negatives: ClipBatch, class_embeddings: torch.Tensor) -> HeadLosses:
        """The method's losses on one batch.

        Args:
            batch: the clips; their labels index `class_embeddings`.
            negatives: per clip a clip of another class (for triplets; methods without them ignore it).
            class_embeddings: phi of the training classes (C, E).
        """
        raise NotImplementedError

    def after_step(self, batch: ClipBatch, class_embeddings: torch.Tensor) -> None:
        """What the method's training does after each optimiser step besides the step (nothing unless a method
        says so: AVCA's extra training-mode pass, which moves its BatchNorm statistics)."""

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The peers' optimiser: Adam over every parameter (AVCA-GZSL `main.py`)."""
        return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)

    def forward_views(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                      has_audio: torch.Tensor) -> AVOutput:
        """The AV pass evaluation runs (`fusion.predict.predict_embeddings`): theta(x), and no TASK logits.

        Shapes:
            video_tokens (B, V, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> embedding (B, D),
            task_logits (B, 0)
        """
        video, audio = self.clip_inputs(video_tokens, audio_tokens, has_audio)
        embedding = self.embed_clips(video, audio)
        return AVOutput(embedding=embedding, task_logits=embedding.new_zeros((embedding.shape[0], 0)))

    @torch.inference_mode()
    def class_space(self, class_embeddings: np.ndarray) -> np.ndarray:
        """`embed_classes` of numpy class embeddings in eval mode, what `eval.scoring.ClipScores` compares with.

        Shapes:
            (C, E) -> (C, D)
        """
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            classes = torch.from_numpy(np.ascontiguousarray(class_embeddings, dtype=np.float32)).to(device)
            return self.embed_classes(classes).float().cpu().numpy()
        finally:
            self.train(was_training)

    def record(self) -> dict[str, Any]:
        """What a checkpoint holds to rebuild the head (`fusion.heads.head_from_record`)."""
        return {"method": self.method, "config": config_values(self.config), "extracted": self.extracted}


def config_values(config: Any) -> dict[str, Any]:
    """A head config as JSON-able values (tuples as lists, as they are read back)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def peer_tensor(state_dict: Mapping[str, Any], key: str, dims: int) -> torch.Tensor:
    """`state_dict[key]` of a peer's checkpoint, checked to be a tensor of `dims` dimensions (what sizes are read
    from before the whole state is checked by `from_peer_names`).

    Raises:
        InputError: the key is missing, or holds something else.
    """
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != dims:
        shape = tuple(getattr(value, "shape", ()))
        found = "missing" if value is None else f"a {type(value).__name__} of shape {shape}"
        raise InputError(f"no {dims}-d tensor {key!r} (it is {found}); {len(state_dict)} keys, e.g. "
                         f"{sorted(state_dict)[:3]}")
    return value


def from_peer_names(state_dict: Mapping[str, Any], head: ComparisonHead, renames: Mapping[str, str],
                    peer_model: str, code: str = "AVCA-GZSL") -> dict[str, torch.Tensor]:
    """A peer's state_dict under `head`'s parameter names, checked against `head` key by key and shape by shape.

    Args:
        state_dict: the peer's parameters (AVCA-GZSL's names).
        head: a head built with the sizes the peer's shapes give.
        renames: our name prefix -> the peer's (the longest matching prefix applies; "" keeps a name).
        peer_model: the peer's model class, for the message.
        code: the peer's repository, for the message.

    Raises:
        InputError: one line naming the peer's keys that are missing, unexpected or of another shape.
    """
    def peer_name(name: str) -> str:
        ours = max((prefix for prefix in renames if name.startswith(prefix)), key=len, default=None)
        return name if ours is None else renames[ours] + name[len(ours):]

    own = {peer_name(name): (name, tensor.shape) for name, tensor in head.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    wrong = sorted(f"{key} {tuple(getattr(state_dict[key], 'shape', ()))} (expected {tuple(shape)})"
                   for key, (_, shape) in own.items()
                   if key in state_dict and getattr(state_dict[key], "shape", None) != shape)
    if missing or unexpected or wrong:
        raise InputError(f"not the weights of {code}'s {peer_model}: {len(missing)} missing {missing[:4]}, "
                         f"{len(unexpected)} unexpected {unexpected[:4]}, {len(wrong)} of another shape {wrong[:4]}")
    return {name: state_dict[key] for key, (name, _) in own.items()}
