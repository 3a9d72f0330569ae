"""Zero-shot metrics: class distances under a decision rule, per-class accuracy, ZSL, GZSL and calibrated stacking.

Semantics follow AVCA-GZSL `src/utils.py:get_best_evaluation`, which TCAF and ClipClap copy:
scores are Euclidean distances from a clip's predicted embedding to every candidate class embedding, the
prediction is the nearest candidate, per-class accuracy is the recall of that class, S / U are the mean
per-class accuracies over the seen / unseen classes with seen and unseen classes both candidates, HM = 2SU / (S + U),
and ZSL is the mean per-class accuracy over the unseen classes with only the unseen classes as candidates.
Calibrated stacking adds a constant beta to the distances of the seen classes.

Where we differ from that reference, on purpose:
- A class without test samples is left out of the mean (the reference divides 0 by 0 and reports NaN).
- Ties go to the lowest class id, always (`numpy.argmin` over the candidates in increasing id order).
- beta = 0 is an ordinary value (the reference treats a stored beta of 0 as "not given" and sweeps on the data
  it evaluates).

Class ids index the columns of the distance matrix: column c holds the distance to class c. All values are
fractions in [0, 1]; `EvalResult` holds an evaluation's headline values and is the one place that writes them as
percentages (metrics.json, log.jsonl) and reads them back. This module imports numpy only, so the trainer can use it
for its per-epoch validation without pulling in anything else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = [
    "RULES",
    "DEFAULT_BETAS",
    "GZSLResult",
    "EvalResult",
    "percent",
    "validation_result",
    "class_distances",
    "nearest_class",
    "per_class_accuracy",
    "mean_class_accuracy",
    "zsl",
    "gzsl",
    "gzsl_predictions",
    "harmonic_mean",
    "select_beta",
]

# "kinetics": ||f(x) - phi(s_v(x)) - phi(c)|| (the paper regresses phi(s_v) + phi(s_t),
# so the clip's own phi(s_v) is taken off before the nearest class);
# "plain": ||f(x) - phi(c)||; "cosine": 1 - cos(f(x) - offset, phi(c)), offset phi(s_v(x)) when given.
RULES = ("kinetics", "plain", "cosine")

# The calibrated-stacking sweep of the reference: 0, 0.2, ..., 3.0 (16 values).
DEFAULT_BETAS = np.round(np.arange(0.0, 3.0001, 0.2), 10)

# Below this norm a vector counts as zero for the cosine rule (its cosine is then 0, distance 1).
_COSINE_EPS = 1e-12


@dataclass(frozen=True)
class GZSLResult:
    """Generalised zero-shot accuracy with seen and unseen classes both candidates.

    Attributes:
        s: mean per-class accuracy over the seen classes (fraction).
        u: mean per-class accuracy over the unseen classes (fraction).
        hm: harmonic mean 2 s u / (s + u) (0 when both are 0).
        beta: the calibrated-stacking constant added to the seen classes' distances (0: none).
    """

    s: float
    u: float
    hm: float
    beta: float


# Field metadata of an `EvalResult` accuracy: a fraction inside, written x 100.
_PERCENT = {"unit": "percent"}
# The calibrated part of an `EvalResult`: written only by an evaluation that calibrated.
_CALIBRATED = ("calibrated_beta", "calibrated_gzsl_s", "calibrated_gzsl_u", "calibrated_gzsl_hm",
               "calibrated_val_split", "calibrated_val_hm")


@dataclass(frozen=True)
class EvalResult:
    """The headline values of one zero-shot evaluation (a test set, or one epoch's validation clips).

    The one set of metric names: the field names are the keys of metrics.json and of log.jsonl's `val`, and the
    values of `TrainConfig.select_by`. Accuracies are fractions in [0, 1] here and percentages only in the JSON form
    (`to_json`, read back by `from_json`); beta is in distance units. A value is None where it is undefined: ZSL
    without unseen clips, S / U / HM without clips of both sides, the calibrated part without calibrated stacking.

    Attributes:
        zsl: mean per-class accuracy over the unseen classes, only unseen classes as candidates.
        gzsl_s: S, seen classes' mean per-class accuracy with seen and unseen classes both candidates.
        gzsl_u: U, the unseen classes' in the same setting.
        gzsl_hm: HM = 2 S U / (S + U).
        num_clips: clips evaluated.
        num_seen_classes: seen candidate classes.
        num_unseen_classes: unseen candidate classes.
        calibrated_beta: the calibrated-stacking beta added to the seen classes' distances.
        calibrated_gzsl_s: S with that beta.
        calibrated_gzsl_u: U with that beta.
        calibrated_gzsl_hm: HM with that beta.
        calibrated_val_split: the split beta was chosen on; None: the evaluated clips themselves (the trainer's
            validation, where beta is part of what is measured).
        calibrated_val_hm: the HM of the chosen beta on that split.
        seen_accuracy: mean per-class accuracy of clips of seen classes among the seen classes (the trainer's
            validation without unseen clips).
    """

    zsl: float | None = field(default=None, metadata=_PERCENT)
    gzsl_s: float | None = field(default=None, metadata=_PERCENT)
    gzsl_u: float | None = field(default=None, metadata=_PERCENT)
    gzsl_hm: float | None = field(default=None, metadata=_PERCENT)
    num_clips: int | None = None
    num_seen_classes: int | None = None
    num_unseen_classes: int | None = None
    calibrated_beta: float | None = None
    calibrated_gzsl_s: float | None = field(default=None, metadata=_PERCENT)
    calibrated_gzsl_u: float | None = field(default=None, metadata=_PERCENT)
    calibrated_gzsl_hm: float | None = field(default=None, metadata=_PERCENT)
    calibrated_val_split: str | None = None
    calibrated_val_hm: float | None = field(default=None, metadata=_PERCENT)
    seen_accuracy: float | None = field(default=None, metadata=_PERCENT)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and _is_percent(f) and not 0.0 <= value <= 1.0:
                raise ValueError(f"EvalResult.{f.name} must be a fraction in [0, 1] or None, got {value!r}")
        if self.calibrated_beta is None and any(getattr(self, name) is not None for name in _CALIBRATED):
            raise ValueError("EvalResult: a calibrated value without `calibrated_beta`")

    def percent(self, name: str) -> float | None:
        """A value as written: an accuracy in percent, beta and counts as they are.

        Raises:
            KeyError: `name` is not a field of `EvalResult`.
        """
        if name not in _FIELDS:
            raise KeyError(f"{name!r} is not a metric of EvalResult; choose one of {tuple(_FIELDS)}")
        value = getattr(self, name)
        return percent(value) if _is_percent(_FIELDS[name]) else value

    def to_json(self) -> dict[str, Any]:
        """The JSON form (metrics.json, log.jsonl's `val`): accuracies in percent, None where undefined; the
        calibrated part only after calibrated stacking, seen accuracy only where measured."""
        return {name: self.percent(name) for name in _FIELDS
                if not (name in _CALIBRATED and self.calibrated_beta is None)
                and not (name == "seen_accuracy" and self.seen_accuracy is None)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> EvalResult:
        """Read the JSON form back: accuracies from percent; other keys (a report's label, per-class rows) ignored.

        Raises:
            ValueError: a metric that is not a number (the split: not a string), or outside [0, 100] percent.
        """
        if "clips" in values:  # the trainer's validation record before this type: fractions, two other names
            values = _earlier_validation_record(values)
        kwargs: dict[str, Any] = {}
        for name, f in _FIELDS.items():
            value = values.get(name)
            if value is None:
                continue
            wanted = str if name == "calibrated_val_split" else int if name.startswith("num_") else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"metric {name!r} must be a {'string' if wanted is str else 'number'}, got {value!r}")
            kwargs[name] = value / 100.0 if _is_percent(f) else value
        return cls(**kwargs)

    def selection(self, select_by: str) -> str:
        """The field that ranks epochs: `select_by` where defined, else ZSL (no seen clips), else seen accuracy."""
        if getattr(self, select_by) is not None:
            return select_by
        return "zsl" if self.zsl is not None else "seen_accuracy"


_FIELDS = {f.name: f for f in fields(EvalResult)}
# Names of the trainer's earlier validation record (log.jsonl `val`, a checkpoint's `metrics`) -> field names.
_EARLIER_NAMES = {"clips": "num_clips", "gzsl_hm_calibrated": "calibrated_gzsl_hm",
                  "calibration_beta": "calibrated_beta"}


def _earlier_validation_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A run trained before `EvalResult` logged fractions under other names: its JSON form, so that a resumed
    run's curves and summary read old and new epochs alike instead of 100x apart."""
    fields_ = {_EARLIER_NAMES.get(key, key): value for key, value in values.items()}
    return {name: value * 100.0 if name in _FIELDS and _is_percent(_FIELDS[name]) and value is not None else value
            for name, value in fields_.items()}


def _is_percent(f) -> bool:
    return f.metadata.get("unit") == _PERCENT["unit"]


def percent(value: float | None) -> float | None:
    """A fraction as the percentage reports write (100 x value); None for None or NaN (undefined)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else 100.0 * value


def class_distances(
    predicted: np.ndarray,
    class_embeddings: np.ndarray,
    rule: str = "plain",
    offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Distance of every predicted embedding to every class embedding under a decision rule.

    Args:
        predicted: f(x), the embeddings the fusion head predicts.
        class_embeddings: phi(c) of the candidate classes; row c belongs to class id c.
        rule: "kinetics" (`||f(x) - offsets - phi(c)||`, offsets required), "plain" (`||f(x) - phi(c)||`,
            offsets must be None) or "cosine" (`1 - cos(f(x) - offsets, phi(c))`, offsets optional).
        offsets: phi(s_v(x)), the embedding of the Kinetics class the video backbone predicts per clip.

    Returns:
        float64 distances; smaller is nearer. Euclidean distances are not squared, so a calibrated-stacking
        beta means the same as in the reference.

    Raises:
        ValueError: unknown rule, offsets missing / unexpected for the rule, shape mismatch, non-finite values.

    Shapes:
        predicted (N, E), class_embeddings (C, E), offsets (N, E) -> (N, C)
    """
    if rule not in RULES:
        raise ValueError(f"unknown decision rule {rule!r}; choose one of {RULES}")
    predicted = _as_matrix(predicted, "predicted")
    class_embeddings = _as_matrix(class_embeddings, "class_embeddings")
    if predicted.shape[1] != class_embeddings.shape[1]:
        raise ValueError(
            f"predicted embeddings have dim {predicted.shape[1]} but class embeddings {class_embeddings.shape[1]}; "
            "embed the classes with the run's embedding source"
        )
    if rule == "kinetics" and offsets is None:
        raise ValueError("rule 'kinetics' needs offsets phi(s_v(x)) (the video backbone's Kinetics class per clip)")
    if rule == "plain" and offsets is not None:
        raise ValueError("rule 'plain' takes no offsets; use rule 'kinetics' to subtract phi(s_v(x))")
    if offsets is not None:
        offsets = _as_matrix(offsets, "offsets")
        if offsets.shape != predicted.shape:
            raise ValueError(f"offsets have shape {offsets.shape}, expected {predicted.shape} like predicted")
        predicted = predicted - offsets
    if rule == "cosine":
        p = predicted / np.maximum(np.linalg.norm(predicted, axis=1, keepdims=True), _COSINE_EPS)
        c = class_embeddings / np.maximum(np.linalg.norm(class_embeddings, axis=1, keepdims=True), _COSINE_EPS)
        return 1.0 - p @ c.T  # (N, E) @ (E, C) -> (N, C)
    # ||p - c||^2 = ||p||^2 + ||c||^2 - 2 p.c; rounding can make it slightly negative, hence the clamp.
    cross = predicted @ class_embeddings.T  # (N, E) @ (E, C) -> (N, C)
    squared = (predicted**2).sum(1)[:, None] + (class_embeddings**2).sum(1)[None, :] - 2.0 * cross
    return np.sqrt(np.maximum(squared, 0.0))  # (N, C)


def nearest_class(distances: np.ndarray, candidate_ids: np.ndarray) -> np.ndarray:
    """The nearest candidate class per row; ties go to the lowest class id.

    Args:
        distances: distances to every class (column c = class id c).
        candidate_ids: the class ids allowed as predictions (any order, no duplicates).

    Returns:
        int64 predicted class ids.

    Shapes:
        distances (N, C), candidate_ids (K,) -> (N,)
    """
    distances = _check_distances(distances)
    candidates = _class_ids(candidate_ids, distances.shape[1], "candidate_ids")
    if candidates.size == 0:
        raise ValueError("candidate_ids is empty: there is no class to predict")
    # Sorted candidates + argmin's first-minimum rule = lowest class id among tied distances.
    return candidates[np.argmin(distances[:, candidates], axis=1)]  # (N, K) -> (N,)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Recall of each listed class: correct predictions of its samples over its number of samples.

    Args:
        y_true: true class ids.
        y_pred: predicted class ids.
        class_ids: the classes to report, in the order wanted.

    Returns:
        float64 accuracy per class in `class_ids` order; NaN for a class without samples in `y_true`.

    Shapes:
        y_true (N,), y_pred (N,), class_ids (K,) -> (K,)
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred {y_pred.size}")
    ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    accuracy = np.full(ids.size, np.nan)
    for k, class_id in enumerate(ids):
        mine = y_true == class_id
        if mine.any():
            accuracy[k] = float(np.mean(y_pred[mine] == class_id))
    return accuracy


def mean_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, class_ids: np.ndarray) -> float:
    """Mean of `per_class_accuracy` over the listed classes that have at least one sample.

    A class without samples has no recall; it is left out of the mean rather than counted as 0 or NaN.

    Raises:
        ValueError: none of the listed classes has a sample (the mean would be undefined).

    Shapes:
        y_true (N,), y_pred (N,), class_ids (K,) -> scalar
    """
    accuracy = per_class_accuracy(y_true, y_pred, class_ids)
    present = ~np.isnan(accuracy)
    if not present.any():
        raise ValueError(f"none of the {accuracy.size} classes has a sample; nothing to average")
    return float(accuracy[present].mean())


def zsl(distances: np.ndarray, y_true: np.ndarray, unseen_ids: np.ndarray) -> float:
    """Zero-shot accuracy: mean per-class accuracy over unseen classes, only unseen classes as candidates.

    Samples whose true class is not in `unseen_ids` (seen-class test clips) are ignored, so the whole GZSL
    test set can be passed.

    Shapes:
        distances (N, C), y_true (N,), unseen_ids (K,) -> scalar
    """
    distances = _check_distances(distances)
    y_true = _labels(y_true, "y_true", distances.shape[0])
    unseen = _class_ids(unseen_ids, distances.shape[1], "unseen_ids")
    keep = np.isin(y_true, unseen)
    if not keep.any():
        raise ValueError("no sample belongs to an unseen class; ZSL is undefined")
    y_pred = nearest_class(distances[keep], unseen)
    return mean_class_accuracy(y_true[keep], y_pred, unseen)


def gzsl(
    distances: np.ndarray,
    y_true: np.ndarray,
    seen_ids: np.ndarray,
    unseen_ids: np.ndarray,
    beta: float = 0.0,
) -> GZSLResult:
    """Generalised zero-shot accuracy: seen and unseen classes are all candidates.

    Args:
        distances: distances to every class (column c = class id c).
        y_true: true class ids; each must be a seen or an unseen class.
        seen_ids: seen class ids (candidates; beta is added to their distances).
        unseen_ids: unseen class ids (candidates), disjoint from `seen_ids`.
        beta: calibrated stacking constant (>= 0 penalises the seen classes; 0: none).

    Returns:
        S, U and HM over the classes that have samples, and the beta used.

    Raises:
        ValueError: overlapping id sets, a sample of a class that is not a candidate, a side without samples.

    Shapes:
        distances (N, C), y_true (N,), seen_ids (Ks,), unseen_ids (Ku,) -> GZSLResult
    """
    y_pred, y_true, seen, unseen = _gzsl_predictions(distances, y_true, seen_ids, unseen_ids, beta)
    s = mean_class_accuracy(y_true, y_pred, seen)
    u = mean_class_accuracy(y_true, y_pred, unseen)
    return GZSLResult(s=s, u=u, hm=harmonic_mean(s, u), beta=float(beta))


def gzsl_predictions(
    distances: np.ndarray,
    y_true: np.ndarray,
    seen_ids: np.ndarray,
    unseen_ids: np.ndarray,
    beta: float = 0.0,
) -> np.ndarray:
    """The GZSL prediction per sample (nearest of seen + unseen classes, seen distances + beta).

    Shapes:
        distances (N, C), y_true (N,), seen_ids (Ks,), unseen_ids (Ku,) -> (N,)
    """
    return _gzsl_predictions(distances, y_true, seen_ids, unseen_ids, beta)[0]


def harmonic_mean(s: float, u: float) -> float:
    """2 s u / (s + u); 0 when s and u are both 0."""
    if s < 0 or u < 0:
        raise ValueError(f"accuracies must be >= 0, got s={s}, u={u}")
    return 0.0 if s + u == 0 else 2.0 * s * u / (s + u)


def select_beta(
    distances_val: np.ndarray,
    y_val: np.ndarray,
    seen_ids: np.ndarray,
    unseen_ids: np.ndarray,
    betas: np.ndarray = DEFAULT_BETAS,
) -> tuple[float, float]:
    """Choose the calibrated-stacking beta with the best HM on a validation split.

    Pass validation data only: the beta chosen here is then applied, unchanged, to the test split (see
    `workflows.zeroshot` for the guard that keeps test data out). Among betas with equal HM the smallest wins.

    Returns:
        (beta, hm on the validation data).

    Shapes:
        distances_val (N, C), y_val (N,), seen_ids (Ks,), unseen_ids (Ku,), betas (B,) -> (scalar, scalar)
    """
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if betas.size == 0:
        raise ValueError("betas is empty; pass at least one value (e.g. 0)")
    if not np.all(np.isfinite(betas)):
        raise ValueError("betas must be finite")
    hms = [gzsl(distances_val, y_val, seen_ids, unseen_ids, beta=float(b)).hm for b in betas]
    order = np.lexsort((betas, -np.asarray(hms)))  # best HM first, then the smallest beta
    best = int(order[0])
    return float(betas[best]), float(hms[best])


def validation_result(
    distances: np.ndarray,
    y_true: np.ndarray,
    seen_ids: np.ndarray,
    unseen_ids: np.ndarray,
    betas: np.ndarray = DEFAULT_BETAS,
) -> EvalResult:
    """The trainer's validation of one epoch: ZSL, GZSL and calibrated stacking with beta chosen on these clips.

    Raw GZSL often collapses onto the seen classes; calibrated stacking with beta chosen on this same validation
    data (as AVCA's stage 1 does) shows what is recoverable. Without unseen clips the result holds the seen
    classes' accuracy among the seen classes instead.

    Shapes:
        distances (N, C), y_true (N,), seen_ids (Ks,), unseen_ids (Ku,), betas (B,) -> EvalResult
    """
    distances = _check_distances(distances)
    y_true = _labels(y_true, "y_true", distances.shape[0])
    has_seen, has_unseen = bool(np.isin(y_true, seen_ids).any()), bool(np.isin(y_true, unseen_ids).any())
    values: dict[str, Any] = {"num_clips": int(y_true.size), "num_seen_classes": int(np.size(seen_ids)),
                              "num_unseen_classes": int(np.size(unseen_ids))}
    if has_unseen:
        values["zsl"] = zsl(distances, y_true, unseen_ids)
    if has_seen and has_unseen:
        raw = gzsl(distances, y_true, seen_ids, unseen_ids)
        beta, _ = select_beta(distances, y_true, seen_ids, unseen_ids, betas)
        calibrated = gzsl(distances, y_true, seen_ids, unseen_ids, beta=beta)
        values.update(gzsl_s=raw.s, gzsl_u=raw.u, gzsl_hm=raw.hm, calibrated_beta=beta, calibrated_gzsl_s=calibrated.s,
                      calibrated_gzsl_u=calibrated.u, calibrated_gzsl_hm=calibrated.hm, calibrated_val_hm=calibrated.hm)
    elif not has_unseen:
        predicted = nearest_class(distances, seen_ids)
        values["seen_accuracy"] = mean_class_accuracy(y_true, predicted, seen_ids)
    return EvalResult(**values)


def _gzsl_predictions(
    distances: np.ndarray, y_true: np.ndarray, seen_ids: np.ndarray, unseen_ids: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    distances = _check_distances(distances)
    y_true = _labels(y_true, "y_true", distances.shape[0])
    seen = _class_ids(seen_ids, distances.shape[1], "seen_ids")
    unseen = _class_ids(unseen_ids, distances.shape[1], "unseen_ids")
    if np.intersect1d(seen, unseen).size:
        raise ValueError(f"class ids {np.intersect1d(seen, unseen).tolist()} are both seen and unseen")
    if not np.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    candidates = np.union1d(seen, unseen)
    stray = np.setdiff1d(y_true, candidates)
    if stray.size:
        raise ValueError(f"samples of class ids {stray[:10].tolist()} are neither seen nor unseen candidates")
    shifted = distances.copy()
    shifted[:, seen] += beta
    return nearest_class(shifted, candidates), y_true, seen, unseen


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_distances(distances: np.ndarray) -> np.ndarray:
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 2:
        raise ValueError(f"distances must be 2-D (samples, classes), got shape {distances.shape}")
    if not np.all(np.isfinite(distances)):
        raise ValueError("distances contain NaN or inf")
    return distances


def _class_ids(ids: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    ids = np.asarray(ids).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    unique = np.unique(ids)  # sorted: the tie rule relies on it
    if unique.size != ids.size:
        raise ValueError(f"{name} contains duplicate class ids")
    if unique.size and (unique[0] < 0 or unique[-1] >= num_classes):
        bounds = unique[[0, -1]].tolist()
        raise ValueError(f"{name} must lie in [0, {num_classes}) (the distance columns), got range {bounds}")
    return unique


def _labels(y: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {y.dtype}")
    if n is not None and y.size != n:
        raise ValueError(f"{name} has {y.size} labels but distances have {n} rows")
    return y.astype(np.int64)
