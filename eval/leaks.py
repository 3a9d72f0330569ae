"""Leak checks of an MZSL evaluation set against what the model was trained on, run before any training.

An evaluation class leaks when it is a training class under another spelling (the same
`curate.classlists.normalised_name`: case, punctuation, articles, simple plurals and -ing / -ed forms), when its
name means the same (SR at or below the overlap edge, `curate.relatedness.semantic_relatedness` with the run's
embedding source), or when it is a Kinetics-400 label (the video backbone's training classes, same normalised
form). An evaluation clip leaks when its file has the bytes of a training clip's file (SHA-256; files are compared
only when their sizes match, so a large benchmark costs one `stat` per file). A perceptual near-duplicate check
(a re-encoded copy) is not done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from curate import classlists
from curate.classlists import normalised_name
from curate.relatedness import PAPER_EDGES, semantic_relatedness
from extract.files import sha256_file

__all__ = ["Overlap", "find_overlaps", "overlap_message"]

logger = logging.getLogger(__name__)

_SHOWN = 5  # overlaps named in the refusal; the rest are counted


@dataclass(frozen=True)
class Overlap:
    """One evaluation class or file that the training side already holds."""

    kind: str  # "name" (normalised name), "relatedness" (SR <= overlap edge), "kinetics400", "file" (same bytes)
    evaluation: str  # the evaluation class (or clip id, for "file")
    other: str  # the training class, Kinetics-400 label or training clip id
    detail: str  # how they match: the normalised form, the SR, the file's SHA-256

    def describe(self) -> str:
        return f"{self.kind}: {self.evaluation!r} ~ {self.other!r} ({self.detail})"


def _name_overlaps(evaluation: Sequence[str], others: Sequence[str], kind: str) -> list[Overlap]:
    by_form: dict[str, str] = {}
    for name in others:
        by_form.setdefault(normalised_name(name), name)
    return [Overlap(kind, name, by_form[normalised_name(name)], f"both read {normalised_name(name)!r}")
            for name in evaluation if normalised_name(name) in by_form]


def _file_overlaps(eval_files: dict[str, str], train_files: dict[str, str]) -> list[Overlap]:
    """Evaluation clips whose file has the bytes of a training clip's file (clip id -> path on each side)."""

    def sizes(files: dict[str, str]) -> dict[str, int]:
        found, missing = {}, 0
        for path in set(files.values()):
            try:
                found[path] = Path(path).stat().st_size
            except OSError:
                missing += 1
        if missing:
            logger.warning("%d of %d files not found: not compared by content", missing, len(set(files.values())))
        return found

    eval_sizes, train_sizes = sizes(eval_files), sizes(train_files)
    shared = set(eval_sizes.values()) & set(train_sizes.values())
    train_by_hash: dict[str, str] = {}
    for clip_id, path in train_files.items():
        if train_sizes.get(path) in shared:
            train_by_hash.setdefault(sha256_file(path), clip_id)
    overlaps = []
    for clip_id, path in eval_files.items():
        if eval_sizes.get(path) in shared and (digest := sha256_file(path)) in train_by_hash:
            overlaps.append(Overlap("file", clip_id, train_by_hash[digest], f"sha256 {digest[:12]}"))
    return overlaps


def find_overlaps(eval_classes: Sequence[str], train_classes: Sequence[str], eval_files: dict[str, str],
                  train_files: dict[str, str], source) -> list[Overlap]:
    """Every leak of the evaluation set into the training side (see the module docstring).

    Args:
        eval_classes, train_classes: class names of the evaluated clips and of the training clips.
        eval_files, train_files: clip id -> the clip's file (a store's `path`), on each side.
        source: the run's class-name embedding source (`fusion.class_embeddings.EmbeddingSource`).
    """
    overlaps = _name_overlaps(eval_classes, train_classes, "name")
    named = {o.evaluation for o in overlaps}
    for row in semantic_relatedness([c for c in eval_classes if c not in named], {"training": train_classes}, source):
        if row.sr <= PAPER_EDGES[0]:
            overlaps.append(Overlap("relatedness", row.class_name, row.nearest_seen_class, f"SR {row.sr:.3f}"))
    overlaps += _name_overlaps(eval_classes, classlists.load_classlist("kinetics400"), "kinetics400")
    return overlaps + _file_overlaps(eval_files, train_files)


def overlap_message(overlaps: Sequence[Overlap]) -> str:
    """One line naming the first overlaps and counting the rest."""
    shown = "; ".join(o.describe() for o in overlaps[:_SHOWN])
    more = f"; and {len(overlaps) - _SHOWN} more" if len(overlaps) > _SHOWN else ""
    return f"{len(overlaps)} overlap(s) of the evaluation set with the training side: {shown}{more}"
