"""ZSL and GZSL of scored clips, raw and with calibrated stacking, and the metrics.json entries they give.

Calibrated stacking selects beta on a validation split only. `ValidationSplit` is the one input
beta selection accepts; it is built by `ValidationSplit.build`, which refuses test splits (`features.splits`) and
clips that are also being evaluated, and `evaluate_gzsl` refuses a validation split that shares clips or unseen
classes with the evaluated clips. So no code path can pick beta on the test data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import InputError
from eval import metrics
from eval.metrics import percent
from eval.scoring import ClipScores, ClipSet
from features.splits import ROLES_BY_NAME, SplitRoles

__all__ = ["BETA_RULES", "PEER_BETA_RULE_NEEDS", "ValidationSplit", "GZSLEvaluation", "evaluate_gzsl", "gzsl_metrics",
           "gzsl_rows"]

logger = logging.getLogger(__name__)

_BUILD_TOKEN = object()  # only ValidationSplit.build holds it
BETA_RULES = ("ours", "peers")  # how calibrated stacking chooses beta (`ValidationSplit.select_beta`)
PEER_BETA_RULE_NEEDS = ("beta_rule 'peers' (the mean of the audio, video and both betas) needs a head that scores "
                        "audio, video and both (cjme, avgzslnet, avca)")


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
    def build(cls, scores: ClipScores, name: str, run_classes: Sequence[str], evaluated: ClipSet,
              roles: SplitRoles = ROLES_BY_NAME) -> ValidationSplit:
        """Validation from scored clips: the run's training classes are its seen part, the others its unseen part.

        Args:
            scores: the validation clips as scored by the run.
            name: the split's name (a store split, or a stage of the AVCA protocol).
            run_classes: the run's training classes.
            evaluated: the clips that will be evaluated with the chosen beta.
            roles: the roles of split names (a protocol states its stages'; the naming rule otherwise).

        Raises:
            ValueError: a test split name, clips that are also evaluated, or a part without clips.
        """
        if roles.test_splits([name, *(str(s) for s in set(scores.splits.tolist()))]):
            raise InputError(f"validation split {name!r} is test data (split 'unseen' or a word 'test'); beta is "
                             "chosen on validation clips only")
        if scores.clips.overlaps(evaluated):
            raise InputError(f"validation split {name!r} shares clips with the evaluated clips; beta must come from "
                             "clips that are not evaluated")
        trained = set(run_classes)
        labels = set(scores.labels.tolist())
        if not labels & trained or not labels - trained:
            raise InputError(f"validation split {name!r} needs clips of seen (trained) and of unseen classes to choose "
                             f"beta; it has {len(labels & trained)} seen and {len(labels - trained)} unseen classes")
        # Candidates as in the trainer's validation and AVCA's: every training class, plus the validation-unseen ones.
        seen, unseen = tuple(sorted(trained)), tuple(sorted(labels - trained))
        return cls(scores, name, seen, unseen, token=_BUILD_TOKEN)

    def select_beta(self, embed: Callable[[Sequence[str]], np.ndarray], betas: Sequence[float],
                    rule: str = "ours") -> tuple[float, float]:
        """(beta, validation HM at that beta): the sweep of `eval.metrics.select_beta` on these clips.

        Args:
            rule: "ours": the beta with the best HM of the head's decision; "peers": AVCA-GZSL's
                `get_evaluation.py`, the mean of the best betas of the head's `beta_modes` (its audio, video and both
                distances), for a head that has them.

        Raises:
            InputError: rule "peers" for clips scored by a head without audio, video and both distances.
        """
        if rule not in BETA_RULES:
            raise InputError(f"beta_rule must be one of {BETA_RULES}, got {rule!r}")
        names = tuple(sorted(self.seen_names + self.unseen_names))
        ids = {n: i for i, n in enumerate(names)}
        classes = embed(names)
        y = np.array([ids[n] for n in self.scores.labels.tolist()], dtype=np.int64)
        seen = np.array([ids[n] for n in self.seen_names], dtype=np.int64)
        unseen = np.array([ids[n] for n in self.unseen_names], dtype=np.int64)
        betas = np.asarray(betas, dtype=np.float64)
        if rule == "ours":
            return metrics.select_beta(self.scores.distances(classes), y, seen, unseen, betas)
        if not self.scores.beta_modes:
            raise InputError(f"{PEER_BETA_RULE_NEEDS}; this run's head does not: use 'ours'")
        # AVCA-GZSL adds 1e-10 to a mean of 0 so that its `if best_beta` does not read it as "no beta" (and sweep the
        # test clips); a beta of 1e-10 only breaks exact ties, so 0 is applied as 0 here.
        chosen = [metrics.select_beta(self.scores.distances(classes, mode), y, seen, unseen, betas)[0]
                  for mode in self.scores.beta_modes]
        beta = float(np.mean(chosen))
        return beta, metrics.gzsl(self.scores.distances(classes), y, seen, unseen, beta=beta).hm


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
    beta_rule: str | None = None

    def result(self) -> metrics.EvalResult:
        """The headline values (fractions); an undefined one (e.g. calibrated S without seen clips) is None."""
        raw, cal = self.gzsl, self.calibrated
        calibrated = {} if cal is None else {
            "calibrated_beta": cal.beta, "calibrated_gzsl_s": _defined(cal.s), "calibrated_gzsl_u": _defined(cal.u),
            "calibrated_gzsl_hm": _defined(cal.hm), "calibrated_val_split": self.validation_name,
            "calibrated_val_hm": self.validation_hm}
        return metrics.EvalResult(
            zsl=self.zsl, gzsl_s=raw.s if raw else None, gzsl_u=raw.u if raw else None,
            gzsl_hm=raw.hm if raw else None, num_clips=int(self.y.size), num_seen_classes=int(self.seen_ids.size),
            num_unseen_classes=int(self.unseen_ids.size), **calibrated)


def evaluate_gzsl(
    scores: ClipScores,
    seen_names: Sequence[str],
    unseen_names: Sequence[str],
    embed: Callable[[Sequence[str]], np.ndarray],
    validation: ValidationSplit | None = None,
    betas: Sequence[float] = tuple(metrics.DEFAULT_BETAS),
    beta_rule: str = "ours",
) -> GZSLEvaluation:
    """ZSL and GZSL (raw, and calibrated with a beta chosen on `validation` by `beta_rule`,
    `ValidationSplit.select_beta`) of clips of seen / unseen classes.

    ZSL needs clips of unseen classes, GZSL clips of both; a missing part gives None (logged).

    Raises:
        ValueError: overlapping seen / unseen names, clips of other classes, or a validation split that shares
            clips or unseen classes with the evaluated clips.
    """
    seen_names, unseen_names = tuple(sorted(set(seen_names))), tuple(sorted(set(unseen_names)))
    if set(seen_names) & set(unseen_names):
        raise InputError(f"classes both seen and unseen: {sorted(set(seen_names) & set(unseen_names))[:5]}")
    names = tuple(sorted(seen_names + unseen_names))
    ids = {n: i for i, n in enumerate(names)}
    stray = sorted(set(scores.labels.tolist()) - set(names))
    if stray:
        raise InputError(f"{len(stray)} evaluated classes are neither seen nor unseen candidates, e.g. {stray[:5]}")
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
            raise InputError(f"validation split {validation.name!r} shares clips with the evaluated clips")
        leaked = sorted(set(validation.unseen_names) & set(unseen_names))
        if leaked:
            raise InputError(f"validation split {validation.name!r} has evaluated unseen classes {leaked[:5]}; beta "
                             "must be chosen without the test-unseen classes")
        if validation.scores.rule != scores.rule:
            raise InputError(f"validation scored with rule {validation.scores.rule!r}, test with {scores.rule!r}")
        beta, beta_hm = validation.select_beta(embed, betas, beta_rule)
        calibrated_pred = metrics.gzsl_predictions(distances, y, seen, unseen, beta=beta)
        if gzsl is not None:
            calibrated = metrics.gzsl(distances, y, seen, unseen, beta=beta)
        else:
            calibrated = metrics.GZSLResult(s=float("nan"), u=float("nan"), hm=float("nan"), beta=beta)
        logger.info("calibrated stacking: beta %.2f chosen on %r by rule %r (validation HM %.4f)", beta,
                    validation.name, beta_rule, beta_hm)
    return GZSLEvaluation(scores=scores, class_names=names, seen_ids=seen, unseen_ids=unseen, y=y,
                          gzsl_pred=gzsl_pred, zsl_pred=zsl_pred, zsl=zsl, gzsl=gzsl, calibrated=calibrated,
                          calibrated_pred=calibrated_pred,
                          validation_name=None if validation is None else validation.name, validation_hm=beta_hm,
                          beta_rule=None if validation is None else beta_rule)


def gzsl_metrics(evaluation: GZSLEvaluation, worst_classes: int = 5) -> dict[str, Any]:
    """The metrics.json entries of an evaluation: headline values in percent, per-class accuracy, worst classes."""
    e = evaluation
    out: dict[str, Any] = e.result().to_json()
    if e.beta_rule is not None:
        out["calibrated_beta_rule"] = e.beta_rule
    all_ids = np.arange(len(e.class_names))
    gzsl_acc = metrics.per_class_accuracy(e.y, e.gzsl_pred, all_ids)
    zsl_acc = metrics.per_class_accuracy(e.y[e.zsl_pred >= 0], e.zsl_pred[e.zsl_pred >= 0], all_ids)
    cal_acc = metrics.per_class_accuracy(e.y, e.calibrated_pred, all_ids) if e.calibrated_pred is not None else None
    unseen = set(e.unseen_ids.tolist())
    per_class = []
    for c, name in enumerate(e.class_names):
        clips = int((e.y == c).sum())
        row = {"class": name, "split": "unseen" if c in unseen else "seen", "clips": clips,
               "gzsl_acc": percent(gzsl_acc[c]), "zsl_acc": percent(zsl_acc[c]) if c in unseen else None}
        if cal_acc is not None:
            row["calibrated_gzsl_acc"] = percent(cal_acc[c])
        per_class.append(row)
    out["per_class"] = per_class
    out["worst_classes"] = _worst_classes(e.class_names, e.y, e.gzsl_pred, gzsl_acc, worst_classes)
    return out


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


def _worst_classes(names, y, pred, accuracy, k: int) -> list[dict[str, Any]]:
    present = np.flatnonzero(~np.isnan(accuracy))
    worst = present[np.argsort(accuracy[present], kind="stable")][:k]
    out = []
    for c in worst.tolist():
        mine = pred[y == c]
        wrong, counts = np.unique(mine[mine != c], return_counts=True)
        top = np.argsort(-counts, kind="stable")[:3]
        out.append({"class": names[c], "clips": int(mine.size), "acc": percent(accuracy[c]),
                    "confused_with": [{"class": names[wrong[j]], "share": percent(counts[j] / mine.size)}
                                      for j in top]})
    return out


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else value
