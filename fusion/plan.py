"""Data planning of a training run: which clips train, validate and are held out, the training classes and
their embeddings, and the sizes the head is built with (`plan_training(config)`).

Nothing here trains or writes: the plan is a pure function of the config and the stores, so a resumed run
plans exactly what the interrupted one did (`fusion.run_dir` checks it). Test splits (`features.splits`: named
"unseen", or with a word "test") never validate or select.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from common.errors import InputError
from features.splits import ROLES_BY_NAME, SplitRole
from features.store import DONE, TokenStore
from fusion.config import TrainConfig
from fusion.model import ModelDims
from text.class_embeddings import EmbeddingSource, kinetics400_embeddings, load_embedding_source
from text.class_names import read_class_file
from text.vocabulary import Vocabulary

__all__ = ["KINETICS_CLASSES", "ValidationSet", "ClipPlan", "ClassPlan", "TrainingPlan",
           "plan_training", "embedding_permutation"]

logger = logging.getLogger(__name__)

KINETICS_CLASSES = 400


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
class ClipPlan:
    """Which clips train and validate, and the training classes (class id = position in `class_names`)."""

    train_indices: np.ndarray  # (N,) clip indices of the training store
    train_labels: np.ndarray  # (N,) class id of each training clip
    class_names: tuple[str, ...]
    validation: ValidationSet | None
    test_seen_indices: np.ndarray  # held out of training and validation, for `zeroshot`'s GZSL seen part


@dataclass(frozen=True)
class ClassPlan:
    """The embeddings and words of the classes, as the training uses them.

    Shapes:
        class_embeddings (C, E); validation_embeddings (C_val, E); kinetics_embeddings (400, E);
        class_text_ids (C, L) [CLS_T, words, PAD...].
    """

    source: EmbeddingSource
    class_embeddings: np.ndarray
    validation_embeddings: np.ndarray | None  # of `validation.class_names` (None without validation)
    kinetics_names: tuple[str, ...] | None  # None without the SE target's phi(s_v) term
    kinetics_embeddings: np.ndarray | None
    vocabulary: Vocabulary | None  # None without the text stream
    class_text_ids: torch.Tensor | None


@dataclass(frozen=True)
class TrainingPlan:
    """Everything a run is planned from: the stores, the clips, the classes, the head's sizes."""

    store: TokenStore
    val_store: TokenStore | None
    clips: ClipPlan
    classes: ClassPlan
    dims: ModelDims


def plan_training(config: TrainConfig) -> TrainingPlan:
    """Plan a run: open the stores, choose the clips and classes, embed the classes, size the head.

    Raises:
        FileNotFoundError: a missing store, class list or embedding file.
        InputError: the store and the class list / embedding source disagree, a validation split that is test
            data, test-unseen classes among the training or validation classes, an impossible configuration.
    """
    store = TokenStore.open(config.store)
    _check_complete(store, config.require_complete)
    val_store = None
    if config.val_store is not None:
        val_store = TokenStore.open(config.val_store)
        if val_store.identity == store.identity:  # by identity: a copy or a link of the store is the store
            raise InputError(f"`val_store` {config.val_store} is the training store (or a copy of it); name "
                             "`val_splits` to validate on its other splits")
        _check_complete(val_store, config.require_complete)
        _check_layouts(store, val_store)
    clips = _plan_clips(config, store, val_store)
    stores = [store] + ([val_store] if clips.validation is not None and val_store is not None else [])
    classes = _plan_classes(config, clips, stores)
    layout = store.token_layout
    dims = ModelDims(
        video_tokens=layout.video_tokens, video_dim=layout.video_dim, audio_tokens=layout.audio_tokens,
        audio_dim=layout.audio_dim, num_classes=len(clips.class_names), embedding_dim=classes.source.dim,
        vocab_size=len(classes.vocabulary) if classes.vocabulary is not None else 0,
        max_text_tokens=classes.class_text_ids.shape[1] if classes.class_text_ids is not None else 0,
    )
    return TrainingPlan(store=store, val_store=val_store, clips=clips, classes=classes, dims=dims)


def _plan_classes(config: TrainConfig, clips: ClipPlan, stores: Sequence[TokenStore]) -> ClassPlan:
    fusion = config.fusion
    source = load_embedding_source(config.embeddings, name_map=config.name_map, normalise=fusion.normalise_embeddings,
                                   missing=config.missing, peer_text_order=config.peer_text_order)
    kinetics_names = kinetics = None
    if fusion.se_target == "kinetics+class":
        for store in stores:
            if store.token_layout.kinetics_classes != KINETICS_CLASSES:
                raise InputError(f"{store.path}: the SE target 'kinetics+class' needs the video backbone's "
                                 f"Kinetics-400 logits, but the store has {store.token_layout.kinetics_classes} "
                                 "Kinetics classes; set `se_target='class'`")
        names, kinetics = kinetics400_embeddings(source)
        kinetics_names = tuple(names)
    vocabulary = class_text_ids = None
    if fusion.use_text:
        vocabulary = Vocabulary.from_class_names(clips.class_names, source.tokenize)
        class_text_ids = vocabulary.encode_names(clips.class_names, source.tokenize)  # (C, L)
    validation = clips.validation
    return ClassPlan(
        source=source, class_embeddings=source.embed(clips.class_names),
        validation_embeddings=source.embed(validation.class_names) if validation is not None else None,
        kinetics_names=kinetics_names, kinetics_embeddings=kinetics, vocabulary=vocabulary,
        class_text_ids=class_text_ids,
    )


