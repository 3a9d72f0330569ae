"""`curate select`: candidate class names -> the class table of an evaluation set (the paper's section 3, step 1).

Semantic relatedness (eq. 1, `curate.relatedness`) of each candidate to the classes of the chosen seen datasets;
the candidates with 0.1 < SR <= 0.8 are kept and graded easy / medium / hard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from curate import relatedness
from curate.config import SelectConfig
from curate.relatedness import DIFFICULTY_GROUPS
from curate.tables import CLASS_COLUMNS
from extract.files import read_csv, write_csv

__all__ = ["SelectSummary", "select_classes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectSummary:
    """What `select_classes` found and wrote."""

    n_candidates: int
    counts: dict[str, int]  # relatedness group -> candidates, every group of curate.relatedness.GROUPS
    kept: tuple[str, ...]  # class names kept, in candidate order
    seen: tuple[str, ...]
    classes_path: Path
    relatedness_csv: Path
    histogram_png: Path


def select_classes(config: SelectConfig) -> SelectSummary:
    """Score the candidate class names (eq. 1) and write the class table of those with 0.1 < SR <= 0.8.

    `curate.relatedness.run_relatedness` writes its report of every candidate (relatedness.csv with the overlap and
    too-far flags, the SR histogram, the provenance of the lists and vectors) into `out_dir`; `classes.csv` lists
    the kept classes with their SR, group and nearest seen class, in candidate order.

    Raises:
        ValueError / FileNotFoundError: as `run_relatedness` (class file, lists, vectors, missing words).
    """
    report = relatedness.run_relatedness(config.relatedness_config())
    rows = read_csv(report.csv_path, ("class", "sr", "group"), "relatedness table")
    kept = [row for row in rows if row["group"] in DIFFICULTY_GROUPS]
    classes_path = Path(config.out_dir) / "classes.csv"
    write_csv(classes_path, CLASS_COLUMNS, [[row["class"], row["sr"], row["group"], row["nearest_seen_class"],
                                               row["nearest_seen_dataset"]] for row in kept])
    if not kept:
        logger.warning("no candidate class has 0.1 < SR <= 0.8: the class table %s is empty", classes_path)
    logger.info("kept %d of %d candidate classes: %s", len(kept), len(rows),
                ", ".join(f"{g} {report.counts[g]}" for g in DIFFICULTY_GROUPS))
    return SelectSummary(len(rows), report.counts, tuple(row["class"] for row in kept), report.seen, classes_path,
                         report.csv_path, report.png_path)
