"""A command run in its own session, for the tests that signal it and then look for processes it left behind.

Every process the command starts (pool workers, Dask nannies' workers, forkservers) inherits its session, so
once the command has exited any process of that session still running is a survivor (read from /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_command(*arguments: str) -> subprocess.Popen:
    """`python cli.py ARGUMENTS` in a session of its own (its pid is the session's and the group's id)."""
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *arguments], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def session_processes(session: int) -> dict[int, str]:
    """The running processes (not zombies) of a session: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):  # ended while read
            continue
    return found


def wait_for_workers(process: subprocess.Popen, marker: str, count: int, timeout_s: float = 120) -> dict[int, str]:
    """Wait until `count` processes of the command's session have `marker` in their command line; returns them.
    A command that ends first or takes too long fails the test, its session ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = {pid: line for pid, line in session_processes(process.pid).items() if marker in line}
        if len(workers) >= count:
            return workers
        if process.poll() is not None:
            end_session(process)
            raise AssertionError(f"the command ended before its workers started (exit {process.returncode})")
        time.sleep(0.1)
    end_session(process)
    raise AssertionError(f"no {count} worker processes with {marker!r} after {timeout_s} s")


def survivors(process: subprocess.Popen, grace_s: float = 10.0) -> dict[int, str]:
    """The processes of the (exited) command's session still running after `grace_s` seconds at most."""
    deadline = time.monotonic() + grace_s
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return session_processes(process.pid)


def end_session(process: subprocess.Popen) -> None:
    """Kill whatever of the command's session is left, one process at a time (a failed test's clean-up)."""
    for pid in session_processes(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate()


def stop_and_collect(process: subprocess.Popen, stop: signal.Signals, after: float = 0.0) -> str:
    """Send `stop` after `after` seconds (SIGINT to the whole group, as a terminal's Ctrl-C; other signals to the
    command), wait for the command to end, check that no process of its session survives; returns its stderr."""
    try:
        time.sleep(after)
        if stop == signal.SIGINT:
            os.killpg(process.pid, stop)
        else:
            process.send_signal(stop)
        _, err = process.communicate(timeout=120)
        assert survivors(process) == {}
    finally:
        end_session(process)
    return err
