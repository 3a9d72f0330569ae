"""AV-only inference of a fusion head over a token store.

`predict_embeddings` runs the AV-only pass (no text can reach it) over clips of a store, with the head's view
handling: the mean of f(x) over all views ("ensemble") or one pass on view-averaged tokens ("mean"). A head
trained without the SE loss (`zero_shot_embedding="conse"`) gets f(x) by ConSE from its TASK logits instead
(`conse_embeddings`). A trained head comes from `fusion.trained_run.load_run`; heads trained apart, one per modality,
whose outputs are compared side by side (the paper's feature concatenation) from `load_concatenated_runs`.
`score_clips` adds what the decision rule needs (phi(s_v(x))) and hands eval its `ClipScores`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.errors import InputError
from eval.scoring import ClipScores, ClipSet
from features.reader import BatchReader, TokenBatch
from features.store import DONE, TokenStore
from fusion.heads.head import ComparisonHead
from fusion.losses import kinetics_class
from fusion.model import AVOutput, FusionModel, ModelDims

__all__ = ["Predictions", "ConcatenatedHeads", "resolve_device", "to_device", "check_layout", "conse_embeddings",
           "predict_embeddings", "score_clips", "clip_scores", "non_finite_clips"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Predictions:
    """AV-only outputs of the head for clips of a store, in the order of the indices asked for.

    Shapes:
        embeddings (N, E) float32: f(x), averaged over views (a ConSE head: ConSE of the logits); kinetics_pred
        (N,) int64 or None (store without Kinetics logits): s_v(x); task_logits (N, C) float32; index (N,) int64:
        clip indices in the store.
    """

    embeddings: np.ndarray
    kinetics_pred: np.ndarray | None
    task_logits: np.ndarray
    index: np.ndarray


class ConcatenatedHeads(torch.nn.Module):
    """Heads trained separately (one per modality) read as one: f(x) is their f(x) side by side.

    The paper's Table 7 "Feature Concatenation": each branch is optimised on its own and the audio and video
    embeddings are concatenated at evaluation, where they meet the class embedding repeated once per head. The
    TASK logits are the heads' mean.
    """

    def __init__(self, heads: Sequence[FusionModel]) -> None:
        super().__init__()
        methods = sorted({h.method for h in heads if isinstance(h, ComparisonHead)})
        if methods:  # each compares in its own learned space, with its own class map
            raise InputError(f"concatenated heads are MZST heads; the comparison head(s) {methods} cannot be "
                             "concatenated")
        if any(h.config.zero_shot_embedding != "se" for h in heads):
            raise InputError("concatenated heads need SE embeddings (a ConSE head has none to concatenate)")
        self.heads = torch.nn.ModuleList(heads)
        self.config = heads[0].config
        self.dims = dataclasses.replace(heads[0].dims, embedding_dim=sum(h.dims.embedding_dim for h in heads))

    def forward_views(self, video_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                      has_audio: torch.Tensor) -> AVOutput:
        """Shapes: video_tokens (B, V, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> embedding
        (B, sum of E), task_logits (B, C)."""
        outputs = [h.forward_views(video_tokens, audio_tokens, has_audio) for h in self.heads]
        return AVOutput(embedding=torch.cat([o.embedding for o in outputs], dim=1),  # H x (B, E) -> (B, H*E)
                        task_logits=torch.stack([o.task_logits for o in outputs]).mean(dim=0))  # (H, B, C) -> (B, C)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` (non_blocking from pinned memory), fp16 tokens converted to float32 there."""
    tensor = tensor.to(device, non_blocking=True)
    return tensor.float() if tensor.dtype == torch.float16 else tensor


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


def check_layout(store: TokenStore, dims: ModelDims, segments: bool = False) -> None:
    """Raise InputError when the store's token layout does not fit a model built with `dims`.

    `segments`: the model is a comparison head that reads imported time segments (a head imported from the peers'
    code records no segment count): any count of them fits, but only on a store of imported features.
    """
    layout = store.token_layout
    if segments and layout.source == "extracted":
        raise InputError(f"{store.path}: an extracted store, but this head reads the time segments of imported "
                         "features (import-avca); use a store of those features")
    expected = {"video_dim": dims.video_dim, "audio_dim": dims.audio_dim}
    if not segments:
        expected |= {"video_tokens": dims.video_tokens, "audio_tokens": dims.audio_tokens}
    wrong = {name: (getattr(layout, name), value) for name, value in expected.items() if getattr(layout, name) != value}
    if wrong:
        listed = ", ".join(f"{name}={got} (model: {want})" for name, (got, want) in wrong.items())
        raise InputError(f"{store.path}: token layout {listed} does not fit this fusion head; use a store made with "
                         "the extraction config the head was trained on")


def conse_embeddings(task_logits: np.ndarray, class_embeddings: np.ndarray, top_t: int) -> np.ndarray:
    """ConSE (Norouzi et al. 2014): the convex combination of the top-T seen-class embeddings, weighted by the
    softmax of the TASK logits (renormalised over those T classes).

    Shapes:
        task_logits (N, C), class_embeddings (C, E) -> (N, E)
    """
    if task_logits.shape[1] != class_embeddings.shape[0]:
        raise ValueError(f"ConSE: {task_logits.shape[1]} logits per clip for {class_embeddings.shape[0]} classes")
    logits = task_logits.astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))  # softmax; its sum cancels below
    t = min(top_t, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :t]  # (N, T); ties: the lower class id first
    weights = np.take_along_axis(probabilities, top, axis=1)  # (N, T)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nt,nte->ne", weights, class_embeddings[top]).astype(np.float32)  # (N, T, E) -> (N, E)


