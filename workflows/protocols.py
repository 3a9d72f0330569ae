"""Evaluation protocols that run every stage: the AVCA two-stage protocol and the paper's MZSL-50 protocol.

Both train the fusion head in two stages, as AVCA-GZSL does: stage 1 trains with a validation part and selects
the epoch (and, with calibrated stacking, beta) on it; stage 2 retrains on the training and validation clips for
the selected number of epochs, without validation, and its last checkpoint is tested once (stage 2 keeps stage
1's whole learning-rate schedule and stops at the selected epoch: AVCA's stage 2 takes its checkpoint there). Nothing
is chosen on the test clips: stage 2 has no validation to choose with, beta comes from stage-1 validation clips through
`workflows.zeroshot.ValidationSplit` (which refuses test clips and test-unseen classes), and the test evaluation only
measures.

- AVCA (VGGSound / UCF / ActivityNet with the shipped split files): stage 1 trains on stage_1_train and
  validates on stage_1_val_{seen,unseen}; stage 2 trains on stage_2_train (= the three stage-1 parts) and is
  tested on stage_2_test_{seen,unseen}. Stage membership comes from the split CSVs by clip id; the store's
  split column must agree (it names each clip's stage, as `import-avca` writes it).
- MZSL-50: stage 1 holds out a share of the benchmark's training classes as validation-unseen (and of the other
  classes' clips as validation-seen); stage 2 trains on all training clips. ZSL on the evaluation set by
  difficulty group (easy / medium / hard) and two averages of them: unweighted (the paper's Table 3) and weighted
  by the classes per group (its text); GZSL with the benchmark's test clips as the seen part and the evaluation
  set as the unseen part.

Every seed runs the whole protocol (`<out>/seed_<s>/{stage1,stage2,test}`); `<out>/metrics.json` holds the mean
over seeds (and the per-seed values), `<out>/summary.md` the table with mean ± std.

A rerun of the same protocol into the same `out` continues where a kill left it: a finished stage is reused, an
interrupted one resumes from its last.pt (`fusion.trainer.train` with `resume`), so no epoch trains twice and the
result equals an uninterrupted run's; a stage folder recording other settings is refused. The evaluation and the
reports, cheap, are redone and replace the earlier ones whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.files import json_text, read_csv, write_texts
from common.settings import result_values
from curate import splits
from curate.relatedness import DIFFICULTY_GROUPS
from curate.tables import class_and_group
from eval import report
from eval.gzsl import ValidationSplit, evaluate_gzsl, gzsl_metrics, gzsl_rows
from eval.metrics import EvalResult
from eval.scoring import ClassEmbedder, ClipSet
from features.splits import SplitRoles
from fusion.config import TrainConfig
from fusion.predict import score_clips
from workflows import leaks
from workflows.config import AVCAProtocolConfig, MZSLProtocolConfig
from workflows.zeroshot import write_outputs

__all__ = [
    "AVCA_STAGES",
    "SeedResult",
    "ProtocolResult",
    "read_groups",
    "group_scores",
    "avca_stage_indices",
    "run_avca_protocol",
    "run_mzsl_protocol",
]

logger = logging.getLogger(__name__)

# The stage each AVCA video belongs to (stage_2_train is the union of the three stage-1 parts).
AVCA_STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")
_STAGE1_TRAIN, _STAGE1_VAL = ("stage_1_train",), ("stage_1_val_seen", "stage_1_val_unseen")
_STAGE2_TRAIN = _STAGE1_TRAIN + _STAGE1_VAL
_TEST = ("stage_2_test_seen", "stage_2_test_unseen")
_HEADLINE = tuple(key for key, _, _ in report.COLUMNS)


@dataclass(frozen=True)
class SeedResult:
    """One seed's pass through a protocol."""

    seed: int
    folder: Path
    best_epoch: int  # epochs of stage 2 (selected on stage-1 validation)
    beta: float | None  # calibrated-stacking beta from stage-1 validation
    metrics: dict[str, Any]


