"""Zero-shot inference of a trained run on a token store (`zeroshot`): GZSL / ZSL on seen and unseen classes, or an
open-vocabulary ranking of any class names, written as metrics.json, predictions.csv, report.md and plots.

Clips are scored by `eval.scoring`, and evaluated by `eval.gzsl` (where beta of calibrated stacking can only come
from validation clips). Clips the run trained or validated on are not scored unless asked for
(`include_training_clips`): the run's training store contributes none of its training clips, and no store
contributes the run's validation clips, so S is measured on held-out clips only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.files import write_csv, write_folder, write_json, write_text
from common.names import canonical_names
from common.settings import result_values
from eval import metrics, report
from eval.config import PlotConfig
from eval.gzsl import GZSLEvaluation, ValidationSplit, evaluate_gzsl, gzsl_metrics, gzsl_rows
from eval.metrics import EvalResult, percent
from eval.scoring import ClassEmbedder, ClipSet
from features.splits import SplitRole, split_role
from fusion.config import TrainConfig
from fusion.predict import score_clips
from text.class_names import read_class_file
from workflows.config import ZeroShotConfig

__all__ = ["RUN_VALIDATION", "ZeroShotResult", "run_clip_indices", "write_outputs", "run_zeroshot"]

logger = logging.getLogger(__name__)

RUN_VALIDATION = "run"  # `val_split='run'`: the validation clips the run itself validated on (classes.json)


@dataclass(frozen=True)
class ZeroShotResult:
    """What `run_zeroshot` computed (and wrote, with `out`): the metrics.json entries, and for a GZSL evaluation its
    headline values (`result`, the entries' reader's view: fractions)."""

    metrics: dict[str, Any]
    paths: tuple[Path, ...]
    result: EvalResult | None = None  # None for an open-vocabulary ranking

    def summary(self) -> str:
        """One line for the CLI."""
        m, r = self.metrics, self.result
        if r is None:
            line = f"{m['num_clips']} clips ranked against {m['num_classes']} classes"
            if m.get("top1") is not None:
                line += f"; top-1 {m['top1']:.2f}%, top-{m['top_k']} {m['topk']:.2f}% on {m['num_labelled_clips']} " \
                        "labelled clips"
            return line
        parts = [f"{r.num_clips} clips, rule {m['rule']}"]
        if r.zsl is not None:
            parts.append(f"ZSL {percent(r.zsl):.2f}")
        if r.gzsl_hm is not None:
            parts.append(f"GZSL S {percent(r.gzsl_s):.2f} U {percent(r.gzsl_u):.2f} HM {percent(r.gzsl_hm):.2f}")
        if r.calibrated_beta is not None:
            parts.append(f"calibrated (beta {r.calibrated_beta:g} on {r.calibrated_val_split!r}) "
                         f"HM {percent(r.calibrated_gzsl_hm):.2f}")
        return "; ".join(parts)


def run_clip_indices(info, store) -> np.ndarray:
    """Clip indices of `store` that the run trained or validated on (any status), ascending.

    The run records the clips it trained on (`train_clip_ids`) and validated on (`validation.clip_ids`); clips
    it held out as test-seen (`test_seen_fraction`) are in neither. Runs without the record count every clip
    of their training splits as used. Which store those clips are of is decided by the stores' identity
    (`features.store.TokenStore.identity`), so a copied, moved or symlinked store is the store the run used, and
    another store that reuses its clip ids is not (a warning says that it holds such ids).
    """
    validation = info.validation or {}
    trained = (np.flatnonzero(np.isin(store.clip_ids, list(info.train_clip_ids))) if info.train_clip_ids is not None
               else store.indices(None, list(info.train.get("train_splits") or ())))
    validated = np.flatnonzero(np.isin(store.clip_ids, list(validation.get("clip_ids") or ())))
    used, reused = [], 0
    for identity, recorded_path, role, indices in (
            (info.train_store_identity, info.train.get("store"), "training", trained),
            (validation.get("store_identity"), validation.get("store"), "validation", validated)):
        if _is_run_store(info, identity, recorded_path, store, role):
            used.append(indices)
        elif identity is not None:
            reused += indices.size
    if reused:
        logger.warning("%s is not a store the run %s trained or validated on (another identity) but holds %d of the "
                       "clip ids it used: they are scored as test clips; if it holds the same clips extracted again, "
                       "evaluate on the run's own store", store.path, info.run_dir, reused)
    return np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)


def _imported_run_splits(info, store, splits: list[str] | None) -> list[str]:
    """The splits a peer's imported checkpoint may be scored on: test splits, and a first-stage model's own
    validation splits (`stage_1_val_*`, which AVCA's first stage is evaluated on).

    Which clips the peer trained on is not recorded in its checkpoint, so the clips of a store's other splits may
    be its training clips (a second-stage model trains on the first stage's validation clips too), and scoring
    them would inflate S without a word.

    Raises:
        InputError: a named split that is not a test split, or a store without one.
    """
    stage = info.imported.get("stage")

    def scorable(split: str) -> bool:
        role = split_role(split)
        return role is SplitRole.TEST or (role is SplitRole.VALIDATION and stage == 1 and split.startswith("stage_1_"))

    if splits is None:
        splits = sorted(s for s in set(store.splits.tolist()) if s and scorable(s))
        if not splits:
            raise InputError(f"{store.path} has no test split for the imported run {info.run_dir} (its training clips "
                             "are not recorded); name the splits to score with `splits`")
        logger.info("imported run: scoring the splits %s of %s", splits, store.path)
        return splits
    other = [s for s in splits if not scorable(s)]
    if other:
        raise InputError(f"{info.run_dir} is a peer's imported checkpoint whose training clips are not recorded: score "
                         f"test splits only, not {other} (or pass include_training_clips to score them anyway)")
    return splits


def _is_run_store(info, identity: str | None, recorded_path: str | None, store, role: str) -> bool:
    """Whether `store` is the run's `role` store: by identity; for a run recorded without one, by resolved path."""
    if identity is not None:
        return identity == store.identity
    if recorded_path is None:
        return False
    logger.warning("%s records no identity of its %s store (made before stores had one): %s is matched to it by "
                   "path, so a copied or moved store's %s clips would be scored as test clips", info.run_dir, role,
                   store.path, role)
    return Path(recorded_path).resolve() == Path(store.path).resolve()


def run_zeroshot(config: ZeroShotConfig) -> ZeroShotResult:
    """Zero-shot inference of a run on a store: GZSL / ZSL on seen + unseen classes, or an open-vocabulary ranking.

    Raises:
        FileNotFoundError: missing run, store, class files or validation store.
        ValueError: classes the run trained on listed as unseen, seen classes it never trained on, a validation
            split that is test data or shares clips / unseen classes with the evaluated clips, nothing to evaluate.
    """
    from features.store import DONE, TokenStore
    from fusion.trained_run import load_concatenated_runs, load_run

    if config.concat_runs:
        model, info = load_concatenated_runs((config.run_dir, *config.concat_runs), config.checkpoint, config.device)
    else:
        model, info = load_run(config.run_dir, config.checkpoint, config.device)
    rule = config.rule or info.decision_rule
    store = TokenStore.open(config.store)
    embed = ClassEmbedder(info, config.missing)
    splits = list(config.splits) or None
    if info.imported is not None and not config.include_training_clips:
        splits = _imported_run_splits(info, store, splits)
    candidates = store.indices(DONE, splits)
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
        "peer_text_order": info.peer_text_order,
        "imported": info.imported,
        "config": config.to_dict(),
        "run": {"run_dir": str(info.run_dir), "embedding": info.embedding_spec, "classes": list(info.class_names)},
        "store": {"path": str(store.path), "provenance": store.provenance},
    }
    vocabulary = (read_class_file(config.classes) if config.classes else
                  list(canonical_names(config.class_names, "`class_names`")) if config.class_names else [])
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
    return ZeroShotResult(metrics=metrics_json, paths=paths,
                          result=None if evaluation is None else evaluation.result())


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
            raise InputError(f"{store.path} has no clips of split 'unseen'; name the classes with `seen` / `unseen` "
                             "or rank a class list with `classes`")
        # Seen classes the run held out as validation-unseen (`val_unseen_fraction`) were neither trained on nor
        # are they test classes: they leave the candidates (their clips are validation clips, not scored).
        held_out = sorted(set(seen_names) & set((info.validation or {}).get("unseen_classes") or ()))
        if held_out:
            logger.info("%d seen classes were the run's validation-unseen classes, not candidates: %s",
                        len(held_out), held_out)
            seen_names = [n for n in seen_names if n not in held_out]
    trained = set(info.class_names)
    leaked = sorted(set(unseen_names) & trained)
    if leaked:
        raise InputError(f"classes {leaked[:5]} are unseen here but {info.run_dir} trained on them; zero-shot classes "
                         "must be new to the run")
    untrained = sorted(set(seen_names) - trained)
    if untrained:
        raise InputError(f"seen classes {untrained[:5]} were not training classes of {info.run_dir}; list them as "
                         "unseen, or evaluate a run trained on them")
    labels = store.labels[candidates]
    keep = candidates[np.isin(labels, seen_names + unseen_names)]
    if keep.size < candidates.size:
        logger.info("%d clips of other classes are not scored", candidates.size - keep.size)
    if not keep.size:
        raise InputError(f"{store.path}: no done, held-out clip of the {len(seen_names) + len(unseen_names)} classes "
                         "to score (clips the run trained on are left out unless `include_training_clips=True`)")
    if seen_names and not np.isin(store.labels[keep], seen_names).any():
        logger.warning("every clip of the seen classes in %s trained or validated the run, so GZSL (S, HM) cannot be "
                       "measured: give the store held-out seen-class clips (e.g. a 'test_seen' split), or pass "
                       "`include_training_clips=True` (S then measures training clips)", store.path)
    scores = score_clips(model, info, store, keep, rule, config.batch_size, config.device)
    validation = None
    if config.calibrated_stacking:
        validation = _validation_split(model, info, store, scores.clips, rule, config)
    evaluation = evaluate_gzsl(scores, seen_names, unseen_names, embed, validation, config.betas, config.beta_rule)
    metrics_json = {"mode": "gzsl", "classes_from": source, "classes": {"seen": list(seen_names),
                                                                         "unseen": list(unseen_names)},
                    **gzsl_metrics(evaluation, config.worst_classes)}
    header, rows = gzsl_rows(evaluation)
    return evaluation, metrics_json, rows, header


def _validation_split(model, info, store, evaluated: ClipSet, rule, config) -> ValidationSplit:
    from features.store import DONE, TokenStore

    if config.val_split == RUN_VALIDATION:
        recorded = info.validation or {}
        if not recorded.get("clip_ids"):
            raise InputError(f"{info.run_dir} was trained without validation clips; name a validation split")
        if config.val_store is not None:
            val_store = TokenStore.open(config.val_store)
        elif recorded.get("store_identity") == store.identity:  # the evaluated store is it, wherever it is now
            val_store = store
        else:
            val_store = TokenStore.open(recorded["store"])
        indices = np.flatnonzero(np.isin(val_store.clip_ids, recorded["clip_ids"]))
        if indices.size != len(recorded["clip_ids"]):
            raise InputError(f"{val_store.path} holds {indices.size} of the run's {len(recorded['clip_ids'])} "
                             "validation clips; pass the store the run validated on (`val_store`)")
    else:
        if split_role(config.val_split) is SplitRole.TEST:
            raise InputError(f"`val_split` {config.val_split!r} is test data (split 'unseen' or a word 'test'); "
                             "choose beta on a validation split")
        val_store = TokenStore.open(config.val_store) if config.val_store is not None else store
        indices = val_store.indices(DONE, [config.val_split])
        if not indices.size:
            raise InputError(f"{val_store.path}: no done clips in validation split {config.val_split!r} (splits: "
                             f"{sorted(set(val_store.splits.tolist()))})")
    scores = score_clips(model, info, val_store, indices, rule, config.batch_size, config.device)
    return ValidationSplit.build(scores, config.val_split, info.class_names, evaluated)


def _open_vocabulary(model, info, store, candidates, vocabulary, rule, embed, config):
    if not candidates.size:
        raise InputError(f"{store.path}: no done clip to rank")
    scores = score_clips(model, info, store, candidates, rule, config.batch_size, config.device)
    distances = scores.distances(embed(vocabulary))  # (N, C)
    k = min(config.top_k, len(vocabulary))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]  # ties: lower list position first
    # One position per name: a name listed twice would map its clips to its last position while ties of the two
    # identical embeddings go to the first, and every right prediction would count as wrong (top-1 0%).
    position = {n: i for i, n in enumerate(vocabulary)}
    assert len(position) == len(vocabulary), "vocabulary names must be distinct (canonical_names checks them)"
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
        out.update(top1=percent(float(top1.mean())), topk=percent(float(topk.mean())),
                   per_class=[{"class": vocabulary[c], "clips": int((y == c).sum()), "top1_acc": percent(a)}
                              for c, a in zip(present.tolist(), top1.tolist(), strict=True)])
    rows = [[clip_id, scores.labels[i], vocabulary[order[i, 0]], ";".join(vocabulary[j] for j in order[i]),
             scores.splits[i]] for i, clip_id in enumerate(scores.clip_ids.tolist())]
    return out, rows, ["clip_id", "true_class", "pred", "top_k", "split"]


