"""The list of clips an extraction run works on: from a manifest CSV, a folder, or a single media file.

A manifest is the contract of docs/ARCHITECTURE.md: columns `clip_id,path,class_name,split,start_s,end_s` (the
order every writer uses; read by name, UTF-8 with or without a byte-order mark, LF or CRLF), of which `path`,
`class_name` and `split` are required and non-empty in every row; without a `clip_id` column the id is the path
without its extension; `start_s`, `end_s` are seconds: the clip is that segment of the file, both blank for the
whole file; paths relative to the manifest's folder. Blank or space-padded ids, repeated ids and folders given as
paths are refused with their line numbers, all problems of the file in one message. A folder is
scanned recursively for video files (symbolic links to folders followed, loops skipped: `common.files.media_files`);
the clip id is the path relative to the folder without its extension, so equal file stems in different
sub-folders never collide, and the label is the name of the clip's parent folder (the ImageFolder convention of
UCF-101 and most action datasets).
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import media_files
from common.media import Segment

__all__ = ["ClipRecord", "REQUIRED_COLUMNS", "VIDEO_SUFFIXES", "read_clip_list"]

# The columns a manifest must have: a clip without its class or split cannot be trained or evaluated on.
REQUIRED_COLUMNS = ("path", "class_name", "split")

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".flv", ".mpg", ".mpeg", ".ts", ".3gp"})


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a run: its stable id, absolute path, class name, split ('' when unknown) and segment."""

    clip_id: str
    path: Path
    label: str = ""
    split: str = ""
    segment: Segment | None = None  # the part of the file that is the clip (None: all of it)


def read_clip_list(videos: str | Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[ClipRecord]:
    """Read the clips named by a manifest CSV, found in a folder, or given as one media file.

    Args:
        videos: the manifest, folder or file.
        required: the columns a manifest must have, non-empty in every row (candidate lists of `curate` have no
            split yet: they pass ("path", "class_name")). `class_name` and `split`, where present, are never blank.

    Raises:
        FileNotFoundError: `videos` does not exist.
        ValueError: an unreadable or malformed manifest (missing columns, bad rows), duplicate clip ids, or a folder
            without media files.
    """
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(f"{videos}: no such manifest, folder or media file")
    if videos.is_dir():
        return _scan_folder(videos)
    if videos.suffix.lower() == ".csv":
        return _read_manifest(videos, tuple(required))
    if videos.suffix.lower() in VIDEO_SUFFIXES:
        return [ClipRecord(clip_id=videos.stem, path=videos.resolve())]
    raise InputError(f"{videos}: not a manifest (.csv), a folder, or a media file "
                     f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def _scan_folder(root: Path) -> list[ClipRecord]:
    files = media_files(root, VIDEO_SUFFIXES)
    if not files:
        raise InputError(f"{root}: no media files found (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    records = []
    for path in files:
        relative = path.relative_to(root)
        label = relative.parent.name if relative.parent != Path(".") else ""
        records.append(ClipRecord(clip_id=relative.with_suffix("").as_posix(), path=path.resolve(), label=label))
    return _check_unique(records, root)


def _read_manifest(manifest: Path, required: tuple[str, ...]) -> list[ClipRecord]:
    """The clips of a manifest, after checking every row: nothing is extracted from a manifest with a bad row.

    Read as "utf-8-sig": a byte-order mark ("CSV UTF-8" of spreadsheets) would otherwise become part of the first
    column's name. Values are kept as written, so an id with spaces around it is reported, not quietly changed.
    """
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:  # newline="": the csv module reads CRLF
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or ())
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{manifest}: cannot read the manifest as UTF-8 CSV ({error})") from error
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{manifest}: the manifest needs columns {', '.join(required)}; missing "
                         f"{', '.join(missing)} (found {', '.join(columns) or 'no header'})")
    if not rows:
        raise InputError(f"{manifest}: the manifest has no clips")
    base = manifest.parent.resolve()
    problems: dict[str, list[int]] = {}
    first_line: dict[str, int] = {}
    resolved_folders: dict[Path, Path] = {}
    records = []
    for line, row in enumerate(rows, start=2):
        values = {k: v or "" for k, v in row.items() if k is not None}
        for column in dict.fromkeys((*required, *(c for c in ("class_name", "split") if c in values))):
            if not values[column].strip():
                problems.setdefault(f"empty {column}", []).append(line)
        relative = Path(values["path"])
        clip_id = values["clip_id"] if "clip_id" in values else relative.with_suffix("").as_posix()
        if not clip_id.strip() or clip_id != clip_id.strip():
            problems.setdefault("clip_id blank or with spaces around it", []).append(line)
        elif clip_id in first_line:
            problems.setdefault("clip_id repeated (first use on the line given first)", []).extend(
                [first_line[clip_id], line])
        first_line.setdefault(clip_id, line)
        path, is_dir = _resolve(base / relative, resolved_folders)
        if values["path"].strip() and is_dir:
            problems.setdefault("path is a folder, not a media file", []).append(line)
        records.append(ClipRecord(clip_id=clip_id, path=path, label=values.get("class_name", ""),
                                  split=values.get("split", ""),
                                  segment=_segment(values, f"{manifest}:{line}")))
    if problems:
        bad = len({line for lines in problems.values() for line in lines})
        raise InputError(f"{manifest}: {bad} bad row(s), nothing extracted: " + "; ".join(
            f"{what} on line(s) {_first_few(lines)}" for what, lines in problems.items()))
    return records


def _resolve(path: Path, resolved_folders: dict[Path, Path]) -> tuple[Path, bool]:
    """`path.resolve()` and whether it is a folder, resolving each folder once (`resolved_folders` caches them).

    A file that is not a symbolic link resolves to its resolved folder joined with its name, so one `lstat` per
    row replaces `resolve`'s walk over every component: 200,000 rows took 8 s of `resolve`.
    """
    if path.name in ("", ".", ".."):
        return path.resolve(), path.resolve().is_dir()
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISLNK(mode):
        return path.resolve(), path.resolve().is_dir()
    folder = resolved_folders.get(path.parent)
    if folder is None:
        folder = resolved_folders[path.parent] = path.parent.resolve()
    return folder / path.name, mode is not None and stat.S_ISDIR(mode)


def _first_few(lines: list[int], shown: int = 5) -> str:
    """'3, 7, 9' or '3, 7, 9, 11, 12 and 40 more': a message stays one line on a manifest of any size."""
    lines = sorted(set(lines))
    text = ", ".join(str(line) for line in lines[:shown])
    return text if len(lines) <= shown else f"{text} and {len(lines) - shown} more"


def _segment(row: dict, where: str) -> Segment | None:
    start, end = (row.get("start_s") or "").strip(), (row.get("end_s") or "").strip()
    if not start and not end:
        return None
    if not start or not end:
        raise InputError(f"{where}: give both start_s and end_s (seconds) or neither, got {start!r}, {end!r}")
    try:
        return Segment(float(start), float(end))
    except ValueError as error:
        raise InputError(f"{where}: start_s / end_s must be seconds with 0 <= start_s < end_s, got {start!r}, "
                         f"{end!r}") from error


def _check_unique(records: list[ClipRecord], source: Path) -> list[ClipRecord]:
    seen: dict[str, Path] = {}
    for record in records:
        if record.clip_id in seen:
            raise InputError(f"{source}: clip id {record.clip_id!r} appears twice ({seen[record.clip_id]} and "
                             f"{record.path}); give the manifest a unique clip_id column")
        seen[record.clip_id] = record.path
    return records