@dataclass(frozen=True)
class ProtocolResult:
    """A protocol over all seeds: pooled metrics (mean over seeds) and each seed's result."""

    out: Path
    metrics: dict[str, Any]
    seeds: tuple[SeedResult, ...]

    def summary(self) -> str:
        """One line for the CLI."""
        m, std = self.metrics, self.metrics.get("std", {})
        shown = [(k, t) for k, t, pct in report.COLUMNS if pct and m.get(k) is not None]
        parts = [f"{t} {m[k]:.2f}" + (f" ± {std[k]:.2f}" if std.get(k) is not None else "") for k, t in shown]
        epochs = ", ".join(str(s.best_epoch) for s in self.seeds)
        used = sum(c["used"] for c in m["clips"].values())
        listed = sum(c["listed"] for c in m["clips"].values())
        return (f"{m['title']} ({len(self.seeds)} seed(s), stage-2 epochs {epochs}; clips used {used:,} of "
                f"{listed:,} listed, {used / max(listed, 1):.1%}): " + "; ".join(parts))


def read_groups(path: Path) -> dict[str, str]:
    """Difficulty group per class from a CSV with columns `class_name,group` (a manifest works too), class names in
    their one spelling (`common.names.canonical_name`).

    Raises:
        FileNotFoundError: no such file.
        InputError: missing columns, an unknown group, or one class with two groups.
    """
    groups: dict[str, str] = {}
    for line, row in enumerate(read_csv(path, ("class_name", "group"), "groups file"), start=2):
        name, group = class_and_group(row, path, line)
        if groups.setdefault(name, group) != group:
            raise InputError(f"{path} line {line}: class {name!r} is in groups {groups[name]!r} and {group!r}")
    if not groups:
        raise InputError(f"{path}: no classes")
    return groups


def group_scores(per_class_zsl: dict[str, float], groups: dict[str, str]) -> dict[str, Any]:
    """E, M, H (mean per-class ZSL accuracy of each group) and the two averages the paper uses.

    `mzsl_avg_unweighted` is (E + M + H) / 3, the "Avg" of every row of the paper's Table 3;
    `mzsl_avg_class_weighted` weights each group by its classes (9 / 31 / 10 in MZSL-50), as the paper's text
    says. Both average the groups that have classes.

    Args:
        per_class_zsl: ZSL accuracy (percent) of each evaluated class that has clips.
        groups: difficulty group per class.

    Raises:
        InputError: an evaluated class without a group.
    """
    ungrouped = sorted(set(per_class_zsl) - set(groups))
    if ungrouped:
        raise InputError(f"evaluated classes without a difficulty group: {ungrouped[:5]}; add them to the groups file")
    out: dict[str, Any] = {"groups": {}}
    means, sizes = [], []
    for group in DIFFICULTY_GROUPS:
        values = [acc for name, acc in per_class_zsl.items() if groups[name] == group]
        mean = float(np.mean(values)) if values else None
        out["groups"][group] = {"classes": len(values), "zsl": mean}
        out[f"mzsl_{group}"] = mean
        if values:
            means.append(mean)
            sizes.append(len(values))
    out["mzsl_avg_unweighted"] = float(np.mean(means)) if means else None
    out["mzsl_avg_class_weighted"] = float(np.average(means, weights=sizes)) if means else None
    return out


