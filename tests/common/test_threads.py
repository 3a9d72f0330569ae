"""The one thread rule of every stage (common/threads.py): budget from affinity and cgroup quota, explicit wins."""

import os

import pytest
import torch

from common import threads
from common.threads import cgroup_cpu_limit, plan_threads, set_requested_threads, usable_cores


@pytest.fixture(autouse=True)
def no_explicit_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    set_requested_threads(None)


def test_cgroup_quota_caps_the_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 2  # 1.5 cores of quota: 2 threads can use it
    assert usable_cores(cpu_max) == min(2, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None and usable_cores(cpu_max) == len(os.sched_getaffinity(0))
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_threads_never_outnumber_the_cores():
    plan = plan_threads(1, cores=2)  # training on a 2-core machine: torch and the read-ahead thread
    assert (plan.torch_threads, plan.helper_threads, plan.source) == (1, 1, "cores")
    assert (plan_threads(2, cores=2).torch_threads, plan_threads(2, cores=2).helper_threads) == (1, 1)
    assert (plan_threads(8, cores=16).torch_threads, plan_threads(8, cores=16).helper_threads) == (8, 8)
    assert (plan_threads(1, cores=16).torch_threads, plan_threads(0, cores=16).torch_threads) == (15, 16)
    assert plan_threads(2, cores=16, share=4).cores == 4  # 4 worker processes: a quarter each
    for cores in range(2, 33):
        for wanted in range(0, 10):
            plan = plan_threads(wanted, cores=cores)
            assert plan.torch_threads + plan.helper_threads <= cores and plan.torch_threads >= 1


def test_an_explicit_count_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    plan = plan_threads(2, cores=4)
    assert (plan.torch_threads, plan.helper_threads, plan.source) == (3, 1, "OMP_NUM_THREADS")
    set_requested_threads(2)
    assert (plan_threads(2, cores=4).torch_threads, plan_threads(2, cores=4).source) == (2, "--threads")
    with pytest.raises(ValueError):
        set_requested_threads(0)


def test_the_plan_is_applied_to_torch():
    before = torch.get_num_threads()
    try:
        threads.apply_thread_plan(plan_threads(1, cores=3))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_on_a_gpu_torch_keeps_one_core_and_decoding_takes_the_rest():
    # torch only launches kernels there; decode processes are the CPU work (a cap of half the cores held decode back)
    plan = plan_threads(32, cores=16, torch_on_device=True)
    assert (plan.torch_threads, plan.helper_threads) == (1, 15)
    assert (plan_threads(8, cores=16, torch_on_device=True).helper_threads, plan_threads(8, cores=16).helper_threads
            ) == (8, 8)  # the cap still holds
    assert (plan_threads(8, cores=1, torch_on_device=True).torch_threads,
            plan_threads(8, cores=1, torch_on_device=True).helper_threads) == (1, 1)
    assert plan_threads(32, cores=16, share=2, torch_on_device=True).helper_threads == 7  # two GPU workers


def test_the_gpu_profiles_decode_on_every_core_but_torchs():
    from extract.config import PROFILES

    # the default cap must not be what limits decoding on a GPU machine (8 workers capped it near 55 clips/s)
    for name in ("paper", "mvit-1x5"):
        plan = plan_threads(PROFILES[name].decode_threads, cores=16, torch_on_device=True)
        assert plan.helper_threads == 15, name
