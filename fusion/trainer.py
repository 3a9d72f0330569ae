"""Training of the fusion head on a token store: `train(config)` writes a run directory.

Run directory (docs/ARCHITECTURE.md): `config.json` (the training and head configs, the data-fixed sizes and
the decision rule), `classes.json` (training classes in id order, the embedding source spec and provenance,
the MLM vocabulary, the validation classes), `class_embeddings.npz` (the embeddings as used), `last.pt` every
epoch, `best.pt` (best validation score; only with validation), `log.jsonl` (one line per epoch). Checkpoints
are written through a temporary file and a rename, and load with `torch.load(..., weights_only=True)`.

Reproducibility: every source of randomness of an epoch (data order, view draws, word masks, dropout) is
seeded from (seed, epoch), so a resumed run repeats exactly what an uninterrupted one does on the same
machine and thread count.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from eval import metrics
from features.reader import BatchReader
from features.store import DONE, TokenStore
from fusion.class_embeddings import EmbeddingSource, kinetics400_embeddings, load_embedding_source, read_class_file
from fusion.config import ARCHITECTURE_FIELDS, FusionConfig, TrainConfig
from fusion.losses import FusionLoss, LossWeights, kinetics_class, loss_weights, se_targets
from fusion.model import FusionModel, ModelDims, build_model, count_parameters
from fusion.predict import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    embedding_id,
    predict_embeddings,
    read_checkpoint,
    resolve_device,
)
from fusion.text import Vocabulary, mask_words

__all__ = ["TrainSummary", "EpochStats", "ValidationSet", "ClassTargets", "train", "train_one_epoch", "evaluate",
           "is_test_split"]

logger = logging.getLogger(__name__)

KINETICS_CLASSES = 400
# Fields that may differ when a run is resumed: they change how it runs, not what it computes.
_RESUME_FREE_FIELDS = ("resume", "progress", "device", "prefetch_batches", "log_every_steps", "eval_batch_size")


@dataclass(frozen=True)
class TrainSummary:
    """What a training run produced."""

    run_dir: Path
    epochs: int  # epochs completed in total
    train_clips: int
    val_clips: int
    num_classes: int
    best_epoch: int | None  # None without validation
    best_metric: str | None  # "gzsl_hm", "zsl" or "seen_accuracy"
    best_score: float | None
    last_metrics: dict[str, float]


@dataclass(frozen=True)
class EpochStats:
    """Means over one epoch's clips, and its timing."""

    loss: float
    task: float
    se: float
    mlm: float | None
    clips: int
    steps: int
    lr: float  # the learning rate of the epoch's last step
    data_time_s: float  # waiting for batches
    step_time_s: float  # forward, backward and update
    samples_per_s: float


@dataclass(frozen=True)
class ValidationSet:
    """Validation clips and classes: ids index `class_names` (training classes first, then val-unseen ones)."""

    store: TokenStore
    indices: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    seen_ids: np.ndarray
    unseen_ids: np.ndarray
    description: str


@dataclass(frozen=True)
class _Plan:
    """Which clips train and validate, and the training classes (ids = position)."""

    train_indices: np.ndarray
    train_labels: np.ndarray
    class_names: tuple[str, ...]
    validation: ValidationSet | None
    test_seen_indices: np.ndarray  # held out of training and validation, for `zeroshot`'s GZSL seen part


@dataclass(frozen=True)
class ClassTargets:
    """Per-class tensors the training step looks up by label."""

    label_of_clip: torch.Tensor  # (n,) int64 class id per clip index of the store, -1 for other clips
    class_embeddings: torch.Tensor  # (C, E) on the device
    kinetics_embeddings: torch.Tensor | None  # (400, E) on the device
    class_text_ids: torch.Tensor | None  # (C, L) [CLS_T, words, PAD...]


# --- clip and class selection ---------------------------------------------------------------------------


def is_test_split(split: str) -> bool:
    """Whether clips of this split are test data: "unseen" (the synthetic benchmark) or any "*test*" name."""
    name = split.strip().lower()
    return name == "unseen" or "test" in name


def _is_test_unseen_split(split: str) -> bool:
    name = split.strip().lower()
    return name == "unseen" or ("test" in name and "unseen" in name)