def avca_stage_indices(store, class_split: splits.ClassSplit, root: Path = splits.DATA_ROOT,
                       stage_of: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Store clip indices per AVCA stage, from the split CSVs by clip id, checked against the store's split column.

    `stage_of` (video id -> stage, `_avca_stage_of`) saves reading the split files again when the caller has it.

    Raises:
        InputError: a clip whose split column is not the stage the CSVs give it, a stage_2_train video outside
            stage 1, or a stage without done clips.
    """
    from features.store import DONE

    stage_of = _avca_stage_of(class_split, root) if stage_of is None else stage_of
    stage2 = set(splits.load_stage_videos(class_split, "stage_2_train", root).video_ids)
    outside = sorted(v for v in stage2 if stage_of.get(v) not in _STAGE2_TRAIN)
    if outside:
        raise InputError(f"{class_split.dataset}/{class_split.split}: stage_2_train videos outside stage 1, e.g. "
                         f"{outside[:3]}; the protocol retrains stage 2 on the stage-1 parts")
    expected = np.array([stage_of.get(c, "") for c in store.clip_ids.tolist()], dtype=object)
    listed = expected != ""
    wrong = np.flatnonzero(listed & (expected != store.splits.astype(object)))
    if wrong.size:
        i = wrong[0]
        raise InputError(f"{store.path}: {wrong.size} clips have a split that is not their AVCA stage, e.g. "
                         f"{store.clip_ids[i]!r} has split {store.splits[i]!r}, the split files say {expected[i]!r}; "
                         "write each clip's stage in the manifest's split column (import-avca does)")
    if (~listed).any():
        logger.info("%s: %d clips are in no stage of %s/%s and are not used", store.path, int((~listed).sum()),
                    class_split.dataset, class_split.split)
    done = store.status == DONE
    indices = {stage: np.flatnonzero(done & (expected == stage)) for stage in AVCA_STAGES}
    empty = [stage for stage, idx in indices.items() if not idx.size]
    if empty:
        raise InputError(f"{store.path}: no done clips of stage(s) {empty}; the protocol needs every stage")
    return indices


def _avca_stage_of(class_split: splits.ClassSplit, root: Path) -> dict[str, str]:
    """AVCA video id -> the first stage that lists it."""
    stage_of: dict[str, str] = {}
    for stage in AVCA_STAGES:
        for video_id in splits.load_stage_videos(class_split, stage, root).video_ids:
            stage_of.setdefault(video_id, stage)
    return stage_of


def _coverage(used: dict[str, int], listed: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per part of the data, the done clips the protocol used and the clips its lists name (VGGSound is never
    complete: reports say how much of it a number stands on)."""
    return {part: {"used": int(used.get(part, 0)), "listed": int(count)} for part, count in listed.items()}


def run_avca_protocol(config: AVCAProtocolConfig) -> ProtocolResult:
    """The AVCA two-stage protocol for every seed; writes `<out>/seed_<s>/...`, `metrics.json`, `summary.md`.

    Raises:
        FileNotFoundError: a missing store or split file.
        InputError: a store whose clips and split files disagree, training options the protocol owns, or a stage
            folder of `out` holding a run with other settings (a rerun continues only the same protocol).
    """
    from features.store import TokenStore

    root = Path(config.splits_root) if config.splits_root is not None else splits.DATA_ROOT
    class_split = splits.load_class_split(config.dataset, config.split, root)
    store = TokenStore.open(config.store)
    stage_of = _avca_stage_of(class_split, root)
    stage_indices = avca_stage_indices(store, class_split, root, stage_of)
    clips = _coverage({stage: idx.size for stage, idx in stage_indices.items()}, Counter(stage_of.values()))
    logger.info("AVCA %s/%s on %s: %s", class_split.dataset, class_split.split, store.path,
                ", ".join(f"{s} {idx.size}" for s, idx in stage_indices.items()))
    options = _avca_options(config, class_split.dataset)
    seeds = []
    for seed in config.seeds:
        folder = Path(config.out) / f"seed_{seed}"
        stage1, best_epoch, stage1_epochs = _train_stage1(config, options, seed, folder, {
            "store": config.store, "train_splits": _STAGE1_TRAIN, "val_splits": _STAGE1_VAL})
        stage2 = _train_stage2(config, options, seed, folder, best_epoch, stage1_epochs, {
            "store": config.store, "train_splits": _STAGE2_TRAIN})
        test = ClipSet.of(store.identity, np.concatenate([stage_indices[s] for s in _TEST]))
        validation = None
        if config.calibrated_stacking:
            val = np.concatenate([stage_indices[s] for s in _STAGE1_VAL])
            validation = _validation(stage1, store, val, "stage_1_val", test, config)
        model, info = _load(stage2, config)
        scores = score_clips(model, info, store, test.parts[0][1], info.decision_rule, config.batch_size,
                             config.device)
        seen_names = class_split.stages["stage_2_test_seen"]
        unseen_names = class_split.stages["stage_2_test_unseen"]
        _warn_untrained(seen_names, info)
        evaluation = evaluate_gzsl(scores, seen_names, unseen_names, ClassEmbedder(info), validation, config.betas,
                                   config.beta_rule)
        metrics = {"protocol": "avca", "dataset": class_split.dataset, "split": class_split.split,
                   **gzsl_metrics(evaluation)}
        seeds.append(_finish_seed(config, seed, folder, best_epoch, metrics, evaluation, info, stage1))
    return _finish(config, f"AVCA {class_split.dataset} {class_split.split}", seeds, clips)


def run_mzsl_protocol(config: MZSLProtocolConfig) -> ProtocolResult:
    """The MZSL-50 protocol for every seed; writes `<out>/seed_<s>/...`, `metrics.json`, `summary.md`.

    Raises:
        FileNotFoundError: a missing store or groups file.
        InputError: evaluation classes or files that overlap the training side (`workflows.leaks`; unless
            `allow_overlap`), classes without a group, options the protocol owns, a stage folder of `out` holding a
            run with other settings.
    """
    from features.store import DONE, TokenStore

    groups = read_groups(config.groups)
    train_store = TokenStore.open(config.train_store)
    eval_store = TokenStore.open(config.eval_store)
    eval_indices = eval_store.indices(DONE)
    if not eval_indices.size:
        raise InputError(f"{eval_store.path}: no done clips to evaluate")
    eval_classes = sorted(set(eval_store.labels[eval_indices].tolist()))
    ungrouped = sorted(set(eval_classes) - set(groups))
    if ungrouped:
        raise InputError(f"{config.groups}: no difficulty group for evaluation classes {ungrouped[:5]}")
    test_indices = np.zeros(0, np.int64)
    if config.test_split is not None:
        test_indices = train_store.indices(DONE, [config.test_split])
        if not test_indices.size:
            raise InputError(f"{train_store.path}: no done clips of test split {config.test_split!r} (the GZSL seen "
                             f"part); splits: {sorted(set(train_store.splits.tolist()))}")
    train_indices = train_store.indices(DONE, list(config.train_splits))
    clips = _coverage({"train": train_indices.size, "test": test_indices.size, "eval": eval_indices.size},
                      {"train": train_store.indices(None, list(config.train_splits)).size,
                       "test": train_store.indices(None, [config.test_split]).size if config.test_split else 0,
                       "eval": eval_store.num_clips})
    options = dict(config.train)
    overlaps = _check_leaks(config, options, eval_store, eval_indices, train_store, train_indices)
    seeds = []
    for seed in config.seeds:
        folder = Path(config.out) / f"seed_{seed}"
        stage1 = None
        if config.val_unseen_fraction > 0:
            stage1, best_epoch, stage1_epochs = _train_stage1(config, options, seed, folder, {
                "store": config.train_store, "train_splits": config.train_splits,
                "val_unseen_fraction": config.val_unseen_fraction, "val_seen_fraction": config.val_seen_fraction})
        else:
            best_epoch = stage1_epochs = int(options.get("epochs", _default_epochs()))
        stage2 = _train_stage2(config, options, seed, folder, best_epoch, stage1_epochs, {
            "store": config.train_store, "train_splits": config.train_splits})
        model, info = _load(stage2, config)
        rule = info.decision_rule
        scores = score_clips(model, info, eval_store, eval_indices, rule, config.batch_size, config.device)
        evaluated = scores.clips
        if test_indices.size:
            seen = score_clips(model, info, train_store, test_indices, rule, config.batch_size, config.device)
            stray = sorted(set(seen.labels.tolist()) - set(info.class_names))
            if stray:
                raise InputError(f"test split {config.test_split!r} has classes the head never trained on: {stray[:5]}")
            scores = seen.concat(scores)
            evaluated = scores.clips
        validation = None
        if config.calibrated_stacking:
            held = _holdout_indices(stage1, train_store)
            validation = _validation(stage1, train_store, held, "stage_1_holdout", evaluated, config)
        evaluation = evaluate_gzsl(scores, info.class_names, eval_classes, ClassEmbedder(info), validation,
                                   config.betas, config.beta_rule)
        metrics = {"protocol": "mzsl", **gzsl_metrics(evaluation)}
        per_class = {r["class"]: r["zsl_acc"] for r in metrics["per_class"] if r["split"] == "unseen" and r["clips"]}
        metrics.update(group_scores(per_class, groups))
        seeds.append(_finish_seed(config, seed, folder, best_epoch, metrics, evaluation, info, stage1))
    return _finish(config, "MZSL-50", seeds, clips, overlaps)


def _check_leaks(config: MZSLProtocolConfig, options: dict, eval_store, eval_indices: np.ndarray, train_store,
                 train_indices: np.ndarray) -> list[leaks.Overlap]:
    """The evaluation set's overlaps with the training side (`workflows.leaks`), before any training.

    Raises:
        InputError: an evaluation class spelled exactly as a training class (never evaluable as unseen), or any
            overlap without `allow_overlap`.
    """
    from text.class_embeddings import load_embedding_source

    eval_classes = sorted(set(eval_store.labels[eval_indices].tolist()))
    train_classes = sorted(set(train_store.labels[train_indices].tolist()))
    identical = sorted(set(eval_classes) & set(train_classes))
    if identical:
        raise InputError(f"evaluation classes {identical[:5]} are training classes of the benchmark; MZSL classes "
                         "must be unseen")
    spec = _train_config(config, options, config.seeds[0], Path(config.out), {"store": config.train_store}
                         ).embedding_spec
    source = load_embedding_source(spec.text, name_map=spec.name_map, normalise=spec.normalise, missing=spec.missing,
                                   peer_text_order=spec.peer_text_order)
    files = [{str(store.clip_ids[i]): str(store.paths[i]) for i in indices}
             for store, indices in ((eval_store, eval_indices), (train_store, train_indices))]
    overlaps = leaks.find_overlaps(eval_classes, train_classes, files[0], files[1], source, config.near_duplicates)
    if overlaps and not config.allow_overlap:
        raise InputError(leaks.overlap_message(overlaps) + "; remove them, or set `allow_overlap=True` to run anyway "
                         "(they are recorded in metrics.json and summary.md)")
    if overlaps:
        logger.warning("running with %s", leaks.overlap_message(overlaps))
    return overlaps


# --- stages -----------------------------------------------------------------------------------------------


def _avca_options(config: AVCAProtocolConfig, dataset: str) -> dict[str, Any]:
    """Training options: the user's, with the peers' class embeddings (AVCA's fastText table) by default."""
    from fusion.config import embedding_settings
    from text.class_embeddings import EmbeddingSpec

    options = dict(config.train)
    if "embeddings" not in options:
        options["embeddings"] = f"avca:{dataset.lower()}"
        for key, value in embedding_settings(options["embeddings"]).items():
            options.setdefault(key, value)
    elif not EmbeddingSpec.parse(str(options["embeddings"])).is_table:
        options.setdefault("name_map", splits.name_map_path(dataset))  # AVCA's hand-edited names, as it embedded
    return options


def _default_epochs() -> int:
    from fusion.config import TrainConfig

    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "epochs")


