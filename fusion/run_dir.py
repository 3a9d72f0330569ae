"""The run directory of a training run: what it records, how it is written, how a run resumes and is loaded.

Layout (docs/ARCHITECTURE.md, "Run directory"): `config.json` (the training and head configs, the data-fixed
sizes, the decision rule, the store), `classes.json` (training classes in id order, the embedding source spec
and provenance, the MLM vocabulary, the clips that trained, validated or were held out), `class_embeddings.npz`
(the embeddings as used), `last.pt` every epoch, `best.pt` (best validation score; only with validation),
`log.jsonl` (one line per epoch), `training_curves.png` (drawn from the log by `fusion.curves`). Every file is
written through a temporary file and a rename (`common.files`); checkpoints load with
`torch.load(..., weights_only=True)`.

`start_run` creates a run directory or checks that a resumed run is the recorded one; `save_epoch` writes an
epoch's log line and checkpoints; `load_run` rebuilds a trained head for the eval stage.

One training per run folder (`RunLease`): the trainer holds `<RUN>.lease` beside the folder (the store's lease,
`features.lease`, with its own words) while it writes, so a second training into the folder, a resume or a
workflow's rerun, stops with one line naming the holder instead of interleaving log.jsonl and checkpoints. The
lease lies beside the folder, not in it, so that a run folder holds only the run's files (copied, compared or
emptied as before) and the lease of a folder that does not exist yet needs no folder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import pickle
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from common.files import atomic_write, write_json, write_text
from extract.weights import load_failure
from features.lease import Lease
from fusion.config import ARCHITECTURE_FIELDS, FusionConfig, TrainConfig
from fusion.model import FusionModel, ModelDims, build_model
from fusion.plan import TrainingPlan, embedding_permutation
from fusion.predict import ConcatenatedHeads, resolve_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RunInfo",
    "RunLease",
    "embedding_id",
    "start_run",
    "checkpoint_payload",
    "save_epoch",
    "run_state",
    "holds_run_lease",
    "claim_run_folder",
    "load_run",
    "load_concatenated_runs",
    "read_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mzst-fusion-checkpoint"
CHECKPOINT_VERSION = 1
# What a run folder holds (the module docstring): the files a restart before the first checkpoint may remove.
_RUN_FILES = ("config.json", "classes.json", "class_embeddings.npz", "log.jsonl", "best.pt", "last.pt",
              "training_curves.png")
# Settings a resumed run may change: how it runs, and where the run folder now is (a copied or moved run resumes).
_RESUME_FREE_FIELDS = ("resume", "progress", "device", "prefetch_batches", "log_every_steps", "eval_batch_size",
                       "out", "resident_store", "resident_share", "compile", "require_complete")


class RunLease(Lease):
    """One training per run folder: `<RUN>.lease` beside it, held while `fusion.trainer` writes the run.

    A holder that died is taken over at once on its own host, and `timeout_s` (60 s) after its last heartbeat
    from another host, as the store's lease is (`features.lease`).
    """

    kind = "run folder"
    writer = "training"
    alternative = "train into another `out`"

    def __init__(self, run_dir: str | Path, timeout_s: float = 60.0) -> None:
        super().__init__(Path(run_dir).resolve(), timeout_s)  # resolved: two names of one folder share its lease


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
        embedding_repeats: how many heads' f(x) stand side by side (`load_concatenated_runs`); the class
            embeddings (recorded and new) are repeated as often.
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
    embedding_repeats: int = 1


def embedding_id(class_names: Sequence[str], class_embeddings: np.ndarray, kinetics: np.ndarray | None) -> str:
    """A SHA-256 over the class names and the embeddings used in training: ties checkpoints to their classes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(class_names)).encode())
    digest.update(np.ascontiguousarray(class_embeddings, dtype=np.float32).tobytes())
    if kinetics is not None:
        digest.update(np.ascontiguousarray(kinetics, dtype=np.float32).tobytes())
    return digest.hexdigest()


