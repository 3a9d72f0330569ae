"""The store lease: one extract per store, holder named, stale leases taken over (at once when this host's holder
process is gone, after the heartbeat timeout otherwise), waiting, read-only stores."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from features import lease
from features.lease import LeaseHeldError, LeaseHolder, StoreLease, Verdict, judge, lease_path

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\nfrom features.lease import StoreLease\nwith StoreLease(sys.argv[1], timeout_s=3600):\n"
        "    print('held', flush=True)\n    time.sleep(120)")


def _foreign(store, host, heartbeat_age_s, pid=1, **process):
    now = time.time()
    holder = LeaseHolder(host=host, pid=pid, started=now - 3600, heartbeat=now - heartbeat_age_s, token="f" * 32,
                         **process)
    lease_path(store).write_text(json.dumps(asdict(holder)))


@contextlib.contextmanager
def _holder(store):
    """A child process holding the store's lease (timeout one hour: only the at-once rule can take it over)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_one_holder_at_a_time_named_in_one_line(tmp_path):
    store = tmp_path / "s.zarr"
    with StoreLease(store, timeout_s=30) as held:
        recorded = json.loads(lease_path(store).read_text())
        assert recorded["host"] == socket.gethostname() and recorded["token"] == held.holder.token
        with pytest.raises(LeaseHeldError) as info:
            StoreLease(store, timeout_s=30).__enter__()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{store}: another extract is running on this store")
        assert f"host {socket.gethostname()}, pid {held.holder.pid}, since " in message and "`wait`" in message
    assert not lease_path(store).exists()


def test_a_silent_holder_is_taken_over_after_the_timeout(tmp_path):
    store = tmp_path / "s.zarr"
    _foreign(store, "another-machine", heartbeat_age_s=5)  # alive elsewhere: its heartbeat is fresh
    with pytest.raises(LeaseHeldError, match="host another-machine, pid 1, .* last heartbeat 5 s ago.*; let it finish"
                       r".* \(it runs on another host: a holder that died is taken over 30 s after its last heartbeat"):
        StoreLease(store, timeout_s=30).__enter__()
    _foreign(store, "another-machine", heartbeat_age_s=31)  # silent for longer than the timeout
    with StoreLease(store, timeout_s=30) as taken:
        assert json.loads(lease_path(store).read_text())["token"] == taken.holder.token
    assert not list(tmp_path.glob(".*"))  # no temporary or moved-aside files left


@pytest.mark.parametrize("reaped", [True, False])
def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path, reaped):
    """SIGKILL leaves the lease file; its process gone (or ended and not yet collected by its parent), the next
    taker needs no heartbeat to age: the timeout here is an hour."""
    store = tmp_path / "s.zarr"
    with _holder(store) as child:
        alive = _read_lease(store)
        assert (alive.pid, alive.host) == (child.pid, socket.gethostname()) and alive.process is not None
        verdict = judge(alive, timeout_s=3600, now=time.time())
        assert verdict == Verdict(False, "its process runs on this host: if it dies, the lease is taken over at once")
        with pytest.raises(LeaseHeldError, match=f"pid {child.pid}, .*its process runs on this host"):
            StoreLease(store, timeout_s=3600).__enter__()
        child.kill()
        if reaped:
            child.wait()
        else:  # wait for its end without collecting it: a zombie, as under a parent that does not wait
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        verdict = judge(_read_lease(store), timeout_s=3600, now=time.time())
        assert verdict.stale and verdict.reason.startswith("its process on this host ")
        assert ("is gone" if reaped else "has ended") in verdict.reason
        with StoreLease(store, timeout_s=3600) as taken:
            assert taken.holder.pid == os.getpid()


