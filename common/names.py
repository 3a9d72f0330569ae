"""One spelling of a class name or a split name: `canonical_name`, applied wherever a name enters the toolkit.

A name is compared, stored and reported in its canonical form: Unicode NFC (a name typed on one system and a
folder name of another, NFD on macOS, are one name), white space trimmed at both ends and every inner run of
white space (tabs, no-break spaces, ...) one space. Case is kept: "Archery" and "archery" are different strings
(AVCA's lists spell classes in their own case, and a class list of another dataset is matched by
`curate.classlists.normalised_name`, a looser key built on top of this one).

Names enter through manifests (`class_name`, `split`), folders of clips (the class folder), class files, the
command line's lists of class names, the protocols' class lists and a token store's labels and splits (also those
written before this rule). Names that are one after normalisation are one class; a list a user gives must not be
empty, hold an empty entry or name a class twice (`canonical_names`).

It lives in `common/` because names enter in several rooms below `text/` (the manifest, the store).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np

from common.errors import InputError

__all__ = ["canonical_name", "canonical_names", "canonical_name_array"]


def canonical_name(name: str) -> str:
    """`name` in its one spelling: Unicode NFC, white space trimmed and inner runs collapsed to one space, case kept.

    Examples: " foo  bar\\t" -> "foo bar"; "cafe\\u0301" (NFD) -> "caf\\u00e9" (NFC); "Archery" stays "Archery".
    """
    return " ".join(unicodedata.normalize("NFC", name).split())


def canonical_name_array(names: np.ndarray) -> np.ndarray:
    """`canonical_name` of every name of a string array (a store's labels), each distinct name normalised once."""
    distinct, inverse = np.unique(names, return_inverse=True)
    return np.array([canonical_name(str(name)) for name in distinct], dtype=object)[inverse.reshape(names.shape)]


def canonical_names(names: Iterable[str], source: str, what: str = "class names") -> tuple[str, ...]:
    """A list of names a user gave, each in its canonical spelling, checked: not empty, no empty or repeated entry.

    Args:
        names: the entries, in order.
        source: where they come from, for messages (a file, or a setting in backticks: "`class_names`").
        what: what the entries are, for messages.

    Raises:
        InputError: no name at all, an empty entry, or a name given twice (after normalisation; both entries named).
    """
    given = list(names)
    canonical = [canonical_name(name) for name in given]
    if not any(canonical):
        raise InputError(f"{source}: no {what}")
    first: dict[str, int] = {}
    for position, name in enumerate(canonical, start=1):
        if not name:
            raise InputError(f"{source}: entry {position} of the {what} is empty")
        if name in first:
            earlier = first[name]
            raise InputError(f"{source}: {name!r} is given twice (entries {earlier} {given[earlier - 1]!r} and "
                             f"{position} {given[position - 1]!r}); name each class once")
        first[name] = position
    return tuple(canonical)