def start_run(config: TrainConfig, plan: TrainingPlan) -> dict[str, Any] | None:
    """Make the run directory `config.out` for a new run, or check that a resumed one is the recorded run.

    Returns:
        None for a new run (config.json, classes.json and class_embeddings.npz written); the payload of last.pt
        for a resumed one (its log cut back to the checkpoint's epoch). `resume` on a folder without last.pt
        (a run killed in its first epoch, or no run yet) starts the run anew, and logs so.

    Raises:
        FileNotFoundError: resume with last.pt but without config.json or classes.json.
        FileExistsError: a new run into a folder that exists and is not empty.
        InputError: a resumed run whose architecture, settings, classes, clips, sizes or embeddings differ.
    """
    config_record, classes_record = _records(config, plan)
    classes = plan.classes
    emb_id = embedding_id(plan.clips.class_names, classes.class_embeddings, classes.kinetics_embeddings)
    out = config.out
    if config.resume and (out / "last.pt").is_file():
        for name in ("config.json", "classes.json"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out}: cannot resume, the run folder has last.pt but no {name}")
        payload = _check_resume(config, out, config_record, classes_record, emb_id)
        _truncate_log(out / "log.jsonl", int(payload["epoch"]))
        return payload
    if config.resume:
        _clear_unfinished_run(config)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; set `resume=True` to continue that run, or choose "
                              "another `out`")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config_record)
    write_json(out / "classes.json", classes_record)
    arrays = {"class_names": np.asarray(plan.clips.class_names), "class_embeddings": classes.class_embeddings}
    if classes.kinetics_embeddings is not None:
        arrays.update(kinetics_labels=np.asarray(classes.kinetics_names),
                      kinetics_embeddings=classes.kinetics_embeddings)
    atomic_write(out / "class_embeddings.npz", functools.partial(_write_npz, arrays=arrays))
    return None


def _clear_unfinished_run(config: TrainConfig) -> None:
    """Empty a run folder that a kill left before its first checkpoint, so that `resume` starts the run afresh.

    Nothing is lost: without last.pt no epoch was kept. Only the run's own files (and temporary files of
    `common.files.atomic_write`) are removed, and only when the recorded settings, if any, are this config's.

    Raises:
        InputError: the folder records a run with other settings.
        FileExistsError: the folder holds files that are not a run's.
    """
    out = Path(config.out)
    if not out.is_dir() or not any(out.iterdir()):
        logger.warning("%s: nothing to resume (no run there yet); starting the run", out)
        return
    record = out / "config.json"
    if record.is_file():
        changed = changed_settings(json.loads(record.read_text(encoding="utf-8"))["train"], config)
        if changed:
            raise InputError(f"{out}: cannot resume with other settings than the run was started with ({changed}); "
                             f"pass the options recorded in {record}")
    foreign = [p.name for p in out.iterdir() if p.name not in _RUN_FILES and not _is_temporary(p.name)]
    if foreign:
        raise FileExistsError(f"{out}: has no last.pt and holds files that are not a run's ({', '.join(foreign[:3])}"
                              "); choose another `out`")
    for path in out.iterdir():
        path.unlink()
    logger.warning("%s: no last.pt (the run stopped before its first epoch ended); starting the run again", out)


def _is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of `common.files.atomic_write` (left by a kill while it wrote)."""
    return name.startswith(".") and ".tmp-" in name


def checkpoint_payload(config: TrainConfig, plan: TrainingPlan, model: FusionModel, optimizer, scheduler, *,
                       epoch: int, step: int, best: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds: model, optimiser and scheduler states, progress, config, sizes, class embeddings."""
    classes = plan.classes
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "step": step, "best": best, "metrics": metrics, "rng": {"torch": torch.get_rng_state()},
        "config": config.to_dict(), "dims": plan.dims.to_dict(),
        "class_embedding_id": embedding_id(plan.clips.class_names, classes.class_embeddings,
                                           classes.kinetics_embeddings),
    }