@torch.inference_mode()
def predict_embeddings(
    model: FusionModel | ConcatenatedHeads | ComparisonHead,
    store: TokenStore,
    indices: Sequence[int] | np.ndarray,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    class_embeddings: np.ndarray | None = None,
) -> Predictions:
    """Run the AV-only pass of `model` over clips of `store` (view ensemble or mean, per the model's config).

    Args:
        model: a fusion head (from `load_run`, or the trainer's); its train / eval mode is restored afterwards.
        store: an open token store whose layout fits the model.
        indices: clip indices, all done.
        batch_size: clips per forward pass.
        device: where the model is.
        class_embeddings: phi of the training classes in TASK-logit order (C, E); needed, and used, only by a
            head whose zero-shot embedding is ConSE.

    Raises:
        ValueError: layout mismatch, clips that are not done (pending or failed have no tokens), or a ConSE
            head without `class_embeddings`.

    Shapes:
        indices (N,) -> Predictions: embeddings (N, E), kinetics_pred (N,), task_logits (N, C), index (N,)
    """
    indices = np.asarray(indices, dtype=np.int64)
    check_layout(store, model.dims, segments=isinstance(model, ComparisonHead) and not model.extracted)
    not_done = indices[store.status[indices] != DONE] if indices.size else indices
    if not_done.size:
        raise InputError(f"{store.path}: {not_done.size} clip(s) asked for are not done (e.g. clip "
                         f"{store.clip_ids[not_done[0]]!r}); predict only clips with status done")
    torch_device = torch.device(device)
    has_kinetics = bool(store.token_layout.kinetics_classes)
    fields = ("video_tokens", "audio_tokens", "has_audio") + (("kinetics_logits",) if has_kinetics else ())
    reader = BatchReader(store, indices, batch_size, shuffle=False, fields=fields, float16=True,
                         pin_memory=torch_device.type == "cuda")
    embeddings, logits, kinetics, order = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            with torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=torch_device.type == "cuda"):
                out = model.forward_views(to_device(batch.video_tokens, torch_device),
                                          to_device(batch.audio_tokens, torch_device),
                                          to_device(batch.has_audio, torch_device))
            finite = torch.isfinite(out.embedding).all(dim=1).cpu()  # (B, E) -> (B,)
            if not bool(finite.all()):
                raise InputError(_non_finite_message(store, batch, finite))
            embeddings.append(out.embedding.float().cpu())
            logits.append(out.task_logits.float().cpu())
            if has_kinetics:
                kinetics.append(kinetics_class(batch.kinetics_logits))
            order.append(batch.index)
    finally:
        model.train(was_training)
    e, c = model.dims.embedding_dim, model.dims.num_classes
    task_logits = torch.cat(logits).numpy() if logits else np.zeros((0, c), np.float32)
    f_x = torch.cat(embeddings).numpy() if embeddings else np.zeros((0, e), np.float32)
    if isinstance(model, FusionModel) and model.config.zero_shot_embedding == "conse":
        if class_embeddings is None:
            raise ValueError("a ConSE head (zero_shot_embedding 'conse') needs the training classes' embeddings")
        f_x = conse_embeddings(task_logits, class_embeddings, model.config.conse_top_t)
    return Predictions(
        embeddings=f_x,
        kinetics_pred=(torch.cat(kinetics).numpy() if kinetics else np.zeros(0, np.int64)) if has_kinetics else None,
        task_logits=task_logits,
        index=torch.cat(order).numpy() if order else np.zeros(0, np.int64),
    )