def _train_config(config, options: dict, seed: int, out: Path, data: dict[str, Any]):
    from fusion.config import train_config_from_options

    values = {**options, **data, "out": out, "seed": seed, "device": config.device}
    return train_config_from_options(values, preset=config.preset, ablations=tuple(config.ablations))


def _train_or_continue(stage_config):
    """Train a stage's run, or continue the one an interrupted protocol left in its folder (`train` with `resume`:
    a finished run is checked and reused, an interrupted one resumes from last.pt, an empty one starts).

    Raises:
        InputError: the folder holds a run with other settings (they are named).
    """
    from fusion.run_dir import changed_settings, read_run_config
    from fusion.trainer import train

    out = Path(stage_config.out)
    if (out / "config.json").is_file():
        changed = changed_settings(read_run_config(out)["train"], stage_config)
        if changed:
            raise InputError(f"{out}: holds this protocol's run with other settings ({', '.join(changed)}); rerun "
                             f"with the settings recorded in {out / 'config.json'}, or choose another `out`")
    return train(dataclasses.replace(stage_config, resume=out.is_dir() and any(out.iterdir())))


def _train_stage1(config, options: dict, seed: int, folder: Path,
                  data: dict[str, Any]) -> tuple[Path, int, int]:
    """Train with validation; return the run folder, the epoch of its best validation score and its epochs."""
    stage_config = _train_config(config, options, seed, folder / "stage1", data)
    if not stage_config.has_validation:
        raise InputError("stage 1 needs a validation part to choose the epoch")
    summary = _train_or_continue(stage_config)
    if summary.best_epoch is None:
        raise InputError(f"{folder / 'stage1'}: stage 1 selected no epoch (no validation score)")
    logger.info("seed %d stage 1: best epoch %d by %s %.4f", seed, summary.best_epoch, summary.best_metric,
                summary.best_score)
    return folder / "stage1", int(summary.best_epoch), stage_config.epochs


