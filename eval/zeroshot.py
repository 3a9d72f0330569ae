"""Zero-shot inference of a trained run on a token store: nearest class by the decision rule, ZSL, GZSL, reports.

A clip is scored by the distance of the head's f(x) to each candidate class embedding phi(c) under the run's
decision rule (DESIGN section 1, open point 2; `eval.metrics.class_distances`): "kinetics" subtracts phi(s_v(x)),
the embedding of the Kinetics class the video backbone predicts for the clip. Class names are embedded as the run
embedded its training classes (same source, name map and normalisation); the recorded embeddings of the training
classes are used as they are, and a source that no longer reproduces them is an error.

Clips the run trained or validated on are not scored unless asked for (`include_training_clips`): the run's
training store contributes none of its training splits' clips, and no store contributes the run's validation
clips, so S is measured on held-out clips only.

Calibrated stacking (DESIGN section 3) selects beta on a validation split only. `ValidationSplit` is the one input
beta selection accepts; it is built by `ValidationSplit.build`, which refuses test splits ("unseen", "*test*") and
clips that are also being evaluated, and `evaluate_gzsl` refuses a validation split that shares clips or unseen
classes with the evaluated clips. So no code path can pick beta on the test data.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval import metrics, report
from eval.config import PlotConfig, ZeroShotConfig
from fusion.class_embeddings import read_class_file
from fusion.trainer import is_test_split

__all__ = [
    "RUN_VALIDATION",
    "ClipSet",
    "ClipScores",
    "ClassEmbedder",
    "ValidationSplit",
    "GZSLEvaluation",
    "ZeroShotResult",
    "run_clip_indices",
    "score_clips",
    "evaluate_gzsl",
    "gzsl_metrics",
    "gzsl_rows",
    "write_outputs",
    "run_zeroshot",
]

logger = logging.getLogger(__name__)

_BUILD_TOKEN = object()  # only ValidationSplit.build holds it
RUN_VALIDATION = "run"  # --val-split run: the validation clips the run itself validated on (classes.json)
# Training-config fields that do not change what a run computes: left out of the seed-group key.
_RUN_FREE_FIELDS = ("seed", "out", "resume", "progress", "device", "prefetch_batches", "log_every_steps",
                    "eval_batch_size")


@dataclass(frozen=True)
class ClipSet:
    """Clips of one or more stores: per resolved store path, ascending clip indices."""

    parts: tuple[tuple[Path, np.ndarray], ...]

    @classmethod
    def of(cls, store_path: str | Path, indices: Sequence[int] | np.ndarray) -> ClipSet:
        return cls(parts=((Path(store_path).resolve(), np.unique(np.asarray(indices, dtype=np.int64))),))

    def union(self, other: ClipSet) -> ClipSet:
        merged: dict[Path, np.ndarray] = {}
        for path, indices in self.parts + other.parts:
            merged[path] = np.union1d(merged.get(path, np.zeros(0, np.int64)), indices)
        return ClipSet(parts=tuple(merged.items()))

    def overlaps(self, other: ClipSet) -> bool:
        return any(a == b and np.intersect1d(i, j).size > 0 for a, i in self.parts for b, j in other.parts)


@dataclass(frozen=True)
class ClipScores:
    """What the head predicts for a set of clips, ready for class distances.

    Shapes:
        clip_ids (N,), labels (N,) class names, embeddings (N, E) f(x), offsets (N, E) phi(s_v(x)) or None.
    """

    clips: ClipSet
    clip_ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    embeddings: np.ndarray
    offsets: np.ndarray | None
    rule: str

    def distances(self, class_embeddings: np.ndarray) -> np.ndarray:
        """Distances to the given class embeddings under the rule. Shapes: (C, E) -> (N, C)."""
        offsets = self.offsets if self.rule != "plain" else None
        return metrics.class_distances(self.embeddings, class_embeddings, self.rule, offsets)

    def aligned_embeddings(self) -> np.ndarray:
        """f(x) - phi(s_v(x)) where the rule subtracts it: the points that sit near phi(c). Shapes: (N, E)."""
        return self.embeddings if self.offsets is None or self.rule == "plain" else self.embeddings - self.offsets

    def concat(self, other: ClipScores) -> ClipScores:
        """The clips of both (e.g. a benchmark's seen test clips and another store's unseen clips)."""
        if other.rule != self.rule:
            raise ValueError(f"cannot pool clips scored with rules {self.rule!r} and {other.rule!r}")
        if (self.offsets is None) != (other.offsets is None) and self.rule != "plain":
            raise ValueError(f"rule {self.rule!r}: one store has Kinetics logits and the other not")
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
        )


def score_clips(model, info, store, indices: np.ndarray, rule: str, batch_size: int, device: str) -> ClipScores:
    """Run the head's AV-only pass over clips of a store and attach what the decision rule needs.

    Raises:
        ValueError: rule "kinetics" on a run trained without phi(s_v) or a store without Kinetics logits.
    """
    from fusion.predict import predict_embeddings

    indices = np.asarray(indices, dtype=np.int64)
    if rule == "kinetics":
        if info.kinetics_embeddings is None:
            raise ValueError(f"{info.run_dir} was trained without the phi(s_v) term (se_target 'class'): its rule "
                             "is 'plain'; --rule kinetics does not apply")
        if not store.token_layout.get("kinetics_classes"):
            raise ValueError(f"{store.path} has no Kinetics logits, which rule 'kinetics' needs; use --rule plain")
    predictions = predict_embeddings(model, store, indices, batch_size, device)
    offsets = None
    if predictions.kinetics_pred is not None and info.kinetics_embeddings is not None:
        offsets = info.kinetics_embeddings[predictions.kinetics_pred]  # (400, E) -> (N, E)
    return ClipScores(
        clips=ClipSet.of(store.path, indices),
        clip_ids=store.clip_ids[predictions.index],
        labels=store.labels[predictions.index],
        splits=store.splits[predictions.index],
        embeddings=predictions.embeddings,
        offsets=offsets,
        rule=rule,
    )


class ClassEmbedder:
    """phi(name) exactly as the run computed it: recorded rows for its training classes, its source for others.

    The source is opened on first need, and it must reproduce the recorded training-class embeddings (otherwise
    the vectors file or name map changed since training, and distances would mix two embedding spaces).
    """

    def __init__(self, info) -> None:
        self._info = info
        self._recorded = {name: info.class_embeddings[i] for i, name in enumerate(info.class_names)}
        self._source = None

    @property
    def spec(self) -> str:
        return self._info.embedding_spec

    def __call__(self, names: Sequence[str]) -> np.ndarray:
        """Shapes: C names -> (C, E) float32."""
        names = list(names)
        other = [n for n in names if n not in self._recorded]
        fresh = dict(zip(other, self._open().embed(other), strict=True)) if other else {}
        return np.stack([self._recorded[n] if n in self._recorded else fresh[n] for n in names]).astype(np.float32)

    def _open(self):
        if self._source is None:
            from fusion.class_embeddings import load_embedding_source

            info = self._info
            provenance = info.embedding_provenance or {}
            name_map = (provenance.get("name_map") or {}).get("path") or info.train.get("name_map")
            source = load_embedding_source(info.embedding_spec, name_map=name_map,
                                           normalise=info.embedding_normalised,
                                           missing=provenance.get("missing", "error"))
            again = source.embed(list(info.class_names))
            if not np.allclose(again, info.class_embeddings, rtol=1e-4, atol=1e-5):
                raise ValueError(f"embedding source {info.embedding_spec!r} no longer gives the class embeddings "
                                 f"{info.run_dir} was trained with (vectors file or name map changed?); embed with "
                                 "the same files, or retrain")
            self._source = source
        return self._source


class ValidationSplit:
    """Validation clips scored by a run: the only input from which calibrated stacking chooses beta.

    Build it with `ValidationSplit.build`; the constructor refuses other callers.
    """

    def __init__(self, scores: ClipScores, name: str, seen_names: tuple[str, ...], unseen_names: tuple[str, ...],
                 *, token: object = None) -> None:
        if token is not _BUILD_TOKEN:
            raise TypeError("build a ValidationSplit with ValidationSplit.build(...), which checks it is not test data")
        self.scores = scores
        self.name = name
        self.seen_names = seen_names
        self.unseen_names = unseen_names

    @classmethod
    def build(cls, scores: ClipScores, name: str, run_classes: Sequence[str], evaluated: ClipSet) -> ValidationSplit:
        """Validation from scored clips: the run's training classes are its seen part, the others its unseen part.

        Args:
            scores: the validation clips as scored by the run.
            name: the split's name (a store split, or a stage of the AVCA protocol).
            run_classes: the run's training classes.
            evaluated: the clips that will be evaluated with the chosen beta.

        Raises:
            ValueError: a test split name, clips that are also evaluated, or a part without clips.
        """
        if is_test_split(name) or any(is_test_split(str(s)) for s in set(scores.splits.tolist())):
            raise ValueError(f"validation split {name!r} is test data (split 'unseen' or '*test*'); beta is chosen on "
                             "validation clips only")
        if scores.clips.overlaps(evaluated):
            raise ValueError(f"validation split {name!r} shares clips with the evaluated clips; beta must come from "
                             "clips that are not evaluated")
        trained = set(run_classes)
        labels = set(scores.labels.tolist())
        if not labels & trained or not labels - trained:
            raise ValueError(f"validation split {name!r} needs clips of seen (trained) and of unseen classes to choose "
                             f"beta; it has {len(labels & trained)} seen and {len(labels - trained)} unseen classes")
        # Candidates as in the trainer's validation and AVCA's: every training class, plus the validation-unseen ones.
        seen, unseen = tuple(sorted(trained)), tuple(sorted(labels - trained))
        return cls(scores, name, seen, unseen, token=_BUILD_TOKEN)

    def select_beta(self, embed: Callable[[Sequence[str]], np.ndarray],
                    betas: Sequence[float]) -> tuple[float, float]:
        """(beta, validation HM): the sweep of `eval.metrics.select_beta` on these clips."""
        names = tuple(sorted(self.seen_names + self.unseen_names))
        ids = {n: i for i, n in enumerate(names)}
        distances = self.scores.distances(embed(names))  # (N, C_val)
        y = np.array([ids[n] for n in self.scores.labels.tolist()], dtype=np.int64)
        seen = np.array([ids[n] for n in self.seen_names], dtype=np.int64)
        unseen = np.array([ids[n] for n in self.unseen_names], dtype=np.int64)
        return metrics.select_beta(distances, y, seen, unseen, np.asarray(betas, dtype=np.float64))


@dataclass(frozen=True)
class GZSLEvaluation:
    """ZSL / GZSL of scored clips against seen + unseen candidate classes (ids = index in `class_names`).

    Shapes:
        y, gzsl_pred, zsl_pred (-1 for clips of seen classes), calibrated_pred: (N,)
    """

    scores: ClipScores
    class_names: tuple[str, ...]
    seen_ids: np.ndarray
    unseen_ids: np.ndarray
    y: np.ndarray
    gzsl_pred: np.ndarray
    zsl_pred: np.ndarray
    zsl: float | None
    gzsl: metrics.GZSLResult | None
    calibrated: metrics.GZSLResult | None = None
    calibrated_pred: np.ndarray | None = None
    validation_name: str | None = None
    validation_hm: float | None = None


def evaluate_gzsl(
    scores: ClipScores,
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    embed: Callable[[Sequence[str]], np.ndarray],
    validation: ValidationSplit | None = None,
    betas: Sequence[float] = tuple(metrics.DEFAULT_BETAS),
) -> GZSLEvaluation:
    """ZSL and GZSL (raw, and calibrated with a beta chosen on `validation`) of clips of seen / unseen classes.

    ZSL needs clips of unseen classes, GZSL clips of both; a missing part gives None (logged).

    Raises:
        ValueError: overlapping seen / unseen names, clips of other classes, or a validation split that shares
            clips or unseen classes with the evaluated clips.
    """
    seen_names, unseen_names = tuple(sorted(set(seen_names))), tuple(sorted(set(unseen_names)))
    if set(seen_names) & set(unseen_names):
        raise ValueError(f"classes both seen and unseen: {sorted(set(seen_names) & set(unseen_names))[:5]}")
    names = tuple(sorted(seen_names + unseen_names))
    ids = {n: i for i, n in enumerate(names)}
    stray = sorted(set(scores.labels.tolist()) - set(names))
    if stray:
        raise ValueError(f"{len(stray)} evaluated classes are neither seen nor unseen candidates, e.g. {stray[:5]}")
    y = np.array([ids[n] for n in scores.labels.tolist()], dtype=np.int64)
    seen = np.array([ids[n] for n in seen_names], dtype=np.int64)
    unseen = np.array([ids[n] for n in unseen_names], dtype=np.int64)
    distances = scores.distances(embed(names))  # (N, C)
    is_unseen = np.isin(y, unseen)
    has_seen, has_unseen = bool((~is_unseen).any()), bool(is_unseen.any())
    zsl_pred = np.full(y.shape, -1, dtype=np.int64)
    zsl = None
    if has_unseen:
        zsl_pred[is_unseen] = metrics.nearest_class(distances[is_unseen], unseen)
        zsl = metrics.zsl(distances, y, unseen)
    else:
        logger.warning("no clip of an unseen class among the %d evaluated: ZSL and U are undefined", y.size)
    gzsl_pred = metrics.gzsl_predictions(distances, y, seen, unseen)
    gzsl = metrics.gzsl(distances, y, seen, unseen) if has_seen and has_unseen else None
    if has_unseen and not has_seen:
        logger.warning("no held-out clip of a seen class among the %d evaluated: GZSL S / HM are undefined", y.size)
    calibrated = calibrated_pred = beta_hm = None
    if validation is not None:
        if validation.scores.clips.overlaps(scores.clips):
            raise ValueError(f"validation split {validation.name!r} shares clips with the evaluated clips")
        leaked = sorted(set(validation.unseen_names) & set(unseen_names))
        if leaked:
            raise ValueError(f"validation split {validation.name!r} has evaluated unseen classes {leaked[:5]}; beta "
                             "must be chosen without the test-unseen classes")
        if validation.scores.rule != scores.rule:
            raise ValueError(f"validation scored with rule {validation.scores.rule!r}, test with {scores.rule!r}")
        beta, beta_hm = validation.select_beta(embed, betas)
        calibrated_pred = metrics.gzsl_predictions(distances, y, seen, unseen, beta=beta)
        if gzsl is not None:
            calibrated = metrics.gzsl(distances, y, seen, unseen, beta=beta)
        else:
            calibrated = metrics.GZSLResult(s=float("nan"), u=float("nan"), hm=float("nan"), beta=beta)
        logger.info("calibrated stacking: beta %.2f chosen on %r (validation HM %.4f)", beta, validation.name, beta_hm)
    return GZSLEvaluation(scores=scores, class_names=names, seen_ids=seen, unseen_ids=unseen, y=y,
                          gzsl_pred=gzsl_pred, zsl_pred=zsl_pred, zsl=zsl, gzsl=gzsl, calibrated=calibrated,
                          calibrated_pred=calibrated_pred,
                          validation_name=None if validation is None else validation.name, validation_hm=beta_hm)


def gzsl_metrics(evaluation: GZSLEvaluation, worst_classes: int = 5) -> dict[str, Any]:
    """The metrics.json entries of an evaluation: headline values in percent, per-class accuracy, worst classes."""
    e = evaluation
    out: dict[str, Any] = {
        "zsl": _pct(e.zsl),
        "gzsl_s": _pct(e.gzsl.s if e.gzsl else None),
        "gzsl_u": _pct(e.gzsl.u if e.gzsl else None),
        "gzsl_hm": _pct(e.gzsl.hm if e.gzsl else None),
        "num_clips": int(e.y.size),
        "num_seen_classes": int(e.seen_ids.size),
        "num_unseen_classes": int(e.unseen_ids.size),
    }
    if e.calibrated is not None:
        out.update(
            calibrated_beta=e.calibrated.beta,
            calibrated_gzsl_s=_pct(e.calibrated.s),
            calibrated_gzsl_u=_pct(e.calibrated.u),
            calibrated_gzsl_hm=_pct(e.calibrated.hm),
            calibrated_val_split=e.validation_name,
            calibrated_val_hm=_pct(e.validation_hm),
        )
    all_ids = np.arange(len(e.class_names))
    gzsl_acc = metrics.per_class_accuracy(e.y, e.gzsl_pred, all_ids)
    zsl_acc = metrics.per_class_accuracy(e.y[e.zsl_pred >= 0], e.zsl_pred[e.zsl_pred >= 0], all_ids)
    cal_acc = metrics.per_class_accuracy(e.y, e.calibrated_pred, all_ids) if e.calibrated_pred is not None else None
    unseen = set(e.unseen_ids.tolist())
    per_class = []
    for c, name in enumerate(e.class_names):
        clips = int((e.y == c).sum())
        row = {"class": name, "split": "unseen" if c in unseen else "seen", "clips": clips,
               "gzsl_acc": _pct(gzsl_acc[c]), "zsl_acc": _pct(zsl_acc[c]) if c in unseen else None}
        if cal_acc is not None:
            row["calibrated_gzsl_acc"] = _pct(cal_acc[c])
        per_class.append(row)
    out["per_class"] = per_class
    out["worst_classes"] = _worst_classes(e.class_names, e.y, e.gzsl_pred, gzsl_acc, worst_classes)
    return out


@dataclass(frozen=True)
class ZeroShotResult:
    """What `run_zeroshot` computed (and wrote, with `out`)."""

    metrics: dict[str, Any]
    paths: tuple[Path, ...]

    def summary(self) -> str:
        """One line for the CLI."""
        m = self.metrics
        if m["mode"] == "vocabulary":
            line = f"{m['num_clips']} clips ranked against {m['num_classes']} classes"
            if m.get("top1") is not None:
                line += f"; top-1 {m['top1']:.2f}%, top-{m['top_k']} {m['topk']:.2f}% on {m['num_labelled_clips']} " \
                        "labelled clips"
            return line
        parts = [f"{m['num_clips']} clips, rule {m['rule']}"]
        if m.get("zsl") is not None:
            parts.append(f"ZSL {m['zsl']:.2f}")
        if m.get("gzsl_hm") is not None:
            parts.append(f"GZSL S {m['gzsl_s']:.2f} U {m['gzsl_u']:.2f} HM {m['gzsl_hm']:.2f}")
        if m.get("calibrated_beta") is not None:
            parts.append(f"calibrated (beta {m['calibrated_beta']:g} on {m['calibrated_val_split']!r}) "
                         f"HM {m['calibrated_gzsl_hm']:.2f}")
        return "; ".join(parts)


def run_clip_indices(info, store) -> np.ndarray:
    """Clip indices of `store` that the run trained or validated on (any status), ascending.

    The run records the clips it trained on (`train_clip_ids`) and validated on (`validation.clip_ids`); clips
    it held out as test-seen (`--test-seen-fraction`) are in neither. Runs without the record count every clip
    of their training splits as used.
    """
    here = Path(store.path).resolve()
    used = []
    if info.train.get("store") is not None and Path(info.train["store"]).resolve() == here:
        if info.train_clip_ids is not None:
            used.append(np.flatnonzero(np.isin(store.clip_ids, list(info.train_clip_ids))))
        else:
            used.append(store.indices(None, list(info.train.get("train_splits") or ())))
    validation = info.validation or {}
    if validation.get("store") is not None and Path(validation["store"]).resolve() == here:
        used.append(np.flatnonzero(np.isin(store.clip_ids, list(validation.get("clip_ids") or ()))))
    return np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)


def run_zeroshot(config: ZeroShotConfig) -> ZeroShotResult:
    """Zero-shot inference of a run on a store: GZSL / ZSL on seen + unseen classes, or an open-vocabulary ranking.

    Raises:
        FileNotFoundError: missing run, store, class files or validation store.
        ValueError: classes the run trained on listed as unseen, seen classes it never trained on, a validation
            split that is test data or shares clips / unseen classes with the evaluated clips, nothing to evaluate.
    """
    from features.store import DONE, TokenStore
    from fusion.predict import load_run

    model, info = load_run(config.run_dir, config.checkpoint, config.device)
    rule = config.rule or info.decision_rule
    store = TokenStore.open(config.store)
    embed = ClassEmbedder(info)
    candidates = store.indices(DONE, list(config.splits) or None)
    if not config.include_training_clips:
        used = np.intersect1d(candidates, run_clip_indices(info, store))
        if used.size:
            logger.info("%d clips of %s trained or validated the run: not scored", used.size, store.path)
        candidates = np.setdiff1d(candidates, used)
    base = {
        "label": config.label or Path(config.run_dir).name,
        "rule": rule,
        "checkpoint": config.checkpoint,
        "checkpoint_epoch": info.epoch,
        "seed": info.train.get("seed"),
        "protocol": "zeroshot",
        "includes_training_clips": config.include_training_clips,
        "config": config.to_dict(),
        "run": {"run_dir": str(info.run_dir), "embedding": info.embedding_spec, "classes": list(info.class_names)},
        "store": {"path": str(store.path), "provenance": store.provenance},
    }
    vocabulary = read_class_file(config.classes) if config.classes else list(config.class_names)
    if vocabulary:
        metrics_json, rows, header = _open_vocabulary(model, info, store, candidates, vocabulary, rule, embed, config)
        evaluation = None
    else:
        evaluation, metrics_json, rows, header = _gzsl_run(model, info, store, candidates, rule, embed, config)
    metrics_json = {**base, **metrics_json}
    metrics_json["group"] = _group_key(info, store, metrics_json, config)
    paths: tuple[Path, ...] = ()
    if config.out is not None:
        paths = write_outputs(Path(config.out), metrics_json, header, rows, evaluation, embed, config.plots)
    return ZeroShotResult(metrics=metrics_json, paths=paths)


# --- the two modes ------------------------------------------------------------------------------------------


def _gzsl_run(model, info, store, candidates, rule, embed, config):
    if config.seen is not None:
        seen_names, unseen_names = read_class_file(config.seen), read_class_file(config.unseen)
        source = f"{config.seen} / {config.unseen}"
    else:
        pairs = set(zip(store.splits.tolist(), store.labels.tolist(), strict=True))
        seen_names = sorted({label for split, label in pairs if split == "seen" and label})
        unseen_names = sorted({label for split, label in pairs if split == "unseen" and label})
        source = f"split column of {store.path}"
        if not unseen_names:
            raise ValueError(f"{store.path} has no clips of split 'unseen'; name the classes with --seen/--unseen "
                             "or rank a class list with --classes")
        # Seen classes the run held out as validation-unseen (--val-unseen-fraction) were neither trained on nor
        # are they test classes: they leave the candidates (their clips are validation clips, not scored).
        held_out = sorted(set(seen_names) & set((info.validation or {}).get("unseen_classes") or ()))
        if held_out:
            logger.info("%d seen classes were the run's validation-unseen classes, not candidates: %s",
                        len(held_out), held_out)
            seen_names = [n for n in seen_names if n not in held_out]
    trained = set(info.class_names)
    leaked = sorted(set(unseen_names) & trained)
    if leaked:
        raise ValueError(f"classes {leaked[:5]} are unseen here but {info.run_dir} trained on them; zero-shot classes "
                         "must be new to the run")
    untrained = sorted(set(seen_names) - trained)
    if untrained:
        raise ValueError(f"seen classes {untrained[:5]} were not training classes of {info.run_dir}; list them as "
                         "unseen, or evaluate a run trained on them")
    labels = store.labels[candidates]
    keep = candidates[np.isin(labels, seen_names + unseen_names)]
    if keep.size < candidates.size:
        logger.info("%d clips of other classes are not scored", candidates.size - keep.size)
    if not keep.size:
        raise ValueError(f"{store.path}: no done, held-out clip of the {len(seen_names) + len(unseen_names)} classes "
                         "to score (clips the run trained on are left out unless --include-training-clips)")
    if seen_names and not np.isin(store.labels[keep], seen_names).any():
        logger.warning("every clip of the seen classes in %s trained or validated the run, so GZSL (S, HM) cannot be "
                       "measured: give the store held-out seen-class clips (e.g. a 'test_seen' split), or pass "
                       "--include-training-clips (S then measures training clips)", store.path)
    scores = score_clips(model, info, store, keep, rule, config.batch_size, config.device)
    validation = None
    if config.calibrated_stacking:
        validation = _validation_split(model, info, store, scores.clips, rule, config)
    evaluation = evaluate_gzsl(scores, seen_names, unseen_names, embed, validation, config.betas)
    metrics_json = {"mode": "gzsl", "classes_from": source, "classes": {"seen": list(seen_names),
                                                                         "unseen": list(unseen_names)},
                    **gzsl_metrics(evaluation, config.worst_classes)}
    header, rows = gzsl_rows(evaluation)
    return evaluation, metrics_json, rows, header


def gzsl_rows(evaluation: GZSLEvaluation) -> tuple[list[str], list[list[str]]]:
    """predictions.csv of an evaluation: `clip_id,true_class,pred_gzsl,pred_zsl,split[,pred_gzsl_calibrated]`.

    `pred_zsl` is empty for clips of seen classes (ZSL ranks unseen classes only); `split` is the true class's role.
    """
    e, scores = evaluation, evaluation.scores
    header = ["clip_id", "true_class", "pred_gzsl", "pred_zsl", "split"]
    if e.calibrated_pred is not None:
        header.append("pred_gzsl_calibrated")
    unseen = set(e.unseen_ids.tolist())
    rows = []
    for i, clip_id in enumerate(scores.clip_ids.tolist()):
        row = [clip_id, scores.labels[i], e.class_names[e.gzsl_pred[i]],
               e.class_names[e.zsl_pred[i]] if e.zsl_pred[i] >= 0 else "", "unseen" if e.y[i] in unseen else "seen"]
        if e.calibrated_pred is not None:
            row.append(e.class_names[e.calibrated_pred[i]])
        rows.append(row)
    return header, rows


def _validation_split(model, info, store, evaluated: ClipSet, rule, config) -> ValidationSplit:
    from features.store import DONE, TokenStore

    if config.val_split == RUN_VALIDATION:
        recorded = info.validation or {}
        if not recorded.get("clip_ids"):
            raise ValueError(f"{info.run_dir} was trained without validation clips; name a validation split")
        val_store = TokenStore.open(config.val_store if config.val_store is not None else recorded["store"])
        indices = np.flatnonzero(np.isin(val_store.clip_ids, recorded["clip_ids"]))
        if indices.size != len(recorded["clip_ids"]):
            raise ValueError(f"{val_store.path} holds {indices.size} of the run's {len(recorded['clip_ids'])} "
                             "validation clips; pass the store the run validated on (--val-store)")
    else:
        if is_test_split(config.val_split):
            raise ValueError(f"--val-split {config.val_split!r} is test data (split 'unseen' or '*test*'); choose "
                             "beta on a validation split")
        val_store = TokenStore.open(config.val_store) if config.val_store is not None else store
        indices = val_store.indices(DONE, [config.val_split])
        if not indices.size:
            raise ValueError(f"{val_store.path}: no done clips in validation split {config.val_split!r} (splits: "
                             f"{sorted(set(val_store.splits.tolist()))})")
    scores = score_clips(model, info, val_store, indices, rule, config.batch_size, config.device)
    return ValidationSplit.build(scores, config.val_split, info.class_names, evaluated)


def _open_vocabulary(model, info, store, candidates, vocabulary, rule, embed, config):
    if not candidates.size:
        raise ValueError(f"{store.path}: no done clip to rank")
    scores = score_clips(model, info, store, candidates, rule, config.batch_size, config.device)
    distances = scores.distances(embed(vocabulary))  # (N, C)
    k = min(config.top_k, len(vocabulary))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]  # ties: lower list position first
    position = {n: i for i, n in enumerate(vocabulary)}
    y = np.array([position.get(n, -1) for n in scores.labels.tolist()], dtype=np.int64)
    labelled = y >= 0
    out: dict[str, Any] = {"mode": "vocabulary", "classes": list(vocabulary), "num_classes": len(vocabulary),
                           "num_clips": int(y.size), "num_labelled_clips": int(labelled.sum()), "top_k": k,
                           "top1": None, "topk": None}
    if labelled.any():
        present = np.unique(y[labelled])
        top1 = metrics.per_class_accuracy(y[labelled], order[labelled, 0], present)
        hit = np.where((order[labelled] == y[labelled, None]).any(axis=1), y[labelled], -1)
        topk = metrics.per_class_accuracy(y[labelled], hit, present)
        out.update(top1=_pct(float(top1.mean())), topk=_pct(float(topk.mean())),
                   per_class=[{"class": vocabulary[c], "clips": int((y == c).sum()), "top1_acc": _pct(a)}
                              for c, a in zip(present.tolist(), top1.tolist(), strict=True)])
    rows = [[clip_id, scores.labels[i], vocabulary[order[i, 0]], ";".join(vocabulary[j] for j in order[i]),
             scores.splits[i]] for i, clip_id in enumerate(scores.clip_ids.tolist())]
    return out, rows, ["clip_id", "true_class", "pred", "top_k", "split"]


# --- outputs ------------------------------------------------------------------------------------------------


def write_outputs(out: Path, metrics_json: dict, header: list[str], rows: list[list[str]],
                  evaluation: GZSLEvaluation | None, embed: Callable[[Sequence[str]], np.ndarray],
                  plot_config: PlotConfig) -> tuple[Path, ...]:
    """Write metrics.json, predictions.csv, report.md and (for GZSL evaluations) the figures into `out`."""
    from eval import plots

    out.mkdir(parents=True, exist_ok=True)
    paths = [report.write_json(out / "metrics.json", metrics_json)]
    with (out / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    paths.append(out / "predictions.csv")
    (out / "report.md").write_text(report.run_markdown(metrics_json), encoding="utf-8")
    paths.append(out / "report.md")
    if evaluation is not None and plot_config.per_class_bars:
        # GZSL accuracy when both parts have clips; otherwise ZSL accuracy (the only defined one)
        key, what = ("gzsl_acc", "GZSL") if evaluation.gzsl is not None else ("zsl_acc", "ZSL")
        per_class = metrics_json["per_class"]
        paths.append(plots.plot_per_class_accuracy(
            out / "per_class_accuracy.png", [r["class"] for r in per_class],
            [np.nan if r[key] is None else r[key] for r in per_class],
            unseen=[r["split"] == "unseen" for r in per_class], title=f"Per-class {what} accuracy"))
    if evaluation is not None and plot_config.tsne:
        scores = evaluation.scores
        paths.append(plots.plot_tsne(
            out / "tsne.png", scores.aligned_embeddings(), evaluation.y, embed(evaluation.class_names),
            evaluation.class_names, unseen=np.isin(np.arange(len(evaluation.class_names)), evaluation.unseen_ids),
            max_points=plot_config.tsne_max_points, perplexity=plot_config.tsne_perplexity,
            iterations=plot_config.tsne_iterations, seed=plot_config.seed))
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return tuple(paths)


def _worst_classes(names, y, pred, accuracy, k: int) -> list[dict[str, Any]]:
    present = np.flatnonzero(~np.isnan(accuracy))
    worst = present[np.argsort(accuracy[present], kind="stable")][:k]
    out = []
    for c in worst.tolist():
        mine = pred[y == c]
        wrong, counts = np.unique(mine[mine != c], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:3]
        out.append({"class": names[c], "clips": int(mine.size), "acc": _pct(accuracy[c]),
                    "confused_with": [{"class": names[wrong[j]], "share": _pct(counts[j] / mine.size)} for j in top]})
    return out


def _group_key(info, store, metrics_json, config) -> str:
    """Runs that differ only in their seed (and output paths) share this key: the report pools them."""
    train = {k: v for k, v in info.train.items() if k not in _RUN_FREE_FIELDS}
    key = {
        "train": train,
        "store": str(Path(store.path).resolve()),
        "rule": metrics_json["rule"],
        "mode": metrics_json["mode"],
        "classes": metrics_json.get("classes"),
        "checkpoint": config.checkpoint,
        "calibrated": config.calibrated_stacking,
        "val": [config.val_split, None if config.val_store is None else str(Path(config.val_store).resolve())],
        "splits": list(config.splits),
        "include_training_clips": config.include_training_clips,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pct(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else 100.0 * value