# --- outputs ------------------------------------------------------------------------------------------------


# What a report folder holds (`write_outputs`): a folder holding only these is an earlier report, which a new one
# replaces whole.
_REPORT_FILES = ("metrics.json", "predictions.csv", "report.md", "per_class_accuracy.png", "tsne.png")
# (per_class key, panel title) of the per-class figure, left to right; panels without values are left out
_PER_CLASS_PANELS = (("gzsl_acc", "GZSL, raw"), ("calibrated_gzsl_acc", "GZSL, calibrated stacking"),
                     ("zsl_acc", "ZSL (unseen candidates only)"))


def write_outputs(out: Path, metrics_json: dict, header: list[str], rows: list[list[str]],
                  evaluation: GZSLEvaluation | None, embed: Callable[[Sequence[str]], np.ndarray],
                  plot_config: PlotConfig) -> tuple[Path, ...]:
    """Write metrics.json, predictions.csv, report.md and (for GZSL evaluations) the figures into the folder `out`.

    The folder is written whole or not at all (`common.files.write_folder`): an interrupted or failed write (a
    full disk) leaves the previous report, or none, never a mix of two runs' files. A folder holding an earlier
    report is replaced; one holding other files is refused.

    Raises:
        FileExistsError: `out` holds files that are not a report's.
        OSError: a refused write (full, read-only), naming the file.
    """
    written: list[Path] = []

    def write(folder: Path) -> None:
        written.extend(_write_report_files(folder, metrics_json, header, rows, evaluation, embed, plot_config))

    write_folder(out, write, _REPORT_FILES, "report folder")
    paths = tuple(out / p.name for p in written)
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def _write_report_files(out: Path, metrics_json: dict, header: list[str], rows: list[list[str]],
                        evaluation: GZSLEvaluation | None, embed: Callable[[Sequence[str]], np.ndarray],
                        plot_config: PlotConfig) -> list[Path]:
    from eval import plots

    paths = [write_json(out / "metrics.json", metrics_json)]
    paths.append(write_csv(out / "predictions.csv", header, rows))
    paths.append(write_text(out / "report.md", report.run_markdown(metrics_json)))
    if evaluation is not None and plot_config.per_class_bars:
        per_class = metrics_json["per_class"]
        # without both seen and unseen clips GZSL is not defined (gzsl_acc would repeat ZSL)
        keys = _PER_CLASS_PANELS if evaluation.gzsl is not None else _PER_CLASS_PANELS[-1:]
        panels = {title: [np.nan if r.get(key) is None else r[key] for r in per_class]
                  for key, title in keys if any(r.get(key) is not None for r in per_class)}
        paths.append(plots.plot_per_class_accuracy(
            out / "per_class_accuracy.png", [r["class"] for r in per_class], panels,
            unseen=[r["split"] == "unseen" for r in per_class],
            title=f"Per-class accuracy, {metrics_json.get('label') or 'zero-shot evaluation'}"))
    if evaluation is not None and plot_config.tsne:
        scores = evaluation.scores
        paths.append(plots.plot_tsne(
            out / "tsne.png", scores.aligned_embeddings(), evaluation.y,
            scores.class_points(embed(evaluation.class_names)), evaluation.class_names,
            unseen=np.isin(np.arange(len(evaluation.class_names)), evaluation.unseen_ids),
            max_points=plot_config.tsne_max_points, perplexity=plot_config.tsne_perplexity,
            iterations=plot_config.tsne_iterations, seed=plot_config.seed))
    return paths


def _group_key(info, store, metrics_json, config) -> str:
    """Runs that differ only in their seed (and output paths) share this key: the report pools them.

    The training settings compared are those a resume compares (`affects_result`), so a run resumed with another
    device or `compile` stays in its group; the seed is what differs between the runs of a group.
    """
    train = {k: v for k, v in result_values(TrainConfig, info.train).items() if k != "seed"}
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
    if info.embedding_repeats > 1:  # concatenated heads are not the first head alone
        key["concatenated_heads"] = info.embedding_repeats
    return report.group_key(key)
