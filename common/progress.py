"""Progress of a long loop (extraction, training epochs, curation): a bar on a terminal, log lines elsewhere.

A bar redraws itself with carriage returns. In a file or a batch scheduler's log (`2> log`, Slurm's output file),
which is not a terminal, each redraw stays behind as a partial bar between the log lines. So every long loop gets
its progress here, and the choice is made once, by whether standard error is a terminal:
- a terminal: a tqdm bar;
- anything else: `IntervalProgress`, one log line every `MZST_PROGRESS_INTERVAL_S` seconds (default 30; 0 writes
  a line at every step), `DESCRIPTION: done / total UNIT (percent), rate UNIT/s, ETA h:mm:ss`, and a last line
  when the loop ends: `DESCRIPTION: done / total UNIT in h:mm:ss (rate UNIT/s)`. A loop whose bar would vanish
  when done (`leave=False`: a training epoch, summed up by its own log line) writes that last line only if it
  wrote a line before it, so that short epochs add nothing to the log.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeVar

from tqdm import tqdm

from common.errors import InputError

__all__ = ["Progress", "IntervalProgress", "progress_bar", "track", "interval_s", "DEFAULT_INTERVAL_S"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 30.0  # often enough to see a job move, rare enough that a day-long job logs ~3000 lines
_INTERVAL_VARIABLE = "MZST_PROGRESS_INTERVAL_S"

T = TypeVar("T")


class Progress(Protocol):
    """What a loop calls on its progress: tqdm's bar or `IntervalProgress`."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix(self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc_info) -> object: ...


class IntervalProgress:
    """Progress as a line every `interval_s` seconds and one at the end (the module docstring gives the rules).

    Args:
        clock: seconds, monotonic (injected by tests).
        write: where a line goes (default: this module's logger, at INFO).
    """

    def __init__(self, total: int, description: str, unit: str, interval_s: float, leave: bool = True,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.interval_s = interval_s
        self.leave = leave
        self.done = 0
        self._clock = clock
        self._write = write if write is not None else logger.info
        self._started = self._last = clock()
        self._lines = 0
        self._closed = False
        self._postfix = ""  # the loop's latest figures (a running loss), ending each line

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self.interval_s and self.done < self.total:  # the last line says the end
            self._last = now
            elapsed = now - self._started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
            self._emit(f"{self._count()} ({100 * self.done / max(self.total, 1):.0f}%), {_rate(rate, self.unit)}, "
                       f"ETA {eta}")

    def set_postfix(self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True) -> None:
        """Figures that end the next lines, as tqdm's bar shows them after the count (`refresh` is tqdm's)."""
        self._postfix = ", ".join(f"{name} {value}" for name, value in (ordered_dict or {}).items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave or self._lines:
            elapsed = self._clock() - self._started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            self._emit(f"{self._count()} in {_duration(elapsed)} ({_rate(rate, self.unit)})")

    def __enter__(self) -> IntervalProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _count(self) -> str:
        return f"{self.done} / {self.total} {self.unit}"

    def _emit(self, text: str) -> None:
        self._lines += 1
        text = f"{text}, {self._postfix}" if self._postfix else text
        self._write(f"{self.description}: {text}" if self.description else text)


def progress_bar(total: int, description: str, unit: str, enabled: bool = True, leave: bool = True) -> Progress:
    """The progress of a loop of `total` steps of `unit` (plural: "clips"): a tqdm bar when standard error is a
    terminal, `IntervalProgress` otherwise; nothing shown when not `enabled`."""
    if enabled and not sys.stderr.isatty():
        return IntervalProgress(total, description, unit, interval_s(), leave=leave)
    return tqdm(total=total, desc=description, unit=f" {unit}", disable=not enabled, leave=leave, dynamic_ncols=True)


def track(items: Iterable[T], total: int, description: str, unit: str, enabled: bool = True) -> Iterator[T]:
    """`items`, counted on a `progress_bar` as each one is taken."""
    with progress_bar(total, description, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update()


def interval_s() -> float:
    """Seconds between progress lines: `MZST_PROGRESS_INTERVAL_S`, or `DEFAULT_INTERVAL_S`.

    Raises:
        InputError: the variable is not a number >= 0.
    """
    text = os.environ.get(_INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise InputError(f"{_INTERVAL_VARIABLE}={text!r}: not a number of seconds >= 0")
    return value


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _rate(per_s: float, unit: str) -> str:
    return f"{per_s:.0f} {unit}/s" if per_s >= 100 else f"{per_s:.3g} {unit}/s"  # 3 digits, no exponent