def save_epoch(out: Path, log_line: dict[str, Any], payload: dict[str, Any], is_best: bool) -> None:
    """Append the epoch's log line, then write best.pt (when best) and last.pt.

    best.pt goes before last.pt: a crash in between re-runs this epoch, which rewrites best.pt identically.
    """
    with (out / "log.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(log_line) + "\n")
    if is_best:
        save_checkpoint(out / "best.pt", payload)
    save_checkpoint(out / "last.pt", payload)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically: a crash leaves the previous file, never half of one."""
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as handle:  # a file handle: np.savez would append ".npz" to the temporary name
        np.savez(handle, **arrays)


def _records(config: TrainConfig, plan: TrainingPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    """What config.json and classes.json hold (JSON-ready)."""
    store, clips, classes = plan.store, plan.clips, plan.classes
    config_record = {
        "train": json.loads(json.dumps(config.to_dict())),  # tuples -> lists, as read back
        "dims": plan.dims.to_dict(),
        "decision_rule": config.fusion.decision_rule,
        "store": {"path": str(store.path), "token_layout": store.token_layout.to_dict(),
                  "provenance": store.provenance},
    }
    source, validation = classes.source, clips.validation
    classes_record = {
        "classes": list(clips.class_names),
        "embedding": {"spec": source.spec, "normalised": source.normalised, "dim": source.dim,
                      "provenance": source.provenance()},
        "kinetics_labels": list(classes.kinetics_names) if classes.kinetics_names is not None else None,
        "mlm_vocabulary": list(classes.vocabulary.words) if classes.vocabulary is not None else None,
        "train_clips": int(clips.train_indices.size),
        "train_clip_ids": store.clip_ids[clips.train_indices].tolist(),
        "test_seen_clip_ids": store.clip_ids[clips.test_seen_indices].tolist(),
        "shuffled_class_embeddings": embedding_permutation(config, len(clips.class_names)).tolist()
        if config.shuffle_class_embeddings else None,
        "validation": None if validation is None else {
            "source": validation.description,
            "store": str(validation.store.path),
            "seen_classes": list(validation.class_names[: validation.seen_ids.size]),
            "unseen_classes": list(validation.class_names[validation.seen_ids.size:]),
            "clip_ids": validation.store.clip_ids[validation.indices].tolist(),
        },
    }
    return config_record, classes_record


def _check_resume(config: TrainConfig, out: Path, config_record: dict, classes_record: dict, emb_id: str) -> dict:
    recorded = json.loads((out / "config.json").read_text(encoding="utf-8"))
    old_fusion, new_fusion = recorded["train"]["fusion"], config.fusion.to_dict()
    arch = [k for k in ARCHITECTURE_FIELDS if old_fusion.get(k) != new_fusion.get(k)]
    if arch:
        raise InputError(f"{out}: cannot resume, the head's architecture differs: "
                         + ", ".join(f"{k} {old_fusion.get(k)!r} -> {new_fusion.get(k)!r}" for k in arch))
    changed = changed_settings(recorded["train"], config)
    if changed:
        raise InputError(f"{out}: cannot resume with other settings than the run was started with ({changed}); "
                         f"pass the options recorded in {out / 'config.json'}")
    classes = json.loads((out / "classes.json").read_text(encoding="utf-8"))
    if classes["classes"] != classes_record["classes"] or classes["validation"] != classes_record["validation"]:
        raise InputError(f"{out}: cannot resume against a different store or class list: the training / validation "
                         f"classes or clips differ from {out / 'classes.json'}")
    if recorded["dims"] != config_record["dims"]:
        raise InputError(f"{out}: cannot resume, the store's sizes {config_record['dims']} differ from the run's "
                         f"{recorded['dims']}")
    payload = read_checkpoint(out / "last.pt", torch.device("cpu"))
    if payload["class_embedding_id"] != emb_id:
        raise InputError(f"{out}: cannot resume, the class embeddings differ from the run's (another source or "
                         "vectors file?)")
    return payload


def changed_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """The settings of `config` that differ from a run's recorded `train` config and can change its result.

    How a run runs (progress, device, prefetching, logging, evaluation batch size, its folder) does not count:
    the same run resumes, or is reused, whatever they are. A field the record lacks (a run recorded before the
    field existed) counts as its default, which is what that run did.
    """
    old = json.loads(json.dumps(TrainConfig.from_dict(recorded).to_dict()))  # tuples -> lists, defaults filled
    new = json.loads(json.dumps(config.to_dict()))
    old_fusion, new_fusion = old.pop("fusion"), new.pop("fusion")
    changed = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_FREE_FIELDS and old.get(k) != new.get(k)]
    return changed + [f"fusion.{k}" for k in sorted(new_fusion) if old_fusion.get(k) != new_fusion.get(k)]


def run_state(config: TrainConfig) -> str:
    """What `config.out` holds for this config: "new" (nothing), "finished" (all epochs, same settings),
    "partial" (same settings, can resume) or "other" (another run, or not a run).

    "Same settings" is `changed_settings`: what does not change a result (progress bars, device, ...) is ignored.
    """
    out = Path(config.out)
    record, log = out / "config.json", out / "log.jsonl"
    if not out.exists():
        return "new"
    if not record.is_file() or changed_settings(json.loads(record.read_text(encoding="utf-8"))["train"], config):
        return "other"
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    epochs = [json.loads(line)["epoch"] for line in lines if line.strip()]
    if not (out / "last.pt").is_file():
        return "other"
    return "finished" if epochs and epochs[-1] == config.epochs else "partial"


def holds_run_lease(train: Callable[[TrainConfig], Any]) -> Callable[[TrainConfig], Any]:
    """Decorate `train(config)` so that it runs holding `config.out`'s `RunLease`: one training per run folder."""

    @functools.wraps(train)
    def holding(config: TrainConfig) -> Any:
        with RunLease(config.out):
            return train(config)

    return holding


def claim_run_folder(config: TrainConfig) -> str:
    """`run_state` of `config.out`, with a folder of another run deleted ("new", "finished" or "partial"): for
    folders the caller owns. Under the run's lease, so that a folder another process trains into is neither
    judged nor deleted."""
    with RunLease(config.out):
        state = run_state(config)
        if state == "other":
            shutil.rmtree(config.out)
    return "new" if state == "other" else state


def _truncate_log(path: Path, epoch: int) -> None:
    """Keep the log lines of epochs up to `epoch` (a crash may have logged an epoch without its checkpoint)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and json.loads(line)["epoch"] <= epoch]
    write_text(path, "".join(f"{line}\n" for line in lines))


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> tuple[FusionModel, RunInfo]:
    """Rebuild the trained head of a run directory, in eval mode on `device`.

    Args:
        run_dir: a run directory written by `fusion.trainer.train`.
        checkpoint: "best" (chosen on validation), "last", or a path to a checkpoint file.
        device: "cpu" or "cuda".

    Raises:
        FileNotFoundError: no run directory, no such checkpoint (a run without validation has no best.pt).
        InputError: a file that is not a fusion checkpoint, or a checkpoint that does not belong to the run's
            class embeddings.
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
        raise InputError(f"{path}: the checkpoint was trained with other class embeddings than {run_dir}/"
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
    same = ("class_names", "decision_rule", "validation", "train_clip_ids", "embedding_spec", "embedding_normalised")
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


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Load a fusion checkpoint safely (`weights_only=True`) and check its format.

    Raises:
        InputError: the file is not a fusion checkpoint of this version.
    """
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:  # a corrupt, truncated or foreign file
        raise InputError(f"{path}: cannot read as a fusion checkpoint ({load_failure(error)})") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not an MZST fusion checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: checkpoint version {payload.get('version')}, this code reads {CHECKPOINT_VERSION}")
    return payload
