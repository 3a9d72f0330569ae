"""Where clips are decoded for the backbones: a pool of worker processes (the default) or of threads.

A decode worker turns a media file into a `PreparedClip`: the decoded frames (uint8) and which of them each view
shows, the fbank, the counts the store records, and on a CPU device the views themselves. A clip that cannot be
used comes back as its `MediaError` (picklable), never as an exception, so one bad file never stops a batch.

Processes, because decode threads share the GIL with the thread that drives the GPU and writes the store: next
to a busy GPU thread a decode thread ran about 3x slower (BENCHMARKS.md). The workers fork from a forkserver that
has already imported this module (torch, PyAV), so a pool starts in about a second and no worker inherits a
CUDA context; torch's tensors come back through shared memory (torch.multiprocessing's pickling), not the pipe.
A process that is itself daemonic (a Dask Nanny's worker, unless `distributed.worker.daemon` is False) cannot
start children: the pool then decodes in threads and says so once in the log.

A decode process that dies (a crash in a codec, the OOM killer) fails the `extract_many` call with
`BrokenExecutor`; the extractor drops the pool, so the runner records that block and goes on with a new one,
where a crash in a decode thread would have ended the whole run.

Threads (`decode_in="threads"`) remain for tiny runs and tests, where the process start-up is most of the work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from common.media import MediaError, Segment
from common.processes import become_worker
from extract import backbones, views
from extract.config import ExtractConfig
from extract.decode import decode_clip

__all__ = ["PreparedClip", "DecodePool", "prepare_clip"]

logger = logging.getLogger(__name__)
_OWNER_POLL_S = 1.0  # how often a decode process checks that its owner is alive


@dataclass
class PreparedClip:
    """One decoded clip ready for the backbones: its views (made by the decode worker on a CPU device), or the
    frames the device makes them from."""

    path: Path
    views: torch.Tensor | None  # (V, 3, T, S, S) float32 when made by the decode worker (CPU device)
    frames: torch.Tensor | None  # (N, H, W, 3) uint8: the distinct frames the views show; None once the worker
    # made the views (not sent back through shared memory: nothing reads them then)
    frame_index: torch.Tensor  # (temporal_views, T) rows of `frames`
    fbank: torch.Tensor | None  # (S, F) float32; None without audio
    audio_frames: int  # fbank frames that hold audio (the rest is padding)
    decoded_s: float | None  # seconds decoded of a partial file; None: the whole clip

    @property
    def device_bytes(self) -> int:
        """Bytes this clip sends to the backbones' device: the frames (or the views made from them) and the fbank."""
        pixels = self.views if self.views is not None else self.frames
        return pixels.nbytes + (self.fbank.nbytes if self.fbank is not None else 0)


def prepare_clip(path: Path, segment: Segment | None, config: ExtractConfig, make_views: bool
                 ) -> PreparedClip | MediaError:
    """Decode one clip and compute its fbank (and its views when `make_views`); a bad clip gives its MediaError."""
    try:
        clip = decode_clip(path, config.video, config.audio, segment=segment, strict=config.strict_media,
                           scale_frames=config.frame_scaling == "decoder")
    except MediaError as error:
        return error
    frames = torch.from_numpy(clip.frames)
    if config.frame_scaling == "worker":
        frames = views.resize_frames(frames, config.video)
    frame_index = torch.from_numpy(clip.frame_index)
    made = None
    if make_views:
        made = views.make_views(frames, frame_index, config.video, *backbones.pixel_statistics(config.video))
        frames = None
    fbank, valid = None, 0
    if clip.has_audio:
        fbank, valid = backbones.audio_input(torch.from_numpy(clip.audio), config.audio)
    return PreparedClip(path, made, frames, frame_index, fbank, valid, clip.duration_s if clip.partial else None)


class DecodePool:
    """`workers` clips decoded at once, in processes (`mode="processes"`) or threads (`mode="threads"`).

    Args:
        config: the extraction settings the clips are decoded with.
        workers: clips decoded concurrently (one process or thread each; codecs run single-threaded).
        mode: "processes" or "threads" (see the module docstring).
        make_views: make the views in the worker (a CPU device) instead of on the device.
    """

    def __init__(self, config: ExtractConfig, workers: int, mode: str, make_views: bool) -> None:
        self._config = config
        self._make_views = make_views
        if mode == "processes" and multiprocessing.current_process().daemon:
            logger.warning("decoding in %d threads, not processes: this process is daemonic (a Dask Nanny worker "
                           "without `distributed.worker.daemon: False`) and cannot start child processes", workers)
            mode = "threads"
        self.mode = mode
        self._executor: Executor = (
            ProcessPoolExecutor(workers, mp_context=_forkserver(), initializer=_start_worker, initargs=(os.getpid(),))
            if mode == "processes" else ThreadPoolExecutor(workers, thread_name_prefix="mzst-decode"))

    def submit(self, path: Path, segment: Segment | None) -> Future:
        """Start decoding one clip; the future gives a `PreparedClip` or the clip's `MediaError`."""
        return self._executor.submit(prepare_clip, path, segment, self._config, self._make_views)

    def close(self) -> None:
        """Stop the workers (clips not yet started are dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # the server imports torch and PyAV once; each worker forks from it
    return context


def _start_worker(owner_pid: int) -> None:
    """A decode process runs one torch thread (parallelism comes from the number of processes) and ends when the
    process that owns the pool is gone: after a SIGKILL of the owner nothing else would end it, since every worker
    holds the task queue's write end and so never reads end-of-file. Ctrl-C is the owner's to handle
    (`common.processes.become_worker`): the owner closes the pool, or its death ends the worker."""
    become_worker()
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(owner_pid,), name="mzst-owner-watch", daemon=True).start()


def _exit_with(owner_pid: int) -> None:
    while _alive(owner_pid):
        time.sleep(_OWNER_POLL_S)
    os._exit(0)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs: it exists and, where /proc tells, is not a zombie (dead, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
