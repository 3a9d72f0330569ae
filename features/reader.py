"""Stream batches of cached tokens from a store to the trainer, by clip index, with read-ahead.

Nothing is loaded whole: each batch reads its clips' chunks (Zarr fetches them concurrently) in a
background thread while the trainer works on the previous batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from features.store import TokenStore

__all__ = ["TokenBatch", "BatchReader"]

_END = object()


@dataclass(frozen=True)
class TokenBatch:
    """A batch of cached tokens as the reader hands it to the trainer and to inference (CPU tensors).

    A field the reader was not asked for is None.

    Shapes:
        index (B,) int64: clip indices in the store. video_tokens (B, V, Nv, Dv) float32. audio_tokens
        (B, Na, Da) float32. has_audio (B,) bool. kinetics_logits (B, V, K) float32. audio_frames (B,) int32.
    """

    index: torch.Tensor
    video_tokens: torch.Tensor | None = None
    audio_tokens: torch.Tensor | None = None
    has_audio: torch.Tensor | None = None
    kinetics_logits: torch.Tensor | None = None
    audio_frames: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])


class BatchReader:
    """Batches of clips from a token store as `TokenBatch`es (docs/ARCHITECTURE.md, "Batches").

    Args:
        store: an open token store.
        indices: the clip indices to read (normally done clips only).
        batch_size: clips per batch.
        shuffle: a new order each epoch, a function of (seed, epoch) only, so runs and resumes repeat.
        seed: the shuffling seed.
        drop_last: drop a last batch smaller than `batch_size`.
        prefetch: batches read ahead in a background thread (0 reads in the caller's thread).
        fields: store fields to read (default: all token fields); fp16 tokens become float32.
    """

    def __init__(
        self,
        store: TokenStore,
        indices: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        fields: Sequence[str] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prefetch = prefetch
        self.fields = tuple(fields) if fields is not None else store.fields
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffled order the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.indices), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def batch_indices(self) -> list[np.ndarray]:
        """The clip indices of each batch of the current epoch, in order."""
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, self.epoch]).permutation(len(order))]
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[TokenBatch]:
        batches = self.batch_indices()
        if self.prefetch <= 0:
            for index in batches:
                yield self._read(index)
            return
        yield from _read_ahead(self._read, batches, self.prefetch)

    def _read(self, index: np.ndarray) -> TokenBatch:
        tensors = {}
        for name, values in self.store.read(index, self.fields).items():
            tensor = torch.from_numpy(np.ascontiguousarray(values))
            tensors[name] = tensor.float() if tensor.dtype == torch.float16 else tensor
        return TokenBatch(index=torch.from_numpy(index.copy()), **tensors)


def _read_ahead(read, batches: list[np.ndarray], depth: int) -> Iterator[TokenBatch]:
    """Run `read` over `batches` in a background thread, at most `depth` batches ahead of the consumer."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for index in batches:
                if stop.is_set():
                    return
                results.put(read(index))
        except BaseException as error:  # handed to the consumer, which re-raises it
            results.put(error)
            return
        results.put(_END)

    worker = threading.Thread(target=produce, name="batch-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = results.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
