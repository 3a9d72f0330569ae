"""The CSV files the curation steps hand each other: their columns, their readers, and the path rule.

Paths inside these files are relative to the file that names them (absolute paths also work), so a curation
folder can be moved or shared with annotators as a whole: `relative_path` writes them, `resolve_path` reads them.

| file | written by | columns |
|---|---|---|
| `classes.csv` (class table) | `curate select` | `CLASS_COLUMNS` |
| `filmstrips.csv` (index) | `curate filmstrips` | `INDEX_COLUMNS` |
| `<reviewer>.csv` (sheet) | `curate sheets` | `SHEET_COLUMNS`, `label` (and a span) filled in by the reviewer |
| `decisions.csv` | `curate merge` | clip_id, class_name, decision, yes / no / unsure, start_s, end_s, label_<name> |
| `manifest.csv` | `curate build` | the manifest contract (`features.manifest.ManifestRow`), with group, sr and media |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import read_csv
from common.names import canonical_name
from curate.relatedness import DIFFICULTY_GROUPS
from features.manifest import relative_path

__all__ = [
    "CLASS_COLUMNS",
    "INDEX_COLUMNS",
    "SHEET_COLUMNS",
    "LABELS",
    "DECISIONS",
    "ClassRow",
    "class_and_group",
    "read_class_table",
    "read_index",
    "read_decisions",
    "relative_path",
    "resolve_path",
    "format_float",
    "parse_span",
]

LABELS = ("yes", "no", "unsure")  # an annotator's label of one video; only "yes" keeps a video
# all yes; some yes and some not; no yes at all; fewer reviewers than the stated minimum (not decided)
DECISIONS = ("keep", "mixed", "rejected", "too-few-reviews")
CLASS_COLUMNS = ("class_name", "sr", "group", "nearest_seen_class", "nearest_seen_dataset")
INDEX_COLUMNS = ("clip_id", "class_name", "video", "start_s", "end_s", "filmstrip", "pages", "seconds_per_frame",
                 "status", "reason", "duration_s", "frames", "has_audio", "width_px", "height_px", "fps",
                 "sample_rate_hz", "audio_channels")
# label: yes / no / unsure; start_s,end_s (optional, with a yes): the span showing the class, on the filmstrip's clock
SHEET_COLUMNS = ("clip_id", "class_name", "video", "filmstrip", "pages", "label", "start_s", "end_s")


@dataclass(frozen=True)
class ClassRow:
    """One class of the class table."""

    class_name: str
    sr: float
    group: str  # easy, medium or hard
    nearest_seen_class: str = ""
    nearest_seen_dataset: str = ""


def class_and_group(row: dict[str, str], path: Path, line: int) -> tuple[str, str]:
    """A row's class name in its one spelling and its difficulty group, lower-cased (class tables, groups files).

    Raises:
        InputError: an empty class name, or a group other than easy / medium / hard.
    """
    name, group = canonical_name(row["class_name"]), row["group"].lower()
    if not name:
        raise InputError(f"{path} line {line}: empty class_name")
    if group not in DIFFICULTY_GROUPS:
        raise InputError(f"{path} line {line}: group {row['group']!r} of {name!r} is not one of {DIFFICULTY_GROUPS}")
    return name, group


def read_class_table(path: str | Path) -> list[ClassRow]:
    """The class table: CSV with columns class_name,sr,group (and optionally the nearest seen class / dataset).

    Class names are read in their one spelling (`common.names.canonical_name`); two rows that are one name after it
    list the class twice.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, an SR that is not a number, a group other than easy / medium / hard, or a
            class listed twice.
    """
    path = Path(path)
    rows = read_csv(path, ("class_name", "sr", "group"), "class table")
    table: dict[str, ClassRow] = {}
    for line, row in enumerate(rows, start=2):
        name, group = class_and_group(row, path, line)
        try:
            sr = float(row["sr"])
        except ValueError as error:
            raise InputError(f"{path} line {line}: sr {row['sr']!r} of {name!r} is not a number") from error
        if name in table:
            raise InputError(f"{path} line {line}: class {name!r} is listed twice")
        table[name] = ClassRow(name, sr, group, row.get("nearest_seen_class", ""),
                               row.get("nearest_seen_dataset", ""))
    if not table:
        raise InputError(f"{path}: the class table lists no class")
    return list(table.values())



def read_index(path: Path) -> list[dict[str, str]]:
    """The filmstrip index: one row per candidate video, status "ok" or "failed" (with its reason)."""
    rows = read_csv(path, ("clip_id", "class_name", "video", "filmstrip", "status", "reason"), "filmstrip index")
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if row["status"] not in ("ok", "failed"):
            raise InputError(f"{path} line {line}: status {row['status']!r} is not 'ok' or 'failed'")
        if row["clip_id"] in seen:
            raise InputError(f"{path} line {line}: clip id {row['clip_id']!r} is listed twice")
        seen.add(row["clip_id"])
    return rows


def read_decisions(path: Path) -> list[dict[str, str]]:
    """The merged decisions: one row per video, decision keep / mixed / rejected."""
    rows = read_csv(path, ("clip_id", "class_name", "decision"), "decisions file")
    for line, row in enumerate(rows, start=2):
        if row["decision"] not in DECISIONS:
            raise InputError(f"{path} line {line}: decision {row['decision']!r} is not one of {DECISIONS}")
    return rows



def resolve_path(text: str, base: Path) -> Path:
    """A path as written in a file of folder `base` (relative to it, or absolute)."""
    return (Path(base) / text).resolve()


def format_float(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def parse_span(start: str, end: str, where: str) -> tuple[float, float] | None:
    """A `start_s,end_s` pair of a row (seconds, 0 <= start < end), or None when both are blank.

    Raises:
        InputError: one without the other, not numbers, or not 0 <= start < end (`where` names the file and line).
    """
    start, end = (start or "").strip(), (end or "").strip()
    if not start and not end:
        return None
    try:
        span = float(start), float(end)
    except ValueError:
        span = None
    if span is None or not 0 <= span[0] < span[1] < float("inf"):
        raise InputError(f"{where}: start_s,end_s must both be seconds with 0 <= start_s < end_s (or both blank), "
                         f"got {start!r}, {end!r}")
    return span
