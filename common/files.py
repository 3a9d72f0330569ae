"""Writing files so that a reader never sees half of one, and hashing them for provenance.

Every stage writes its outputs through here: a file is written under a temporary name in its own folder and
renamed into place (`os.replace` is atomic on POSIX and Windows), so an interrupted run leaves the old file or
the new one, never a mix. CSV files are UTF-8 with "\\n" line ends; JSON files are indented, one value per file.
It lives in `common/`, the room below every stage, so that every stage can import it (imports flow one way).
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
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.processes import process_exists

__all__ = ["atomic_write", "sibling_temporary", "write_text", "write_json", "json_text", "write_texts", "write_folder",
           "write_csv", "read_csv", "sha256_file", "media_files"]

logger = logging.getLogger(__name__)

# The longest file name of the common file systems (ext4, XFS, Btrfs, APFS: 255 bytes), and the room kept for the
# suffix of a temporary name (a tag and a process id or a random token).
_NAME_BYTES = 255
_SUFFIX_BYTES = 48


def sibling_temporary(path: str | Path, suffix: str) -> Path:
    """`.NAME.SUFFIX` next to `path`: a temporary (or staging) name that a glob of `.NAME.TAG-*` finds again.

    When NAME is too long for such a name to fit a file name (255 bytes), a hash of NAME stands in for it, so any
    name the file system accepts can be written atomically. The choice depends on NAME alone (suffixes up to 48
    bytes), so a glob with the same NAME finds what a kill left behind.
    """
    path = Path(path)
    name = path.name
    if len(name.encode()) + 2 + _SUFFIX_BYTES > _NAME_BYTES:
        name = hashlib.sha256(name.encode()).hexdigest()[:32]
    return path.with_name(f".{name}.{suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file to `path`; returns `path`.

    The temporary name carries the process id, so two processes writing the same file never share one. A write
    the file system refuses (full, read-only) raises an OSError that names `path`: the error of a failed
    `write()` names no file, and the temporary's name would mean nothing to the user.
    """
    path = Path(path)
    temporary = _temporary(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise _naming(error, temporary, path) from error
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def json_text(value: Any) -> str:
    """`value` as the indented JSON text `write_json` writes; paths and numpy values as strings and numbers."""
    return json.dumps(value, indent=2, default=_json_default) + "\n"


def write_json(path: str | Path, value: Any) -> Path:
    """Write `value` as indented JSON atomically (`json_text`)."""
    return write_text(path, json_text(value))


def write_texts(files: Mapping[Path, str]) -> tuple[Path, ...]:
    """Write UTF-8 files that belong together (a report and its table): all are written under temporary names
    first, and renamed into place only when every one is written, so a full disk replaces none of them.

    Raises:
        OSError: a refused write, naming the file it was writing; no temporary file is left.
    """
    temporaries = {Path(path): _temporary(Path(path)) for path in files}
    try:
        for (path, temporary), text in zip(temporaries.items(), files.values(), strict=True):
            try:
                temporary.write_text(text, encoding="utf-8")
            except OSError as error:
                raise _naming(error, temporary, path) from error
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)
    return tuple(temporaries)


def write_folder(path: str | Path, write: Callable[[Path], object], names: Collection[str], what: str) -> Path:
    """Write a folder whole or not at all: `write(folder)` fills a new sibling folder, which then takes the place
    of `path`; returns `path`.

    An error while writing (a full disk) leaves `path` as it was and no partial folder. An existing `path` is
    replaced only when it holds nothing but `names` (an earlier output of the same kind), so that a folder of
    other files is never deleted. The previous folder is moved aside before the new one is renamed in; a kill
    between those two renames leaves it as `.<name>.old-<pid>` beside `path`. Temporary folders of processes
    that no longer run are removed first.

    Args:
        path: the folder to write.
        write: fills the folder it is given (a temporary sibling of `path`).
        names: the entries the folder holds when `write` wrote it (the files it may replace).
        what: what the folder is, for messages ("report folder").

    Raises:
        FileExistsError: `path` is a file, or a folder holding other entries than `names`.
        OSError: a refused write, naming the file under `path` it was writing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder; choose another {what}")
    foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in names) if path.is_dir() else []
    if foreign:
        raise FileExistsError(f"{path}: holds files that are not a {what}'s ({', '.join(foreign[:3])}); choose "
                              f"another {what}, or empty it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path)
    temporary, old = _temporary(path), sibling_temporary(path, f"old-{os.getpid()}")
    try:
        temporary.mkdir()
        write(temporary)
        moved = path.exists()
        if moved:
            os.replace(path, old)
        try:
            os.replace(temporary, path)
        except OSError:
            if moved:
                os.replace(old, path)
            raise
    except OSError as error:
        raise _naming(error, temporary, path) from error
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def _temporary(path: Path) -> Path:
    """The temporary sibling a write of `path` goes through: hidden, and unique to this process."""
    return sibling_temporary(path, f"tmp-{os.getpid()}")


def _naming(error: OSError, temporary: Path, path: Path) -> OSError:
    """`error` naming `path` (or the file under it) instead of its temporary, or of no file at all."""
    if error.errno is None:
        return error
    named = path
    if error.filename is not None:
        relative = Path(os.fsdecode(error.filename))
        if relative != temporary and temporary not in relative.parents:
            return error  # the error names another file (a missing folder, a file the write read)
        named = path / relative.relative_to(temporary) if relative != temporary else path
    return OSError(error.errno, error.strerror, str(named))


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary and set-aside siblings of `path` (`write_folder`) left by processes that are gone."""
    prefix = sibling_temporary(path, "").name
    for sibling in path.parent.iterdir():
        if not sibling.name.startswith(prefix):
            continue
        kind, _, pid = sibling.name[len(prefix):].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and int(pid) != os.getpid() and not process_exists(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


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
