"""`curate sheets`: one blank annotation sheet per reviewer (the paper's section 3, step 3).

Every sheet lists the same videos (those with a filmstrip), each in its own seeded order so that no two reviewers
meet the videos (and a class's videos) in the same sequence; a reviewer fills `label` with yes (the video shows the
class), no or unsure, and may give, with a yes, the span that shows the class (`start_s,end_s`, seconds as the
filmstrip's cells count them). Sheets are never overwritten: they may hold annotations.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import write_csv
from curate.config import SheetsConfig
from curate.tables import SHEET_COLUMNS, read_index, relative_path, resolve_path

__all__ = ["SheetsSummary", "make_sheets"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SheetsSummary:
    """The sheets `make_sheets` wrote."""

    sheets: tuple[Path, ...]
    n_videos: int  # rows per sheet
    n_failed: int  # videos without a filmstrip, left out


def make_sheets(config: SheetsConfig) -> SheetsSummary:
    """Write one blank annotation sheet per reviewer: clip_id, class_name, video, filmstrip (the first page), pages,
    then label and the optional start_s,end_s to fill in.

    Every sheet lists the same videos (those with a filmstrip), shuffled per reviewer (`random.Random` seeded
    with `config.seed` and the reviewer's name: the same sheets on a rerun); paths are relative to the sheet. A
    reviewer fills `label` with yes (the video shows the class), no or unsure.

    Raises:
        FileNotFoundError: no index.
        FileExistsError: a reviewer's sheet exists already (it may hold annotations): it is never overwritten.
        ValueError: a malformed index, or an index without any filmstrip.
    """
    index_path = Path(config.filmstrips)
    rows = read_index(index_path)
    record = index_path.with_name("filmstrips.json")
    if record.is_file() and not json.loads(record.read_text(encoding="utf-8")).get("finished", True):
        logger.warning("%s: the filmstrips run into %s did not finish; the sheets list only the videos done so far "
                       "(run curate filmstrips again to finish it)", index_path, index_path.parent)
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        raise InputError(f"{index_path}: no video has a filmstrip; nothing to annotate")
    out_dir = Path(config.out_dir)
    sheets = [out_dir / f"{name}.csv" for name in config.reviewers]
    existing = [str(p) for p in sheets if p.exists()]
    if existing:
        raise FileExistsError(f"annotation sheets exist already and may hold labels: {', '.join(existing)}; move "
                              "them away or choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = index_path.parent
    table = [[row["clip_id"], row["class_name"], relative_path(resolve_path(row["video"], base), out_dir),
              relative_path(resolve_path(row["filmstrip"], base), out_dir), row.get("pages") or "1", "", "", ""]
             for row in ok]
    for name, sheet in zip(config.reviewers, sheets, strict=True):
        order = list(range(len(table)))
        random.Random(f"{config.seed}:{name}").shuffle(order)
        write_csv(sheet, SHEET_COLUMNS, [table[i] for i in order])
    logger.info("wrote %d sheets of %d videos to %s", len(sheets), len(ok), out_dir)
    return SheetsSummary(tuple(sheets), len(ok), len(rows) - len(ok))
