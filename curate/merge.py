"""`curate merge`: the reviewers' filled sheets -> decisions and agreement (the paper's section 3, step 3).

A video is decided by the reviewers who labelled it (a sheet may leave a row blank, or lack it: that reviewer did not
see the video) when there are at least `MergeConfig.min_reviewers` of them; it is kept when each of them labelled it
"yes"; mixed and rejected videos are dropped, and videos with fewer reviewers are reported as "too-few-reviews",
never decided. Agreement is Fleiss' kappa over the reviewers of each video and Cohen's kappa per pair of reviewers
(over the videos both labelled), per class and overall. For agreement, "unsure" is a category of its own (two
reviewers agree only when both are unsure); for keeping, it counts as not yes, and the kappa of the keep decision
itself (yes against not yes) is reported beside it.

A reviewer may give the span of the video that shows the class (`start_s,end_s`, seconds on the filmstrip's clock:
from the clip's start) with a yes; the merged span is where the spans of the yes-reviewers who gave one overlap,
and spans that do not overlap make the video mixed (the reviewers do not agree where the action is).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import read_csv, write_csv, write_json, write_text
from curate.config import MergeConfig
from curate.tables import DECISIONS, LABELS, parse_span

__all__ = ["MergeSummary", "label_counts", "fleiss_kappa", "cohen_kappa", "merge_annotations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeSummary:
    """Decisions and agreement of `merge_annotations`."""

    reviewers: tuple[str, ...]
    n_videos: int
    decisions: dict[str, int]  # keep / mixed / rejected / too-few-reviews -> videos
    fleiss_kappa: float | None  # yes / no / unsure; None when undefined (every label the same)
    fleiss_kappa_keep: float | None  # yes against not yes
    unanimous: float  # share of the videos with >= 2 labels on which every label is the same
    min_reviewers: int
    too_few_reviews: tuple[str, ...]  # clip ids labelled by fewer than min_reviewers reviewers (not decided)
    labelled: dict[str, int]  # reviewer -> videos they labelled
    decisions_path: Path
    agreement_json: Path
    agreement_md: Path


def label_counts(labels: np.ndarray, categories: Sequence[str] = LABELS) -> np.ndarray:
    """How many raters gave each category to each subject.

    Shapes:
        labels: (N, R) strings, N subjects x R raters -> (N, K) int64, K = len(categories).
    """
    labels = np.asarray(labels)
    return np.stack([(labels == c).sum(axis=1) for c in categories], axis=1).astype(np.int64)  # K x (N,) -> (N, K)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of N subjects, each rated by n_i >= 2 raters into K categories.

    kappa = (P_bar - P_e) / (1 - P_e): P_bar is the mean over subjects of the share of agreeing pairs among that
    subject's raters, P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)); P_e = sum_j p_j^2 with p_j the share of all
    ratings in category j (Fleiss 1971, where every n_i is the same; with different n_i this is the usual extension,
    and it is Fleiss' own formula when they are equal). With two raters it is Scott's pi.

    Args:
        counts: counts[i, j] = raters who put subject i in category j.

    Returns:
        kappa, or None when it is undefined (P_e = 1: every rating in one category).

    Raises:
        ValueError: no subject, a subject with fewer than 2 ratings, or negative counts.

    Shapes:
        counts: (N, K).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"counts must be (subjects, categories) with at least one subject, got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be >= 0")
    n = counts.sum(axis=1)  # (N,) raters of each subject
    if np.any(n < 2):
        raise ValueError(f"every subject needs >= 2 ratings, got {sorted(set(n.tolist()))}")
    p_category = counts.sum(axis=0) / counts.sum()  # (K,)
    p_subject = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))  # (N,)
    p_bar, p_e = float(p_subject.mean()), float(np.square(p_category).sum())
    if 1.0 - p_e < 1e-12:  # every rating in one category: 0 / 0
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same subjects: (p_o - p_e) / (1 - p_e).

    p_o is the share of subjects on which they agree, p_e = sum over categories of the product of each rater's
    share of that category (Cohen 1960). Returns None when undefined (p_e = 1: both used one and the same category).

    Raises:
        ValueError: different lengths or no subject.
    """
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"two raters need labels of the same, non-empty set of subjects; got {len(a)} and {len(b)}")
    a, b = np.asarray(a), np.asarray(b)
    p_o = float(np.mean(a == b))
    p_e = sum(float(np.mean(a == c)) * float(np.mean(b == c)) for c in np.union1d(a, b))
    if 1.0 - p_e < 1e-12:  # every rating in one category: 0 / 0
        return None
    return (p_o - p_e) / (1.0 - p_e)


