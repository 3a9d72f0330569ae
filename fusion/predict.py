"""AV-only inference of a trained fusion head over a token store, and loading of a run directory.

`load_run` rebuilds the model from a checkpoint of a run directory (docs/ARCHITECTURE.md, "Run directory")
and returns what the eval stage needs with it (class list, embeddings, decision rule). `predict_embeddings`
runs the AV-only pass (no text can reach it) over clips of a store, with the run's view handling: the mean
of f(x) over all views ("ensemble") or one pass on view-averaged tokens ("mean").
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.reader import BatchReader
from features.store import DONE, TokenStore
from fusion.config import FusionConfig
from fusion.losses import kinetics_class
from fusion.model import FusionModel, ModelDims, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "RunInfo",
    "Predictions",
    "resolve_device",
    "embedding_id",
    "load_run",
    "read_checkpoint",
    "check_layout",
    "predict_embeddings",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mzst-fusion-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class RunInfo:
    """What a run directory records besides the weights.

    Attributes:
        run_dir: the run directory.
        checkpoint: the checkpoint file loaded.
        epoch: the epoch the checkpoint was written after (1-based).
        fusion: the head's config (incl. its ablation switches).
        train: the training config as recorded (`TrainConfig.to_dict()`).
        dims: the data-fixed sizes the model was built with.
        class_names: the training (seen) classes in id order: row c of `class_embeddings`, logit c of TASK.
        class_embeddings: phi of the training classes as used in training, (C, E).
        kinetics_names: the Kinetics-400 labels (None when trained without the phi(s_v) term).
        kinetics_embeddings: phi of the Kinetics-400 labels, (400, E), or None.
        embedding_spec: the embedding source spec (`fusion.class_embeddings.load_embedding_source`).
        embedding_normalised: whether class embeddings were L2-normalised.
        embedding_provenance: the source's provenance record.
        decision_rule: the zero-shot rule consistent with training (`eval.metrics.RULES`).
        validation: the validation classes and clips of the run (seen / unseen class names, source).
        train_clip_ids: ids of the clips of the training store the run trained on (None in older runs).
    """

    run_dir: Path
    checkpoint: Path
    epoch: int
    fusion: FusionConfig
    train: dict[str, Any]
    dims: ModelDims
    class_names: tuple[str, ...]
    class_embeddings: np.ndarray
    kinetics_names: tuple[str, ...] | None
    kinetics_embeddings: np.ndarray | None
    embedding_spec: str
    embedding_normalised: bool
    embedding_provenance: dict[str, Any]
    decision_rule: str
    validation: dict[str, Any]
    train_clip_ids: tuple[str, ...] | None = None


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
        raise ValueError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def embedding_id(class_names: Sequence[str], class_embeddings: np.ndarray, kinetics: np.ndarray | None) -> str:
    """A SHA-256 over the class names and the embeddings used in training: ties checkpoints to their classes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(class_names)).encode())
    digest.update(np.ascontiguousarray(class_embeddings, dtype=np.float32).tobytes())
    if kinetics is not None:
        digest.update(np.ascontiguousarray(kinetics, dtype=np.float32).tobytes())
    return digest.hexdigest()


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> tuple[FusionModel, RunInfo]:
    """Rebuild the trained head of a run directory, in eval mode on `device`.

    Args:
        run_dir: a run directory written by `fusion.trainer.train`.
        checkpoint: "best" (chosen on validation), "last", or a path to a checkpoint file.
        device: "cpu" or "cuda".

    Raises:
        FileNotFoundError: no run directory, no such checkpoint (a run without validation has no best.pt).
        ValueError: a file that is not a fusion checkpoint, or a checkpoint that does not belong to the run's
            class embeddings.
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "classes.json", "class_embeddings.npz"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: not a fusion run directory (no {name}); train one with train-fusion")
    if checkpoint in ("best", "last"):
        path = run_dir / f"{checkpoint}.pt"
        if not path.is_file():
            hint = " (the run had no validation, so only last.pt exists)" if checkpoint == "best" else ""
            raise FileNotFoundError(f"{path} does not exist{hint}; pick another checkpoint")
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
    torch_device = resolve_device(device)
    payload = read_checkpoint(path, torch_device)
    fusion = FusionConfig.from_dict(payload["config"]["fusion"])
    dims = ModelDims(**payload["dims"])
    model = build_model(fusion, dims)
    model.load_state_dict(payload["model"])
    model.to(torch_device).eval()

    classes = json.loads((run_dir / "classes.json").read_text(encoding="utf-8"))
    with np.load(run_dir / "class_embeddings.npz", allow_pickle=False) as arrays:
        class_embeddings = np.asarray(arrays["class_embeddings"], dtype=np.float32)
        kinetics = None
        if "kinetics_embeddings" in arrays:
            kinetics = np.asarray(arrays["kinetics_embeddings"], dtype=np.float32)
    class_names = tuple(classes["classes"])
    if embedding_id(class_names, class_embeddings, kinetics) != payload["class_embedding_id"]:
        raise ValueError(f"{path}: the checkpoint was trained with other class embeddings than {run_dir}/"
                         "class_embeddings.npz; do not mix files of different runs")
    config_json = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    info = RunInfo(
        run_dir=run_dir,
        checkpoint=path,
        epoch=int(payload["epoch"]),
        fusion=fusion,
        train=payload["config"],
        dims=dims,
        class_names=class_names,
        class_embeddings=class_embeddings,
        kinetics_names=tuple(classes["kinetics_labels"]) if kinetics is not None else None,
        kinetics_embeddings=kinetics,
        embedding_spec=classes["embedding"]["spec"],
        embedding_normalised=bool(classes["embedding"]["normalised"]),
        embedding_provenance=classes["embedding"]["provenance"],
        decision_rule=config_json["decision_rule"],
        validation=classes.get("validation") or {},
        train_clip_ids=tuple(classes["train_clip_ids"]) if classes.get("train_clip_ids") is not None else None,
    )
    return model, info


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Load a fusion checkpoint safely (`weights_only=True`) and check its format.

    Raises:
        ValueError: the file is not a fusion checkpoint of this version.
    """
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:  # a corrupt, truncated or foreign file
        raise ValueError(f"{path}: cannot read as a fusion checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an MZST fusion checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return payload


def check_layout(store: TokenStore, dims: ModelDims) -> None:
    """Raise ValueError when the store's token layout does not fit a model built with `dims`."""
    layout = store.token_layout
    expected = {"Nv": dims.video_tokens, "Dv": dims.video_dim, "Na": dims.audio_tokens, "Da": dims.audio_dim}
    wrong = {key: (layout.get(key), value) for key, value in expected.items() if layout.get(key) != value}
    if wrong:
        listed = ", ".join(f"{key}={got} (model: {want})" for key, (got, want) in wrong.items())
        raise ValueError(f"{store.path}: token layout {listed} does not fit this fusion head; use a store made with "
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
        raise ValueError(f"{store.path}: {not_done.size} clip(s) asked for are not done (e.g. clip "
                         f"{store.clip_ids[not_done[0]]!r}); predict only clips with status done")
    torch_device = torch.device(device)
    has_kinetics = bool(store.token_layout.get("kinetics_classes"))
    fields = ("video_tokens", "audio_tokens", "has_audio") + (("kinetics_logits",) if has_kinetics else ())
    reader = BatchReader(store, indices, batch_size, shuffle=False, fields=fields)
    embeddings, logits, kinetics, order = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for batch in reader:
            with torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=torch_device.type == "cuda"):
                out = model.forward_views(batch["video_tokens"].to(torch_device),
                                          batch["audio_tokens"].to(torch_device), batch["has_audio"].to(torch_device))
            embeddings.append(out.embedding.float().cpu())
            logits.append(out.task_logits.float().cpu())
            if has_kinetics:
                kinetics.append(kinetics_class(batch["kinetics_logits"]))
            order.append(batch["index"])
    finally:
        model.train(was_training)
    e, c = model.dims.embedding_dim, model.dims.num_classes
    return Predictions(
        embeddings=torch.cat(embeddings).numpy() if embeddings else np.zeros((0, e), np.float32),
        kinetics_pred=(torch.cat(kinetics).numpy() if kinetics else np.zeros(0, np.int64)) if has_kinetics else None,
        task_logits=torch.cat(logits).numpy() if logits else np.zeros((0, c), np.float32),
        index=torch.cat(order).numpy() if order else np.zeros(0, np.int64),
    )
