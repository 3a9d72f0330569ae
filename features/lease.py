"""One writer per folder at a time, across processes and machines: a lease file the writer holds while it runs.

`Lease` guards any folder; `StoreLease` is the token store's (one `extract` per store), and the trainer's run
folder has its own (`fusion.run_dir.RunLease`: one training per run folder). Each differs only in its words.

`<STORE>.lease` (next to the store, like its failures CSV) is a JSON `LeaseHolder`: host, pid, the process's
start time, when the lease was taken, its last heartbeat and a random token. It appears complete or not at all:
written to a temporary file, then hard-linked into place, which fails when the name exists (atomic on local
disks and on NFS). The holder renews the heartbeat every quarter of the timeout from a thread and deletes the
file when it ends. Another `extract` of the store finds the file and stops with one line naming the holder, or,
with `wait`, polls until the lease is free.

A lease is stale, and is taken over, when its heartbeat is older than the timeout (the holder died on any host,
or lost the file system), or at once when its host is this host and its process is gone (no such pid, or a pid
reused by a later process: psutil's process start time differs). The Dask workers of a run hold no lease: they
write the blocks that the lease holder hands them.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from common.errors import InputError
from common.files import sibling_temporary, write_json

__all__ = ["LeaseHeldError", "LeaseHolder", "Lease", "StoreLease", "lease_path"]

logger = logging.getLogger(__name__)


class LeaseHeldError(InputError):
    """Another process holds the lease (the message names it)."""


@dataclass(frozen=True)
class LeaseHolder:
    """What the lease file records about its holder (times are Unix seconds)."""

    host: str
    pid: int
    process_started: float  # the holder process's start time (tells a reused pid from the holder)
    started: float  # when the lease was taken
    heartbeat: float  # last renewal
    token: str  # random, tells this lease from a later one of the same process

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"host {self.host}, pid {self.pid}, since {started}, last heartbeat {now - self.heartbeat:.0f} s ago"


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
        me = psutil.Process()
        now = time.time()
        mine = LeaseHolder(host=socket.gethostname(), pid=os.getpid(), process_started=me.create_time(),
                           started=now, heartbeat=now, token=uuid.uuid4().hex)
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
            if self._is_stale(holder):
                logger.warning("%s: taking over the stale lease of %s", self.path, holder.describe(time.time()))
                _take_over(self.path, holder.token)
                continue
            if not self.wait:
                raise LeaseHeldError(f"{self.path.with_suffix('')}: another {self.writer} is running on this "
                                     f"{self.kind} ({holder.describe(time.time())}); let it finish, or "
                                     f"{self.alternative} (a holder that died is taken over {self.timeout_s:.0f} s "
                                     "after its last heartbeat)")
            if not announced:
                logger.info("%s: waiting for the lease held by %s", self.path, holder.describe(time.time()))
                announced = True
            time.sleep(self.poll_s)

    def _is_stale(self, holder: LeaseHolder) -> bool:
        if time.time() - holder.heartbeat > self.timeout_s:
            return True
        if holder.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(holder.pid).create_time() - holder.process_started) > 1.0
        except psutil.NoSuchProcess:
            return True

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
        return LeaseHolder(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


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