def score_clips(model, info, store, indices: np.ndarray, rule: str, batch_size: int, device: str) -> ClipScores:
    """Run the head's AV-only pass over clips of a store and attach what the decision rule needs (for a comparison
    head, its map of class embeddings into the space it compares in).

    Raises:
        ValueError: rule "kinetics" on a run trained without phi(s_v) or a store without Kinetics logits, or a rule
            other than "plain" for a head that sums branch distances.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if isinstance(model, ComparisonHead) and model.branches and rule != "plain":
        raise InputError(f"method {model.method!r} sums the Euclidean distances of its branches {model.decision}: its "
                         f"rule is 'plain', not {rule!r}")
    if rule == "kinetics":
        if info.kinetics_embeddings is None:
            raise InputError(f"{info.run_dir} was trained without the phi(s_v) term (se_target 'class'): its rule "
                             "is 'plain'; `rule='kinetics'` does not apply")
        if not store.token_layout.kinetics_classes:
            raise InputError(f"{store.path} has no Kinetics logits, which rule 'kinetics' needs; use `rule='plain'`")
    predictions = predict_embeddings(model, store, indices, batch_size, device, class_embeddings=info.class_embeddings)
    return clip_scores(model, predictions, store, indices, rule, info.kinetics_embeddings)


def clip_scores(model, predictions: Predictions, store: TokenStore, indices: np.ndarray, rule: str,
                kinetics_embeddings: np.ndarray | None) -> ClipScores:
    """The `ClipScores` of predicted clips: what every distance of evaluation (the trainer's validation included)
    is taken through, with the head's class space and branches.

    Shapes:
        kinetics_embeddings (400, E) phi of the Kinetics labels, or None (a run without the phi(s_v) term)
    """
    offsets = None
    if predictions.kinetics_pred is not None and kinetics_embeddings is not None:
        offsets = kinetics_embeddings[predictions.kinetics_pred]  # (400, E) -> (N, E)
    return ClipScores(
        clips=ClipSet.of(store.identity, indices),
        clip_ids=store.clip_ids[predictions.index],
        labels=store.labels[predictions.index],
        splits=store.splits[predictions.index],
        embeddings=predictions.embeddings,
        offsets=offsets,
        rule=rule,
        **({"class_space": model.class_space, "branches": model.branches, "decision": model.decision,
            "beta_modes": model.beta_modes} if isinstance(model, ComparisonHead) else {}),
    )


def non_finite_clips(store: TokenStore, batch: TokenBatch) -> str:
    """Where `batch` holds NaN or inf: "video_tokens of clip(s) 'a', 'b'; audio_tokens of clip(s) 'c'", or "".

    Named by clip id and array, so that a user can find (and extract again) the clips that poison a run.
    """
    found = []
    for name in ("video_tokens", "audio_tokens", "kinetics_logits"):
        values = getattr(batch, name)
        if values is None:
            continue
        bad = ~torch.isfinite(values.reshape(len(batch), -1)).all(dim=1)  # (B, ...) -> (B,)
        if bool(bad.any()):
            found.append(f"{name} of clip(s) {_first_ids(store, batch.index[bad])}")
    return "; ".join(found)


def _non_finite_message(store: TokenStore, batch: TokenBatch, finite: torch.Tensor) -> str:
    """Why the head's output for `batch` is not finite: NaN / inf tokens (named), or else the head itself."""
    where = non_finite_clips(store, batch)
    if where:
        return f"{store.path}: NaN or inf in {where}; extract those clips again (extraction now fails such clips)"
    return (f"{store.path}: the head gives NaN or inf for clip(s) {_first_ids(store, batch.index[~finite])} whose "
            "tokens are finite; its weights are broken")


def _first_ids(store: TokenStore, index: torch.Tensor, shown: int = 5) -> str:
    ids = [repr(str(i)) for i in store.clip_ids[index.numpy()]]
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