def test_a_reused_pid_is_not_the_holder(tmp_path):
    store = tmp_path / "s.zarr"
    with StoreLease(store, timeout_s=3600) as mine:
        me = mine.holder.process
    assert me is not None
    # This process's pid, but a start time other than this process's: the holder was an earlier process.
    _foreign(store, socket.gethostname(), heartbeat_age_s=0, pid=os.getpid(), boot_id=me.boot_id,
             pid_namespace=me.pid_namespace, start_ticks=me.start_ticks - 1)
    verdict = judge(_read_lease(store), timeout_s=3600, now=time.time())
    assert verdict == Verdict(True, "its process on this host is gone (its pid now names a later process)")
    with StoreLease(store, timeout_s=3600):
        pass


def test_only_this_boot_and_pid_namespace_of_this_host_is_taken_over_at_once(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    with StoreLease(store, timeout_s=3600) as mine:
        me = mine.holder.process
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    cases = {  # a holder whose pid is gone from here; only the first is known to be dead
        "its process on this host is gone": (socket.gethostname(), asdict(me)),
        "it runs on another host": ("another-machine", asdict(me)),
        "it runs under another boot or pid namespace of this host name": (
            socket.gethostname(), asdict(me) | {"boot_id": "0" * 36}),
        "the lease does not say which process holds it": (socket.gethostname(), {}),  # an older version's lease
    }
    for reason, (host, process) in cases.items():
        _foreign(store, host, heartbeat_age_s=0, pid=dead, **process)
        verdict = judge(_read_lease(store), timeout_s=60, now=time.time())
        assert verdict.reason.startswith(reason) and verdict.stale == reason.endswith("is gone")
        if not verdict.stale:
            assert verdict.reason.endswith(": a holder that died is taken over 60 s after its last heartbeat")
    monkeypatch.setattr(lease, "_PROC", tmp_path / "no-proc")  # a platform without /proc: the heartbeat rule
    _foreign(store, socket.gethostname(), heartbeat_age_s=0, pid=dead, **asdict(me))
    with pytest.raises(LeaseHeldError, match=r"\(this system has no /proc to check its process: a holder that died"):
        StoreLease(store, timeout_s=60).__enter__()
    assert LeaseHolder(**json.loads(lease_path(store).read_text())).pid == dead


def test_an_older_versions_lease_is_read(tmp_path):
    store = tmp_path / "s.zarr"
    now = time.time()
    lease_path(store).write_text(json.dumps({"host": "h", "pid": 7, "process_started": now - 9, "started": now - 9,
                                             "heartbeat": now - 120, "token": "a" * 32}))
    with StoreLease(store, timeout_s=60) as taken:  # silent for 120 s: taken over by the heartbeat rule
        assert taken.holder.token != "a" * 32


def test_wait_queues_behind_the_holder_and_the_heartbeat_is_renewed(tmp_path):
    store = tmp_path / "s.zarr"
    first = StoreLease(store, timeout_s=0.4).__enter__()
    beat = first.holder.heartbeat
    time.sleep(0.25)
    assert json.loads(lease_path(store).read_text())["heartbeat"] > beat
    threading.Timer(0.6, first.__exit__, (None, None, None)).start()
    started = time.monotonic()
    with StoreLease(store, timeout_s=30, wait=True, poll_s=0.05) as second:
        assert time.monotonic() - started >= 0.5 and second.holder.token != first.holder.token


def test_a_read_only_store_needs_no_lease(tmp_path, read_only_copy):
    (tmp_path / "stores" / "s.zarr").mkdir(parents=True)
    store = read_only_copy(tmp_path / "stores") / "s.zarr"
    with StoreLease(store, timeout_s=30) as lease:
        assert lease.holder is None and not lease_path(store).exists()


def test_a_foreign_file_in_the_leases_place_is_one_line(tmp_path):
    store = tmp_path / "s.zarr"
    lease_path(store).write_text("not json")
    with pytest.raises(ValueError, match=r"s.zarr.lease: not a store lease \(JSONDecodeError\); delete it if no"):
        StoreLease(store, timeout_s=30).__enter__()


def _read_lease(store):
    return LeaseHolder(**json.loads(lease_path(store).read_text()))
