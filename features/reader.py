"""Stream batches of cached tokens from a store to the trainer, by clip index, with read-ahead.

By default nothing is loaded whole: each batch reads its clips' token bytes (from their shards, by byte range) in a
background thread while the trainer works on the previous batch; the one-value-per-clip fields (`has_audio`,
`audio_frames`) are read once per reader. A step reads only what it uses: with
`set_epoch(epoch, views=...)` one view per clip instead of all V, and with `float16=True` the tokens stay fp16
until the consumer's device converts them (`pin_memory` for non_blocking copies to a GPU). With `resident` the
clips' tokens are read once onto a device and every batch is gathered there (`resident_fits` says when they fit).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from features.store import TokenStore

__all__ = ["TokenBatch", "BatchReader", "resident_bytes", "resident_fits", "free_bytes"]

_END = object()


@dataclass(frozen=True)
class TokenBatch:
    """A batch of cached tokens as the reader hands it to the trainer and to inference (CPU tensors).

    A field the reader was not asked for is None.

    Shapes:
        index (B,) int64: clip indices in the store. video_tokens (B, V, Nv, Dv), or (B, Nv, Dv) when the
        reader was given one view per clip. audio_tokens (B, Na, Da). Tokens are float32, or float16 with
        `float16=True`. has_audio (B,) bool. kinetics_logits (B, V, K) float32. audio_frames (B,) int32.
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
        fields: store fields to read (default: all token fields).
        float16: hand fp16 tokens over as fp16 (the consumer converts them on its device); False: float32.
        pin_memory: put batches in pinned host memory, so that copies to a GPU can be non_blocking.
        resident: read every clip of `indices` once onto this device and gather batches there (no read-ahead);
            the batches' tensors are then on that device.
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
        float16: bool = False,
        pin_memory: bool = False,
        resident: torch.device | None = None,
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
        self.float16 = float16
        self.pin_memory = pin_memory
        self.epoch = 0
        self._views: list[np.ndarray] | None = None
        self._resident: dict[str, torch.Tensor] | None = None
        self._row_of_clip: torch.Tensor | None = None
        # One-value-per-clip fields, read once for all the reader's clips at the first iteration: per batch, their
        # Zarr reads cost about as much as the batch's tokens. Indexed by clip index; None: not read yet.
        self._scalars: dict[str, np.ndarray] | None = None
        if resident is not None:
            self._resident = _read_onto(store, self.indices, self.fields, resident)
            row_of_clip = torch.full((store.num_clips,), -1, dtype=torch.int64)
            row_of_clip[torch.from_numpy(self.indices)] = torch.arange(len(self.indices))
            self._row_of_clip = row_of_clip.to(resident)

    def set_epoch(self, epoch: int, views: Sequence[np.ndarray] | None = None) -> None:
        """Select the epoch whose shuffled order the next iteration uses.

        Args:
            views: per batch of `batch_indices()` the view each of its clips reads (video_tokens (B, Nv, Dv));
                None: all views.
        """
        self.epoch = epoch
        self._views = None if views is None else list(views)

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
        views = self._views if self._views is not None else [None] * len(batches)
        if len(views) != len(batches):
            raise ValueError(f"views for {len(views)} batches, the epoch has {len(batches)}")
        work = list(zip(batches, views, strict=True))
        if self._resident is not None:
            yield from (self._gather(index, view) for index, view in work)
            return
        if self._scalars is None:
            names = [name for name in self.fields if name in self.store.scalar_fields]
            columns = {}
            for name, values in (self.store.read(self.indices, names) if names else {}).items():
                columns[name] = np.zeros(self.store.num_clips, dtype=values.dtype)
                columns[name][self.indices] = values
            self._scalars = columns
        if self.prefetch <= 0:
            yield from (self._read(index, view) for index, view in work)
        else:
            yield from _read_ahead(lambda item: self._read(*item), work, self.prefetch)

    def _read(self, index: np.ndarray, views: np.ndarray | None) -> TokenBatch:
        values = self.store.read(index, [f for f in self.fields if f not in self._scalars
                                         and (views is None or f != "video_tokens")])
        values.update((name, column[index]) for name, column in self._scalars.items())
        if views is not None and "video_tokens" in self.fields:
            values["video_tokens"] = self.store.read_views(index, views)
        tensors = {}
        for name, array in values.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if tensor.dtype == torch.float16 and not self.float16:
                tensor = tensor.float()
            tensors[name] = tensor.pin_memory() if self.pin_memory else tensor
        return TokenBatch(index=torch.from_numpy(index.copy()), **tensors)

    def _gather(self, index: np.ndarray, views: np.ndarray | None) -> TokenBatch:
        """A batch from the device-resident tokens: an index on the device, no host copy."""
        rows = self._row_of_clip[torch.from_numpy(index).to(self._row_of_clip.device)]
        tensors = {}
        for name, values in self._resident.items():
            if name == "video_tokens" and views is not None:
                tensor = values[rows, torch.from_numpy(views).to(rows.device)]  # (n, V, Nv, Dv) -> (B, Nv, Dv)
            else:
                tensor = values[rows]
            tensors[name] = tensor.float() if tensor.dtype == torch.float16 and not self.float16 else tensor
        return TokenBatch(index=torch.from_numpy(index.copy()), **tensors)


def _read_onto(store: TokenStore, indices: np.ndarray, fields: Sequence[str], device: torch.device,
               clips_per_read: int = 1024) -> dict[str, torch.Tensor]:
    """The clips' fields as tensors on `device`, read a slice of clips at a time (host memory stays one slice)."""
    shapes = store.field_shapes()
    out = {name: torch.empty((len(indices), *shapes[name][1]), device=device,
                             dtype=torch.from_numpy(np.empty(0, dtype=shapes[name][0])).dtype) for name in fields}
    for start in range(0, len(indices), clips_per_read):
        for name, values in store.read(indices[start:start + clips_per_read], fields).items():
            out[name][start:start + len(values)] = torch.from_numpy(np.ascontiguousarray(values)).to(device)
    return out


def resident_bytes(store: TokenStore, clips: int, fields: Sequence[str]) -> int:
    """Bytes that `clips` clips of `fields` take on a device as the store holds them (fp16 tokens stay fp16)."""
    shapes = store.field_shapes()
    return clips * sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                       for name, (dtype, shape) in shapes.items() if name in fields)


def resident_fits(needed_bytes: int, free: int, share: float) -> bool:
    """Whether a resident store of `needed_bytes` fits in `share` of `free` device bytes (leaving the rest to the
    model, its activations and the optimiser)."""
    return needed_bytes <= share * free


def free_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device (`torch.cuda.mem_get_info`); of the host for the CPU (available pages)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _read_ahead(read, batches: list, depth: int) -> Iterator[TokenBatch]:
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
