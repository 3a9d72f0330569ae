"""Ending a command on Ctrl-C / SIGTERM (common.errors.interruptible) and ending its workers (common.processes)."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.errors import interruptible
from common.processes import worker_pool


def test_a_signal_ends_the_command_through_its_finally_blocks_in_one_line(monkeypatch, capsys):
    cleaned, before = [], signal.getsignal(signal.SIGTERM)

    def command(signal_number):
        try:
            os.kill(os.getpid(), signal_number)
            time.sleep(30)
        finally:
            cleaned.append(signal_number)

    monkeypatch.setattr(sys, "orig_argv", ["python", "cli.py", "--threads", "2", "train-fusion", "--out", "run 1"])
    with pytest.raises(SystemExit) as ended:
        interruptible(command, {"train-fusion": "--resume", "demo": ""})(signal.SIGTERM)
    assert ended.value.code == 128 + signal.SIGTERM and cleaned == [signal.SIGTERM]
    assert capsys.readouterr().err == ("Interrupted (SIGTERM); rerun the same command to resume: python cli.py "
                                       "--threads 2 train-fusion --out 'run 1' --resume\n")
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the command's only
    monkeypatch.setattr(sys, "orig_argv", ["python", "cli.py", "zeroshot", "--run", "demo"])  # does not resume
    with pytest.raises(SystemExit) as ended:
        interruptible(command, {"train-fusion": "--resume", "demo": ""})(signal.SIGINT)
    assert ended.value.code == 130 and capsys.readouterr().err == "Interrupted (SIGINT)\n"


def _children_running(marker: str) -> list[int]:
    """This process's children whose command line holds `marker` and that still run."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            mine = int(fields[1]) == os.getpid() and fields[0] != "Z"
            if mine and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_a_worker_pool_left_by_an_exception_ends_its_workers_at_once():
    with pytest.raises(RuntimeError, match="stop"):
        with worker_pool(2, multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(time.sleep, 30) for _ in range(6)]  # three rounds of 30 s for two workers
            while not all(future.running() for future in futures[:2]):
                time.sleep(0.05)
            assert len(_children_running("spawn_main")) == 2
            raise RuntimeError("stop")  # as Ctrl-C or SIGTERM would, through `common.errors.interruptible`
    assert _children_running("spawn_main") == []
    # the running sleeps were cut short, not waited for (a wait would have let them return None)
    assert not any(future.done() and not future.cancelled() and future.exception() is None for future in futures)
    assert futures[-1].cancelled()  # queued work is dropped, not run



_ORPHAN_SCRIPT = """
import multiprocessing, os, pathlib, sys, time
from common.processes import become_worker

def late_worker(folder):
    time.sleep(1.0)  # still starting when the parent dies
    pathlib.Path(folder, "started").touch()
    become_worker()
    pathlib.Path(folder, "survived").touch()  # reached only by a worker that outlived its parent

if __name__ == "__main__":
    multiprocessing.get_context("spawn").Process(target=late_worker, args=(sys.argv[1],)).start()
    time.sleep(0.2)
    os._exit(0)  # as SIGKILL would: no clean-up, and the starting child is re-parented
"""


def test_a_worker_whose_parent_died_while_it_started_ends_itself(tmp_path):
    (tmp_path / "orphan.py").write_text(_ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, str(tmp_path / "orphan.py"), str(tmp_path)], env=env, check=True, timeout=60)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "started").exists(), "the orphaned worker never started"
    time.sleep(2.0)  # become_worker takes milliseconds; a surviving worker has touched its file by now
    assert not (tmp_path / "survived").exists()
