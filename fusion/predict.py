"""AV-only inference of a fusion head over a token store.

`predict_embeddings` runs the AV-only pass (no text can reach it) over clips of a store, with the head's view
handling: the mean of f(x) over all views ("ensemble") or one pass on view-averaged tokens ("mean"). A trained
head comes from `fusion.run_dir.load_run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from extract.errors import InputError
from features.reader import BatchReader
from features.store import DONE, TokenStore
from fusion.losses import kinetics_class
from fusion.model import FusionModel, ModelDims

__all__ = ["Predictions", "resolve_device", "check_layout", "predict_embeddings"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Predictions:
    """AV-only outputs of the head for clips of a store, in the order of the indices asked for.

    Shapes:
        embeddings (N, E) float32: f(x), averaged over views; kinetics_pred (N,) int64 or None (store without
        Kinetics logits): s_v(x); task_logits (N, C) float32; index (N,) int64: clip indices in the store.
    """

    embeddings: np.ndarray
    kinetics_pred: np.ndarray | None
    task_logits: np.ndarray
    index: np.ndarray


def resolve_device(name: str) -> torch.device:
    """The torch device for "cpu" or "cuda"; never falls back silently.

    Raises:
        ValueError: an unknown name, or "cuda" without a visible CUDA device.
    """
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for but torch sees no CUDA device; use `device='cpu'`")
    return torch.device(name)


def check_layout(store: TokenStore, dims: ModelDims) -> None:
    """Raise InputError when the store's token layout does not fit a model built with `dims`."""
    layout = store.token_layout
    expected = {"video_tokens": dims.video_tokens, "video_dim": dims.video_dim, "audio_tokens": dims.audio_tokens,
                "audio_dim": dims.audio_dim}
    wrong = {name: (getattr(layout, name), value) for name, value in expected.items() if getattr(layout, name) != value}
    if wrong:
        listed = ", ".join(f"{name}={got} (model: {want})" for name, (got, want) in wrong.items())
        raise InputError(f"{store.path}: token layout {listed} does not fit this fusion head; use a store made with "
                         "the extraction config the head was trained on")


@torch.inference_mode()
def predict_embeddings(
    model: FusionModel,
    store: TokenStore,
    indices: Sequence[int] | np.ndarray,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Run the AV-only pass of `model` over clips of `store` (view ensemble or mean, per the model's config).

    Args:
        model: a fusion head (from `load_run`, or the trainer's); its train / eval mode is restored afterwards.
        store: an open token store whose layout fits the model.
        indices: clip indices, all done.
        batch_size: clips per forward pass.
        device: where the model is.

    Raises:
        ValueError: layout mismatch, or clips that are not done (pending or failed have no tokens).

    Shapes:
        indices (N,) -> Predictions: embeddings (N, E), kinetics_pred (N,), task_logits (N, C), index (N,)
    """
    indices = np.asarray(indices, dtype=np.int64)
    check_layout(store, model.dims)
    not_done = indices[store.status[indices] != DONE] if indices.size else indices
    if not_done.size:
        raise InputError(f"{store.path}: {not_done.size} clip(s) asked for are not done (e.g. clip "
                         f"{store.clip_ids[not_done[0]]!r}); predict only clips with status done")
    torch_device = torch.device(device)
    has_kinetics = bool(store.token_layout.kinetics_classes)
    fields = ("video_tokens", "audio_tokens", "has_audio") + (("kinetics_logits",) if has_kinetics else ())
    reader = BatchReader(store, indices, batch_size, shuffle=False, fields=fields)
    embeddings, logits, kinetics, order = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            with torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=torch_device.type == "cuda"):
                out = model.forward_views(batch.video_tokens.to(torch_device),
                                          batch.audio_tokens.to(torch_device), batch.has_audio.to(torch_device))
            embeddings.append(out.embedding.float().cpu())
            logits.append(out.task_logits.float().cpu())
            if has_kinetics:
                kinetics.append(kinetics_class(batch.kinetics_logits))
            order.append(batch.index)
    finally:
        model.train(was_training)
    e, c = model.dims.embedding_dim, model.dims.num_classes
    return Predictions(
        embeddings=torch.cat(embeddings).numpy() if embeddings else np.zeros((0, e), np.float32),
        kinetics_pred=(torch.cat(kinetics).numpy() if kinetics else np.zeros(0, np.int64)) if has_kinetics else None,
        task_logits=torch.cat(logits).numpy() if logits else np.zeros((0, c), np.float32),
        index=torch.cat(order).numpy() if order else np.zeros(0, np.int64),
    )
