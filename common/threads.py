"""How many threads this process runs: one rule for torch's intra-op threads and the helper threads beside them.

The budget is the cores this process may actually use: its CPU affinity (`os.sched_getaffinity`) capped by the
cgroup CPU quota (`/sys/fs/cgroup/cpu.max`, cgroup v2), not `os.cpu_count()`, which counts the whole machine. The
helpers (clip decode threads in extraction, the batch read-ahead thread in training) take their share first and
torch gets the rest, so the threads of a process never outnumber its cores: on a shared 2-core machine torch's
default of one thread per core plus the helpers made the process fight itself and every other job (BENCHMARKS.md,
threads).

An explicit choice wins: `--threads N` (`set_requested_threads`) or `OMP_NUM_THREADS` set torch's intra-op
threads to exactly that number; the helpers then share what is left of the budget. Every count is at least 1, so
a 1-core process still runs one torch thread and one helper.

When the backbones run on a GPU (`torch_on_device`), torch's thread only launches kernels: it keeps one core and
the helpers (clip decode processes, extract/decode_pool.py) take the rest of the budget, so decoding scales with the
cores instead of stopping at half of them.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThreadPlan", "usable_cores", "cgroup_cpu_limit", "set_requested_threads", "requested_threads",
           "plan_threads", "apply_thread_plan"]

logger = logging.getLogger(__name__)
_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_requested: int | None = None  # set by `cli.py --threads`


@dataclass(frozen=True)
class ThreadPlan:
    """Threads of one process: torch's intra-op threads and the helper threads that run beside them."""

    cores: int  # the budget: usable cores, or the explicit thread count when one was given
    torch_threads: int  # torch.set_num_threads
    helper_threads: int  # decode workers, processes or threads (extraction), or batch read-ahead threads (training)
    source: str  # "cores", "OMP_NUM_THREADS" or "--threads": where torch_threads came from


def cgroup_cpu_limit(cpu_max: Path = _CPU_MAX) -> int | None:
    """Cores the cgroup v2 quota allows (quota / period, rounded up), None without a quota or a cgroup file."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cores(cpu_max: Path = _CPU_MAX) -> int:
    """Cores this process may use: its affinity, capped by the cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cpu_max)
    return max(1, min(cores, limit) if limit is not None else cores)


def set_requested_threads(threads: int | None) -> None:
    """Record an explicit torch thread count for this process (`cli.py --threads`); None: back to the rule."""
    global _requested
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _requested = threads


def requested_threads() -> tuple[int | None, str]:
    """The explicit torch thread count and where it came from: `--threads`, then OMP_NUM_THREADS, else None."""
    if _requested is not None:
        return _requested, "--threads"
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value), "OMP_NUM_THREADS"
    return None, "cores"


def plan_threads(helpers_wanted: int, *, share: int = 1, cores: int | None = None,
                 torch_on_device: bool = False) -> ThreadPlan:
    """Split the cores among torch and up to `helpers_wanted` helper threads.

    Args:
        helpers_wanted: helper threads the caller would like (decode threads, read-ahead threads); 0 for none.
        share: processes dividing this machine's cores among them (Dask CPU workers), each planning its own part.
        cores: the budget (default: `usable_cores()`); tests pass it.
        torch_on_device: torch computes on a GPU, so it needs a single thread.

    Without an explicit count, helpers take at most half the budget (at least 1 when wanted) and torch the rest,
    or with `torch_on_device` torch takes one core and the helpers the rest; with an explicit count, torch takes
    exactly that and the helpers what is left (at least 1 when wanted).
    """
    budget = max(1, (usable_cores() if cores is None else cores) // max(1, share))
    explicit, source = requested_threads()
    if explicit is not None:
        helpers = min(helpers_wanted, max(1, budget - explicit)) if helpers_wanted else 0
        return ThreadPlan(cores=budget, torch_threads=explicit, helper_threads=helpers, source=source)
    helpers_cap = budget - 1 if torch_on_device else budget // 2
    helpers = min(helpers_wanted, max(1, helpers_cap)) if helpers_wanted else 0
    torch_threads = 1 if torch_on_device else max(1, budget - helpers)
    return ThreadPlan(cores=budget, torch_threads=torch_threads, helper_threads=helpers, source=source)


def apply_thread_plan(plan: ThreadPlan) -> None:
    """Set torch's intra-op threads to the plan's (a no-op when already so)."""
    import torch  # here, so that importing this module stays cheap for processes without torch

    logger.debug("threads: %d torch + %d helper on %d cores (torch's from %s)", plan.torch_threads,
                 plan.helper_threads, plan.cores, plan.source)
    if torch.get_num_threads() != plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