def _test_unseen_classes(store: TokenStore) -> set[str]:
    return {label for label, split in zip(store.labels.tolist(), store.splits.tolist(), strict=True)
            if _is_test_unseen_split(split)}


def _hold_out(
    candidates: np.ndarray, labels: np.ndarray, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """AVCA stage-1 style validation from training clips: (train, val-seen, val-unseen indices, held classes).

    A share of the classes (at least one) becomes validation-unseen; of every other class a share of its clips
    (rounded, at least one when the class has two or more) becomes validation-seen, so that small stores still
    get a GZSL validation. Deterministic for `val_split_seed`.
    """
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(config.val_split_seed)
    n_held = max(1, round(config.val_unseen_fraction * len(classes)))
    if len(classes) - n_held < 2:
        raise ValueError(f"val_unseen_fraction {config.val_unseen_fraction} of {len(classes)} classes leaves "
                         "fewer than 2 training classes")
    held = sorted(classes[i] for i in rng.choice(len(classes), n_held, replace=False))
    is_held = np.isin(labels, held)
    kept, kept_labels = candidates[~is_held], labels[~is_held]
    val_seen = []
    for name in sorted(set(kept_labels.tolist())):
        mine = kept[kept_labels == name]
        take = max(1, round(config.val_seen_fraction * len(mine))) if config.val_seen_fraction and len(mine) > 1 else 0
        val_seen.extend(mine[rng.permutation(len(mine))[:take]].tolist())
    val_seen_indices = np.sort(np.asarray(val_seen, dtype=np.int64))
    return np.setdiff1d(kept, val_seen_indices), val_seen_indices, candidates[is_held], held


def _plan_data(config: TrainConfig, store: TokenStore, val_store: TokenStore | None) -> _Plan:
    candidates = store.indices(DONE, config.train_splits)
    if not candidates.size:
        raise ValueError(f"{store.path}: no done clips in split(s) {list(config.train_splits)}; the store has "
                         f"{sorted(set(store.splits.tolist()))} ({store.counts()})")
    labels = store.labels[candidates]
    if (labels == "").any():
        raise ValueError(f"{store.path}: {(labels == '').sum()} training clip(s) have no class label (e.g. "
                         f"{store.clip_ids[candidates[labels == ''][0]]!r}); give the manifest a class_name column")
    test_unseen = _test_unseen_classes(store)
    test_seen_indices = np.zeros(0, dtype=np.int64)
    if config.test_seen_fraction > 0:
        candidates, test_seen_indices = _hold_out_test_seen(candidates, labels, config)
        labels = store.labels[candidates]
    train_indices = candidates
    held_unseen: list[str] = []
    if config.val_unseen_fraction > 0:
        train_indices, val_seen_indices, val_unseen_indices, held_unseen = _hold_out(candidates, labels, config)
    train_labels_text = store.labels[train_indices]

    present = sorted(set(train_labels_text.tolist()))
    if config.classes_file is not None:
        listed = [name for name in read_class_file(config.classes_file) if name not in held_unseen]
        stray = sorted(set(present) - set(listed))
        if stray:
            counts = {name: int((train_labels_text == name).sum()) for name in stray[:10]}
            raise ValueError(f"the store {store.path} and the class list {config.classes_file} disagree: training "
                             f"labels {counts} (clips per label) are not in the list; fix the list or the store")
        missing = sorted(set(listed) - set(present))
        if missing:
            logger.warning("%d listed classes have no training clip: %s", len(missing), missing[:10])
        class_names = tuple(listed)
    else:
        class_names = tuple(present)
    leaked = sorted(set(class_names) & test_unseen)
    if leaked:
        raise ValueError(f"{store.path}: classes {leaked[:10]} are training classes and also label test-unseen "
                         "clips (split 'unseen' or '*test*unseen*'); the test-unseen classes must never be trained on")
    class_id = {name: i for i, name in enumerate(class_names)}
    train_labels = np.asarray([class_id[name] for name in train_labels_text.tolist()], dtype=np.int64)

    validation = None
    if config.val_unseen_fraction > 0:
        indices = np.concatenate([val_seen_indices, val_unseen_indices])
        validation = _validation(store, indices, class_names, test_unseen,
                                 f"held out of {store.path}: {len(held_unseen)} classes as unseen, "
                                 f"{config.val_seen_fraction:g} of the other classes' clips as seen "
                                 f"(val_split_seed {config.val_split_seed})")
    elif val_store is not None:
        indices = val_store.indices(DONE, config.val_splits or None)
        described = f"{val_store.path}" + (f" splits {list(config.val_splits)}" if config.val_splits else "")
        validation = _validation(val_store, indices, class_names, test_unseen | _test_unseen_classes(val_store),
                                 described)
    elif config.val_splits:
        indices = store.indices(DONE, config.val_splits)
        validation = _validation(store, indices, class_names, test_unseen,
                                 f"{store.path} splits {list(config.val_splits)}")
    return _Plan(train_indices=train_indices, train_labels=train_labels, class_names=class_names,
                 validation=validation, test_seen_indices=test_seen_indices)


def _hold_out_test_seen(candidates: np.ndarray, labels: np.ndarray, config: TrainConfig
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Split off `test_seen_fraction` of every class's clips (at least one of a class with two or more) as
    test-seen, before any validation hold-out: (remaining candidates, test-seen indices). Deterministic."""
    rng = np.random.default_rng([config.val_split_seed, 1])
    test = []
    for name in sorted(set(labels.tolist())):
        mine = candidates[labels == name]
        take = max(1, round(config.test_seen_fraction * len(mine))) if len(mine) > 1 else 0
        test.extend(mine[rng.permutation(len(mine))[:take]].tolist())
    test_indices = np.sort(np.asarray(test, dtype=np.int64))
    return np.setdiff1d(candidates, test_indices), test_indices


def _validation(
    store: TokenStore, indices: np.ndarray, class_names: tuple[str, ...], test_unseen: set[str], description: str
) -> ValidationSet:
    if not indices.size:
        raise ValueError(f"validation ({description}): no done clips")
    splits = sorted({str(s) for s in store.splits[indices].tolist() if is_test_split(str(s))})
    if splits:
        raise ValueError(f"validation ({description}) would use clips of test split(s) {splits}; never select on "
                         "test data: name validation splits explicitly (--val-split) or hold out training classes "
                         "(--val-unseen-fraction)")
    labels = store.labels[indices].tolist()
    if "" in labels:
        raise ValueError(f"validation ({description}): clips without a class label")
    unseen = sorted(set(labels) - set(class_names))
    leaked = sorted(set(unseen) & test_unseen)
    if leaked:
        raise ValueError(f"validation ({description}): unseen validation classes {leaked[:10]} are test-unseen "
                         "classes; validation classes must never include the test-unseen classes")
    names = class_names + tuple(unseen)
    class_id = {name: i for i, name in enumerate(names)}
    ids = np.asarray([class_id[name] for name in labels], dtype=np.int64)
    seen_ids = np.arange(len(class_names), dtype=np.int64)
    unseen_ids = np.arange(len(class_names), len(names), dtype=np.int64)
    return ValidationSet(store=store, indices=indices, labels=ids, class_names=names, seen_ids=seen_ids,
                       unseen_ids=unseen_ids, description=description)


# --- embeddings, vocabulary, sizes ----------------------------------------------------------------------


def _kinetics_embeddings(fusion: FusionConfig, source: EmbeddingSource, stores: Sequence[TokenStore]):
    if fusion.se_target != "kinetics+class":
        return None, None
    for store in stores:
        classes = store.token_layout.get("kinetics_classes", 0)
        if classes != KINETICS_CLASSES:
            raise ValueError(f"{store.path}: se_target 'kinetics+class' needs the video backbone's Kinetics-400 "
                             f"logits, but the store has {classes} Kinetics classes; pass --se-target class")
    try:
        names, vectors = kinetics400_embeddings(source)
    except ValueError as error:
        raise ValueError(f"{error}; or pass --se-target class (regress phi(class) only)") from error
    return tuple(names), vectors


def _check_layouts(store: TokenStore, other: TokenStore) -> None:
    keys = ("Nv", "Dv", "Na", "Da")
    wrong = [k for k in keys if store.token_layout.get(k) != other.token_layout.get(k)]
    if wrong:
        raise ValueError(f"{other.path} and {store.path} have different token layouts ({wrong}); validate on a "
                         "store made with the same extraction config")


# --- learning rate ----------------------------------------------------------------------------------------


def _lr_factor(step: int, *, steps_per_epoch: int, total_steps: int, config: TrainConfig) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based): linear warmup, then cosine or steps."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch + 1
    return config.lr_step_gamma ** sum(epoch > m for m in config.lr_milestones_epochs)


# --- one epoch --------------------------------------------------------------------------------------------


def _epoch_seeds(seed: int, epoch: int) -> list[int]:
    """Seeds of an epoch's dropout, view draws and word masks: a function of (seed, epoch) only."""
    return [int(s) for s in np.random.SeedSequence([seed, epoch]).generate_state(3)]


def _training_views(video_tokens: torch.Tensor, view_mode: str, generator: torch.Generator) -> torch.Tensor:
    """One view per clip: a random one ("ensemble"), or the mean over views ("mean").

    Shapes:
        video_tokens (B, V, Nv, Dv) -> (B, Nv, Dv)
    """
    if view_mode == "mean":
        return video_tokens.mean(dim=1)  # (B, V, Nv, Dv) -> (B, Nv, Dv)
    b, v = video_tokens.shape[:2]
    pick = torch.randint(v, (b,), generator=generator)
    return video_tokens[torch.arange(b), pick]  # (B, V, Nv, Dv) -> (B, Nv, Dv)


def train_one_epoch(
    model: FusionModel,
    reader: BatchReader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: FusionLoss,
    targets: ClassTargets,
    weights: LossWeights,
    *,
    epoch: int,
    seed: int,
    device: torch.device,
    grad_clip_norm: float,
    progress: bool,
    log_every_steps: int,
    description: str = "",
) -> EpochStats:
    """Train the model on one pass over `reader`'s clips.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    config = model.config
    dropout_seed, view_seed, mask_seed = _epoch_seeds(seed, epoch)
    torch.manual_seed(dropout_seed)
    view_generator = torch.Generator().manual_seed(view_seed)
    mask_generator = torch.Generator().manual_seed(mask_seed)
    use_mlm = weights.mlm > 0 and targets.class_text_ids is not None
    reader.set_epoch(epoch)
    model.train()
    sums = {"loss": 0.0, "task": 0.0, "se": 0.0, "mlm": 0.0}
    clips = steps = 0
    data_time = step_time = 0.0
    bar = tqdm(total=len(reader), desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    iterator = iter(reader)
    try:
        while True:
            start = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            fetched = time.perf_counter()
            labels = targets.label_of_clip[batch["index"]]  # (B,)
            if bool((labels < 0).any()):
                raise ValueError("a batch holds a clip that is not a training clip")  # a planning bug
            video = _training_views(batch["video_tokens"], config.view_mode, view_generator)
            text_inputs = mlm_targets = None
            if use_mlm:
                text_inputs, mlm_targets = mask_words(targets.class_text_ids[labels], config.mlm_mask_probability,
                                                      mask_generator)
                text_inputs, mlm_targets = text_inputs.to(device), mlm_targets.to(device)
            kinetics_pred = (kinetics_class(batch["kinetics_logits"]).to(device)
                             if targets.kinetics_embeddings is not None else None)
            labels = labels.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                output = model(video.to(device), batch["audio_tokens"].to(device), batch["has_audio"].to(device),
                               text_inputs)
            target = se_targets(labels, targets.class_embeddings, kinetics_pred, targets.kinetics_embeddings)
            parts = loss_fn(output, labels, target, weights, mlm_targets)
            if not torch.isfinite(parts.total):
                raise FloatingPointError(f"epoch {epoch} step {steps + 1}: loss is {parts.total.item()} (task "
                                         f"{parts.task.item()}, se {parts.se.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
            optimizer.step()
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            done = time.perf_counter()
            data_time += fetched - start
            step_time += done - fetched
            b = len(batch["index"])
            clips += b
            steps += 1
            sums["loss"] += parts.total.item() * b
            sums["task"] += parts.task.item() * b
            sums["se"] += parts.se.item() * b
            if parts.mlm is not None:
                sums["mlm"] += parts.mlm.item() * b
            shown = {k: f"{v / clips:.3f}" for k, v in sums.items() if k != "mlm" or use_mlm}
            bar.set_postfix(shown, refresh=False)
            bar.update()
            if steps % log_every_steps == 0:
                logger.info("epoch %d step %d: %s lr %.3g", epoch, steps, shown, optimizer.param_groups[0]["lr"])
    finally:
        bar.close()
    if not clips:
        raise ValueError("the epoch had no batches: no training clips")
    return EpochStats(
        loss=sums["loss"] / clips, task=sums["task"] / clips, se=sums["se"] / clips,
        mlm=sums["mlm"] / clips if use_mlm else None, clips=clips, steps=steps,
        lr=float(optimizer.param_groups[0]["lr"]), data_time_s=data_time, step_time_s=step_time,
        samples_per_s=clips / max(data_time + step_time, 1e-9),
    )


# --- validation -------------------------------------------------------------------------------------------


def evaluate(
    model: FusionModel,
    validation: ValidationSet,
    class_embeddings: np.ndarray,
    kinetics_embeddings: np.ndarray | None,
    rule: str,
    batch_size: int,
    device: torch.device,
    select_by: str = "gzsl_hm_calibrated",
) -> dict[str, Any]:
    """ZSL / GZSL on the validation classes only (fractions), and which score selects the best epoch.

    The candidates are the validation classes: all training (seen) classes plus the validation-unseen ones.
    Selection: `select_by` when both parts have clips, ZSL with only unseen clips, seen accuracy with only
    seen; ties are broken by ZSL (`rank`).

    Shapes:
        class_embeddings (C_val, E), kinetics_embeddings (400, E)
    """
    predictions = predict_embeddings(model, validation.store, validation.indices, batch_size, device)
    offsets = None
    if rule == "kinetics":
        offsets = kinetics_embeddings[predictions.kinetics_pred]  # (400, E) -> (N, E)
    distances = metrics.class_distances(predictions.embeddings, class_embeddings, rule, offsets)  # (N, C_val)
    labels = validation.labels
    has_seen = bool(np.isin(labels, validation.seen_ids).any())
    has_unseen = bool(np.isin(labels, validation.unseen_ids).any())
    result: dict[str, Any] = {"clips": int(labels.size)}
    if has_unseen:
        result["zsl"] = metrics.zsl(distances, labels, validation.unseen_ids)
    if has_seen and has_unseen:
        gzsl = metrics.gzsl(distances, labels, validation.seen_ids, validation.unseen_ids)
        result.update(gzsl_s=gzsl.s, gzsl_u=gzsl.u, gzsl_hm=gzsl.hm)
        # Raw GZSL often collapses onto the seen classes; calibrated stacking with beta chosen on this same
        # validation data (as AVCA's stage 1 does) shows what is recoverable.
        beta, calibrated_hm = metrics.select_beta(distances, labels, validation.seen_ids, validation.unseen_ids)
        result.update(gzsl_hm_calibrated=calibrated_hm, calibration_beta=beta)
        result["selection"] = select_by
    elif has_unseen:
        result["selection"] = "zsl"
    else:
        predicted = metrics.nearest_class(distances, validation.seen_ids)
        result["seen_accuracy"] = metrics.mean_class_accuracy(labels, predicted, validation.seen_ids)
        result["selection"] = "seen_accuracy"
    result["score"] = result[result["selection"]]
    # Ranking of epochs: the score, then ZSL (raw HM is often 0 for many epochs), then the earliest epoch.
    result["rank"] = [result["score"], result.get("zsl", 0.0)]
    return result


# --- run directory ----------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(temporary)
    os.replace(temporary, path)


def _write_json(path: Path, value: Any) -> None:
    _atomic_write_bytes(path, lambda p: p.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8"))


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as handle:  # a file handle: np.savez would append ".npz" to the temporary name
        np.savez(handle, **arrays)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    _atomic_write_bytes(path, lambda p: torch.save(payload, p))


def _run_records(
    config: TrainConfig, dims: ModelDims, plan: _Plan, source: EmbeddingSource, vocabulary: Vocabulary | None,
    kinetics_names: tuple[str, ...] | None, store: TokenStore,
) -> tuple[dict[str, Any], dict[str, Any]]:
    config_record = {
        "train": config.to_dict(),
        "dims": dims.to_dict(),
        "decision_rule": config.fusion.decision_rule,
        "store": {"path": str(store.path), "token_layout": store.token_layout, "provenance": store.provenance},
    }
    validation = plan.validation
    classes_record = {
        "classes": list(plan.class_names),
        "embedding": {"spec": source.spec, "normalised": source.normalised, "dim": source.dim,
                      "provenance": source.provenance()},
        "kinetics_labels": list(kinetics_names) if kinetics_names is not None else None,
        "mlm_vocabulary": list(vocabulary.words) if vocabulary is not None else None,
        "train_clips": int(plan.train_indices.size),
        "train_clip_ids": store.clip_ids[plan.train_indices].tolist(),
        "test_seen_clip_ids": store.clip_ids[plan.test_seen_indices].tolist(),
        "shuffled_class_embeddings": _embedding_permutation(config, len(plan.class_names)).tolist()
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


def _embedding_permutation(config: TrainConfig, num_classes: int) -> np.ndarray:
    """The control run's permutation of the training classes' embeddings: a derangement (no class keeps its own)."""
    if num_classes < 2:
        raise ValueError("shuffle_class_embeddings needs at least 2 training classes")
    rng = np.random.default_rng([config.val_split_seed, 2])
    while True:
        permutation = rng.permutation(num_classes)
        if (permutation != np.arange(num_classes)).all():
            return permutation


def _check_resume(config: TrainConfig, out: Path, config_record: dict, classes_record: dict, emb_id: str) -> dict:
    recorded = json.loads((out / "config.json").read_text(encoding="utf-8"))
    old, new = dict(recorded["train"]), json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as recorded
    old_fusion, new_fusion = old.pop("fusion"), new.pop("fusion")
    arch = [k for k in ARCHITECTURE_FIELDS if old_fusion.get(k) != new_fusion.get(k)]
    if arch:
        raise ValueError(f"{out}: cannot resume, the head's architecture differs: "
                         + ", ".join(f"{k} {old_fusion.get(k)!r} -> {new_fusion.get(k)!r}" for k in arch))
    changed = [k for k in sorted(set(old) | set(new)) if k not in _RESUME_FREE_FIELDS and old.get(k) != new.get(k)]
    changed += [f"fusion.{k}" for k in sorted(new_fusion) if old_fusion.get(k) != new_fusion.get(k)]
    if changed:
        raise ValueError(f"{out}: cannot resume with other settings than the run was started with ({changed}); "
                         f"pass the options recorded in {out / 'config.json'}")
    classes = json.loads((out / "classes.json").read_text(encoding="utf-8"))
    if classes["classes"] != classes_record["classes"] or classes["validation"] != classes_record["validation"]:
        raise ValueError(f"{out}: cannot resume against a different store or class list: the training / validation "
                         f"classes or clips differ from {out / 'classes.json'}")
    if recorded["dims"] != config_record["dims"]:
        raise ValueError(f"{out}: cannot resume, the store's sizes {config_record['dims']} differ from the run's "
                         f"{recorded['dims']}")
    payload = read_checkpoint(out / "last.pt", torch.device("cpu"))
    if payload["class_embedding_id"] != emb_id:
        raise ValueError(f"{out}: cannot resume, the class embeddings differ from the run's (another source or "
                         "vectors file?)")
    return payload


def _prepare_run_dir(config: TrainConfig) -> None:
    out = config.out
    if config.resume:
        for name in ("config.json", "classes.json", "last.pt"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out}: nothing to resume (no {name}); start the run without --resume")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; pass --resume to continue that run, or another --out")
    out.mkdir(parents=True, exist_ok=True)


def _truncate_log(path: Path, epoch: int) -> None:
    """Keep the log lines of epochs up to `epoch` (a crash may have logged an epoch without its checkpoint)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and json.loads(line)["epoch"] <= epoch]
    _atomic_write_bytes(path, lambda p: p.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8"))


# --- the run ----------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> TrainSummary:
    """Train the fusion head on a token store and write the run directory `config.out`.

    Raises:
        FileNotFoundError: a missing store, class list, or (with resume) a run directory without last.pt.
        FileExistsError: `out` exists and is not empty, without resume.
        ValueError: the store and the class list / embedding source / run disagree, a validation split that is
            test data, an impossible configuration (e.g. Kinetics SE target on a store without Kinetics logits).
    """
    fusion = config.fusion
    device = resolve_device(config.device)
    store = TokenStore.open(config.store)
    val_store = None
    if config.val_store is not None:
        if Path(config.val_store).resolve() == Path(config.store).resolve():
            raise ValueError("--val-store is the training store; use --val-split to validate on its other splits")
        val_store = TokenStore.open(config.val_store)
        _check_layouts(store, val_store)
    plan = _plan_data(config, store, val_store)
    if config.embeddings.strip().lower().startswith("avca:") and not fusion.normalise_embeddings:
        raise ValueError(f"the {config.embeddings} table is stored L2-normalised; train on it with normalised "
                         "embeddings (--ablation normalised), or pick a word-vector source for raw ones")
    source = load_embedding_source(config.embeddings, name_map=config.name_map, normalise=fusion.normalise_embeddings)
    stores = [store] + ([plan.validation.store] if plan.validation is not None and val_store is not None else [])
    kinetics_names, kinetics = _kinetics_embeddings(fusion, source, stores)
    class_embeddings = source.embed(plan.class_names)  # (C, E)
    val_embeddings = source.embed(plan.validation.class_names) if plan.validation is not None else None
    vocabulary = None
    class_text_ids = None
    if fusion.use_text:
        vocabulary = Vocabulary.from_class_names(plan.class_names, source.tokenize)
        class_text_ids = vocabulary.encode_names(plan.class_names, source.tokenize)  # (C, L)
    layout = store.token_layout
    dims = ModelDims(
        video_tokens=layout["Nv"], video_dim=layout["Dv"], audio_tokens=layout["Na"], audio_dim=layout["Da"],
        num_classes=len(plan.class_names), embedding_dim=source.dim,
        vocab_size=len(vocabulary) if vocabulary is not None else 0,
        max_text_tokens=class_text_ids.shape[1] if class_text_ids is not None else 0,
    )
    emb_id = embedding_id(plan.class_names, class_embeddings, kinetics)
    config_record, classes_record = _run_records(config, dims, plan, source, vocabulary, kinetics_names, store)

    _prepare_run_dir(config)
    out = config.out
    resumed = _check_resume(config, out, config_record, classes_record, emb_id) if config.resume else None
    if resumed is None:
        _write_json(out / "config.json", config_record)
        _write_json(out / "classes.json", classes_record)
        arrays = {"class_names": np.asarray(plan.class_names), "class_embeddings": class_embeddings}
        if kinetics is not None:
            arrays.update(kinetics_labels=np.asarray(kinetics_names), kinetics_embeddings=kinetics)
        _atomic_write_bytes(out / "class_embeddings.npz", functools.partial(_write_npz, arrays=arrays))

    torch.manual_seed(config.seed)
    model = build_model(fusion, dims)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameter_groups(config.weight_decay), lr=config.lr)
    fields = ("video_tokens", "audio_tokens", "has_audio") + (("kinetics_logits",) if kinetics is not None else ())
    reader = BatchReader(store, plan.train_indices, config.batch_size, shuffle=True, seed=config.seed,
                         prefetch=config.prefetch_batches, fields=fields)
    factor = functools.partial(_lr_factor, steps_per_epoch=len(reader), total_steps=config.epochs * len(reader),
                               config=config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    label_of_clip = torch.full((store.num_clips,), -1, dtype=torch.int64)
    label_of_clip[torch.from_numpy(plan.train_indices)] = torch.from_numpy(plan.train_labels)
    target_embeddings = class_embeddings
    if config.shuffle_class_embeddings:  # the control: class c is taught the name embedding of class perm[c]
        target_embeddings = class_embeddings[_embedding_permutation(config, len(plan.class_names))]
    targets = ClassTargets(
        label_of_clip=label_of_clip,
        class_embeddings=torch.from_numpy(target_embeddings).to(device),
        kinetics_embeddings=torch.from_numpy(kinetics).to(device) if kinetics is not None else None,
        class_text_ids=class_text_ids,
    )
    loss_fn = FusionLoss()

    start_epoch, step = 1, 0
    best: dict[str, Any] = {"epoch": None, "metric": None, "score": None, "rank": None}
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start_epoch, step, best = int(resumed["epoch"]) + 1, int(resumed["step"]), dict(resumed["best"])
        _truncate_log(out / "log.jsonl", start_epoch - 1)
        logger.info("resuming %s after epoch %d (step %d)", out, start_epoch - 1, step)
    logger.info("training %s: %d clips, %d classes, %d validation clips, %d parameters, %s", out,
                plan.train_indices.size, len(plan.class_names),
                0 if plan.validation is None else plan.validation.indices.size, count_parameters(model), device)

    last_metrics: dict[str, Any] = dict(resumed["metrics"]) if resumed is not None else {}
    for epoch in range(start_epoch, config.epochs + 1):
        weights = loss_weights(fusion, epoch)
        started = time.perf_counter()
        stats = train_one_epoch(
            model, reader, optimizer, scheduler, loss_fn, targets, weights, epoch=epoch, seed=config.seed,
            device=device, grad_clip_norm=config.grad_clip_norm, progress=config.progress,
            log_every_steps=config.log_every_steps, description=f"epoch {epoch}/{config.epochs}",
        )
        step += stats.steps
        val_metrics: dict[str, Any] = {}
        is_best = False
        if plan.validation is not None:
            val_metrics = evaluate(model, plan.validation, val_embeddings, kinetics, fusion.decision_rule,
                                   config.eval_batch_size, device, config.select_by)
            if best["rank"] is None or val_metrics["rank"] > best["rank"]:
                best = {"epoch": epoch, "metric": val_metrics["selection"], "score": val_metrics["score"],
                        "rank": val_metrics["rank"]}
                is_best = True
        last_metrics = val_metrics
        line = {
            "epoch": epoch, "step": step, "lr": stats.lr, "loss": stats.loss, "loss_task": stats.task,
            "loss_se": stats.se, "loss_mlm": stats.mlm, "weight_task": weights.task, "weight_se": weights.se,
            "weight_mlm": weights.mlm, "val": val_metrics, "best_epoch": best["epoch"], "clips": stats.clips,
            "samples_per_s": stats.samples_per_s, "data_time_s": stats.data_time_s,
            "step_time_s": stats.step_time_s, "epoch_time_s": time.perf_counter() - started,
        }
        with (out / "log.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(line) + "\n")
        payload = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "best": best, "metrics": val_metrics,
            "rng": {"torch": torch.get_rng_state()},
            "config": config.to_dict(), "dims": dims.to_dict(), "class_embedding_id": emb_id,
        }
        # best.pt before last.pt: a crash in between re-runs this epoch, which rewrites best.pt identically.
        if is_best:
            _save_checkpoint(out / "best.pt", payload)
        _save_checkpoint(out / "last.pt", payload)
        summary = ", ".join(f"{k} {v:.4f}" for k, v in val_metrics.items() if isinstance(v, float))
        logger.info("epoch %d/%d: loss %.4f (task %.4f, se %.4f%s) %.1f clips/s%s", epoch, config.epochs,
                    stats.loss, stats.task, stats.se, "" if stats.mlm is None else f", mlm {stats.mlm:.4f}",
                    stats.samples_per_s, f"; val {summary}" if summary else "")

    return TrainSummary(
        run_dir=out, epochs=config.epochs, train_clips=int(plan.train_indices.size),
        val_clips=0 if plan.validation is None else int(plan.validation.indices.size),
        num_classes=len(plan.class_names), best_epoch=best["epoch"], best_metric=best["metric"],
        best_score=best["score"], last_metrics=last_metrics,
    )
