"""The training loop of the fusion head: `train(config)` trains on a token store and writes a run directory.

It reads top to bottom: plan the data (`fusion.plan`), start or resume the run directory (`fusion.run_dir`),
build the model, optimiser and schedule, then per epoch `train_one_epoch`, `evaluate` on the validation clips
and `save_epoch`. Every `log_every_steps` steps a log line gives the loss and its parts, the learning rate, the
data and step time and the samples per second.

Reproducibility: every source of randomness of an epoch (data order, view draws, word masks, dropout) is
seeded from (seed, epoch), so a resumed run repeats exactly what an uninterrupted one does on the same
machine and thread count.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from common.progress import progress_bar
from common.threads import apply_thread_plan, plan_threads
from eval import metrics
from features.reader import BatchReader, free_bytes, resident_bytes, resident_fits
from fusion.config import TrainConfig
from fusion.curves import TrainingCurves
from fusion.epoch import EpochStats, StepTimer, check_finite, epoch_seeds
from fusion.heads import ComparisonHead
from fusion.heads.training import HeadTraining
from fusion.losses import FusionLoss, LossWeights, kinetics_class, loss_weights, se_targets
from fusion.model import FusionModel, build_model, count_parameters
from fusion.plan import TrainingPlan, ValidationSet, embedding_permutation, plan_training
from fusion.predict import clip_scores, predict_embeddings, resolve_device, to_device
from fusion.run_dir import checkpoint_payload, claim_run_folder, holds_run_lease, save_epoch, start_run
from text.vocabulary import mask_words

__all__ = ["TrainSummary", "EpochStats", "ClassTargets", "train", "train_or_reuse", "train_one_epoch", "evaluate",
           "scaled_lr"]

logger = logging.getLogger(__name__)
_PARTS = ("loss", "task", "se", "mlm")  # the losses summed on the device, in this order


@dataclass(frozen=True)
class TrainSummary:
    """What a training run produced."""

    run_dir: Path
    epochs: int  # epochs completed in total
    train_clips: int
    val_clips: int
    num_classes: int
    best_epoch: int | None  # None without validation
    best_metric: str | None  # the `EvalResult` field that selected it: `select_by`, "zsl" or "seen_accuracy"
    best_score: float | None  # a fraction
    last_metrics: metrics.EvalResult | None  # the last epoch's validation (None without validation)


@dataclass(frozen=True)
class ClassTargets:
    """Per-class tensors the training step looks up by label.

    Shapes:
        label_of_clip (n,) int64: class id per clip index of the store, -1 for other clips. class_embeddings
        (C, E) on the device: the SE targets (permuted among the classes in the control run).
        kinetics_embeddings (400, E) on the device. class_text_ids (C, L) [CLS_T, words, PAD...].
        kinetics_of_clip (n,) int64: s_v per clip index (-1 for other clips), as the store recorded it at
        extraction (or computed once from its Kinetics logits) so that no step reads them (None without the Kinetics
        SE target).
    """

    label_of_clip: torch.Tensor
    class_embeddings: torch.Tensor
    kinetics_embeddings: torch.Tensor | None
    class_text_ids: torch.Tensor | None
    kinetics_of_clip: torch.Tensor | None = None

    @classmethod
    def of(cls, config: TrainConfig, plan: TrainingPlan, device: torch.device) -> ClassTargets:
        label_of_clip = torch.full((plan.store.num_clips,), -1, dtype=torch.int64)
        label_of_clip[torch.from_numpy(plan.clips.train_indices)] = torch.from_numpy(plan.clips.train_labels)
        class_embeddings, kinetics = plan.classes.class_embeddings, plan.classes.kinetics_embeddings
        if config.shuffle_class_embeddings:  # the control: class c is taught the name embedding of class perm[c]
            class_embeddings = class_embeddings[embedding_permutation(config, len(plan.clips.class_names))]
        kinetics_of_clip = None
        if kinetics is not None:
            kinetics_of_clip = torch.full((plan.store.num_clips,), -1, dtype=torch.int64)
            recorded = plan.store.kinetics_classes(plan.clips.train_indices)  # one array, not a file per clip
            if recorded is not None:
                kinetics_of_clip[torch.from_numpy(plan.clips.train_indices)] = torch.from_numpy(recorded)
            else:  # a store made before s_v was recorded at extraction: from every clip's logits
                for start in range(0, plan.clips.train_indices.size, 4096):  # a slice at a time: bounded memory
                    index = plan.clips.train_indices[start:start + 4096]
                    logits = torch.from_numpy(plan.store.read(index, ["kinetics_logits"])["kinetics_logits"])
                    kinetics_of_clip[torch.from_numpy(index)] = kinetics_class(logits)
        return cls(label_of_clip=label_of_clip, class_embeddings=torch.from_numpy(class_embeddings).to(device),
                   kinetics_embeddings=torch.from_numpy(kinetics).to(device) if kinetics is not None else None,
                   class_text_ids=plan.classes.class_text_ids, kinetics_of_clip=kinetics_of_clip)


@holds_run_lease  # one training per run folder: a second one stops, naming this process
def train(config: TrainConfig) -> TrainSummary:
    """Train the fusion head on a token store and write the run directory `config.out`.

    Raises:
        FileNotFoundError: a missing store, class list or embedding file.
        FileExistsError: `out` exists and is not empty, without resume.
        InputError: the store and the class list / embedding source / run disagree, a validation split that is
            test data, an impossible configuration (e.g. the Kinetics SE target on a store without Kinetics logits).
        features.lease.LeaseHeldError: another process trains into `out` (the message names it).
        FloatingPointError: the loss became NaN or infinite (the message names the batch's clip ids).
    """
    plan = plan_training(config)
    resumed = start_run(config, plan)
    device = resolve_device(config.device)
    apply_thread_plan(plan_threads(1 if config.prefetch_batches else 0))  # torch beside the read-ahead thread
    torch.manual_seed(config.seed)
    heads = None  # a comparison head's training (`fusion.heads.training`); None: the MZST head's
    if config.method == "mzst":
        model, optimizer, scheduler, reader, forward = _mzst_training(config, plan, device)
    else:
        heads = HeadTraining.start(config, plan, device)
        model, optimizer, scheduler = heads.head, heads.optimizer, heads.scheduler
    targets = ClassTargets.of(config, plan, device)
    loss_fn = FusionLoss()
    start_epoch, step, best, last_metrics = 1, 0, {"epoch": None, "metric": None, "score": None, "rank": None}, None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start_epoch, step, best = int(resumed["epoch"]) + 1, int(resumed["step"]), dict(resumed["best"])
        last_metrics = metrics.EvalResult.from_json(resumed["metrics"]) if resumed["metrics"] else None
        logger.info("resuming %s after epoch %d (step %d)", config.out, start_epoch - 1, step)
    validation = plan.clips.validation
    logger.info("training %s: %d clips, %d classes, %d validation clips, %d parameters, %s", config.out,
                plan.clips.train_indices.size, len(plan.clips.class_names),
                0 if validation is None else validation.indices.size, count_parameters(model), device)

    curves = TrainingCurves(config.out)
    for epoch in range(start_epoch, config.epochs + 1):
        weights = loss_weights(config.fusion, epoch) if heads is None else None
        started = time.perf_counter()
        if heads is None:
            stats = train_one_epoch(
                model, reader, optimizer, scheduler, loss_fn, targets, weights, epoch=epoch, seed=config.seed,
                device=device, grad_clip_norm=config.grad_clip_norm, progress=config.progress,
                log_every_steps=config.log_every_steps, description=f"epoch {epoch}/{config.epochs}", forward=forward,
            )
        else:
            stats = heads.train_epoch(
                targets.class_embeddings, plan.store, epoch=epoch, seed=config.seed, batch_size=config.batch_size,
                grad_clip_norm=config.grad_clip_norm, progress=config.progress,
                log_every_steps=config.log_every_steps, description=f"epoch {epoch}/{config.epochs}")
        step += stats.steps
        last_metrics = None if validation is None else evaluate(
            model, validation, plan.classes.validation_embeddings, plan.classes.kinetics_embeddings,
            config.fusion.decision_rule, config.eval_batch_size, device)
        candidate = None if last_metrics is None else _best_record(epoch, last_metrics, config.select_by)
        is_best = candidate is not None and (best["rank"] is None or candidate["rank"] > best["rank"])
        if is_best:
            best = candidate
        if heads is not None:  # the plateau schedule steps on the score that selects best.pt
            heads.after_validation(None if candidate is None else candidate["score"])
        # log.jsonl's `val` and the checkpoint's `metrics`: the result's JSON form, and the field that ranked it
        val = {} if candidate is None else {**last_metrics.to_json(), "selection": candidate["metric"]}
        payload = checkpoint_payload(config, plan, model, optimizer, scheduler, epoch=epoch, step=step, best=best,
                                     metrics=val)
        save_epoch(config.out, _log_line(epoch, step, stats, weights, val, best, started), payload, is_best)
        _log_epoch(epoch, config.epochs, stats, val)
        curves.after_epoch()

    curves.draw()

    return TrainSummary(
        run_dir=config.out, epochs=config.epochs, train_clips=int(plan.clips.train_indices.size),
        val_clips=0 if validation is None else int(validation.indices.size),
        num_classes=len(plan.clips.class_names), best_epoch=best["epoch"], best_metric=best["metric"],
        best_score=best["score"], last_metrics=last_metrics,
    )


def _mzst_training(config: TrainConfig, plan: TrainingPlan, device: torch.device):
    """The MZST head (seeded before), its AdamW, its warmup schedule per step, the training reader and the
    (compiled) forward."""
    model = build_model(config.fusion, plan.dims).to(device)
    optimizer = torch.optim.AdamW(model.parameter_groups(config.weight_decay), lr=scaled_lr(config),
                                  fused=device.type == "cuda")
    forward = torch.compile(model, dynamic=False) if config.compile else model
    reader = _training_reader(config, plan, device)
    schedule_epochs = config.schedule_epochs or config.epochs
    factor = functools.partial(_lr_factor, steps_per_epoch=len(reader), total_steps=schedule_epochs * len(reader),
                               config=config)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), reader, forward


def train_or_reuse(config: TrainConfig) -> str:
    """Train `config` into its run folder, reusing what is there: returns "reused", "resumed" or "trained".

    A finished run with the same settings (`fusion.run_dir.run_state`) is reused, a partial one resumed; a folder
    holding another run is deleted and trained anew, so use it only for folders the caller owns (the demo's,
    the ablation's).
    """
    state = claim_run_folder(config)
    if state == "finished":
        logger.info("reusing the finished run %s", config.out)
        return "reused"
    train(dataclasses.replace(config, resume=state == "partial"))
    return "resumed" if state == "partial" else "trained"


def _best_record(epoch: int, result: metrics.EvalResult, select_by: str) -> dict[str, Any]:
    """The epoch as the best-epoch record holds it: the field that selects (`EvalResult.selection`), its score
    (a fraction) and the rank that orders epochs: the score, then ZSL (raw HM is often 0 for many epochs), then
    the earliest epoch."""
    selection = result.selection(select_by)
    score = getattr(result, selection)
    return {"epoch": epoch, "metric": selection, "score": score, "rank": [score, result.zsl or 0.0]}


def _log_line(epoch: int, step: int, stats: EpochStats, weights: LossWeights | None, val: dict[str, Any],
              best: dict[str, Any], started: float) -> dict[str, Any]:
    """One line of log.jsonl (a comparison head has no MZST loss weights, and its own loss parts at the end)."""
    return {
        "epoch": epoch, "step": step, "lr": stats.lr, "loss": stats.loss, "loss_task": stats.task,
        "loss_se": stats.se, "loss_mlm": stats.mlm, "weight_task": None if weights is None else weights.task,
        "weight_se": None if weights is None else weights.se, "weight_mlm": None if weights is None else weights.mlm,
        "val": val, "best_epoch": best["epoch"], "clips": stats.clips,
        "samples_per_s": stats.samples_per_s, "data_time_s": stats.data_time_s,
        "step_time_s": stats.step_time_s, "epoch_time_s": time.perf_counter() - started,
        **{f"loss_{name}": value for name, value in stats.parts.items()},
    }


def _log_epoch(epoch: int, epochs: int, stats: EpochStats, val: dict[str, Any]) -> None:
    summary = ", ".join(f"{k} {v:.2f}" for k, v in val.items() if isinstance(v, float))
    parts = stats.parts or {"task": stats.task, "se": stats.se, **({} if stats.mlm is None else {"mlm": stats.mlm})}
    logger.info("epoch %d/%d: loss %.4f (%s) %.1f clips/s%s", epoch, epochs, stats.loss,
                ", ".join(f"{k} {v:.4f}" for k, v in parts.items()), stats.samples_per_s,
                f"; val {summary}" if summary else "")


# --- one epoch ---------------------------------------------------------------------------------------------


def scaled_lr(config: TrainConfig) -> float:
    """The peak lr for the run's batch size: `lr` at `lr_reference_batch` clips, scaled by `lr_batch_scaling`:
    "sqrt" multiplies it by sqrt(batch / reference) (the square-root rule for Adam-type optimisers), "linear" by
    batch / reference (Goyal et al.'s rule for SGD), "none" keeps it."""
    ratio = config.batch_size / config.lr_reference_batch
    return config.lr * {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[config.lr_batch_scaling]


def _training_reader(config: TrainConfig, plan: TrainingPlan, device: torch.device) -> BatchReader:
    """The training clips' reader: fp16 tokens, pinned for a GPU, held on the device when `resident_store` says so
    ("auto": when they fit in `resident_share` of the device's free memory, on CUDA only)."""
    fields = ("video_tokens", "audio_tokens", "has_audio")  # s_v comes from `ClassTargets.kinetics_of_clip`
    indices = plan.clips.train_indices
    resident = config.resident_store == "on"
    if config.resident_store == "auto" and device.type == "cuda":
        needed, free = resident_bytes(plan.store, indices.size, fields), free_bytes(device)
        resident = resident_fits(needed, free, config.resident_share)
        logger.info("training tokens %s the device: %.2f GB against %.0f%% of %.2f GB free", "held on" if resident
                    else "streamed to", needed / 1e9, 100 * config.resident_share, free / 1e9)
    return BatchReader(plan.store, indices, config.batch_size, shuffle=True, seed=config.seed,
                       prefetch=config.prefetch_batches, fields=fields, float16=True,
                       pin_memory=device.type == "cuda" and not resident, resident=device if resident else None)


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
    forward: Any = None,
) -> EpochStats:
    """Train the model on one pass over `reader`'s clips.

    The step never waits for the device: the losses add up on it and are read, with the finiteness check
    (`check_finite`), every `log_every_steps` steps and at the end; step time comes from CUDA events on a GPU.
    `forward` is the model's (possibly compiled) forward; default: the model.

    Raises:
        InputError: a batch holds NaN or inf tokens (the clips and arrays named).
        FloatingPointError: the loss became NaN or infinite on finite tokens (names the batch's clip ids).
    """
    config = model.config
    forward = model if forward is None else forward
    dropout_seed, view_seed, mask_seed = epoch_seeds(seed, epoch)
    torch.manual_seed(dropout_seed)
    view_generator = torch.Generator().manual_seed(view_seed)
    mask_generator = torch.Generator().manual_seed(mask_seed)
    use_mlm = weights.mlm > 0 and targets.class_text_ids is not None
    # The views are drawn up front, batch by batch as the step used to draw them, so that the reader reads only
    # the one view each clip trains on ("mean" needs them all).
    views = None
    if config.view_mode == "ensemble":
        v = reader.store.token_layout.views
        reader.set_epoch(epoch)
        views = [torch.randint(v, (len(b),), generator=view_generator).numpy() for b in reader.batch_indices()]
    reader.set_epoch(epoch, views=views)
    model.train()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, task, se, mlm, each times the batch size
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # the first step whose loss was not finite
    recent: dict[int, torch.Tensor] = {}  # step -> clip indices, for the steps since the last check
    clips = steps = 0
    data_time = 0.0
    timer = StepTimer(device)
    bar = progress_bar(len(reader), description, "batches", enabled=progress, leave=False)
    iterator = iter(reader)
    try:
        while True:
            start = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                break
            data_time += time.perf_counter() - start
            timer.start()
            labels = targets.label_of_clip[batch.index.cpu()]  # (B,)
            assert not bool((labels < 0).any()), "a batch holds a clip that is not a training clip"
            text_inputs = mlm_targets = None
            if use_mlm:
                text_inputs, mlm_targets = mask_words(targets.class_text_ids[labels], config.mlm_mask_probability,
                                                      mask_generator)
                text_inputs, mlm_targets = to_device(text_inputs, device), to_device(mlm_targets, device)
            video = to_device(batch.video_tokens, device)  # (B, Nv, Dv) one view per clip, or (B, V, Nv, Dv)
            if config.view_mode == "mean":
                video = video.mean(dim=1)  # (B, V, Nv, Dv) -> (B, Nv, Dv)
            kinetics_pred = (to_device(targets.kinetics_of_clip[batch.index], device)
                             if targets.kinetics_embeddings is not None else None)
            labels = to_device(labels, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                output = forward(video, to_device(batch.audio_tokens, device), to_device(batch.has_audio, device),
                                 text_inputs)
            target = se_targets(labels, targets.class_embeddings, kinetics_pred, targets.kinetics_embeddings)
            parts = loss_fn(output, labels, target, weights, mlm_targets)
            steps += 1
            recent[steps] = batch.index
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(parts.total.detach()), steps, first_bad)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
            optimizer.step()
            scheduler.step()
            timer.stop()
            b = len(batch)
            clips += b
            mlm = parts.mlm.detach() if parts.mlm is not None else torch.zeros((), device=device)
            sums += torch.stack([parts.total.detach(), parts.task.detach(), parts.se.detach(), mlm]).double() * b
            bar.update()
            if steps % log_every_steps == 0 or steps == len(reader):
                check_finite(first_bad, recent, reader.store, epoch)
                recent.clear()
                shown = {k: f"{v / clips:.3f}" for k, v in zip(_PARTS, sums.tolist(), strict=True)
                         if k != "mlm" or use_mlm}
                bar.set_postfix(shown, refresh=False)
                if steps % log_every_steps == 0:
                    step_time = timer.total()
                    logger.info("epoch %d step %d/%d: loss %s (%s) lr %.3g, data %.3f s, step %.3f s, %.1f clips/s",
                                epoch, steps, len(reader), shown["loss"],
                                ", ".join(f"{k} {v}" for k, v in shown.items() if k != "loss"),
                                optimizer.param_groups[0]["lr"], data_time / steps, step_time / steps,
                                clips / max(data_time + step_time, 1e-9))
    finally:
        bar.close()
    if not clips:
        raise InputError("the epoch had no batches: no training clips")
    check_finite(first_bad, recent, reader.store, epoch)
    loss, task, se, mlm = (v / clips for v in sums.tolist())
    step_time = timer.total()
    return EpochStats(
        loss=loss, task=task, se=se, mlm=mlm if use_mlm else None, clips=clips, steps=steps,
        lr=float(optimizer.param_groups[0]["lr"]), data_time_s=data_time, step_time_s=step_time,
        samples_per_s=clips / max(data_time + step_time, 1e-9),
    )


# --- validation ----------------------------------------------------------------------------------------------


def evaluate(
    model: FusionModel | ComparisonHead,
    validation: ValidationSet,
    class_embeddings: np.ndarray,
    kinetics_embeddings: np.ndarray | None,
    rule: str,
    batch_size: int,
    device: torch.device,
) -> metrics.EvalResult:
    """ZSL / GZSL on the validation classes only (`eval.metrics.validation_result`).

    The candidates are the validation classes: all training (seen) classes plus the validation-unseen ones.

    Shapes:
        class_embeddings (C_val, E), kinetics_embeddings (400, E)
    """
    # validation candidates start with the training classes in TASK-logit order (fusion.plan): ConSE's classes
    predictions = predict_embeddings(model, validation.store, validation.indices, batch_size, device,
                                     class_embeddings=class_embeddings[validation.seen_ids])
    # the distances evaluation takes (a comparison head's class space and branches), not a copy of them
    scores = clip_scores(model, predictions, validation.store, validation.indices, rule,
                         kinetics_embeddings if rule == "kinetics" else None)
    distances = scores.distances(class_embeddings)  # (N, C_val)
    return metrics.validation_result(distances, validation.labels, validation.seen_ids, validation.unseen_ids)
