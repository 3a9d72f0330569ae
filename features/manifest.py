"""The manifest contract (`ManifestRow`, its one reader and one writer) and the list of clips an extraction run
works on: from a manifest CSV, a folder, or a single media file.

A manifest is the contract of docs/ARCHITECTURE.md: columns `clip_id,path,class_name,split,start_s,end_s`, then the
descriptive columns `group,sr,has_audio,duration_s,width_px,height_px,fps,sample_rate_hz,audio_channels` (the order
`write_manifest` uses; read by name, UTF-8 with or without a byte-order mark, LF or CRLF), of which `path`,
`class_name` and `split` are required and non-empty in every row; without a `clip_id` column the id is the path
without its extension; `start_s`, `end_s` are seconds: the clip is that segment of the file, both blank for the
whole file; paths relative to the manifest's folder. Blank or space-padded ids, repeated ids, folders given as
paths and descriptive values that are not of their column's type are refused with their line numbers, all problems
of the file in one message. Class and split names are read in their one spelling (`common.names.canonical_name`).
A folder is scanned recursively for video files (symbolic links to folders followed, loops skipped:
`common.files.media_files`); the clip id is the path relative to the folder without its extension, so equal file
stems in different sub-folders never collide, and the label is the name of the clip's parent folder (the
ImageFolder convention of UCF-101 and most action datasets).
"""

from __future__ import annotations

import csv
import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import media_files, write_csv
from common.media import Segment
from common.names import canonical_name

logger = logging.getLogger(__name__)

__all__ = ["ManifestRow", "VIDEO_SUFFIXES", "read_clip_list", "read_manifest", "write_manifest",
           "parse_descriptive_columns", "relative_path", "segment_text"]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".flv", ".mpg", ".mpeg", ".ts", ".3gp"})


@dataclass(frozen=True)
class ManifestRow:
    """One clip: a manifest's row, or a clip found in a folder or given as a file.

    The descriptive fields are what `curate build` and `make-synthetic` record about a clip; None where a manifest
    has no such column or leaves it blank. Extraction reads none of them.
    """

    clip_id: str
    path: Path  # absolute; the writer writes it relative to the manifest's folder
    class_name: str = ""
    split: str = ""  # '' when unknown (a folder, a single file, a candidate list of `curate`)
    segment: Segment | None = None  # the part of the file that is the clip (None: all of it)
    group: str | None = None  # difficulty group of the class: easy, medium or hard (`curate build`)
    sr: float | None = None  # the class's semantic relatedness to the seen classes (`curate build`)
    has_audio: bool | None = None  # the file has an audio track
    duration_s: float | None = None  # of the clip
    width_px: int | None = None
    height_px: int | None = None
    fps: float | None = None
    sample_rate_hz: int | None = None  # of the audio track (0 without one)
    audio_channels: int | None = None