def _is_test_unseen_split(split: str) -> bool:
    return ROLES_BY_NAME.role(split) is SplitRole.TEST and "unseen" in split.lower()


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
        raise InputError(f"val_unseen_fraction {config.val_unseen_fraction} of {len(classes)} classes leaves "
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


def _plan_clips(config: TrainConfig, store: TokenStore, val_store: TokenStore | None) -> ClipPlan:
    candidates = store.indices(DONE, config.train_splits)
    if not candidates.size:
        raise InputError(f"{store.path}: no done clips in split(s) {list(config.train_splits)}; the store has "
                         f"{sorted(set(store.splits.tolist()))} ({store.counts()})")
    labels = store.labels[candidates]
    if (labels == "").any():
        raise InputError(f"{store.path}: {(labels == '').sum()} training clip(s) have no class label (e.g. "
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
            raise InputError(f"the store {store.path} and the class list {config.classes_file} disagree: training "
                             f"labels {counts} (clips per label) are not in the list; fix the list or the store")
        missing = sorted(set(listed) - set(present))
        if missing:
            logger.warning("%d listed classes have no training clip: %s", len(missing), missing[:10])
        class_names = tuple(listed)
    else:
        class_names = tuple(present)
    leaked = sorted(set(class_names) & test_unseen)
    if leaked:
        raise InputError(f"{store.path}: classes {leaked[:10]} are training classes and also label test-unseen "
                         "clips (a test split with 'unseen' in its name); the test-unseen classes must never be "
                         "trained on")
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
    return ClipPlan(train_indices=train_indices, train_labels=train_labels, class_names=class_names,
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
        raise InputError(f"validation ({description}): no done clips")
    splits = ROLES_BY_NAME.test_splits(str(s) for s in store.splits[indices].tolist())
    if splits:
        raise InputError(f"validation ({description}) would use clips of test split(s) {splits}; never select on "
                         "test data: name validation splits explicitly (`val_splits`) or hold out training classes "
                         "(`val_unseen_fraction`)")
    labels = store.labels[indices].tolist()
    if "" in labels:
        raise InputError(f"validation ({description}): clips without a class label")
    unseen = sorted(set(labels) - set(class_names))
    leaked = sorted(set(unseen) & test_unseen)
    if leaked:
        raise InputError(f"validation ({description}): unseen validation classes {leaked[:10]} are test-unseen "
                         "classes; validation classes must never include the test-unseen classes")
    names = class_names + tuple(unseen)
    class_id = {name: i for i, name in enumerate(names)}
    ids = np.asarray([class_id[name] for name in labels], dtype=np.int64)
    seen_ids = np.arange(len(class_names), dtype=np.int64)
    unseen_ids = np.arange(len(class_names), len(names), dtype=np.int64)
    return ValidationSet(store=store, indices=indices, labels=ids, class_names=names, seen_ids=seen_ids,
                       unseen_ids=unseen_ids, description=description)


def _check_complete(store: TokenStore, required: bool) -> None:
    """Say when `extract` has not finished the store: the run would see only the clips done so far.

    Raises:
        InputError: pending clips, when `required` (`require_complete`).
    """
    counts = store.counts()
    if not counts["pending"]:
        return
    state = (f"{store.path}: {counts['pending']} of {store.num_clips} clips are still pending ({counts['done']} done, "
             f"{counts['failed']} failed): extract has not finished the store")
    if required:
        raise InputError(f"{state}; run extract to the end first, or train without `require_complete`")
    logger.warning("%s; training on the clips done so far (a rerun on the finished store trains on more)", state)


def _check_layouts(store: TokenStore, other: TokenStore) -> None:
    names = ("video_tokens", "video_dim", "audio_tokens", "audio_dim")
    wrong = [n for n in names if getattr(store.token_layout, n) != getattr(other.token_layout, n)]
    if wrong:
        raise InputError(f"{other.path} and {store.path} have different token layouts ({wrong}); validate on a "
                         "store made with the same extraction config")


def embedding_permutation(config: TrainConfig, num_classes: int) -> np.ndarray:
    """The control run's permutation of the training classes' embeddings: a derangement (no class keeps its own).

    Seeded by `val_split_seed`, so every seed of a control shares one permutation.
    """
    if num_classes < 2:
        raise InputError("shuffle_class_embeddings needs at least 2 training classes")
    rng = np.random.default_rng([config.val_split_seed, 2])
    while True:
        permutation = rng.permutation(num_classes)
        if (permutation != np.arange(num_classes)).all():
            return permutation
