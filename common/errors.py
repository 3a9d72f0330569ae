"""`InputError`: the one base class of the errors a user can fix, raised by every stage.

Library code raises `InputError` (or a subclass: `common.media.MediaError`, `features.store.StoreError`,
`text.class_embeddings.MissingWordsError`, ...) when something the user gave cannot be used: a file, a value,
a combination of settings. The message names the input and says what to do; it refers to settings by their
config field names in backticks (`resume=True`, `se_target='class'`), never by command-line flags, because the
library is also called from Python. `cli.py` prints such an error as one line and writes each backticked field
as the flag of the command that ran (`--resume`, `--se-target class`). Every other exception is a bug and keeps
its traceback.

A command also ends early when it is asked to: Ctrl-C (SIGINT) or SIGTERM. `interruptible` turns both into
`Interrupted`, a KeyboardInterrupt, so that every `finally` and `with` block on the way out runs (process pools
and Dask clusters end their workers there: `common.processes`), and then prints one line, how to resume where
the command is resumable, and exits with 128 + the signal's number, as a shell reports a signal.

It lives in `common/`, below every stage, because every stage imports from there and nothing imports back.
"""

from __future__ import annotations

import errno
import functools
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["InputError", "Interrupted", "is_user_error", "interruptible"]

_STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# File-system errors a user fixes: a path that is missing, exists, or is of the wrong kind, no permission.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)
# Plain OSErrors of a file system that refuses a write: read-only, full, over quota, a name longer than it allows.
_REFUSED_WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})


class InputError(ValueError):
    """Bad input: a file, value or combination of settings that the user can fix (the message says how).

    A ValueError, so that code catching ValueError (and tests written against it) keep working.
    """


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is one a user fixes, shown as one line naming the file (its `str()`), without a traceback.

    That is an `InputError`, a missing / existing / wrong-kind path, no permission, or a file system that refuses
    a write (read-only, full, over quota, a name too long); every other OSError (an I/O error, a bug) keeps its
    traceback.
    """
    return isinstance(error, (InputError, *_USER_OS_ERRORS)) or (
        isinstance(error, OSError) and error.errno in _REFUSED_WRITE_ERRNOS)


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by signal `signal_number` (SIGINT: Ctrl-C, or SIGTERM)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def _interrupt(signal_number: int, frame: Any) -> None:
    raise Interrupted(signal_number)


def interruptible(command: Callable[..., Any], resumable: Mapping[str, str]) -> Callable[..., Any]:
    """`command` (a command-line command) made to end on SIGINT or SIGTERM in one line on stderr, after its
    `finally` blocks ran: "Interrupted (SIGINT); rerun the same command to resume: ...", and exit code 128 + the
    signal's number.

    Args:
        command: the command's function; the signal handlers are installed while it runs (in the main thread only,
            the one Python delivers signals to), and the previous ones put back after.
        resumable: the commands (their first word on the command line) whose rerun resumes, and the flag that
            rerun adds ("" for none, "--resume" for train-fusion); another command's line only says it stopped.
            Read from `sys.orig_argv`, so a command called in-process (click's test runner) only says it stopped.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {number: signal.signal(number, _interrupt) for number in _STOPPING_SIGNALS} if in_main_thread else {}
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as interruption:
            for number in previous:  # the line below is the last word, not cut by a second Ctrl-C
                signal.signal(number, signal.SIG_IGN)
            number = getattr(interruption, "signal_number", signal.SIGINT)
            print(_stopped_line(number, resumable), file=sys.stderr, flush=True)
            raise SystemExit(128 + number) from None
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    return run


def _stopped_line(signal_number: int, resumable: Mapping[str, str]) -> str:
    """The one line an interrupted command ends with: the signal and, for a resumable command, its rerun."""
    stopped = f"Interrupted ({signal.Signals(signal_number).name})"
    words = sys.orig_argv  # the command as typed: interpreter, script, global options (a flag, a count), command
    command = next((word for word in words[2:] if not word.startswith("-") and not word.isdigit()), None)
    if command not in resumable:
        return stopped
    flag = resumable[command]
    rerun = shlex.join([*words, flag] if flag and flag not in words else words)
    return f"{stopped}; rerun the same command to resume: {rerun}"
