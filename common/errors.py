"""`InputError`: the one base class of the errors a user can fix, raised by every stage.

Library code raises `InputError` (or a subclass: `common.media.MediaError`, `features.store.StoreError`,
`text.class_embeddings.MissingWordsError`, ...) when something the user gave cannot be used: a file, a value,
a combination of settings. The message names the input and says what to do; it refers to settings by their
config field names in backticks (`resume=True`, `se_target='class'`), never by command-line flags, because the
library is also called from Python. `cli.py` prints such an error as one line and writes each backticked field
as the flag of the command that ran (`--resume`, `--se-target class`). Every other exception is a bug and keeps
its traceback.

It lives in `extract/`, the first stage, because every later stage imports from there and nothing imports back.
"""

from __future__ import annotations

import errno

__all__ = ["InputError", "is_user_error"]

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
