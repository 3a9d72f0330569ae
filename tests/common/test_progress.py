"""Progress off a terminal: one line per interval (done / total, rate, ETA) and a last line, never bar fragments."""

import io
import sys

import pytest

from common import progress
from common.errors import InputError
from common.progress import IntervalProgress, progress_bar


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _bar(interval_s, leave=True, total=10):
    clock, lines = _Clock(), []
    bar = IntervalProgress(total, "extract", "clips", interval_s, leave=leave, clock=clock, write=lines.append)
    return bar, clock, lines


def test_a_line_per_interval_and_one_at_the_end():
    bar, clock, lines = _bar(30)
    for at in (10, 31, 40, 61):  # seconds after the start: lines at 31 and 61, 30 s apart
        clock.now = 100 + at
        bar.update()
    assert lines == ["extract: 2 / 10 clips (20%), 0.0645 clips/s, ETA 0:02:04",
                     "extract: 4 / 10 clips (40%), 0.0656 clips/s, ETA 0:01:32"]
    clock.now = 170
    bar.update(6)  # the last step: its line is the last line
    assert len(lines) == 2
    bar.set_postfix({"loss": "0.123", "se": "0.456"}, refresh=False)
    bar.close()
    bar.close()
    assert lines[2:] == ["extract: 10 / 10 clips in 0:01:10 (0.143 clips/s), loss 0.123, se 0.456"]


def test_a_short_loop_that_vanishes_when_done_writes_nothing():
    bar, clock, lines = _bar(30, leave=False)
    clock.now += 29
    bar.update(3)
    bar.close()
    assert lines == []  # an epoch shorter than the interval: its own log line says it all
    bar, clock, lines = _bar(30, leave=False)
    clock.now += 45
    bar.update(3)
    clock.now += 5
    bar.close()
    assert lines == ["extract: 3 / 10 clips (30%), 0.0667 clips/s, ETA 0:01:45", "extract: 3 / 10 clips in 0:00:50 "
                     "(0.06 clips/s)"]  # a long one, stopped early, ends the lines it began


def test_interval_zero_writes_every_step():
    bar, clock, lines = _bar(0, total=3)
    for _ in range(3):
        bar.update()
    bar.close()
    assert [line.split(",")[0] for line in lines] == ["extract: 1 / 3 clips (33%)", "extract: 2 / 3 clips (67%)",
                                                      "extract: 3 / 3 clips in 0:00:00 (0 clips/s)"]


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("MZST_PROGRESS_INTERVAL_S", raising=False)
    assert progress.interval_s() == progress.DEFAULT_INTERVAL_S == 30
    monkeypatch.setenv("MZST_PROGRESS_INTERVAL_S", "2.5")
    assert progress.interval_s() == 2.5
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv("MZST_PROGRESS_INTERVAL_S", bad)
        with pytest.raises(InputError, match=f"MZST_PROGRESS_INTERVAL_S='{bad}': not a number of seconds >= 0"):
            progress.interval_s()


def test_a_terminal_gets_a_bar_anything_else_lines(monkeypatch, caplog):
    monkeypatch.setenv("MZST_PROGRESS_INTERVAL_S", "0")
    caplog.set_level("INFO", logger="common.progress")
    with progress_bar(2, "epoch 1/3", "batches") as bar:  # stderr is captured here: not a terminal
        assert isinstance(bar, IntervalProgress)
        bar.update()
        bar.update()
    with progress_bar(2, "hidden", "batches", enabled=False) as bar:
        bar.update(2)
    assert [line.split(" (")[0] for line in caplog.messages] == ["epoch 1/3: 1 / 2 batches",
                                                                 "epoch 1/3: 2 / 2 batches in 0:00:00"]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(2, "epoch 2/3", "batches") as bar:
        assert not isinstance(bar, IntervalProgress)
        bar.update(2)
    drawn = terminal.getvalue()
    assert "\r" in drawn and "epoch 2/3: 100%" in drawn and "2/2" in drawn  # tqdm's bar, redrawn in place