def _train_stage2(config, options: dict, seed: int, folder: Path, epochs: int, schedule_epochs: int,
                  data: dict[str, Any]) -> Path:
    """Retrain on training + validation clips, without validation (nothing left to select).

    As AVCA's stage 2 (`get_evaluation.py`): stage 1's whole schedule (`schedule_epochs`), and the checkpoint at
    the selected epoch; training stops there, since later epochs cannot change it.
    """
    stage_config = _train_config(config, {**options, "epochs": epochs, "schedule_epochs": schedule_epochs}, seed,
                                 folder / "stage2", data)
    assert not stage_config.has_validation  # stage 2 measures nothing, so it can select nothing
    _train_or_continue(stage_config)
    return folder / "stage2"


def _load(run_dir: Path, config, checkpoint: str = "last"):
    from fusion.trained_run import load_run

    return load_run(run_dir, checkpoint, config.device)


def _validation(stage1: Path | None, store, indices: np.ndarray, name: str, evaluated: ClipSet,
                config) -> ValidationSplit:
    """Stage-1 validation clips scored by stage 1's best checkpoint: where beta is chosen."""
    if stage1 is None:
        raise InputError("calibrated stacking needs stage 1 (its validation clips choose beta)")
    model, info = _load(stage1, config, "best")
    scores = score_clips(model, info, store, indices, info.decision_rule, config.batch_size, config.device)
    # AVCA's stages by the roles the protocol states for them; any other split by its name.
    return ValidationSplit.build(scores, name, info.class_names, evaluated, SplitRoles(splits.STAGE_ROLES))


