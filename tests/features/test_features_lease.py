"""The store lease: one extract per store, holder named, stale leases taken over, waiting, read-only stores."""

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import psutil
import pytest

from features.lease import LeaseHeldError, LeaseHolder, StoreLease, lease_path


def _foreign(store, host, heartbeat_age_s, pid=1, process_started=0.0):
    now = time.time()
    holder = LeaseHolder(host=host, pid=pid, process_started=process_started, started=now - 3600,
                         heartbeat=now - heartbeat_age_s, token="f" * 32)
    lease_path(store).write_text(json.dumps(asdict(holder)))


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


def test_stale_leases_are_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    _foreign(store, "another-machine", heartbeat_age_s=5)  # alive elsewhere: its heartbeat is fresh
    with pytest.raises(LeaseHeldError, match="host another-machine, pid 1, .* last heartbeat 5 s ago"):
        StoreLease(store, timeout_s=30).__enter__()
    _foreign(store, "another-machine", heartbeat_age_s=31)  # silent for longer than the timeout
    with StoreLease(store, timeout_s=30) as taken:
        assert json.loads(lease_path(store).read_text())["token"] == taken.holder.token
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _foreign(store, socket.gethostname(), heartbeat_age_s=0, pid=gone.pid)  # this host, its process is gone
    with StoreLease(store, timeout_s=30) as taken:
        assert taken.holder.pid != gone.pid
    # pid 1 runs, but started before the recorded process did: a reused pid.
    _foreign(store, socket.gethostname(), heartbeat_age_s=0, pid=1,
             process_started=psutil.Process(1).create_time() + 50)
    with StoreLease(store, timeout_s=30):
        pass
    assert not list(tmp_path.glob(".*"))  # no temporary or moved-aside files left


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
