"""The list of clips an extraction run works on: from a manifest CSV, a folder, or a single media file.

A manifest is the contract of docs/ARCHITECTURE.md: columns `clip_id,path,class_name,split,start_s,end_s` (the
order every writer uses; read by name), of which only `path` is required; `start_s`, `end_s` are seconds: the
clip is that segment of the file, both blank for the whole file; paths relative to the manifest's folder. A folder is
scanned recursively for video files; the clip id is the path relative to the folder without its
extension, so equal file stems in different sub-folders never collide, and the label is the name of the
clip's parent folder (the ImageFolder convention of UCF-101 and most action datasets).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from extract.errors import InputError
from extract.media import Segment

__all__ = ["ClipRecord", "VIDEO_SUFFIXES", "read_clip_list"]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".flv", ".mpg", ".mpeg", ".ts", ".3gp"})


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a run: its stable id, absolute path, class name, split ('' when unknown) and segment."""

    clip_id: str
    path: Path
    label: str = ""
    split: str = ""
    segment: Segment | None = None  # the part of the file that is the clip (None: all of it)


def read_clip_list(videos: str | Path) -> list[ClipRecord]:
    """Read the clips named by a manifest CSV, found in a folder, or given as one media file.

    Raises:
        FileNotFoundError: `videos` does not exist.
        ValueError: an unreadable or malformed manifest, duplicate clip ids, or a folder without media files.
    """
    videos = Path(videos)
    if not videos.exists():
        raise FileNotFoundError(f"{videos}: no such manifest, folder or media file")
    if videos.is_dir():
        return _scan_folder(videos)
    if videos.suffix.lower() == ".csv":
        return _read_manifest(videos)
    if videos.suffix.lower() in VIDEO_SUFFIXES:
        return [ClipRecord(clip_id=videos.stem, path=videos.resolve())]
    raise InputError(f"{videos}: not a manifest (.csv), a folder, or a media file "
                     f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def _scan_folder(root: Path) -> list[ClipRecord]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise InputError(f"{root}: no media files found (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    records = []
    for path in files:
        relative = path.relative_to(root)
        label = relative.parent.name if relative.parent != Path(".") else ""
        records.append(ClipRecord(clip_id=relative.with_suffix("").as_posix(), path=path.resolve(), label=label))
    return _check_unique(records, root)


def _read_manifest(manifest: Path) -> list[ClipRecord]:
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{manifest}: cannot read the manifest ({error})") from error
    if not rows:
        raise InputError(f"{manifest}: the manifest has no clips")
    if "path" not in rows[0]:
        raise InputError(f"{manifest}: the manifest needs a 'path' column, found {sorted(rows[0])}")
    base = manifest.parent.resolve()
    records = []
    for line, row in enumerate(rows, start=2):
        if not row["path"]:
            raise InputError(f"{manifest}:{line}: empty path")
        relative = Path(row["path"])
        clip_id = row.get("clip_id") or relative.with_suffix("").as_posix()
        records.append(ClipRecord(
            clip_id=clip_id,
            path=(base / relative).resolve(),
            label=row.get("class_name") or "",
            split=row.get("split") or "",
            segment=_segment(row, f"{manifest}:{line}"),
        ))
    return _check_unique(records, manifest)


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
