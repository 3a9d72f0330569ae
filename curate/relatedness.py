"""Semantic relatedness (SR) of candidate classes to the classes that backbones and benchmarks have seen.

The paper's eq. 1: `SR(c) = min over seen classes s of cosine_distance(phi(c), phi(s))`, phi = the mean of
the word vectors of a name (`text.class_embeddings`), seen = every class of Kinetics-400/600/700, VGGSound,
UCF-101 and ActivityNet. A class is kept for zero-shot evaluation when 0.1 < SR <= 0.8 and graded easy
(0.1, 0.33], medium (0.33, 0.66] or hard (0.66, 0.8]; SR <= 0.1 overlaps a seen class and SR > 0.8 is too far
from anything seen to be learnable. SR is rounded to `SR_DECIMALS` decimals before grading, so that a value
on a boundary grades as written (float32 word vectors carry about 7 significant digits anyway).

`run_relatedness` writes a CSV (one row per class), a Fig. 3-style histogram (PNG), a Markdown summary and a
JSON record of the config and the embedding provenance into one folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import atomic_write, write_csv, write_json, write_text
from curate import classlists
from curate.config import RelatednessConfig
from text import class_embeddings
from text.class_names import read_class_file

__all__ = [
    "DATASETS",
    "DIFFICULTY_GROUPS",
    "GROUPS",
    "PAPER_EDGES",
    "group_bounds",
    "RelatednessRow",
    "RelatednessSummary",
    "SR_DECIMALS",
    "default_seen",
    "relatedness_group",
    "run_relatedness",
    "semantic_relatedness",
    "separate_captions",
    "sr_histogram_figure",
]

logger = logging.getLogger(__name__)

# The seen datasets of eq. 1, in the order the issue names them (also the order of ties in the output).
DATASETS = ("kinetics400", "kinetics600", "kinetics700", "vggsound", "ucf101", "activitynet")
# The paper's upper SR bounds (inclusive) of overlap, easy, medium and hard; "too-far" takes the rest.
PAPER_EDGES = (0.1, 0.33, 0.66, 0.8)
_GROUP_NAMES = ("overlap", "easy", "medium", "hard", "too-far")


def group_bounds(edges: Sequence[float] = PAPER_EDGES) -> tuple[tuple[str, float], ...]:
    """(group, upper bound of SR, inclusive) for the four edges, "too-far" last (bound inf)."""
    return tuple(zip(_GROUP_NAMES, (*edges, math.inf), strict=True))


GROUPS = group_bounds()  # the paper's
DIFFICULTY_GROUPS = ("easy", "medium", "hard")  # the groups an evaluation set keeps (MZSL-50's E / M / H)
SR_DECIMALS = 6
_SHARE_BELOW = 0.2  # the paper: "80% of UCF-101's classes have SR < 0.2"
_GROUP_COLOURS = {
    "overlap": "#7f7f7f",
    "easy": "#2ca02c",
    "medium": "#ff7f0e",
    "hard": "#d62728",
    "too-far": "#9467bd",
}
_CSV_COLUMNS = ("class", "words", "sr", "group", "flag", "nearest_seen_class", "nearest_seen_dataset")


@dataclass(frozen=True)
class RelatednessRow:
    """SR of one class and the seen class it is closest to."""

    class_name: str
    words: tuple[str, ...]  # the words embedded (after the name map), see text.class_embeddings
    sr: float  # min cosine distance to any seen class, rounded to SR_DECIMALS
    group: str  # overlap, easy, medium, hard or too-far
    nearest_seen_class: str
    nearest_seen_dataset: str  # datasets holding a nearest class, ";"-joined when several tie

    @property
    def flag(self) -> str:
        """A warning for classes outside 0.1 < SR <= 0.8, empty otherwise."""
        if self.group == "overlap":
            return f"overlap: SR <= 0.1 to '{self.nearest_seen_class}' ({self.nearest_seen_dataset})"
        if self.group == "too-far":
            return "too far: SR > 0.8 from every seen class"
        return ""


@dataclass(frozen=True)
class RelatednessSummary:
    """What `run_relatedness` found and wrote."""

    n_classes: int
    seen: tuple[str, ...]
    counts: dict[str, int]  # group -> number of classes, every group present
    share_sr_below_0_2: float  # fraction of classes with SR < 0.2
    csv_path: Path
    png_path: Path
    markdown_path: Path
    json_path: Path
    compare_counts: dict[str, int] | None = None  # group -> classes under `config.compare`
    compare_png_path: Path | None = None  # both distributions side by side


def relatedness_group(sr: float, edges: Sequence[float] = PAPER_EDGES) -> str:
    """The group of an SR value; the paper's edges: overlap (<= 0.1), easy (<= 0.33), medium (<= 0.66), hard
    (<= 0.8), too-far."""
    value = round(float(sr), SR_DECIMALS)
    if math.isnan(value) or value < 0:
        raise ValueError(f"SR must be a cosine distance >= 0, got {sr}")
    return next(group for group, upper in group_bounds(edges) if value <= upper)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = matrix.astype(np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)  # (N, E) / (N, 1)


def semantic_relatedness(
    classes: Sequence[str], seen_names: Mapping[str, Sequence[str]], source: class_embeddings.EmbeddingSource,
    edges: Sequence[float] = PAPER_EDGES,
) -> list[RelatednessRow]:
    """SR of each class against every seen class (eq. 1).

    Args:
        classes: names of the candidate classes.
        seen_names: seen dataset -> its class names. A name in several datasets is compared once; ties
            for the nearest class report every dataset concerned.
        source: the embedding source (phi); cosine distance ignores its normalisation.
        edges: upper SR bounds of overlap, easy, medium and hard (`PAPER_EDGES`).

    Returns:
        One row per class, in the order given.

    Raises:
        ValueError: no seen class, or words missing from the source (`MissingWordsError`).

    Shapes:
        classes: C names, seen: S names in all -> C rows; distances (C, S).
    """
    seen: list[str] = []
    datasets_of: dict[str, list[str]] = {}
    for dataset, names in seen_names.items():
        for name in names:
            if name not in datasets_of:
                seen.append(name)
                datasets_of[name] = []
            if dataset not in datasets_of[name]:
                datasets_of[name].append(dataset)
    if not seen:
        raise ValueError("semantic relatedness needs at least one seen class")
    if not classes:
        return []
    class_vectors = _unit_rows(source.embed(classes))  # (C, E)
    seen_vectors = _unit_rows(source.embed(seen))  # (S, E)
    distances = np.round(1.0 - class_vectors @ seen_vectors.T, SR_DECIMALS)  # (C, E) @ (E, S) -> (C, S)
    rows = []
    for index, name in enumerate(classes):
        closest = float(distances[index].min())
        sr = closest if closest > 0 else 0.0  # identical vectors can round to -0.0 or a tiny negative value
        ties = np.flatnonzero(distances[index] == distances[index].min())
        nearest = seen[int(ties[0])]
        tied_datasets = [dataset for dataset in seen_names if any(dataset in datasets_of[seen[t]] for t in ties)]
        rows.append(
            RelatednessRow(
                class_name=name,
                words=tuple(source.tokenize(name)),
                sr=sr,
                group=relatedness_group(sr, edges),
                nearest_seen_class=nearest,
                nearest_seen_dataset=";".join(tied_datasets),
            )
        )
    return rows


def default_seen(classes: str) -> tuple[str, ...]:
    """The seen lists for a run on `classes`: the six of eq. 1, minus the evaluated list itself when
    `classes` names a shipped list (the paper's "UCF-101 vs the other datasets")."""
    if not _is_shipped(classes):
        return DATASETS
    evaluated = classlists.canonical_classlist(classes)
    return tuple(name for name in DATASETS if classlists.canonical_classlist(name) != evaluated)


def _is_shipped(classes: str) -> bool:
    try:
        classlists.canonical_classlist(classes)
    except ValueError:
        return False
    return True


def _load_classes(classes: str) -> tuple[list[str], str]:
    """(names, provenance line). A shipped list name wins over a file of that name (write ./NAME for it)."""
    if _is_shipped(classes):
        key = classlists.canonical_classlist(classes)
        return classlists.load_classlist(key), f"shipped list {key}: {classlists.CLASSLIST_SOURCES[key]}"
    return read_class_file(classes), f"file {Path(classes).resolve()}"


def _embeddable(names: list[str], source: class_embeddings.EmbeddingSource, what: str) -> list[str]:
    """The names `source` can embed; the others (no known word) are dropped with a warning.

    Raises:
        InputError: no name of `what` can be embedded.
    """
    kept = [name for name in names if source.can_embed(name)]
    if len(kept) < len(names):
        dropped = [name for name in names if name not in set(kept)]
        logger.warning("%s: %d class(es) skipped, no word of theirs is in %s: %s", what, len(dropped), source.spec,
                       ", ".join(repr(n) for n in dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    if not kept:
        raise InputError(f"{what}: no class has a word that {source.spec} knows")
    return kept


def _write_csv(path: Path, rows: Sequence[RelatednessRow]) -> None:
    write_csv(path, _CSV_COLUMNS, [[row.class_name, " ".join(row.words), f"{row.sr:.{SR_DECIMALS}f}", row.group,
                                    row.flag, row.nearest_seen_class, row.nearest_seen_dataset] for row in rows])


def sr_histogram_figure(rows: Sequence[RelatednessRow], title: str, compare: Sequence[RelatednessRow] = (),
                        compare_title: str = "", edges: Sequence[float] = PAPER_EDGES):
    """Histogram of SR, stacked by group in the group colours, the group edges marked and labelled (Fig. 3).

    With `compare` (the same classes under another embedding source) a second panel on the same bins and
    y-scale stands beside the first.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders the PNG

    panels = [(rows, title)] + ([(compare, compare_title)] if compare else [])
    top = max(1.0, math.ceil(max((row.sr for rows_, _ in panels for row in rows_), default=0.0) * 20) / 20)
    # 0.05 wide bins split at the group edges, so that no bar holds two groups' classes
    bins = np.unique(np.concatenate([np.linspace(0.0, top, int(round(top / 0.05)) + 1),
                                     [e for e in edges if 0.0 < e < top]]).round(SR_DECIMALS))
    figure = Figure(figsize=(7.5 * len(panels), 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    first = None
    for index, (panel_rows, panel_title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1, sharey=first)
        first = first or axes
        _draw_histogram(axes, panel_rows, panel_title, bins, edges)
    figure.draw_without_rendering()  # the layout, so that the captions' extents are final
    for axes in figure.axes:
        separate_captions(figure, axes, list(axes.texts))
    return figure


_CAPTION_STEP_PT = 8.0  # how far a caption moves up when it would cover another one
_TITLE_PAD_PT = 14.0  # room between the axes and the title for one row of captions


def separate_captions(figure, axes, captions: list) -> None:
    """Move each caption (an annotation above `axes`, offset in points) up one row at a time until it covers none
    before it, then give the title room for the rows used: edges close together, or groups of one class among
    many, would otherwise print their captions over each other."""
    renderer = figure.canvas.get_renderer()
    placed, rows = [], 0
    for caption in captions:
        for row in range(len(captions)):
            caption.xyann = (caption.xyann[0], 2.0 + row * _CAPTION_STEP_PT)
            box = caption.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
        rows = max(rows, row)
    axes.set_title(axes.get_title(), fontsize=9, pad=_TITLE_PAD_PT + rows * _CAPTION_STEP_PT)


def _draw_histogram(axes, rows: Sequence[RelatednessRow], title: str, bins: np.ndarray,
                    edges: Sequence[float]) -> None:
    import textwrap

    from matplotlib.ticker import MaxNLocator

    groups = [group for group, _ in GROUPS]
    values = [[row.sr for row in rows if row.group == group] for group in groups]
    labels = [f"{group} ({len(group_values)})" for group, group_values in zip(groups, values, strict=True)]
    axes.hist(values, bins=bins, stacked=True, color=[_GROUP_COLOURS[g] for g in groups], label=labels)
    for upper in edges:
        axes.axvline(upper, color="black", linestyle="--", linewidth=0.8)
        axes.annotate(f"{upper:g}", (upper, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                      textcoords="offset points", ha="center", va="bottom", fontsize=7)
    axes.set_xlim(0.0, bins[-1])
    axes.set_xlabel("semantic relatedness SR (min cosine distance to a seen class)")
    axes.set_ylabel("classes")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 of a class
    axes.set_title("\n".join(textwrap.wrap(title, 95)), fontsize=9, pad=_TITLE_PAD_PT)
    axes.legend(fontsize=8, title="group (classes)", title_fontsize=8)


def _write_histogram(path: Path, rows: Sequence[RelatednessRow], title: str, edges: Sequence[float]) -> None:
    figure = sr_histogram_figure(rows, title, edges=edges)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"))


def _markdown(rows: Sequence[RelatednessRow], counts: dict[str, int], share: float, title: str,
              edges: Sequence[float]) -> str:
    total = len(rows)
    lower = (None, *edges)
    lines = [f"**{title}**", "", "| group | SR | classes | share |", "|---|---|---:|---:|"]
    for (group, upper), low in zip(group_bounds(edges), lower, strict=True):
        range_text = f"SR <= {upper:g}" if low is None else f"SR > {low:g}" if math.isinf(upper) else (
            f"({low:g}, {upper:g}]")
        lines.append(f"| {group} | {range_text} | {counts[group]} | {counts[group] / max(total, 1):.1%} |")
    lines += ["", f"SR < {_SHARE_BELOW}: {round(share * total)} of {total} classes ({share:.1%})."]
    return "\n".join(lines) + "\n"


def _comparison_markdown(spec: str, counts: dict[str, int], share: float, other_spec: str, other: dict) -> str:
    total = sum(counts.values())
    lines = ["", f"**The same classes under {other_spec}** (relatedness_compare.png):", "",
             f"| group | {spec} | {other_spec} |", "|---|---:|---:|"]
    lines += [f"| {group} | {counts[group]} | {other['counts'][group]} |" for group, _ in GROUPS]
    lines += ["", f"SR < {_SHARE_BELOW}: {share:.1%} under {spec}, {other['share_sr_below_0_2']:.1%} under "
              f"{other_spec} (of {total} classes)."]
    return "\n".join(lines) + "\n"


def run_relatedness(config: RelatednessConfig) -> RelatednessSummary:
    """Score `config.classes` against the seen lists and write relatedness.{csv,png,md,json} to `out_dir`.

    Raises:
        ValueError / FileNotFoundError: bad class file, unknown list, vectors or missing words.
    """
    names, classes_source = _load_classes(config.classes)
    if not _is_shipped(config.classes):  # a researcher's candidates: "Origami" and "origami" are one class
        names = classlists.merge_spellings(names, config.classes)
    seen = config.seen if config.seen is not None else default_seen(config.classes)
    if _is_shipped(config.classes) and classlists.canonical_classlist(config.classes) in [
        classlists.canonical_classlist(name) for name in seen if _is_shipped(name)
    ]:
        logger.warning(
            "the seen lists include the evaluated list %s: each class overlaps itself (SR 0)", config.classes
        )
    source = class_embeddings.load_embedding_source(config.embeddings, name_map=config.name_map, missing=config.missing)
    loaded = {name: _load_classes(name) for name in seen}  # shipped lists and the researcher's own files
    seen_names = {name: names_ for name, (names_, _) in loaded.items()}
    if config.missing == "skip":  # a name without any known word has no vector: left out, not fatal
        names = _embeddable(names, source, config.classes)
        seen_names = {name: _embeddable(names_, source, name) for name, names_ in seen_names.items()}
    edges = config.edges
    rows = semantic_relatedness(names, seen_names, source, edges)
    empty = [group for group in DIFFICULTY_GROUPS if not any(row.group == group for row in rows)]
    if empty:
        logger.warning("no class of %s falls in group(s) %s with %s and edges %s", config.classes, ", ".join(empty),
                       source.spec, ",".join(f"{e:g}" for e in edges))

    counts = {group: sum(row.group == group for row in rows) for group, _ in GROUPS}
    share = sum(row.sr < _SHARE_BELOW for row in rows) / len(rows)
    seen_text = ", ".join(name if _is_shipped(name) else Path(name).name for name in seen)  # file names, not paths
    title = f"{Path(config.classes).name} ({len(rows)} classes) vs {seen_text}; {source.spec}"
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RelatednessSummary(
        n_classes=len(rows),
        seen=tuple(seen),
        counts=counts,
        share_sr_below_0_2=share,
        csv_path=out_dir / "relatedness.csv",
        png_path=out_dir / "relatedness.png",
        markdown_path=out_dir / "relatedness.md",
        json_path=out_dir / "relatedness.json",
    )
    _write_csv(summary.csv_path, rows)
    _write_histogram(summary.png_path, rows, title, edges)
    markdown = _markdown(rows, counts, share, title, edges)
    compared = None
    if config.compare:
        other = class_embeddings.load_embedding_source(config.compare, name_map=config.name_map,
                                                       missing=config.missing)
        compare_rows = semantic_relatedness(names, seen_names, other, edges)
        compared = {"embedding": other.provenance(),
                    "counts": {group: sum(row.group == group for row in compare_rows) for group, _ in GROUPS},
                    "share_sr_below_0_2": sum(row.sr < _SHARE_BELOW for row in compare_rows) / len(rows)}
        compare_title = f"{Path(config.classes).name} ({len(rows)} classes) vs {seen_text}; {other.spec}"
        summary = replace(summary, compare_counts=compared["counts"],
                          compare_png_path=out_dir / "relatedness_compare.png")
        figure = sr_histogram_figure(rows, title, compare_rows, compare_title, edges)
        atomic_write(summary.compare_png_path, lambda temporary: figure.savefig(temporary, format="png"))
        markdown += _comparison_markdown(source.spec, counts, share, other.spec, compared)
    write_text(summary.markdown_path, markdown)
    record = {
        "config": {key: None if value is None else str(value) for key, value in asdict(config).items()}
        | {"seen": list(seen)},
        "classes_source": classes_source,
        "seen_sources": {name: provenance for name, (_, provenance) in loaded.items()},
        "embedding": source.provenance(),
        "groups": {group: upper if math.isfinite(upper) else None for group, upper in group_bounds(edges)},
        "empty_groups": empty,
        "counts": counts,
        "share_sr_below_0_2": share,
        "compare": compared,
    }
    write_json(summary.json_path, record)
    logger.info("relatedness of %d classes vs %s written to %s", len(rows), ", ".join(seen), out_dir)
    return summary
