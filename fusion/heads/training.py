"""How the comparison heads train, as AVCA-GZSL trains them: per-clip vectors, class-balanced batches, epochs of
`n_batches` steps, Adam (the head's `optimizer`) and a plateau schedule on the validation score.

The trainer (`fusion.trainer.train`) owns the run: planning, the run folder, validation, best.pt, the log. It asks
this module for what differs from MZST's training: `HeadTraining.start` builds the head, its optimiser, its
schedule and the training clips' vectors; `HeadTraining.train_epoch` runs one epoch; `HeadTraining.after_validation`
steps the schedule.

- Per-clip inputs: the tokens of every training clip are reduced once (the head's `clip_inputs`: the per-clip vectors
  of `fusion.heads.inputs`, or a temporal head's time steps) and kept on the device, as AVCA-GZSL keeps its
  per-clip features; a step gathers its batch from them.
- Class-balanced batches (AVCA-GZSL `src/sampler.py`, alpha 1, "random"): each clip of a batch is drawn with
  replacement with probability 1 / (C n_c), so every class is equally likely whatever its size; an epoch is
  `n_batches` such batches, not a pass over the clips. Each clip comes with a negative, a clip of another class
  (AVCA-GZSL's `ContrastiveDataset`), for the methods whose triplets need one.
- The schedule: `torch.optim.lr_scheduler.ReduceLROnPlateau` ("max", `plateau_patience`, `plateau_factor`) on the
  validation score that selects best.pt (`TrainConfig.select_by`; AVCA-GZSL steps on the validation HM after its
  beta sweep, our default `calibrated_gzsl_hm`). A run without validation keeps its lr.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from common.progress import progress_bar
from common.settings import check_fields, setting
from features.reader import BatchReader
from features.store import TokenStore
from fusion.config import TrainConfig
from fusion.epoch import EpochStats, StepTimer, check_finite, epoch_seeds
from fusion.heads import create_head
from fusion.heads.head import ClipBatch, ComparisonHead
from fusion.heads.inputs import store_steps
from fusion.plan import TrainingPlan
from fusion.predict import to_device

__all__ = ["PEER_TRAINING", "HeadTrainingConfig", "HeadTraining", "balanced_batches"]

logger = logging.getLogger(__name__)

# The training settings AVCA-GZSL's run scripts give every method on every dataset (`main.py`, `src/args.py`,
# `run_scripts/*-GZSL/*.sh`): 50 epochs, Adam at lr 1e-3 without weight decay, batches of 256, no gradient clipping.
# Values of `fusion.config.TrainConfig` fields; a method's recipe may change them (AVCA: weight decay, batch size).
PEER_TRAINING: dict[str, Any] = {"epochs": 50, "lr": 1e-3, "batch_size": 256, "weight_decay": 0.0,
                                 "grad_clip_norm": 0.0}


@dataclass(frozen=True)
class HeadTrainingConfig:
    """The training settings every comparison head has (each method's config extends it)."""

    n_batches: int = setting(500, help="Class-balanced batches per epoch (AVCA-GZSL's `n_batches`).")
    plateau_patience: int = setting(3, help="Epochs without a better validation score before the lr drops.")
    plateau_factor: float = setting(0.1, help="The lr's factor at each drop (ReduceLROnPlateau).")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.n_batches < 1 or self.plateau_patience < 0:
            raise InputError(f"n_batches must be >= 1 and plateau_patience >= 0, got {self.n_batches}, "
                             f"{self.plateau_patience}")
        if not 0 < self.plateau_factor < 1:
            raise InputError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")


def balanced_batches(labels: np.ndarray, batch_size: int, n_batches: int, seed: int,
                     epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """An epoch's class-balanced batches, each clip with a negative: rows of `labels`, drawn with replacement.

    A clip: a class drawn uniformly, then a clip of it uniformly (every class equally likely, whatever its size).
    Its negative, as AVCA-GZSL's `ContrastiveDataset` pairs them: a class drawn uniformly among the other classes,
    then a clip of it uniformly. A function of (seed, epoch) only, so a resumed run draws what an uninterrupted one
    does.

    Shapes:
        labels (n,) class ids -> n_batches x ((batch_size,) rows, (batch_size,) negative rows) into labels
    """
    rng = np.random.default_rng([seed, epoch, 1])
    classes, inverse = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise InputError(f"class-balanced training needs clips of 2 or more classes, got {classes.size}")
    rows_of_class = [np.flatnonzero(inverse == k) for k in range(classes.size)]
    sizes = np.array([rows.size for rows in rows_of_class])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    by_class = np.concatenate(rows_of_class)  # rows grouped by class, class k at offsets[k]

    def clip_of(picked: np.ndarray) -> np.ndarray:  # a clip of each picked class, uniformly
        return by_class[offsets[picked] + (rng.random(picked.shape) * sizes[picked]).astype(np.int64)]

    picked = rng.integers(classes.size, size=(n_batches, batch_size))  # a class per draw, uniformly
    rows = clip_of(picked)
    other = (picked + rng.integers(1, classes.size, size=picked.shape)) % classes.size  # uniformly another class
    negatives = clip_of(other)
    return list(zip(rows, negatives, strict=True))


@dataclass
class HeadTraining:
    """A comparison head's training state: the head, its optimiser and schedule, the training clips' vectors.

    Shapes:
        video (n, Dv), audio (n, Da): the per-clip inputs of the n training clips (a temporal head's (n, T, D)), on
        the device; labels (n,) int64 class ids; indices (n,) their clip indices in the store.
    """

    head: ComparisonHead
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    video: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray

    @classmethod
    def start(cls, config: TrainConfig, plan: TrainingPlan, device: torch.device) -> HeadTraining:
        """Build the head of `config.method` (seed torch first), its optimiser and schedule, and the vectors of the
        planned training clips."""
        layout = plan.store.token_layout
        extracted = layout.source == "extracted"
        # settings the store fixes (a temporal head's crops and audio bands) are the store's, whatever was given
        fixed = {key: value for key, value in store_steps(layout).items() if key in config.head}
        head = create_head(config.method, {**config.head, **fixed}, plan.dims, extracted).to(device)
        optimizer = head.optimizer(config.lr, config.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=head.config.plateau_factor,
                                                               patience=head.config.plateau_patience)
        indices = plan.clips.train_indices
        video, audio = _clip_inputs(plan.store, indices, head, config.eval_batch_size, device)
        labels = torch.from_numpy(plan.clips.train_labels).to(device)
        return cls(head=head, optimizer=optimizer, scheduler=scheduler, video=video, audio=audio, labels=labels,
                   indices=indices)

    def after_validation(self, score: float | None) -> None:
        """Step the plateau schedule on the epoch's validation score (the one that selects best.pt)."""
        if score is not None:
            self.scheduler.step(score)

    def train_epoch(self, class_embeddings: torch.Tensor, store: TokenStore, *, epoch: int, seed: int, batch_size: int,
                    grad_clip_norm: float, progress: bool, log_every_steps: int, description: str = "") -> EpochStats:
        """One epoch: `n_batches` class-balanced batches, each a step of the head's losses.

        Args:
            class_embeddings: phi of the training classes (C, E) on the device (permuted in the control run).
            store: the training store (to name the clips of a batch whose loss is not finite).

        Raises:
            InputError: a batch holds NaN or inf tokens (the clips named).
            FloatingPointError: the loss became NaN or infinite on finite tokens.
        """
        head, device = self.head, self.video.device
        torch.manual_seed(epoch_seeds(seed, epoch)[0])  # dropout
        batches = balanced_batches(self.labels.cpu().numpy(), batch_size, head.config.n_batches, seed, epoch)
        head.train()
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        recent: dict[int, torch.Tensor] = {}
        timer = StepTimer(device)
        clips = 0
        bar = progress_bar(len(batches), description, "batches", enabled=progress, leave=False)
        try:
            for step, (rows, negative_rows) in enumerate(batches, start=1):
                timer.start()
                batch = self._batch(rows)
                losses = head.training_losses(batch, self._batch(negative_rows), class_embeddings)
                recent[step] = torch.from_numpy(self.indices[rows])
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(losses.total.detach()), step, first_bad)
                self.optimizer.zero_grad(set_to_none=True)
                losses.total.backward()
                if grad_clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(head.parameters(), grad_clip_norm)
                self.optimizer.step()
                head.after_step(batch, class_embeddings)
                timer.stop()
                clips += rows.size
                for name, value in {"loss": losses.total, **losses.parts}.items():
                    sums[name] = sums.get(name, 0.0) + value.detach().double() * rows.size
                bar.update()
                if step % log_every_steps == 0 or step == len(batches):
                    check_finite(first_bad, recent, store, epoch)
                    recent.clear()
                    if step % log_every_steps == 0:
                        logger.info("epoch %d step %d/%d: loss %.4f lr %.3g, step %.3f s", epoch, step, len(batches),
                                    float(sums["loss"]) / clips, self.optimizer.param_groups[0]["lr"],
                                    timer.total() / step)
        finally:
            bar.close()
        means = {name: float(value) / clips for name, value in sums.items()}
        step_time = timer.total()
        return EpochStats(loss=means.pop("loss"), task=None, se=None, mlm=None, clips=clips, steps=len(batches),
                          lr=float(self.optimizer.param_groups[0]["lr"]), data_time_s=0.0, step_time_s=step_time,
                          samples_per_s=clips / max(step_time, 1e-9), parts=means)

    def _batch(self, rows: np.ndarray) -> ClipBatch:
        on_device = torch.from_numpy(rows).to(self.video.device)
        return ClipBatch(video=self.video[on_device], audio=self.audio[on_device], labels=self.labels[on_device])


def _clip_inputs(store: TokenStore, indices: np.ndarray, head: ComparisonHead, batch_size: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's per-clip inputs (`clip_inputs`) of `indices`, read a batch at a time.

    Shapes:
        (n,) -> video (n, Dv), audio (n, Da); a temporal head's (n, Tv, Dv), (n, Ta, Da)
    """
    if not indices.size:
        raise InputError(f"{store.path}: no training clips")
    reader = BatchReader(store, indices, batch_size, fields=("video_tokens", "audio_tokens", "has_audio"),
                         float16=True, prefetch=0)
    started = time.perf_counter()
    video, audio = [], []
    for batch in reader:
        v, a = head.clip_inputs(to_device(batch.video_tokens, device), to_device(batch.audio_tokens, device),
                                to_device(batch.has_audio, device))
        video.append(v)
        audio.append(a)
    logger.info("per-clip inputs of %d training clips in %.1f s", indices.size, time.perf_counter() - started)
    return torch.cat(video), torch.cat(audio)
