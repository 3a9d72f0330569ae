"""`curate select`: candidate class names -> the class table of an evaluation set (the paper's section 3, step 1).

Semantic relatedness (eq. 1, `curate.relatedness`) of each candidate to the classes of the chosen seen datasets;
the candidates with 0.1 < SR <= 0.8 are kept and graded easy / medium / hard. Beside the candidates' SR
distribution stands a reference list's (UCF-101 against the other standard lists, by default) under the same
vectors and edges: what a known benchmark looks like with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common.files import read_csv, write_csv
from curate import classlists, relatedness
from curate.config import SelectConfig
from curate.relatedness import DIFFICULTY_GROUPS, GROUPS
from curate.tables import CLASS_COLUMNS
from text import class_embeddings

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
    reference: str | None = None  # the reference list (SelectConfig.reference)
    reference_counts: dict[str, int] | None = None  # its classes per group, vs the other standard lists

    @property
    def empty_groups(self) -> tuple[str, ...]:
        return tuple(group for group in DIFFICULTY_GROUPS if not self.counts[group])

    def distribution_table(self) -> str:
        """The candidates' classes per SR group beside the reference list's (text lines), and the empty groups."""
        other = self.reference_counts
        total, other_total = sum(self.counts.values()), sum((other or {}).values())
        head = f"{'SR group':<10}{'candidates':>16}" + (f"{self.reference + ' (reference)':>26}" if other else "")
        lines = [head]
        for group, _ in GROUPS:
            share = f"{self.counts[group]} ({self.counts[group] / max(total, 1):.0%})"
            lines.append(f"{group:<10}{share:>16}" + (
                f"{f'{other[group]} ({other[group] / max(other_total, 1):.0%})':>26}" if other else ""))
        if self.empty_groups:
            lines.append(f"warning: no candidate in group(s) {', '.join(self.empty_groups)}: the evaluation set will "
                         "report them as empty (other vectors or edges move the groups)")
        return "\n".join(lines)

def select_classes(config: SelectConfig) -> SelectSummary:
    """Score the candidate class names (eq. 1) and write the class table of those with 0.1 < SR <= 0.8.

    `curate.relatedness.run_relatedness` writes its report of every candidate (relatedness.csv with the overlap and
    too-far flags, the SR histogram, the provenance of the lists and vectors) into `out_dir`; `classes.csv` lists
    the kept classes with their SR, group and nearest seen class, in candidate order.

    Raises:
        ValueError / FileNotFoundError: as `run_relatedness` (class file, lists, vectors, missing words).

    The returned summary also holds the reference list's classes per group (`distribution_table` prints both).
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
    reference = None if config.reference is None else _reference_counts(config)
    return SelectSummary(len(rows), report.counts, tuple(row["class"] for row in kept), report.seen, classes_path,
                         report.csv_path, report.png_path, config.reference, reference)


def _reference_counts(config: SelectConfig) -> dict[str, int] | None:
    """Classes per SR group of the reference list against the standard lists without it, with the same vectors and
    edges; names without any known word are left out (the reference informs, it never stops the run), and None when
    the vectors know none."""
    source = class_embeddings.load_embedding_source(config.embeddings, name_map=config.name_map, missing="skip")
    names = [name for name in classlists.load_classlist(config.reference) if source.can_embed(name)]
    seen = {name: [n for n in classlists.load_classlist(name) if source.can_embed(n)]
            for name in relatedness.default_seen(config.reference)}
    if not names or not any(seen.values()):
        logger.warning("%s knows no word of the reference list %s or of its seen lists: no reference distribution",
                       source.spec, config.reference)
        return None
    rows = relatedness.semantic_relatedness(names, seen, source, config.edges)
    return {group: sum(row.group == group for row in rows) for group, _ in GROUPS}
