"""Worker processes that end with the command that started them.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group, workers included: each worker would
print its own KeyboardInterrupt traceback while the main process ends anyway. So a worker ignores SIGINT
(`become_worker`) and the main process, which turns SIGINT and SIGTERM into `common.errors.Interrupted`, ends
its workers on the way out: a process pool through `worker_pool` (queued work cancelled, workers terminated at
once instead of finishing every queued job), a Dask cluster through its `close()` in a `finally` block.

A main process killed outright (SIGKILL, the OOM killer) runs no `finally` block. Then the kernel ends the
workers: `become_worker` asks Linux for SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), so that no
worker is re-parented and left running. Dask's own worker processes already exit when their nanny's pipe
closes, so its preload (`dask_setup`) only makes them ignore SIGINT.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

__all__ = ["become_worker", "dask_setup", "worker_pool", "process_exists"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def become_worker() -> None:
    """Set up a worker process (a pool's `initializer`): Ctrl-C is the main process's to handle, SIGTERM ends the
    worker at once (a forked worker would otherwise inherit the main process's handler), and it dies with its
    parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":  # elsewhere a pool's workers are ended by the pool's own shutdown only
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.debug("prctl(PR_SET_PDEATHSIG) failed (errno %d): this worker outlives a killed parent",
                         ctypes.get_errno())
        # A parent killed while this worker was still starting (imports take seconds on a loaded machine) died
        # before the request above existed: the worker was re-parented and would run on, holding the command's
        # output pipes open. Linux sends no signal for that past death, so look. (The parent's pipe, not
        # `os.getppid()`: a forkserver's workers are children of the fork server, not of the command.)
        parent = multiprocessing.parent_process()
        if parent is not None and not parent.is_alive():
            os._exit(1)


def dask_setup(worker: object) -> None:
    """Dask's preload hook (`distributed.worker.preload: ["common.processes"]`): the worker ignores Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def worker_pool(workers: int, context: BaseContext) -> Iterator[ProcessPoolExecutor]:
    """A process pool of `workers` processes that `become_worker`; leaving the block by an exception (Ctrl-C,
    SIGTERM, an error) cancels the queued work and terminates the workers at once, rather than waiting, as
    `ProcessPoolExecutor`'s own exit does, for every job already submitted to finish."""
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=become_worker)
    try:
        yield pool
    except BaseException:
        for process in list((pool._processes or {}).values()):  # no public handle before 3.14's terminate_workers
            process.terminate()
        # Then wait for the pool's manager thread, which sees its workers gone and ends: one left running at exit
        # makes Python's exit hook write to its closed wake-up pipe (a traceback after the command's last line).
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def process_exists(pid: int) -> bool:
    """Whether a process `pid` exists in this process's pid namespace (POSIX; an ended, unreaped one too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
