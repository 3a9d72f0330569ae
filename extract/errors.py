"""`InputError`: the one base class of the errors a user can fix, raised by every stage.

Library code raises `InputError` (or a subclass: `extract.media.MediaError`, `features.store.StoreError`,
`fusion.class_embeddings.MissingWordsError`, ...) when something the user gave cannot be used: a file, a value,
a combination of settings. The message names the input and says what to do; it refers to settings by their
config field names in backticks (`resume=True`, `se_target='class'`), never by command-line flags, because the
library is also called from Python. `cli.py` prints such an error as one line and writes each backticked field
as the flag of the command that ran (`--resume`, `--se-target class`). Every other exception is a bug and keeps
its traceback.

It lives in `extract/`, the first stage, because every later stage imports from there and nothing imports back.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: a file, value or combination of settings that the user can fix (the message says how).

    A ValueError, so that code catching ValueError (and tests written against it) keep working.
    """
