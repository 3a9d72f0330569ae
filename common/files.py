"""Writing files so that a reader never sees half of one, and hashing them for provenance.

Every stage writes its outputs through here: a file is written under a temporary name in its own folder and
renamed into place (`os.replace` is atomic on POSIX and Windows), so an interrupted run leaves the old file or
the new one, never a mix. CSV files are UTF-8 with "\\n" line ends; JSON files are indented, one value per file.
It lives in `extract/`, the first stage, so that every stage can import it (imports flow one way).
`media_files` is the one walk of a folder of media files (extraction's folder input, dataset downloads).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError

__all__ = ["atomic_write", "write_text", "write_json", "write_csv", "read_csv", "sha256_file", "media_files"]

logger = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file to `path`; returns `path`.

    The temporary name carries the process id, so two processes writing the same file never share one.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, value: Any) -> Path:
    """Write `value` as indented JSON atomically; paths and numpy values are written as strings and numbers."""
    return write_text(path, json.dumps(value, indent=2, default=_json_default) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV file with a header row atomically (UTF-8, "\\n" line ends, values as `str()` gives them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_csv(path: str | Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV file with a header that names the `required` columns; values are stripped.

    A byte-order mark is ignored: spreadsheets ("CSV UTF-8") often write one, and it would otherwise become
    part of the first column's name.

    Args:
        path: the file.
        required: columns that must be present (others are kept).
        what: what the file is, for messages ("class table", "annotation sheet").

    Raises:
        FileNotFoundError: no such file.
        InputError: a missing column, or a file that is not UTF-8 CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise InputError(f"{path}: {what} needs columns {', '.join(required)}; missing {', '.join(missing)}")
            return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the {what} as UTF-8 CSV ({error})") from error


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; remembered per (path, modification time, size) within a process."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size_bytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def media_files(root: str | Path, suffixes: frozenset[str]) -> list[Path]:
    """The files under `root` whose suffix (lower case) is in `suffixes`, in every sub-folder, sorted.

    Symbolic links to folders are followed (a dataset's class folders often link to another disk), except a link
    to a folder that is already on its own path from `root` (itself or an ancestor): that would loop forever, so
    it is skipped with a warning naming it. Files keep the path through the link (the clip id and label come
    from it).
    """
    root = Path(root)
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        folder = Path(folder)
        above = {Path(os.path.realpath(parent)) for parent in (folder, *folder.parents) if parent.is_relative_to(root)}
        for name in list(subfolders):
            if (folder / name).is_symlink() and Path(os.path.realpath(folder / name)) in above:
                logger.warning("%s: skipped, a symbolic link to %s, a folder on its own path (a loop)",
                               folder / name, os.path.realpath(folder / name))
                subfolders.remove(name)
        files.extend(folder / name for name in names
                     if Path(name).suffix.lower() in suffixes and (folder / name).is_file())
    return sorted(files)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
