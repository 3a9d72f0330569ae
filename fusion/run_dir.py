"""The run directory of a training run: what it records, how it is written, how a run resumes and is loaded.

Layout (docs/ARCHITECTURE.md, "Run directory"): `config.json` (the training and head configs, the data-fixed
sizes, the decision rule, the store), `classes.json` (training classes in id order, the embedding source spec
and provenance, the MLM vocabulary, the clips that trained, validated or were held out and the `identity` of the
stores they are clips of), `class_embeddings.npz` (the embeddings as used), `last.pt` every epoch, `best.pt`
(best validation score; only with validation), `log.jsonl` (one line per epoch), `training_curves.png` (drawn
from the log by `fusion.curves`). Every file is written through a temporary file and a rename (`common.files`);
checkpoints load with `torch.load(..., weights_only=True)`.

`start_run` creates a run directory or checks that a resumed run is the recorded one; `save_epoch` writes an
epoch's log line and checkpoints; `fusion.trained_run.load_run` rebuilds a trained head for the workflows.

One training per run folder (`RunLease`): the trainer holds `<RUN>.lease` beside the folder (the store's lease,
`features.lease`, with its own words) while it writes, so a second training into the folder, a resume or a
workflow's rerun, stops with one line naming the holder instead of interleaving log.jsonl and checkpoints. The
lease lies beside the folder, not in it, so that a run folder holds only the run's files (copied, compared or
emptied as before) and the lease of a folder that does not exist yet needs no folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from common.errors import InputError
from common.files import atomic_write, write_json, write_text
from common.settings import result_values
from extract.weights import load_failure
from features.lease import Lease
from fusion.config import ARCHITECTURE_FIELDS, TrainConfig
from fusion.heads import head_config
from fusion.heads.head import ComparisonHead, config_values
from fusion.model import FusionModel
from fusion.plan import TrainingPlan, embedding_permutation

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RunLease",
    "embedding_id",
    "start_run",
    "checkpoint_payload",
    "save_epoch",
    "run_state",
    "read_run_config",
    "read_log",
    "read_json_object",
    "holds_run_lease",
    "claim_run_folder",
    "read_checkpoint",
    "save_checkpoint",
    "write_npz",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mzst-fusion-checkpoint"
CHECKPOINT_VERSION = 1
# What a run folder holds (the module docstring): the files a restart before the first checkpoint may remove.
_RUN_FILES = ("config.json", "classes.json", "class_embeddings.npz", "log.jsonl", "best.pt", "last.pt",
              "training_curves.png")
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
        _check_best(out, payload)
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
    atomic_write(out / "class_embeddings.npz", functools.partial(write_npz, arrays=arrays))
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
        changed = changed_settings(read_run_config(out)["train"], config)
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


def checkpoint_payload(config: TrainConfig, plan: TrainingPlan, model: FusionModel | ComparisonHead, optimizer,
                       scheduler, *, epoch: int, step: int, best: dict[str, Any],
                       metrics: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint holds: model, optimiser and scheduler states, progress, config, sizes, class embeddings,
    and for a comparison head what rebuilds it (`head`: method, config, the kind of tokens it reduces)."""
    classes = plan.classes
    head = {"head": model.record()} if isinstance(model, ComparisonHead) else {}
    return {**head,
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
    """Write a checkpoint atomically: a crash or a full disk leaves the previous file, never half of one.

    torch's serialiser turns a failed write into a RuntimeError ("unexpected pos ..."), which names no file and
    reads as a bug; the file's own OSError (full disk, quota) is raised instead, and `atomic_write` names the path.
    """

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            writer = _WriteErrorKeeper(handle)
            try:
                torch.save(payload, writer)
            except RuntimeError as error:
                if writer.error is None:
                    raise
                raise writer.error from error

    atomic_write(path, write)


class _WriteErrorKeeper:
    """A binary file for `torch.save` that keeps the OSError of a failed write (torch replaces it)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
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
        "train_store_identity": store.identity,
        "test_seen_clip_ids": store.clip_ids[clips.test_seen_indices].tolist(),
        "shuffled_class_embeddings": embedding_permutation(config, len(clips.class_names)).tolist()
        if config.shuffle_class_embeddings else None,
        "validation": None if validation is None else {
            "source": validation.description,
            "store": str(validation.store.path),
            "store_identity": validation.store.identity,
            "seen_classes": list(validation.class_names[: validation.seen_ids.size]),
            "unseen_classes": list(validation.class_names[validation.seen_ids.size:]),
            "clip_ids": validation.store.clip_ids[validation.indices].tolist(),
        },
    }
    return config_record, classes_record


def _check_resume(config: TrainConfig, out: Path, config_record: dict, classes_record: dict, emb_id: str) -> dict:
    recorded = read_run_config(out)
    old_fusion, new_fusion = recorded["train"]["fusion"], config.fusion.to_dict()
    arch = [k for k in ARCHITECTURE_FIELDS if old_fusion.get(k) != new_fusion.get(k)]
    if arch:
        raise InputError(f"{out}: cannot resume, the head's architecture differs: "
                         + ", ".join(f"{k} {old_fusion.get(k)!r} -> {new_fusion.get(k)!r}" for k in arch))
    changed = changed_settings(recorded["train"], config)
    if changed:
        raise InputError(f"{out}: cannot resume with other settings than the run was started with ({changed}); "
                         f"pass the options recorded in {out / 'config.json'}")
    classes = read_json_object(out / "classes.json", "class record")
    # A run recorded before stores had an identity is compared without it; a recorded one must be the store's.
    validation = classes_record["validation"]
    if validation is not None and "store_identity" not in (classes.get("validation") or {}):
        validation = {key: value for key, value in validation.items() if key != "store_identity"}
    train_identity = classes_record["train_store_identity"]
    if (classes.get("classes") != classes_record["classes"] or classes.get("validation") != validation
            or classes.get("train_store_identity", train_identity) != train_identity):
        raise InputError(f"{out}: cannot resume against a different store or class list: the training / validation "
                         f"classes, clips or stores differ from {out / 'classes.json'}")
    if recorded["dims"] != config_record["dims"]:
        raise InputError(f"{out}: cannot resume, the store's sizes {config_record['dims']} differ from the run's "
                         f"{recorded['dims']}")
    try:
        payload = read_checkpoint(out / "last.pt", torch.device("cpu"))
    except InputError as error:
        raise InputError(f"{error}; the run cannot continue from it: delete it, and `resume=True` trains the run "
                         "again from its first epoch") from error
    if payload["class_embedding_id"] != emb_id:
        raise InputError(f"{out}: cannot resume, the class embeddings differ from the run's (another source or "
                         "vectors file?)")
    return payload


def _check_best(out: Path, last: dict[str, Any]) -> None:
    """best.pt of a resumed run is the checkpoint its records name, and loads: a run is not continued, or reported
    finished, with a best.pt that is damaged or of another epoch (zeroshot and the protocols evaluate it).

    best.pt of the epoch after last.pt's is allowed: a kill between the two writes of an epoch leaves it, and the
    resumed run repeats that epoch, rewriting it identically.

    Raises:
        FileNotFoundError: the records name a best epoch and there is no best.pt.
        InputError: best.pt does not load, or holds another epoch than last.pt and log.jsonl name.
    """
    best_epoch = last["best"]["epoch"]
    path = out / "best.pt"
    if best_epoch is None:
        return
    again = "its best checkpoint cannot be recovered: train the run again (another `out`, or delete the folder)"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist, but last.pt names epoch {best_epoch} as the best; {again}")
    try:
        best = read_checkpoint(path, torch.device("cpu"))
    except InputError as error:
        raise InputError(f"{error}; {again}") from error
    logged = [line.get("best_epoch") for line in read_log(out / "log.jsonl")]
    if (best["epoch"] not in (best_epoch, last["epoch"] + 1)) or logged[-1:] not in ([], [best_epoch]):
        raise InputError(f"{path} holds epoch {best['epoch']}, but last.pt and log.jsonl name epoch {best_epoch} as "
                         f"the best (log: {logged[-1:]}); {again}")


def changed_settings(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """The settings of `config` that differ from a run's recorded `train` config and can change its result.

    How a run runs (progress, device, prefetching, logging, evaluation batch size, resident store, compilation)
    and where its folder now is (a copied or moved run resumes) do not count: the fields declared
    `affects_result=False`. The same run resumes, or is reused, whatever they are. A field the record lacks (a run
    recorded before the field existed) counts as its default, which is what that run did; so does a setting of a
    comparison head's config (`head`).
    """
    old = json.loads(json.dumps(TrainConfig.from_dict(recorded).to_dict()))  # tuples -> lists, defaults filled
    if old["method"] != "mzst":
        old["head"] = json.loads(json.dumps(config_values(head_config(old["method"], old["head"]))))
    old, new = result_values(TrainConfig, old), result_values(TrainConfig, json.loads(json.dumps(config.to_dict())))
    old_fusion, new_fusion = old.pop("fusion"), new.pop("fusion")
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return changed + [f"fusion.{k}" for k in sorted(new_fusion) if old_fusion.get(k) != new_fusion.get(k)]


def run_state(config: TrainConfig) -> str:
    """What `config.out` holds for this config: "new" (nothing), "finished" (all epochs, same settings),
    "partial" (same settings, can resume) or "other" (another run, or not a run).

    "Same settings" is `changed_settings`: what does not change a result (progress bars, device, ...) is ignored.
    """
    out = Path(config.out)
    if not out.exists():
        return "new"
    if not (out / "config.json").is_file() or changed_settings(read_run_config(out)["train"], config):
        return "other"
    epochs = [line["epoch"] for line in read_log(out / "log.jsonl")]
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
    """Keep the log lines of epochs up to `epoch` (a crash may have logged an epoch without its checkpoint, or half
    a line); a log with nothing to cut (a finished run reopened) is left as it is."""
    if not path.is_file():
        return
    kept = "".join(f"{json.dumps(line)}\n" for line in read_log(path) if line["epoch"] <= epoch)
    if kept != path.read_text(encoding="utf-8"):
        write_text(path, kept)


def read_run_config(run_dir: Path, training_config: bool = True) -> dict[str, Any]:
    """A run's config.json, checked: a JSON object whose `train` is an object, `dims` an object and
    `decision_rule` a string; with `training_config`, `train` must load as a `TrainConfig` too (what resume
    compares). `load_run` reads only the decision rule, so that a run recorded before a field changed still loads.

    Raises:
        InputError: the file is not JSON, or not a run's config (the message names the file and what is wrong).
    """
    path = Path(run_dir) / "config.json"
    record = read_json_object(path, "run config")
    kinds = {"train": dict, "dims": dict, "decision_rule": str}
    wrong = [f"{key} is not a {kind.__name__}" for key, kind in kinds.items() if not isinstance(record.get(key), kind)]
    if training_config and not wrong:
        try:
            TrainConfig.from_dict(record["train"])
        except (TypeError, ValueError, KeyError, AttributeError) as error:  # a field missing, unknown or mistyped
            wrong.append(f"its training config does not load: {' '.join(str(error).split())[:200]}")
    if wrong:
        raise InputError(f"{path}: not a run's config ({'; '.join(wrong)}); restore the file, or train the run "
                         "again in another `out`")
    return record


def read_log(path: Path) -> list[dict[str, Any]]:
    """The epochs of a run's log.jsonl (none without the file), in order.

    A last line cut off without its newline is the epoch a kill interrupted while it was logged (its checkpoint
    was never written): it is left out, and logged.

    Raises:
        InputError: any other line that is not a JSON object with an integer `epoch`.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    epochs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a write that did not finish
                logger.warning("%s: leaving out its last line, cut off while it was written (the epoch did not "
                               "finish)", path)
                continue
            raise InputError(f"{path} line {number}: not a log line ({error}); restore the file, or train the run "
                             "again in another `out`") from error
        if not isinstance(entry, dict) or type(entry.get("epoch")) is not int:
            raise InputError(f"{path} line {number}: not a log line (no integer epoch); restore the file, or train "
                             "the run again in another `out`")
        epochs.append(entry)
    return epochs


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path` (a run's record).

    Raises:
        InputError: the file is not UTF-8 JSON, or holds another value than an object.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a {what} (not JSON: {error}); restore the file, or train the run again in "
                         "another `out`") from error
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a {what} (a JSON {type(value).__name__}, not an object); restore the file, "
                         "or train the run again in another `out`")
    return value


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