def _holdout_indices(stage1: Path | None, store) -> np.ndarray:
    """Clip indices of the stage-1 run's validation clips (held-out classes and clips) in `store`."""
    if stage1 is None:
        raise InputError("calibrated stacking needs stage 1 (its validation clips choose beta)")
    recorded = json.loads((stage1 / "classes.json").read_text(encoding="utf-8"))["validation"]
    return np.flatnonzero(np.isin(store.clip_ids, recorded["clip_ids"]))


def _warn_untrained(seen_names, info) -> None:
    untrained = sorted(set(seen_names) - set(info.class_names))
    if untrained:
        logger.warning("%d seen classes have no training clip in the store (e.g. %s); they stay candidates",
                       len(untrained), untrained[:3])


# --- outputs ----------------------------------------------------------------------------------------------


def _finish_seed(config, seed: int, folder: Path, best_epoch: int, metrics: dict, evaluation, info,
                 stage1: Path | None) -> SeedResult:
    from fusion.run_dir import read_log

    stage1_log = read_log(stage1 / "log.jsonl") if stage1 is not None else []
    selected = stage1_log[best_epoch - 1]["val"] if stage1_log else None  # the trainer's record of the epoch
    metrics = {
        "label": Path(config.out).name,
        "seed": seed,
        "group": _group_key(config),
        "rule": info.decision_rule,
        "checkpoint": "last (stage 2)",
        "stage2_epochs": best_epoch,
        "peer_text_order": info.peer_text_order,
        "stage1_selection": None if selected is None else {
            "epoch": best_epoch, "metric": selected["selection"],
            "score": EvalResult.from_json(selected).percent(selected["selection"]),
            "validation": "stage-1 validation clips"},
        "config": config.to_dict(),
        **metrics,
    }
    header, rows = gzsl_rows(evaluation)
    write_outputs(folder / "test", metrics, header, rows, evaluation, ClassEmbedder(info), config.plots)
    beta = evaluation.calibrated.beta if evaluation.calibrated is not None else None
    return SeedResult(seed=seed, folder=folder, best_epoch=best_epoch, beta=beta, metrics=metrics)


