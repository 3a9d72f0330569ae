"""Class-name lists: the shipped public lists of the standard datasets and a user's class file.

The shipped lists live in `data/classlists/` (one name per line, spelled as the source spells it, in the
source's label-index order); their provenance, licences and cross-checks are in
`data/classlists/SOURCES.md` and summarised in `CLASSLIST_SOURCES`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from common.errors import InputError
from common.names import canonical_name

__all__ = [
    "CLASSLIST_SOURCES",
    "available_classlists",
    "canonical_classlist",
    "load_classlist",
    "normalised_name",
    "merge_spellings",
]

logger = logging.getLogger(__name__)

_CLASSLIST_DIR = Path(__file__).resolve().parents[1] / "data" / "classlists"
_MMACTION2 = "open-mmlab/mmaction2 @ 4d6c93474730cad2f25e51109adcf96824efc7a3"
_VGGSOUND = "hche11/VGGSound @ 9bbc7491c054a203e53584c0065df336e1322bb7 data/stat.csv column 1"

# name -> (file in data/classlists, number of classes, source). The count guards against an edited copy.
_CLASSLISTS: dict[str, tuple[str, int, str]] = {
    "kinetics400": ("kinetics400.txt", 400, f"{_MMACTION2} tools/data/kinetics/label_map_k400.txt"),
    "kinetics600": ("kinetics600.txt", 600, f"{_MMACTION2} tools/data/kinetics/label_map_k600.txt"),
    "kinetics700": ("kinetics700.txt", 700, f"{_MMACTION2} tools/data/kinetics/label_map_k700.txt"),
    "ucf101": ("ucf101.txt", 101, f"{_MMACTION2} tools/data/ucf101/label_map.txt"),
    "hmdb51": ("hmdb51.txt", 51, f"{_MMACTION2} tools/data/hmdb51/label_map.txt"),
    "activitynet200": ("activitynet200.txt", 200, f"{_MMACTION2} tools/data/activitynet/label_map.txt"),
    "vggsound": ("vggsound.txt", 309, f"{_VGGSOUND}, sorted with Python sorted()"),
}
# The command line spells ActivityNet v1.3 without its class count.
_ALIASES = {"activitynet": "activitynet200"}

_ARTICLES = frozenset({"a", "an", "the"})

CLASSLIST_SOURCES: dict[str, str] = {name: source for name, (_, _, source) in _CLASSLISTS.items()}


def available_classlists() -> list[str]:
    """Names accepted by `load_classlist` (aliases excluded), in a fixed order."""
    return list(_CLASSLISTS)


def canonical_classlist(name: str) -> str:
    """The `available_classlists()` name of a shipped list ("ActivityNet" -> "activitynet200").

    Raises:
        InputError: not a shipped list (the message names them).
    """
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _CLASSLISTS:
        known = ", ".join([*_CLASSLISTS, *_ALIASES])
        raise InputError(f"unknown class list {name!r}; shipped lists: {known}")
    return key


def load_classlist(name: str) -> list[str]:
    """Class names of a shipped dataset list, in the source's label-index order.

    Args:
        name: one of `available_classlists()` (case-insensitive), or the alias "activitynet".

    Returns:
        The names exactly as the source spells them (typos included, e.g. Kinetics-400 "dying hair").

    Raises:
        InputError: unknown name, or a shipped file whose class count differs from the source's.
    """
    key = canonical_classlist(name)
    file_name, count, _ = _CLASSLISTS[key]
    path = _CLASSLIST_DIR / file_name
    names = path.read_text(encoding="utf-8").splitlines()
    if len(names) != count or len(set(names)) != count:
        raise InputError(
            f"{path}: expected {count} distinct class names for {key}, found {len(set(names))} distinct in "
            f"{len(names)} lines; restore the file from the repository (data/classlists/SOURCES.md)"
        )
    return names


def _word_stem(word: str) -> str:
    """A crude stem that maps the usual inflections of an action word together (plays / playing / played -> play)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouylsz":  # getting -> gett -> get
                word = word[:-1]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word  # dance / dancing -> danc


def normalised_name(name: str) -> str:
    """The form two class names are compared in: lower case, words only, no articles, each word stemmed.

    A looser key than `common.names.canonical_name`, built on it: the NFD and NFC spellings of a name give one key.
    """
    words = re.findall(r"[a-z0-9]+", canonical_name(name).lower())
    return " ".join(_word_stem(w) for w in words if w not in _ARTICLES)


def merge_spellings(names: Sequence[str], source: str) -> list[str]:
    """`names` without the later spellings of a name already listed (same `normalised_name`), each merge logged."""
    first: dict[str, str] = {}
    for name in names:
        kept = first.setdefault(normalised_name(name), name)
        if kept != name:
            logger.warning("%s: %r is %r spelled otherwise (both read %r); merged into the first", source, name, kept,
                           normalised_name(name))
    return list(first.values())
