"""Clips scored by a trained head: f(x) and what the decision rule needs, and phi(name) exactly as the run made it.

A clip is scored by the distance of the head's f(x) to each candidate class embedding phi(c) under the run's
decision rule (`eval.metrics.class_distances`): "kinetics" subtracts phi(s_v(x)),
the embedding of the Kinetics class the video backbone predicts for the clip. Class names are embedded as the run
embedded its training classes (same source, name map and normalisation); the recorded embeddings of the training
classes are used as they are, and a source that no longer reproduces them is an error (`ClassEmbedder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from eval import metrics

__all__ = ["ClipSet", "ClipScores", "ClassEmbedder", "branch_distances"]


@dataclass(frozen=True)
class ClipSet:
    """Clips of one or more stores: per store identity (`features.store.TokenStore.identity`, the same for a copy
    or a move of a store), ascending clip indices."""

    parts: tuple[tuple[str, np.ndarray], ...]

    @classmethod
    def of(cls, store_identity: str, indices: Sequence[int] | np.ndarray) -> ClipSet:
        return cls(parts=((store_identity, np.unique(np.asarray(indices, dtype=np.int64))),))

    def union(self, other: ClipSet) -> ClipSet:
        merged: dict[str, np.ndarray] = {}
        for path, indices in self.parts + other.parts:
            merged[path] = np.union1d(merged.get(path, np.zeros(0, np.int64)), indices)
        return ClipSet(parts=tuple(merged.items()))

    def overlaps(self, other: ClipSet) -> bool:
        return any(a == b and np.intersect1d(i, j).size > 0 for a, i in self.parts for b, j in other.parts)


@dataclass(frozen=True)
class ClipScores:
    """What the head predicts for a set of clips, ready for class distances.

    A head that compares clips and classes in a learned space (`fusion.heads`) gives its clip embeddings theta(x)
    and `class_space`, its map of phi(c) into that space; every distance goes through it. A head that scores
    several branches gives their embeddings side by side, named in `branches`; a clip's distance to a class is then
    the sum of the distances of the `decision` branches (`branch_distances`), and `beta_modes` are the branch sets
    whose betas the peers' beta rule averages (`eval.gzsl`).

    Shapes:
        clip_ids (N,), labels (N,) class names, embeddings (N, E) f(x) (or (N, D) theta(x), or
        (N, len(branches) * D) branch embeddings), offsets (N, E) phi(s_v(x)) or None; class_space: (C, E) -> (C, D).
    """

    clips: ClipSet
    clip_ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    embeddings: np.ndarray
    offsets: np.ndarray | None
    rule: str
    class_space: Callable[[np.ndarray], np.ndarray] | None = None
    branches: tuple[str, ...] = ()
    decision: tuple[str, ...] = ()
    beta_modes: tuple[tuple[str, ...], ...] = ()

    def distances(self, class_embeddings: np.ndarray, summed: Sequence[str] | None = None) -> np.ndarray:
        """Distances to the given class embeddings under the rule; with branches, the sum over the `summed`
        branches (default: the head's decision). Shapes: (C, E) -> (N, C)."""
        if self.branches:
            return branch_distances(self.embeddings, self.class_points(class_embeddings), self.branches,
                                    self.decision if summed is None else tuple(summed))
        if summed is not None:
            raise ValueError("these clips were scored by a head without branches")
        offsets = self.offsets if self.rule != "plain" else None
        return metrics.class_distances(self.embeddings, self.class_points(class_embeddings), self.rule, offsets)

    def class_points(self, class_embeddings: np.ndarray) -> np.ndarray:
        """The class embeddings where the clips' points are compared with them. Shapes: (C, E) -> (C, D)."""
        return class_embeddings if self.class_space is None else self.class_space(class_embeddings)

    def aligned_embeddings(self) -> np.ndarray:
        """f(x) - phi(s_v(x)) where the rule subtracts it: the points that sit near phi(c). With branches, the mean
        of the decision's branch embeddings: one point per clip in the classes' space for figures (the distance
        evaluation uses is still the sum of the branches' distances). Shapes: (N, E)."""
        if self.branches:
            width = self.embeddings.shape[1] // len(self.branches)
            starts = [self.branches.index(b) * width for b in self.decision]
            return np.mean([self.embeddings[:, start:start + width] for start in starts], axis=0)
        return self.embeddings if self.offsets is None or self.rule == "plain" else self.embeddings - self.offsets

    def concat(self, other: ClipScores) -> ClipScores:
        """The clips of both (e.g. a benchmark's seen test clips and another store's unseen clips)."""
        if other.rule != self.rule:
            raise InputError(f"cannot pool clips scored with rules {self.rule!r} and {other.rule!r}")
        if other.class_space != self.class_space:  # bound methods of one head compare equal
            raise InputError("cannot pool clips scored by heads that compare in different spaces")
        if (other.branches, other.decision) != (self.branches, self.decision):
            raise InputError(f"cannot pool clips scored with branches {self.branches} summing {self.decision} and "
                             f"with {other.branches} summing {other.decision}")
        if (self.offsets is None) != (other.offsets is None) and self.rule != "plain":
            raise InputError(f"rule {self.rule!r}: one store has Kinetics logits and the other not")
        offsets = None if self.offsets is None or other.offsets is None else np.concatenate([self.offsets,
                                                                                           other.offsets])
        return ClipScores(
            clips=self.clips.union(other.clips),
            clip_ids=np.concatenate([self.clip_ids, other.clip_ids]),
            labels=np.concatenate([self.labels, other.labels]),
            splits=np.concatenate([self.splits, other.splits]),
            embeddings=np.concatenate([self.embeddings, other.embeddings]),
            offsets=offsets,
            rule=self.rule,
            class_space=self.class_space,
            branches=self.branches,
            decision=self.decision,
            beta_modes=self.beta_modes,
        )


def branch_distances(embeddings: np.ndarray, class_points: np.ndarray, branches: Sequence[str],
                     summed: Sequence[str]) -> np.ndarray:
    """The sum over the `summed` branches of each branch embedding's Euclidean distance to every class point.

    AVGZSLNet's test-time rule d(a, t) + d(v, t) (AVCA-GZSL `get_best_evaluation`, mode "both"): a sum of two
    Euclidean distances, which is no single Euclidean distance of the embeddings side by side.

    Shapes:
        embeddings (N, len(branches) * D) in `branches` order, class_points (C, D) -> (N, C) float64
    """
    unknown = sorted(set(summed) - set(branches))
    if unknown or not summed:
        raise ValueError(f"summed branches {list(summed)} must be some of {list(branches)}")
    if embeddings.shape[1] % len(branches):
        raise ValueError(f"{embeddings.shape[1]} columns do not split into {len(branches)} branches")
    width = embeddings.shape[1] // len(branches)
    total = np.zeros((embeddings.shape[0], class_points.shape[0]), dtype=np.float64)
    for name in summed:
        start = branches.index(name) * width
        total += metrics.class_distances(embeddings[:, start:start + width], class_points, "plain")
    return total


class ClassEmbedder:
    """phi(name) exactly as the run computed it: recorded rows for its training classes, its source for others.

    The source is opened on first need, and it must reproduce the recorded training-class embeddings (otherwise
    the vectors file or name map changed since training, and distances would mix two embedding spaces).
    """

    def __init__(self, info, missing: str | None = None) -> None:
        self._info = info
        self._missing = missing
        self._recorded = {name: info.class_embeddings[i] for i, name in enumerate(info.class_names)}
        self._repeats = info.embedding_repeats  # concatenated heads: phi(c) once per head (fusion.run_dir)
        self._source = None

    @property
    def spec(self) -> str:
        return self._info.embedding_spec

    def __call__(self, names: Sequence[str]) -> np.ndarray:
        """Shapes: C names -> (C, E) float32."""
        names = list(names)
        other = [n for n in names if n not in self._recorded]
        fresh = dict(zip(other, np.tile(self._open().embed(other), (1, self._repeats)), strict=True)) if other else {}
        return np.stack([self._recorded[n] if n in self._recorded else fresh[n] for n in names]).astype(np.float32)

    def _open(self):
        if self._source is None:
            from text.class_embeddings import load_embedding_source

            info = self._info
            provenance = info.embedding_provenance or {}
            name_map = (provenance.get("name_map") or {}).get("path") or info.train.get("name_map")
            source = load_embedding_source(info.embedding_spec, name_map=name_map,
                                           normalise=info.embedding_normalised,
                                           missing=self._missing or provenance.get("missing", "error"),
                                           peer_text_order=provenance.get("peer_text_order", False))
            again = np.tile(source.embed(list(info.class_names)), (1, self._repeats))
            if not np.allclose(again, info.class_embeddings, rtol=1e-4, atol=1e-5):
                raise InputError(f"embedding source {info.embedding_spec!r} no longer gives the class embeddings "
                                 f"{info.run_dir} was trained with (vectors file or name map changed?); embed with "
                                 "the same files, or retrain")
            self._source = source
        return self._source