def _finish(config, title: str, seeds: list[SeedResult], clips: dict[str, dict[str, int]],
            overlaps: Sequence[leaks.Overlap] | None = None) -> ProtocolResult:
    """Pool the seeds into metrics.json and summary.md; `overlaps` (MZSL's leak check) are recorded in both."""
    out = Path(config.out)
    pooled: dict[str, Any] = {"label": out.name, "protocol": seeds[0].metrics["protocol"], "title": title,
                              "clips": clips,
                              "group": _group_key(config), "seeds": [s.seed for s in seeds],
                              "stage2_epochs": [s.best_epoch for s in seeds], "betas": [s.beta for s in seeds],
                              "seed_runs": [str(s.folder.relative_to(out) / "test") for s in seeds], "std": {},
                              "peer_text_order": seeds[0].metrics["peer_text_order"],
                              "config": config.to_dict()}
    per_seed = [report.column_values(s.metrics) for s in seeds]
    for key in _HEADLINE:
        values = [columns[key] for columns in per_seed]
        if all(v is not None for v in values):
            pooled[key] = float(np.mean(values))
            pooled["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    groups_note = ""
    if "groups" in seeds[0].metrics:  # MZSL: the groups are the evaluation set's, the same for every seed
        pooled["groups"] = {g: v["classes"] for g, v in seeds[0].metrics["groups"].items()}
        present = [g for g, n in pooled["groups"].items() if n]
        pooled.update({f"mzsl_{g}": None for g, n in pooled["groups"].items() if not n})  # stated, not omitted
        groups_note = ("Difficulty groups: " + ", ".join(f"{g} {n} classes" if n else f"{g}: no classes"
                                                         for g, n in pooled["groups"].items())
                       + f"; the averages are over {', '.join(present) or 'no group'}.\n\n")
    overlap_note = ""
    if overlaps is not None:
        pooled["overlaps"] = [dataclasses.asdict(o) for o in overlaps]
        overlap_note = ("Leak check: no overlap with the training side.\n\n" if not overlaps else
                        f"Leak check: run with allow_overlap; {len(overlaps)} overlap(s) with the training side:\n\n"
                        + "".join(f"- {o.describe()}\n" for o in overlaps) + "\n")
    rows = report.comparison_rows([(str(s.folder / "test"), s.metrics) for s in seeds])
    used = ", ".join(f"{part} {c['used']:,} of {c['listed']:,}" for part, c in clips.items())
    write_texts({out / "metrics.json": json_text(pooled),
                 out / "summary.md": f"# {title}\n\nClips used (done clips of the store, of those its lists name): "
                                     f"{used}.\n\n" + groups_note + overlap_note + report.comparison_markdown(rows)})
    return ProtocolResult(out=out, metrics=pooled, seeds=tuple(seeds))


def _group_key(config) -> str:
    """Protocols that differ only in their seeds share this key: what they compute (`affects_result`), the seeds
    left out, and of the training options those a resume compares."""
    values = {k: v for k, v in result_values(type(config), config.to_dict()).items() if k != "seeds"}
    return report.group_key({**values, "train": result_values(TrainConfig, values["train"])})
