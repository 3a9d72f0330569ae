"""Stream batches of cached tokens from a store to the trainer, by clip index, with read-ahead.

Nothing is loaded whole: each batch reads its clips' chunks (Zarr fetches them concurrently) in a
background thread while the trainer works on the previous batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from features.store import TokenStore

__all__ = ["BatchReader"]

_END = object()


class BatchReader:
    """Batches of clips from a token store as dicts of torch tensors (docs/ARCHITECTURE.md, "Batches").

    Args:
        store: an open token store.
        indices: the clip indices to read (normally done clips only).
        batch_size: clips per batch.
        shuffle: a new order each epoch, a function of (seed, epoch) only, so runs and resumes repeat.
        seed: the shuffling seed.
        drop_last: drop a last batch smaller than `batch_size`.
        prefetch: batches read ahead in a background thread (0 reads in the caller's thread).
        fields: store fields to read (default: all token fields).

    Shapes (per batch): video_tokens (B, V, Nv, Dv) float32, audio_tokens (B, Na, Da) float32,
    kinetics_logits (B, V, K) float32, has_audio (B,) bool, audio_frames (B,) int32, index (B,) int64.
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

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = self.batch_indices()
        if self.prefetch <= 0:
            for index in batches:
                yield self._read(index)
            return
        yield from _read_ahead(self._read, batches, self.prefetch)

    def _read(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        arrays = self.store.read(index, self.fields)
        batch = {}
        for name, values in arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(values))
            batch[name] = tensor.float() if tensor.dtype == torch.float16 else tensor
        batch["index"] = torch.from_numpy(index.copy())
        return batch


def _read_ahead(read, batches: list[np.ndarray], depth: int) -> Iterator[dict[str, torch.Tensor]]:
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
