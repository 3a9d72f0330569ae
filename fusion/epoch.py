"""What one training epoch reports, and the pieces every training loop shares: its seeds, its step timer and the
check that its losses stayed finite (`fusion.trainer` for MZST, `fusion.heads.training` for the comparison heads).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from features.reader import TokenBatch
from fusion.predict import non_finite_clips

__all__ = ["EpochStats", "StepTimer", "epoch_seeds", "check_finite"]


@dataclass(frozen=True)
class EpochStats:
    """Means over one epoch's clips, and its timing."""

    loss: float
    task: float | None  # MZST's parts (None for a comparison head)
    se: float | None
    mlm: float | None
    clips: int
    steps: int
    lr: float  # the learning rate of the epoch's last step
    data_time_s: float  # waiting for batches
    step_time_s: float  # forward, backward and update
    samples_per_s: float
    parts: dict[str, float] = field(default_factory=dict)  # a comparison head's named loss terms (none for MZST)


def epoch_seeds(seed: int, epoch: int) -> list[int]:
    """Seeds of an epoch's dropout, view draws and word masks: a function of (seed, epoch) only."""
    return [int(s) for s in np.random.SeedSequence([seed, epoch]).generate_state(3)]


def check_finite(first_bad: torch.Tensor, recent: dict[int, torch.Tensor], store, epoch: int) -> None:
    """Stop the run when a step since the last check had a non-finite loss, naming that batch's clips.

    Reads one number from the device (the first bad step or -1) once per log interval, so the loop never waits
    for the GPU; a bad batch is read again to tell NaN / inf tokens (named by array and clip) from divergence.

    Raises:
        InputError: the batch's tokens hold NaN or inf.
        FloatingPointError: a loss was NaN or infinite on finite tokens.
    """
    bad = int(first_bad.item())
    if bad < 0:
        return
    index = recent.get(bad, torch.zeros(0, dtype=torch.int64))
    arrays = store.read(index.numpy(), ("video_tokens", "audio_tokens"))
    batch = TokenBatch(index=index, **{name: torch.from_numpy(np.asarray(values)) for name, values in arrays.items()})
    where = non_finite_clips(store, batch)
    if where:
        raise InputError(f"{store.path}: NaN or inf in {where}; extract those clips again")
    ids = [str(store.clip_ids[i]) for i in index.tolist()]
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    raise FloatingPointError(f"epoch {epoch} step {bad}: the loss is not finite on the batch of clips {shown}; "
                             "their tokens are finite: lower `lr`")


class StepTimer:
    """Seconds spent in steps: wall clock on the CPU; CUDA events on a GPU, read only when asked (`total`)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self.events: list[tuple[Any, Any]] = []
        self._began: Any = None

    def start(self) -> None:
        if self.cuda:
            self._began = torch.cuda.Event(enable_timing=True)
            self._began.record()
        else:
            self._began = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self._began, end))
        else:
            self.seconds += time.perf_counter() - self._began

    def total(self) -> float:
        """Step seconds so far (on a GPU this waits for the last recorded step)."""
        if self.events:
            self.events[-1][1].synchronize()
            self.seconds += sum(began.elapsed_time(end) for began, end in self.events) / 1000
            self.events.clear()
        return self.seconds