_SHORT_LABELS = {"y": "yes", "n": "no"}  # what reviewers type in a spreadsheet
_NOT_SEEN = ""  # a reviewer's label of a video they did not label (a blank row, or no row)


@dataclass(frozen=True)
class _Sheet:
    """One reviewer's filled sheet."""

    listed: set[tuple[str, str]]  # (clip_id, class_name) of every row
    labels: dict[tuple[str, str], str]  # -> yes / no / unsure, the labelled rows only
    spans: dict[tuple[str, str], tuple[float, float]]  # the spans given with a yes
    blank: int  # rows left without a label


def _read_sheet(path: Path) -> _Sheet:
    """A filled sheet: labels yes / no / unsure (or y / n), blank where the reviewer did not label the video.

    Raises:
        InputError: no rows, a repeated clip, a label that is not one of those, or a malformed span.
    """
    rows = read_csv(path, ("clip_id", "class_name", "label"), "annotation sheet")
    if not rows:
        raise InputError(f"{path}: the annotation sheet has no rows")
    labels: dict[tuple[str, str], str] = {}
    spans: dict[tuple[str, str], tuple[float, float]] = {}
    clips: dict[str, int] = {}
    blank, bad = 0, []
    for line, row in enumerate(rows, start=2):
        label = _SHORT_LABELS.get(row["label"].lower(), row["label"].lower())
        if row["clip_id"] in clips:
            first = clips[row["clip_id"]]
            raise InputError(f"{path} line {line}: clip {row['clip_id']!r} is listed twice (first on line {first})")
        clips[row["clip_id"]] = line
        key = (row["clip_id"], row["class_name"])
        span = parse_span(row.get("start_s", ""), row.get("end_s", ""), f"{path} line {line}")
        if label == _NOT_SEEN:
            blank += 1
        elif label not in LABELS:
            bad.append(f"line {line}: {row['label']!r}")
        else:
            labels[key] = label
            if span is not None and label == "yes":  # a span says where the class is shown: read with a yes only
                spans[key] = span
    if bad:
        raise InputError(f"{path}: labels must be yes, no or unsure (or y, n; blank: not seen); {len(bad)} are not "
                         f"({'; '.join(bad[:5])})")
    if not labels:
        raise InputError(f"{path}: no row has a label; fill the label column (yes, no or unsure)")
    return _Sheet({(row["clip_id"], row["class_name"]) for row in rows}, labels, spans, blank)


def _decision(votes: Sequence[str], min_reviewers: int) -> str:
    given = [label for label in votes if label != _NOT_SEEN]
    if len(given) < min_reviewers:
        return "too-few-reviews"
    yes = sum(label == "yes" for label in given)
    return "keep" if yes == len(given) else "mixed" if yes else "rejected"