def _parse_has_audio(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


@dataclass(frozen=True)
class _Column:
    """How a descriptive column is read and written; a blank value is None either way."""

    parse: Callable[[str], object]
    format: Callable[[object], str]
    expected: str  # what `parse` accepts, for messages


# The descriptive columns, in the order they are written (the formats curation has always written them in).
_DESCRIPTIVE = {
    "group": _Column(str, str, "text"),
    "sr": _Column(float, "{:.6f}".format, "a number"),
    "has_audio": _Column(_parse_has_audio, lambda value: str(int(value)), "0 or 1"),
    "duration_s": _Column(float, "{:.3f}".format, "a number"),
    "width_px": _Column(int, str, "a whole number"),
    "height_px": _Column(int, str, "a whole number"),
    "fps": _Column(float, "{:g}".format, "a number"),
    "sample_rate_hz": _Column(int, str, "a whole number"),
    "audio_channels": _Column(int, str, "a whole number"),
}
_IDENTITY_COLUMNS = ("clip_id", "path", "class_name", "split")  # in every manifest written
_SEGMENT_COLUMNS = ("start_s", "end_s")


def relative_path(path: Path, base: Path) -> str:
    """`path` relative to the folder `base`, with / separators (how a manifest and curation's files write paths)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def write_manifest(manifest: str | Path, rows: Sequence[ManifestRow], *, whole_files: bool = False) -> Path:
    """Write `rows` as a manifest, atomically: the columns in the contract's order, paths relative to its folder.

    The identity columns and, unless `whole_files`, `start_s,end_s` are always written; a descriptive column only
    when some row has a value for it.

    Args:
        manifest: the CSV file.
        rows: the clips, written in this order.
        whole_files: every clip is its whole file: no `start_s,end_s` columns (the synthetic benchmark's manifest).
    """
    manifest = Path(manifest)
    if whole_files and any(row.segment is not None for row in rows):
        raise ValueError(f"{manifest}: a manifest of whole files cannot hold segments")
    descriptive = [c for c in _DESCRIPTIVE if any(getattr(row, c) is not None for row in rows)]
    header = (*_IDENTITY_COLUMNS, *(() if whole_files else _SEGMENT_COLUMNS), *descriptive)
    base = manifest.parent

    def values(row: ManifestRow) -> list[str]:
        segment = () if whole_files else segment_text(row.segment)
        described = ["" if getattr(row, c) is None else _DESCRIPTIVE[c].format(getattr(row, c)) for c in descriptive]
        return [row.clip_id, relative_path(row.path, base), row.class_name, row.split, *segment, *described]

    return write_csv(manifest, header, [values(row) for row in rows])


def segment_text(segment: Segment | None) -> tuple[str, str]:
    """The `start_s,end_s` values of a segment as manifests and curation's files write them ('' for a whole file)."""
    return ("", "") if segment is None else (f"{segment.start_s:g}", f"{segment.end_s:g}")


def parse_descriptive_columns(values: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """The descriptive fields of a row given as column -> text, and the columns whose text is not of their type.

    Returns:
        (field -> value for the descriptive columns present and non-blank, the columns that could not be parsed).
    """
    fields, bad = {}, []
    for column, kind in _DESCRIPTIVE.items():
        text = (values.get(column) or "").strip()
        if not text:
            continue
        try:
            fields[column] = kind.parse(text)
        except ValueError:
            bad.append(column)
    return fields, bad


def read_clip_list(videos: str | Path, split_required: bool = True) -> list[ManifestRow]:
    """Read the clips named by a manifest CSV, found in a folder, or given as one media file.

    Args:
        videos: the manifest, folder or file.
        split_required: a manifest must have a `split` column (candidate lists of `curate` have no split yet: they
            pass False). `class_name` and `split`, where present, are never blank.

    Raises:
        FileNotFoundError: `videos` does not exist.
        ValueError: an unreadable or malformed manifest (missing columns, bad rows), duplicate clip ids, or a folder
            without media files.
    """
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(f"{videos}: no such manifest, folder or media file")
    if videos.is_dir():
        return _warn_case_twins(_scan_folder(videos), videos)
    if videos.suffix.lower() == ".csv":
        return _warn_case_twins(read_manifest(videos, split_required), videos)
    if videos.suffix.lower() in VIDEO_SUFFIXES:
        return [ManifestRow(clip_id=videos.stem, path=videos.resolve())]
    raise InputError(f"{videos}: not a manifest (.csv), a folder, or a media file "
                     f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def _warn_case_twins(rows: list[ManifestRow], source: Path) -> list[ManifestRow]:
    """Warn about class names that differ only in case: they stay two classes (AVCA's lists have such pairs that
    are meant apart), but in a user's own data they are more often one class spelled twice."""
    spellings: dict[str, set[str]] = {}
    for row in rows:
        if row.class_name:
            spellings.setdefault(row.class_name.casefold(), set()).add(row.class_name)
    twins = sorted(sorted(names) for names in spellings.values() if len(names) > 1)
    if twins:
        logger.warning("%s: %d class name(s) differ only in case and stay separate classes: %s", source, len(twins),
                       "; ".join(" / ".join(repr(name) for name in names) for names in twins[:5]))
    return rows


def _scan_folder(root: Path) -> list[ManifestRow]:
    files = media_files(root, VIDEO_SUFFIXES)
    if not files:
        raise InputError(f"{root}: no media files found (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    records = []
    for path in files:
        relative = path.relative_to(root)
        label = canonical_name(relative.parent.name) if relative.parent != Path(".") else ""
        records.append(ManifestRow(clip_id=relative.with_suffix("").as_posix(), path=path.resolve(), class_name=label))
    return _check_unique(records, root)


def read_manifest(manifest: str | Path, split_required: bool = True) -> list[ManifestRow]:
    """The rows of a manifest, after checking every row: nothing is extracted from a manifest with a bad row.

    Read as "utf-8-sig": a byte-order mark ("CSV UTF-8" of spreadsheets) would otherwise become part of the first
    column's name. Ids and paths are kept as written, so an id with spaces around it is reported, not quietly
    changed; class and split names are read in their one spelling (`common.names.canonical_name`), so "foo " and
    "foo", or an NFD and an NFC spelling, are one class.

    Args:
        manifest: the CSV file.
        split_required: the manifest must have a `split` column (`read_clip_list`).

    Raises:
        FileNotFoundError: no such file.
        InputError: an unreadable file, missing columns, no rows, or bad rows (all of them in one message).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no such manifest")
    # A clip without its class or split cannot be trained or evaluated on.
    required = ("path", "class_name", "split") if split_required else ("path", "class_name")
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
        descriptive, unreadable = parse_descriptive_columns(values)
        for column in unreadable:
            problems.setdefault(f"{column} not {_DESCRIPTIVE[column].expected}", []).append(line)
        records.append(ManifestRow(clip_id=clip_id, path=path, class_name=canonical_name(values.get("class_name", "")),
                                   split=canonical_name(values.get("split", "")),
                                   segment=_segment(values, f"{manifest}:{line}"), **descriptive))
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


def _check_unique(records: list[ManifestRow], source: Path) -> list[ManifestRow]:
    seen: dict[str, Path] = {}
    for record in records:
        if record.clip_id in seen:
            raise InputError(f"{source}: clip id {record.clip_id!r} appears twice ({seen[record.clip_id]} and "
                             f"{record.path}); give the manifest a unique clip_id column")
        seen[record.clip_id] = record.path
    return records
