"""Class names as text: the words a name is embedded from, name maps that respell names, a user's class file.

Every embedding source and the fusion head's MLM vocabulary take a name's words from `tokenize_class_name`;
`read_name_map` reads the `original,manual` CSVs (AVCA-GZSL's `*_w2v_class_names.csv` have this form) that
rewrite names before they are embedded; `read_class_file` is the one reader of a user's class list. Names are read
in their one spelling (`common.names.canonical_name`: Unicode NFC, white space trimmed and collapsed, case kept).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from common.errors import InputError
from common.names import canonical_name

__all__ = ["tokenize_class_name", "read_name_map", "read_class_file"]

logger = logging.getLogger(__name__)

# Function words carry no meaning of their own but a large shared component in averaged word vectors: kept,
# they pull every multi-word name towards every other (Brattoli et al. drop stop words for the same reason).
_STOP_WORDS = frozenset(
    ["a", "an", "and", "at", "by", "etc", "for", "from", "in", "into", "of", "on", "onto", "or", "the", "to", "with"]
)
# Kinetics qualifiers such as "(not in game)" or "(not baseball or American football)" name what the class is
# NOT; their words would move the embedding towards the excluded classes, so they are dropped. Other
# parenthesised text ("(sport)", "(in game)", "(siren)") describes the class and is kept.
_NEGATED_QUALIFIER = re.compile(r"\(\s*not\b[^)]*\)", re.IGNORECASE)
# CamelCase boundaries (UCF-101 "ApplyEyeMakeup"): lower/digit -> upper, and the last capital of an acronym
# followed by a lower-case letter ("BMXRacing" -> "BMX Racing").
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[\W_]+")


def tokenize_class_name(name: str) -> list[str]:
    """The words of a class name, in order, as used for embedding it.

    Steps: drop parenthesised qualifiers that start with "not" (Kinetics "(not in game)"); split CamelCase
    (UCF-101 "ApplyEyeMakeup"); lower-case; split on every non-alphanumeric character (spaces, `_`, `-`,
    commas, apostrophes, other parentheses); drop stop words (a, an, and, at, by, etc, for, from, in, into,
    of, on, onto, or, the, to, with) unless the name has no other word.

    Examples: "passing American football (not in game)" -> [passing, american, football];
    "passing American football (in game)" -> [passing, american, football, game]; "brush_hair" -> [brush,
    hair]; "bird chirping, tweeting" -> [bird, chirping, tweeting].
    """
    text = _NEGATED_QUALIFIER.sub(" ", name)
    text = _CAMEL_BOUNDARY.sub(" ", text)
    words = [word for word in _NON_WORD.split(text.lower()) if word]
    content = [word for word in words if word not in _STOP_WORDS]
    return content or words


def class_name_sentence(name: str) -> str:
    """A class name as one sentence for a sentence encoder: CamelCase split, `_` read as a space, every word
    kept (a sentence encoder reads stop words and qualifiers such as "(not in game)" in context).

    Examples: "ApplyEyeMakeup" -> "Apply Eye Makeup"; "brush_hair" -> "brush hair".
    """
    return " ".join(_CAMEL_BOUNDARY.sub(" ", name).replace("_", " ").split())


def read_name_map(path: str | Path) -> dict[str, str]:
    """Read a name map: a CSV with header columns `original,manual` (more columns are ignored).

    AVCA-GZSL's `*_w2v_class_names.csv` files have this form. Names are matched case-insensitively when the
    map is applied, so two originals that differ only by case must not both be listed.

    Returns:
        original name -> manual name, as spelled in the file.

    Raises:
        FileNotFoundError: no such file.
        InputError: missing columns, an empty manual name, or an original listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"name map {path} does not exist (expected a CSV with columns original,manual)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"original", "manual"} <= set(reader.fieldnames):
            raise InputError(f"name map {path}: the header must name the columns 'original' and 'manual'")
        mapping: dict[str, str] = {}
        seen: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            original, manual = (row["original"] or "").strip(), (row["manual"] or "").strip()
            if not original or not manual:
                raise InputError(f"name map {path}, line {line}: empty 'original' or 'manual' name")
            if original.casefold() in seen:
                raise InputError(
                    f"name map {path}, line {line}: {original!r} is already mapped (as {seen[original.casefold()]!r});"
                    " names match case-insensitively, list each once"
                )
            seen[original.casefold()] = original
            mapping[original] = manual
    return mapping


def read_class_file(path: str | Path) -> list[str]:
    """Read a user's class file: one class name per line, each in its one spelling (`common.names.canonical_name`).

    UTF-8, with or without a byte-order mark. Blank lines and lines whose first non-blank character is `#` are
    ignored (a `#` later in a line is part of the name). Two lines that are one name after normalisation ("foo "
    and "foo", an NFD and an NFC spelling) list the class twice.

    Raises:
        FileNotFoundError: the file does not exist.
        InputError: the file lists no class, or lists a class twice (the message gives both lines).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class file {path} does not exist (expected one class name per line)")
    first_line: dict[str, tuple[int, str]] = {}
    duplicates: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = canonical_name(line)
        if not name or name.startswith("#"):
            continue
        if name in first_line:
            earlier, spelled = first_line[name]
            spellings = "" if spelled == line else f" spelled {spelled!r} and {line!r}"
            duplicates.append(f"{name!r} (lines {earlier} and {number}){spellings}")
            continue
        first_line[name] = number, line
    if duplicates:
        raise InputError(f"{path}: class names listed twice: {', '.join(duplicates)}")
    if not first_line:
        raise InputError(f"{path}: no class names (one name per line; blank lines and # comments are ignored)")
    logger.debug("read %d class names from %s", len(first_line), path)
    return list(first_line)
