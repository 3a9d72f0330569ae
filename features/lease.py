"""One writer per folder at a time, across processes and machines: a lease file the writer holds while it runs.

`Lease` guards any folder; `StoreLease` is the token store's (one `extract` per store), and the trainer's run
folder has its own (`fusion.run_dir.RunLease`: one training per run folder). Each differs only in its words.

`<STORE>.lease` (next to the store, like its failures CSV) is a JSON `LeaseHolder`: host, pid, when the lease was
taken, its last heartbeat, a random token and, on Linux, which process the pid named (`ProcessIdentity`). It
appears complete or not at all: written to a temporary file, then hard-linked into place, which fails when the
name exists (atomic on local disks and on NFS). The holder renews the heartbeat every quarter of the timeout from
a thread and deletes the file when it ends. Another `extract` of the store finds the file and stops with one line
naming the holder and why it is not taken over, or, with `wait`, polls until the lease is free.

A lease is stale, and is taken over (`judge` decides, and its reason is logged), in two cases:
- its heartbeat is older than the timeout: the holder died on any host, or lost the file system;
- at once, when the holder ran on this host, under this boot and in this pid namespace, and its process is gone:
  no such pid, a pid that ended and waits for its parent, or a pid reused by a later process. The process is
  named by its start time in clock ticks after boot (/proc/<pid>/stat, field 22): exact, unlike a start time in
  seconds, and a pid reused within the same second still differs. The boot id and the pid namespace say that the
  ticks and the pid mean the same here as for the holder: after a reboot, in another container or on another
  machine of the same name they would not.
Everything else keeps the heartbeat rule: another host, a process this one cannot read (another user's, with
/proc hidden), a platform without /proc, and a lease written before the identity was recorded.

The Dask workers of a run hold no lease: they write the blocks that the lease holder hands them.

A hand-made lease instead of `filelock`: a lock held by a kernel (flock / fcntl) says nothing about its holder,
is not reliable across machines on network file systems, and cannot be taken over by a stale-heartbeat rule.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from common.errors import InputError
from common.files import sibling_temporary, write_json
from common.processes import process_exists

__all__ = ["LeaseHeldError", "LeaseHolder", "ProcessIdentity", "Verdict", "judge", "Lease", "StoreLease", "lease_path"]

logger = logging.getLogger(__name__)

_PROC = Path("/proc")


class LeaseHeldError(InputError):
    """Another process holds the lease (the message names it)."""


@dataclass(frozen=True)
class ProcessIdentity:
    """Which process a pid names on Linux: a pid and its start time mean one process within one boot and one pid
    namespace."""

    boot_id: str  # /proc/sys/kernel/random/boot_id: new at every boot, different on every machine
    pid_namespace: str  # the link /proc/self/ns/pid: a container has its own pids
    start_ticks: int  # /proc/<pid>/stat field 22: when the process started, in clock ticks after boot


@dataclass(frozen=True)
class LeaseHolder:
    """What the lease file records about its holder (times are Unix seconds)."""

    host: str
    pid: int
    started: float  # when the lease was taken
    heartbeat: float  # last renewal
    token: str  # random, tells this lease from a later one of the same process
    # Which process `pid` named (None: no /proc where it ran, or written before this was recorded).
    boot_id: str | None = None
    pid_namespace: str | None = None
    start_ticks: int | None = None

    @property
    def process(self) -> ProcessIdentity | None:
        if self.boot_id is None or self.pid_namespace is None or self.start_ticks is None:
            return None
        return ProcessIdentity(self.boot_id, self.pid_namespace, self.start_ticks)

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {started}, last heartbeat {now - self.heartbeat:.0f} s ago"


@dataclass(frozen=True)
class Verdict:
    """Whether a lease is stale, and why (logged on a takeover, ending the refusal otherwise)."""

    stale: bool
    reason: str


def judge(holder: LeaseHolder, timeout_s: float, now: float) -> Verdict:
    """Whether `holder`'s lease may be taken over now (the module docstring gives the rules)."""
    silent_s = now - holder.heartbeat
    if silent_s > timeout_s:
        return Verdict(True, f"no heartbeat for {silent_s:.0f} s, over the {timeout_s:.0f} s timeout")
    heartbeat_rule = f"a holder that died is taken over {timeout_s:.0f} s after its last heartbeat"
    if holder.host != socket.gethostname():
        return Verdict(False, f"it runs on another host: {heartbeat_rule}")
    recorded = holder.process
    if recorded is None:
        return Verdict(False, f"the lease does not say which process holds it: {heartbeat_rule}")
    here = _this_process()
    if here is None:
        return Verdict(False, f"this system has no /proc to check its process: {heartbeat_rule}")
    if (recorded.boot_id, recorded.pid_namespace) != (here.boot_id, here.pid_namespace):
        return Verdict(False, f"it runs under another boot or pid namespace of this host name: {heartbeat_rule}")
    stat = _process_stat(holder.pid)
    if stat is None and process_exists(holder.pid):
        return Verdict(False, f"its process on this host cannot be read from here: {heartbeat_rule}")
    if stat is None:
        return Verdict(True, "its process on this host is gone")
    state, start_ticks = stat
    if start_ticks != recorded.start_ticks:
        return Verdict(True, "its process on this host is gone (its pid now names a later process)")
    if state in ("Z", "X"):
        return Verdict(True, "its process on this host has ended (it waits for its parent to collect it)")
    return Verdict(False, "its process runs on this host: if it dies, the lease is taken over at once")


