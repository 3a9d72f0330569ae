"""The peers' released checkpoints as run directories: a checkpoint of AVCA-GZSL's, TCAF-GZSL's or ClipClap-GZSL's
own code becomes a run that `zeroshot` and the protocols' test step evaluate like a run trained here
(`fusion.trained_run.load_run`).

AVCA-GZSL saves `{"epoch": e + 1, "model": state_dict, "optimizer": ..., "metric": ...}` (`src/utils.py`,
`save_best_model`); its released `model.zip` holds such files per method, dataset and split: the first stage's best
epoch (`runs/<method>_<dataset>_val_<split>/<Model>_score.pt`) and every epoch of the second stage
(`runs/<method>_<dataset>_all_<split>/checkpoints/<Model>_score_ckpt_<epoch>.pt`). TCAF-GZSL and ClipClap-GZSL
keep that `save_best_model` and its dict (TCaF's model is `Multimodal_Sequence_Transformer`, ClipClap's
`ClipClap_model`). The file is read with
`torch.load(weights_only=True)`, which builds tensors and plain containers and runs no code from the file; a file
that needs code (an object of a class) is refused, with no opt-in: the peers' checkpoints need none.

The method's `peer_weights` (`fusion.heads.HeadEntry`) checks the peer's parameter names and shapes and gives the
sizes; the head is built with them and its weights written as a fusion checkpoint (`best.pt` and `last.pt`, the
same file: the peer chose the epoch). What the run is imported from (method, checkpoint file and its SHA-256,
dataset, split, stage, epoch) is recorded as `imported` in config.json, classes.json and the checkpoint, and
zeroshot's reports name it. The run's training classes are the stage's training classes of the dataset's split
(what the peer trained on); it records no training clips, so zeroshot scores only a store's test splits (and a
first-stage model's `stage_1_val_*`) unless told `include_training_clips`. Class vectors are the dataset's AVCA
table by default, given to classes by name (`peer_text_order` gives them as the peers' code did), L2-normalised as
the peers trained on them, except ClipClap's: its class vector is its CLIP and its CLAP text embedding, each of unit
norm, concatenated and never normalised again, so the vectors are taken as given (give that concatenation). Its
`store` names the checkpoint: the peer's features are no store here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from common.files import atomic_write, sha256_file, write_folder, write_json
from curate import splits
from extract.weights import load_failure, read_torch_file
from fusion.config import PeerImportConfig, train_config_from_options
from fusion.heads import create_head, head_entry, list_heads
from fusion.model import ModelDims
from fusion.run_dir import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, embedding_id, save_checkpoint, write_npz
from text.class_embeddings import load_embedding_source

__all__ = ["ImportedRun", "read_peer_state", "import_peer_model"]

# The repository whose code saved a method's checkpoints (AVCA-GZSL for the others), as the run records it.
_PEER_CODE = {"tcaf": "TCAF-GZSL", "clipclap": "ClipClap-GZSL"}
# Methods whose peers take the class vectors as given (ClipClap's concatenation of two unit-norm vectors).
_VECTORS_AS_GIVEN = {"clipclap"}
# The files of an imported run (a re-import into the folder replaces them; a trained run has a log.jsonl).
_RUN_FILES = ("config.json", "classes.json", "class_embeddings.npz", "best.pt", "last.pt")


@dataclass(frozen=True)
class ImportedRun:
    """What `import_peer_model` wrote."""

    run_dir: Path
    method: str
    epoch: int | None  # the peer's epoch count at the checkpoint (None when the file records none)
    classes: int  # training classes of the run
    dims: ModelDims
    sha256: str


def read_peer_state(path: Path) -> tuple[dict[str, torch.Tensor], int | None]:
    """The state_dict and epoch of a checkpoint that AVCA-GZSL (or TCAF-GZSL, ClipClap-GZSL: the same save code)
    saved, read without running code from the file.

    Raises:
        InputError: a file torch cannot read, one that needs code to load, or not AVCA-GZSL's dict format.
    """
    try:
        payload = read_torch_file(path)
    except InputError as error:  # corrupt, foreign, or needs code
        raise InputError(f"{path}: cannot read as a checkpoint ({load_failure(error.__cause__)}); it is read with "
                         "torch.load(weights_only=True), which runs no code from the file, and there is no option "
                         "to load one that needs code") from error.__cause__
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, dict) or not all(isinstance(key, str) for key in model):
        found = sorted(map(str, payload))[:5] if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path}: not a checkpoint of AVCA-GZSL, TCAF-GZSL or ClipClap-GZSL (a dict with the "
                         f"state_dict under 'model', as their save_best_model writes); found {found}")
    epoch = payload.get("epoch")
    return model, int(epoch) if isinstance(epoch, int) else None


def import_peer_model(config: PeerImportConfig) -> ImportedRun:
    """Write the run directory `config.out` for the peer's checkpoint `config.checkpoint`.

    Raises:
        InputError: a method without a reader of the peers' checkpoints, a checkpoint that does not load or is not
            the method's (one line naming the file: missing, unexpected or mis-shaped keys, and which method's the
            keys are when they are another's), class vectors of another width than the checkpoint's.
        FileExistsError: `out` holds files that are not an imported run's.
    """
    path = Path(config.checkpoint)
    entry = head_entry(config.method)
    if entry.peer_weights is None:
        readable = [name for name in list_heads() if head_entry(name).peer_weights is not None]
        raise InputError(f"method {config.method!r} has no reader of the peers' checkpoints; these have: {readable}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state_dict, epoch = read_peer_state(path)
    try:
        values, state = entry.peer_weights(state_dict)
    except InputError as error:
        raise InputError(f"{path}: {error}{_other_methods(config.method, state_dict)}") from error
    sizes = values.pop("dims")
    if config.split == "cls_split" and "normalise_inputs" in {f.name for f in dataclasses.fields(entry.config_class)}:
        values["normalise_inputs"] = True  # AVCA-GZSL's DeviseModel runs on cls_split pass --norm_inputs

    class_split = splits.load_class_split(config.dataset, config.split)
    classes = sorted(class_split.stages[f"stage_{config.stage}_train"], key=class_split.class_id)  # AVCA's id order
    normalise = config.method not in _VECTORS_AS_GIVEN
    if not normalise and config.embeddings is None:
        raise InputError(f"{path}: {config.method} compares with its own class vectors (CLIP and CLAP text embeddings, "
                         "concatenated), not the dataset's AVCA table: give them with `embeddings`")
    source = load_embedding_source(config.embedding_spec, name_map=config.name_map, normalise=normalise,
                                   peer_text_order=config.peer_text_order)
    if source.dim != sizes["embedding_dim"]:
        raise InputError(f"{path}: the checkpoint compares with {sizes['embedding_dim']}-d class vectors, "
                         f"{source.spec} gives {source.dim}-d ones; choose a {sizes['embedding_dim']}-d source")
    class_embeddings = source.embed(classes)
    dims = ModelDims(video_tokens=1, video_dim=sizes["video_dim"], audio_tokens=1, audio_dim=sizes["audio_dim"],
                     num_classes=len(classes), embedding_dim=sizes["embedding_dim"])
    head = create_head(config.method, values, dims, extracted=False)  # per-clip vectors (fusion.heads.inputs)
    head.load_state_dict(state)
    sha256 = sha256_file(path)
    imported = {"method": config.method, "checkpoint": str(path.resolve()), "sha256": sha256,
                "dataset": config.dataset, "split": config.split, "stage": config.stage, "epoch": epoch,
                "code": _PEER_CODE.get(config.method, "AVCA-GZSL")}
    train = train_config_from_options({
        "store": path.resolve(), "out": config.out, "method": config.method, "recipe": config.dataset,
        "embeddings": config.embedding_spec, "name_map": config.name_map, "peer_text_order": config.peer_text_order,
        "normalise_embeddings": normalise, **values})
    train_record = json.loads(json.dumps(train.to_dict()))  # tuples -> lists, as read back
    payload = {"head": head.record(), "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "model": head.state_dict(), "epoch": epoch or 0, "config": train_record, "dims": dims.to_dict(),
               "class_embedding_id": embedding_id(classes, class_embeddings, None), "imported": imported}
    config_record = {"train": train_record, "dims": dims.to_dict(), "decision_rule": "plain", "imported": imported}
    classes_record: dict[str, Any] = {
        "classes": classes,
        "embedding": {"spec": source.spec, "normalised": normalise, "dim": source.dim,
                      "provenance": source.provenance()},
        "kinetics_labels": None, "mlm_vocabulary": None, "train_clips": 0, "train_clip_ids": [],
        # no store of ours holds the peer's training clips: an identity no store has
        "train_store_identity": f"peer checkpoint {sha256}", "test_seen_clip_ids": [],
        "shuffled_class_embeddings": None, "validation": None, "imported": imported,
    }

    def write(folder: Path) -> None:
        write_json(folder / "config.json", config_record)
        write_json(folder / "classes.json", classes_record)
        arrays = {"class_names": np.asarray(classes), "class_embeddings": class_embeddings}
        atomic_write(folder / "class_embeddings.npz", functools.partial(write_npz, arrays=arrays))
        for name in ("best.pt", "last.pt"):
            save_checkpoint(folder / name, payload)

    write_folder(config.out, write, _RUN_FILES, "imported run folder")
    return ImportedRun(run_dir=Path(config.out), method=config.method, epoch=epoch, classes=len(classes), dims=dims,
                       sha256=sha256)


def _other_methods(method: str, state_dict: dict[str, torch.Tensor]) -> str:
    """"; its keys are those of ..." naming the methods whose reader takes the weights, or ""."""
    fitting = []
    for name in list_heads():
        reader = head_entry(name).peer_weights
        if name == method or reader is None:
            continue
        try:
            reader(state_dict)
        except InputError:
            continue
        fitting.append(name)
    return f"; its keys are those of {', '.join(fitting)}: choose `method={fitting[0]}`" if fitting else ""