def _merged_span(spans: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Where every given span overlaps; None without spans. Raises ValueError when they do not overlap."""
    if not spans:
        return None
    start, end = max(s for s, _ in spans), min(e for _, e in spans)
    if start >= end:
        raise ValueError("the spans do not overlap")
    return start, end


def _agreement(labels: np.ndarray, reviewers: Sequence[str]) -> dict:
    """Agreement statistics of an (N videos, R reviewers) label matrix ("" where a reviewer did not label)."""
    given = labels != _NOT_SEEN  # (N, R)
    rated = labels[given.sum(axis=1) >= 2]  # agreement needs two labels of a video
    rated_given = rated != _NOT_SEEN
    keep_labels = np.where(rated == "yes", "yes", np.where(rated_given, "not yes", _NOT_SEEN))
    pairs = {}
    for i, j in combinations(range(len(reviewers)), 2):
        both = given[:, i] & given[:, j]
        pairs[f"{reviewers[i]}~{reviewers[j]}"] = cohen_kappa(labels[both, i], labels[both, j]) if both.any() else None
    unanimous = [len(set(row[mask])) == 1 for row, mask in zip(rated, rated_given, strict=True)]
    return {
        "videos": int(labels.shape[0]),
        "label_counts": {c: int((labels == c).sum()) for c in LABELS},
        "videos_with_two_labels": int(len(rated)),
        "unanimous": float(np.mean(unanimous)) if len(rated) else None,
        "fleiss_kappa": fleiss_kappa(label_counts(rated)) if len(rated) else None,
        "fleiss_kappa_keep": fleiss_kappa(label_counts(keep_labels, ("yes", "not yes"))) if len(rated) else None,
        "cohen_kappa": pairs,
    }


def _kappa_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _share_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _agreement_markdown(record: dict) -> str:
    overall, decisions = record["overall"], record["decisions"]
    lines = [
        f"# Annotation agreement: {record['videos']} videos, {len(record['reviewers'])} reviewers "
        f"({', '.join(f'{name} {count}' for name, count in record['labelled'].items())} videos labelled)",
        "",
        f"Kept (each of at least {record['min_reviewers']} reviewers: yes): **{decisions['keep']}**; dropped as "
        f"mixed: {decisions['mixed']} ({record['span_conflicts']} of them for spans that do not overlap); rejected "
        f"(no yes): {decisions['rejected']}; **not decided, fewer than {record['min_reviewers']} reviewers**: "
        f"{decisions['too-few-reviews']}.",
    ]
    if record["too_few_reviews"]:
        shown = record["too_few_reviews"]
        lines += ["", "Videos with too few reviewers (label them, or lower --min-reviewers): "
                  + ", ".join(shown[:20]) + (f" and {len(shown) - 20} more" if len(shown) > 20 else "")]
    lines += [
        "",
        "| scope | videos | keep | mixed | rejected | too few reviews | unanimous | Fleiss' kappa (yes/no/unsure) | "
        "Fleiss' kappa (yes vs not yes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, block in [("**all**", overall)] + [(c, b) for c, b in record["classes"].items()]:
        d = block["decisions"]
        lines.append(f"| {name} | {block['videos']} | {d['keep']} | {d['mixed']} | {d['rejected']} | "
                     f"{d['too-few-reviews']} | {_share_text(block['unanimous'])} | "
                     f"{_kappa_text(block['fleiss_kappa'])} | {_kappa_text(block['fleiss_kappa_keep'])} |")
    lines += ["", "Cohen's kappa per pair of reviewers (yes / no / unsure, over the videos both labelled): "
              + ", ".join(f"{pair} {_kappa_text(k)}" for pair, k in overall["cohen_kappa"].items()) + ".", "",
              "'unsure' is a category of its own for agreement; for keeping, it counts as not yes. Agreement is over "
              "the videos that at least two reviewers labelled. A kappa is n/a when every label of its scope is the "
              "same (agreement is then complete but kappa is 0 / 0) or no video of the scope has two labels."]
    return "\n".join(lines) + "\n"


def merge_annotations(config: MergeConfig) -> MergeSummary:
    """Merge the filled sheets: keep the videos every reviewer of theirs marked yes, drop the rest, measure agreement.

    Writes `decisions.csv` (clip_id, class_name, decision keep / mixed / rejected / too-few-reviews, the counts of
    yes / no / unsure, the merged span start_s,end_s (blank without one) and each reviewer's label as
    `label_<reviewer>`, blank where they did not label it), `agreement.json` and `agreement.md` (per class and overall:
    decisions, share of unanimous videos, Fleiss' kappa over yes / no / unsure and over yes against not yes, and
    Cohen's kappa per pair of reviewers overall; the videos with too few reviewers).

    Raises:
        FileNotFoundError: a sheet is missing.
        ValueError: a sheet without any label, labels other than yes / no / unsure, repeated clips, a malformed span,
            or sheets that give one clip different classes.
    """
    reviewers = tuple(Path(p).stem for p in config.sheets)
    sheets = [_read_sheet(Path(p)) for p in config.sheets]
    classes_of: dict[str, tuple[str, Path]] = {}
    for path, sheet in zip(config.sheets, sheets, strict=True):
        for clip, name in sorted(sheet.listed):
            earlier, where = classes_of.setdefault(clip, (name, Path(path)))
            if earlier != name:
                raise InputError(f"{path} gives clip {clip!r} the class {name!r}, {where} gives it {earlier!r}; merge "
                                 "sheets made from one filmstrip index")
    keys = sorted({key for sheet in sheets for key in sheet.listed}, key=lambda key: (key[1], key[0]))  # by class
    for name, sheet in zip(reviewers, sheets, strict=True):
        if sheet.blank or len(sheet.labels) < len(keys):
            logger.warning("%s labelled %d of %d videos (%d rows left blank): the others are decided without them",
                           name, len(sheet.labels), len(keys), sheet.blank)
    labels = np.array([[sheet.labels.get(key, _NOT_SEEN) for sheet in sheets] for key in keys],
                      dtype=object).astype(str)  # (N, R)
    decisions, spans, span_conflicts = [], [], 0
    for key, row in zip(keys, labels, strict=True):
        decision = _decision(row, config.min_reviewers)
        try:
            span = _merged_span([sheet.spans[key] for sheet in sheets if key in sheet.spans])
        except ValueError:
            span, span_conflicts = None, span_conflicts + (decision == "keep")
            decision = "mixed" if decision == "keep" else decision
        decisions.append(decision)
        spans.append(span)
    too_few = [clip for (clip, _), decision in zip(keys, decisions, strict=True) if decision == "too-few-reviews"]
    if too_few:
        logger.warning("%d videos have fewer than %d reviewers and are not decided: %s", len(too_few),
                       config.min_reviewers, ", ".join(too_few[:10]))
    classes = list(dict.fromkeys(name for _, name in keys))

    def block(mask: np.ndarray) -> dict:
        stats = _agreement(labels[mask], reviewers)
        stats["decisions"] = {d: int(sum(dec == d for dec, m in zip(decisions, mask, strict=True) if m))
                              for d in DECISIONS}
        return stats

    overall = block(np.ones(len(keys), dtype=bool))
    per_class = {}
    for name in classes:
        stats = block(np.array([cls == name for _, cls in keys]))
        stats.pop("cohen_kappa")  # per pair and per class is too thin a sample to read
        per_class[name] = stats
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decisions_path = out_dir / "decisions.csv"
    header = ["clip_id", "class_name", "decision", *LABELS, "start_s", "end_s", *(f"label_{r}" for r in reviewers)]
    write_csv(decisions_path, header, [
        [clip, name, decision, *(int((row == c).sum()) for c in LABELS),
         *(("", "") if span is None else (f"{span[0]:g}", f"{span[1]:g}")), *row]
        for (clip, name), decision, span, row in zip(keys, decisions, spans, labels, strict=True)])
    record = {
        "config": {"sheets": [str(p) for p in config.sheets], "out_dir": str(out_dir),
                   "min_reviewers": config.min_reviewers},
        "reviewers": list(reviewers),
        "labelled": {name: len(sheet.labels) for name, sheet in zip(reviewers, sheets, strict=True)},
        "min_reviewers": config.min_reviewers,
        "videos": len(keys),
        "decisions": overall["decisions"],
        "too_few_reviews": too_few,
        "span_conflicts": span_conflicts,
        "overall": overall,
        "classes": per_class,
        "rules": {"keep": f"at least {config.min_reviewers} reviewers labelled it, each yes",
                  "mixed": "at least one yes and one no / unsure, or spans that do not overlap (dropped)",
                  "rejected": "no reviewer labelled yes (dropped)",
                  "too-few-reviews": f"fewer than {config.min_reviewers} reviewers labelled it (not decided)",
                  "unsure": "a category of its own for agreement; not yes for keeping",
                  "span": "where the spans given with a yes overlap"},
    }
    agreement_json, agreement_md = out_dir / "agreement.json", out_dir / "agreement.md"
    write_json(agreement_json, record)
    write_text(agreement_md, _agreement_markdown(record))
    logger.info("%d videos: %s; Fleiss' kappa %s", len(keys), overall["decisions"],
                _kappa_text(overall["fleiss_kappa"]))
    return MergeSummary(reviewers, len(keys), overall["decisions"], overall["fleiss_kappa"],
                        overall["fleiss_kappa_keep"], overall["unanimous"] or 0.0, config.min_reviewers,
                        tuple(too_few), record["labelled"], decisions_path, agreement_json, agreement_md)