def lease_path(guarded: str | Path) -> Path:
    """`<FOLDER>.lease`, next to the folder it guards."""
    return Path(f"{Path(guarded)}.lease")


class Lease:
    """Hold the lease of a folder for the duration of a `with` block.

    Args:
        guarded: the folder (need not exist yet: creating it is writing it).
        timeout_s: a heartbeat older than this makes the lease stale (the holder renews every timeout_s / 4).
        wait: poll until the lease is free instead of raising `LeaseHeldError`.
        poll_s: seconds between polls while waiting.

    A folder on a read-only file system needs no lease (nobody can write it): entering then holds nothing.
    """

    kind = "folder"  # what the lease guards, in messages
    writer = "process"  # what holds it
    alternative = "set `wait` to queue behind it"  # what else the refused user can do

    def __init__(self, guarded: str | Path, timeout_s: float, wait: bool = False, poll_s: float = 1.0) -> None:
        self.path = lease_path(guarded)
        self.timeout_s = timeout_s
        self.wait = wait
        self.poll_s = poll_s
        self.holder: LeaseHolder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.holder = self._acquire()
        if self.holder is not None:
            self._thread = threading.Thread(target=self._renew, name="mzst-lease", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self._read()
        if self.holder is not None and current is not None and current.token == self.holder.token:
            self.path.unlink(missing_ok=True)

    def _acquire(self) -> LeaseHolder | None:
        now = time.time()
        process = _this_process()
        mine = LeaseHolder(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now,
                           token=uuid.uuid4().hex, **(asdict(process) if process is not None else {}))
        announced = False
        while True:
            try:
                if _create(self.path, mine):
                    return mine
            except OSError as error:
                if error.errno == errno.EROFS:  # nobody can write the store, so no lease is needed
                    logger.info("%s: read-only file system, no lease taken", self.path)
                    return None
                raise
            holder = self._read()
            if holder is None:  # released in between
                continue
            now = time.time()
            verdict = judge(holder, self.timeout_s, now)
            if verdict.stale:
                logger.warning("%s: taking over the lease of %s: %s", self.path, holder.describe(now), verdict.reason)
                _take_over(self.path, holder.token)
                continue
            if not self.wait:
                raise LeaseHeldError(f"{self.path.with_suffix('')}: another {self.writer} is running on this "
                                     f"{self.kind} ({holder.describe(now)}); let it finish, or "
                                     f"{self.alternative} ({verdict.reason})")
            if not announced:
                logger.info("%s: waiting for the lease held by %s (%s)", self.path, holder.describe(now),
                            verdict.reason)
                announced = True
            time.sleep(self.poll_s)

    def _renew(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            current = self._read()
            if current is None or current.token != self.holder.token:
                logger.error("%s: this run lost its lease (taken over after no heartbeat for %.0f s)", self.path,
                             self.timeout_s)
                return
            write_json(self.path, asdict(self.holder) | {"heartbeat": time.time()})

    def _read(self) -> LeaseHolder | None:
        """The lease's holder, or None when there is no lease.

        Raises:
            InputError: the file is not a lease (written by something else).
        """
        try:
            return _read(self.path)
        except (ValueError, TypeError) as error:
            raise InputError(f"{self.path}: not a {self.kind} lease ({type(error).__name__}); delete it if no "
                             f"{self.writer} is running on the {self.kind}") from error


class StoreLease(Lease):
    """One `extract` per store: `<STORE>.lease`; a refused one may queue (`wait`)."""

    kind = "store"
    writer = "extract"


def _this_process() -> ProcessIdentity | None:
    """This process's identity; None without /proc (not Linux)."""
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        pid_namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None
    stat = _process_stat(os.getpid())
    return None if stat is None else ProcessIdentity(boot_id, pid_namespace, stat[1])


def _process_stat(pid: int) -> tuple[str, int] | None:
    """The state and start time (clock ticks after boot) of process `pid`; None when /proc cannot show it (no such
    process, another user's under a /proc mounted with hidepid, no /proc)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The fields after the process name, which is in parentheses and may hold spaces and parentheses itself.
    after_name = stat[stat.rindex(")") + 2:].split()
    return after_name[0], int(after_name[19])  # fields 3 (state) and 22 (starttime) of proc(5)


def _create(path: Path, holder: LeaseHolder) -> bool:
    """Make the lease file, complete, unless one exists: write a temporary file, hard-link it into place."""
    if not path.parent.is_dir():  # the guarded folder is made after its lease: this comes first
        path.parent.mkdir(parents=True)
    temporary = sibling_temporary(path, f"tmp-{holder.token}")
    write_json(temporary, asdict(holder))
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)


def _read(path: Path) -> LeaseHolder | None:
    """The holder a lease file names, or None when there is none (ValueError, TypeError: not a lease)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(record, dict):
        raise TypeError(f"a JSON {type(record).__name__}, not an object")
    # Fields this version does not know are left out: an older version's process start time in seconds, too
    # coarse to tell a reused pid, is not trusted (its lease keeps the heartbeat rule).
    known = {field.name for field in fields(LeaseHolder)}
    return LeaseHolder(**{name: value for name, value in record.items() if name in known})


def _take_over(path: Path, stale_token: str) -> None:
    """Move the stale lease aside (rename: one taker wins); put back a fresh one moved by a lost race."""
    moved = sibling_temporary(path, f"stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return  # another process took it over first
    try:
        if _read(moved).token != stale_token:  # another taker's fresh lease: give it back
            try:
                os.link(moved, path)
            except FileExistsError:
                pass
    finally:
        moved.unlink(missing_ok=True)
