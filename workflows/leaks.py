"""Leak checks of an MZSL evaluation set against what the model was trained on, run before any training.

An evaluation class leaks when it is a training class under another spelling (the same
`curate.classlists.normalised_name`: case, punctuation, articles, simple plurals and -ing / -ed forms), when its
name means the same (SR at or below the overlap edge, `curate.relatedness.semantic_relatedness` with the run's
embedding source), or when it is a Kinetics-400 label (the video backbone's training classes, same normalised
form). An evaluation clip leaks when its file has the bytes of a training clip's file (SHA-256; files are compared
only when their sizes match, so a large benchmark costs one `stat` per file), and, when asked (it decodes every
file), when it is a near duplicate of one: a re-encoded, rescaled or recompressed copy has other bytes but about
the same average hash (8 x 8 grey, 4 frames spread over the video, `video_fingerprint`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import sha256_file
from curate import classlists
from curate.classlists import normalised_name
from curate.relatedness import PAPER_EDGES, semantic_relatedness

__all__ = ["NEAR_DUPLICATE_BITS", "Overlap", "video_fingerprint", "find_overlaps", "overlap_message"]

logger = logging.getLogger(__name__)

_SHOWN = 5  # overlaps named in the refusal; the rest are counted
_FINGERPRINT_FRAMES = 4  # frames spread over the video (the extraction's temporal views, one frame each)
_HASH_SIDE = 8  # each frame's average hash: 8 x 8 cells of grey, one bit per cell (above the frame's median)
NEAR_DUPLICATE_BITS = 0.1  # two fingerprints differing in at most this share of their bits: a near duplicate


@dataclass(frozen=True)
class Overlap:
    """One evaluation class or file that the training side already holds."""

    kind: str  # "name" (normalised name), "relatedness" (SR <= overlap edge), "kinetics400", "file" (same bytes),
    # "near-duplicate" (fingerprints within NEAR_DUPLICATE_BITS)
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


def video_fingerprint(path: str | Path) -> np.ndarray | None:
    """Average hashes of 4 frames spread over the video, (4 * 64,) booleans; None when it cannot be decoded.

    The frames are the ones extraction's view sampling picks (`extract.decode.decode_clip`, time 0 and rotation
    as it takes them), so a copy trimmed to the same clip or re-encoded at another size or quality hashes alike.
    """
    from common.media import MediaError
    from extract.config import AudioConfig, VideoConfig
    from extract.decode import decode_clip

    # the fewest frames a view takes (mvit_tiny: no fixed input size; no backbone runs), the first of each is hashed
    views = VideoConfig(architecture="mvit_tiny", crops=1, temporal_views=_FINGERPRINT_FRAMES, frames_per_view=2,
                        frame_stride=1)
    try:
        clip = decode_clip(path, views, AudioConfig())
    except MediaError as error:
        logger.warning("%s: no fingerprint (%s)", path, error)
        return None
    grey = clip.frames[clip.frame_index[:, 0]].astype(np.float32).mean(axis=3)  # (4, H, W, 3) -> (4, H, W)
    n, h, w = grey.shape[0], grey.shape[1] // _HASH_SIDE, grey.shape[2] // _HASH_SIDE
    cells = grey[:, : h * _HASH_SIDE, : w * _HASH_SIDE].reshape(n, _HASH_SIDE, h, _HASH_SIDE, w).mean(axis=(2, 4))
    return (cells > np.median(cells, axis=(1, 2), keepdims=True)).reshape(-1)  # (4, 8, 8) -> (256,)


def _near_duplicates(eval_files: dict[str, str], train_files: dict[str, str], exact: set[str]) -> list[Overlap]:
    """Evaluation clips (not already `exact` copies) whose video's fingerprint is within NEAR_DUPLICATE_BITS of
    a training clip's."""

    def fingerprints(files: dict[str, str]) -> tuple[list[str], np.ndarray]:
        prints = {path: video_fingerprint(path) for path in sorted(set(files.values())) if Path(path).is_file()}
        ids = [clip_id for clip_id, path in files.items() if prints.get(path) is not None]
        return ids, np.array([prints[files[c]] for c in ids], np.float32) * 2 - 1  # bits -> +-1, (clips, bits)

    eval_ids, eval_signs = fingerprints({c: p for c, p in eval_files.items() if c not in exact})
    train_ids, train_signs = fingerprints(train_files)
    if not eval_ids or not train_ids:
        return []
    bits = eval_signs.shape[1]
    overlaps = []
    for start in range(0, len(train_ids), 4096):  # (E, bits) @ (bits, T) per block of training clips
        differing = (bits - eval_signs @ train_signs[start: start + 4096].T) / 2  # Hamming distances (E, T)
        for e, t in zip(*np.nonzero(differing <= NEAR_DUPLICATE_BITS * bits), strict=True):
            overlaps.append(Overlap("near-duplicate", eval_ids[e], train_ids[start + t],
                                    f"{int(differing[e, t])} of {bits} fingerprint bits differ"))
    first: dict[str, Overlap] = {}
    for overlap in overlaps:  # one line per evaluation clip: its first match
        first.setdefault(overlap.evaluation, overlap)
    return list(first.values())


def find_overlaps(eval_classes: Sequence[str], train_classes: Sequence[str], eval_files: dict[str, str],
                  train_files: dict[str, str], source, near_duplicates: bool = False) -> list[Overlap]:
    """Every leak of the evaluation set into the training side (see the module docstring).

    Args:
        eval_classes, train_classes: class names of the evaluated clips and of the training clips.
        eval_files, train_files: clip id -> the clip's file (a store's `path`), on each side.
        source: the run's class-name embedding source (`text.class_embeddings.EmbeddingSource`).
        near_duplicates: also compare the videos' fingerprints (decodes every file of both sides).
    """
    overlaps = _name_overlaps(eval_classes, train_classes, "name")
    named = {o.evaluation for o in overlaps}
    for row in semantic_relatedness([c for c in eval_classes if c not in named], {"training": train_classes}, source):
        if row.sr <= PAPER_EDGES[0]:
            overlaps.append(Overlap("relatedness", row.class_name, row.nearest_seen_class, f"SR {row.sr:.3f}"))
    overlaps += _name_overlaps(eval_classes, classlists.load_classlist("kinetics400"), "kinetics400")
    overlaps += _file_overlaps(eval_files, train_files)
    if near_duplicates:
        overlaps += _near_duplicates(eval_files, train_files, {o.evaluation for o in overlaps if o.kind == "file"})
    return overlaps


def overlap_message(overlaps: Sequence[Overlap]) -> str:
    """One line naming the first overlaps and counting the rest."""
    shown = "; ".join(o.describe() for o in overlaps[:_SHOWN])
    more = f"; and {len(overlaps) - _SHOWN} more" if len(overlaps) > _SHOWN else ""
    return f"{len(overlaps)} overlap(s) of the evaluation set with the training side: {shown}{more}"
