"""A trained run as the workflows read it: the head rebuilt from a checkpoint, and what the run recorded.

`load_run` rebuilds one head (`RunInfo` holds the rest: classes and their embeddings as used, the decision rule,
the clips and the identity of the store it trained on); `load_concatenated_runs` reads heads trained apart, one per
modality, as one (the paper's feature concatenation). The files are those `fusion.run_dir` writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from fusion.config import FusionConfig
from fusion.heads import ComparisonHead, head_from_record
from fusion.model import FusionModel, ModelDims, build_model
from fusion.predict import ConcatenatedHeads, resolve_device
from fusion.run_dir import embedding_id, read_checkpoint, read_json_object, read_run_config

__all__ = ["RunInfo", "load_run", "load_concatenated_runs"]


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
        embedding_spec: the embedding source spec (`text.class_embeddings.load_embedding_source`).
        embedding_normalised: whether class embeddings were L2-normalised.
        embedding_provenance: the source's provenance record.
        decision_rule: the zero-shot rule consistent with training (`eval.metrics.RULES`).
        validation: the validation classes and clips of the run (seen / unseen class names, source).
        train_clip_ids: ids of the clips of the training store the run trained on (None in older runs).
        train_store_identity: the training store's `identity` (None in runs made before stores had one): which
            store those ids are clips of, wherever it is now.
        embedding_repeats: how many heads' f(x) stand side by side (`load_concatenated_runs`); the class
            embeddings (recorded and new) are repeated as often.
        imported: for a run made from a peer's checkpoint (`fusion.peer_checkpoint`), where from: method,
            checkpoint file and SHA-256, dataset, split, stage, epoch; None for a run trained here.
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
    train_store_identity: str | None = None
    embedding_repeats: int = 1
    imported: dict[str, Any] | None = None

    @property
    def peer_text_order(self) -> bool:
        """Whether the run's AVCA table gave class vectors in AVCA-GZSL's order instead of by name (runs recorded
        before the option: by name)."""
        return bool((self.embedding_provenance or {}).get("peer_text_order", False))


def load_run(run_dir: str | Path, checkpoint: str = "best",
             device: str = "cpu") -> tuple[FusionModel | ComparisonHead, RunInfo]:
    """Rebuild the trained head of a run directory (MZST's, or a comparison head), in eval mode on `device`.

    Args:
        run_dir: a run directory written by `fusion.trainer.train`.
        checkpoint: "best" (chosen on validation), "last", or a path to a checkpoint file.
        device: "cpu" or "cuda".

    Raises:
        FileNotFoundError: no run directory, no such checkpoint (a run without validation has no best.pt).
        InputError: a file that is not a fusion checkpoint, weights that do not fit the head it records (another
            method, missing keys, other shapes), or a checkpoint that does not belong to the run's class embeddings.
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "classes.json", "class_embeddings.npz"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir}: not a fusion run directory (no {name}); train one first "
                                    "(`fusion.trainer.train`, the train-fusion command)")
    if checkpoint in ("best", "last"):
        path = run_dir / f"{checkpoint}.pt"
        if not path.is_file():
            hint = " (the run had no validation, so only last.pt exists)" if checkpoint == "best" else ""
            raise FileNotFoundError(f"{path} does not exist{hint}; choose `checkpoint='last'`")
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
    torch_device = resolve_device(device)
    try:
        payload = read_checkpoint(path, torch_device)
    except InputError as error:
        raise InputError(f"{error}; the file is damaged: train the run again, or use another checkpoint "
                         "(`checkpoint='last'`)") from error
    fusion = FusionConfig.from_dict(payload["config"]["fusion"])
    dims = ModelDims(**payload["dims"])
    try:
        model = head_from_record(payload["head"], dims) if "head" in payload else build_model(fusion, dims)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # another method, missing keys, other shapes
        raise InputError(f"{path}: its weights do not fit the head it records ({' '.join(str(error).split())[:300]}); "
                         "the file is damaged or of another run: train the run again") from error
    model.to(torch_device).eval()

    classes = read_json_object(run_dir / "classes.json", "class record")
    with np.load(run_dir / "class_embeddings.npz", allow_pickle=False) as arrays:
        class_embeddings = np.asarray(arrays["class_embeddings"], dtype=np.float32)
        kinetics = None
        if "kinetics_embeddings" in arrays:
            kinetics = np.asarray(arrays["kinetics_embeddings"], dtype=np.float32)
    class_names = tuple(classes["classes"])
    if embedding_id(class_names, class_embeddings, kinetics) != payload["class_embedding_id"]:
        raise InputError(f"{path}: the checkpoint was trained with other class embeddings than {run_dir}/"
                         "class_embeddings.npz; do not mix files of different runs")
    config_json = read_run_config(run_dir, training_config=False)
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
        train_store_identity=classes.get("train_store_identity"),
        imported=config_json.get("imported"),
    )
    return model, info


def load_concatenated_runs(run_dirs: Sequence[str | Path], checkpoint: str = "best",
                           device: str = "cpu") -> tuple[ConcatenatedHeads, RunInfo]:
    """Runs trained apart on the same classes and clips (e.g. audio-only and video-only) read as one head whose
    f(x) is theirs side by side, compared with each class embedding repeated (the paper's feature concatenation).

    Raises:
        InputError: runs that differ in their classes, class embeddings, decision rule, or training, validation
            or held-out clips (each run's own checkpoint choice is kept: each branch is optimised on its own).
    """
    loaded = [load_run(run_dir, checkpoint, device) for run_dir in run_dirs]
    first = loaded[0][1]
    same = ("class_names", "decision_rule", "validation", "train_clip_ids", "train_store_identity", "embedding_spec",
            "embedding_normalised")
    for _, info in loaded[1:]:
        differ = [name for name in same if getattr(info, name) != getattr(first, name)]
        if differ or not np.array_equal(info.class_embeddings, first.class_embeddings):
            raise InputError(f"{info.run_dir} and {first.run_dir} cannot be concatenated: their "
                             f"{differ or ['class_embeddings']} differ; train both on the same store, classes and "
                             "hold-outs")
    repeats = len(loaded)
    kinetics = first.kinetics_embeddings
    info = dataclasses.replace(
        first, class_embeddings=np.tile(first.class_embeddings, (1, repeats)),  # (C, E) -> (C, H*E)
        kinetics_embeddings=None if kinetics is None else np.tile(kinetics, (1, repeats)),  # (400, E) -> (400, H*E)
        embedding_repeats=repeats)
    return ConcatenatedHeads([model for model, _ in loaded]).eval(), info
