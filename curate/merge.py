"""`curate merge`: the reviewers' filled sheets -> decisions and agreement (the paper's section 3, step 3).

A video is kept when every reviewer labelled it "yes"; mixed and rejected videos are dropped. Agreement is
Fleiss' kappa over all reviewers and Cohen's kappa per pair of reviewers, per class and overall. For agreement,
"unsure" is a category of its own (two reviewers agree only when both are unsure); for keeping, it counts as
not yes, and the kappa of the keep decision itself (yes against not yes) is reported beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from curate.config import MergeConfig
from curate.tables import DECISIONS, LABELS
from extract.errors import InputError
from extract.files import read_csv, write_csv, write_json, write_text

__all__ = ["MergeSummary", "label_counts", "fleiss_kappa", "cohen_kappa", "merge_annotations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeSummary:
    """Decisions and agreement of `merge_annotations`."""

    reviewers: tuple[str, ...]
    n_videos: int
    decisions: dict[str, int]  # keep / mixed / rejected -> videos
    fleiss_kappa: float | None  # yes / no / unsure; None when undefined (every label the same)
    fleiss_kappa_keep: float | None  # yes against not yes
    unanimous: float  # share of videos on which every reviewer gave the same label
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
    """Fleiss' kappa of N subjects each rated by the same number n >= 2 of raters into K categories.

    kappa = (P_bar - P_e) / (1 - P_e): P_bar is the mean over subjects of the share of agreeing rater pairs,
    P_e = sum_j p_j^2 with p_j the share of all ratings in category j (Fleiss 1971). With two raters it is Scott's pi.

    Args:
        counts: counts[i, j] = raters who put subject i in category j.

    Returns:
        kappa, or None when it is undefined (P_e = 1: every rating in one category).

    Raises:
        ValueError: no subject, fewer than 2 raters, negative counts, or subjects with different numbers of raters.

    Shapes:
        counts: (N, K).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"counts must be (subjects, categories) with at least one subject, got {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be >= 0")
    raters = counts.sum(axis=1)
    if np.any(raters != raters[0]) or raters[0] < 2:
        raise ValueError(f"every subject needs the same number (>= 2) of ratings, got {sorted(set(raters.tolist()))}")
    n = raters[0]
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


def _read_sheet(path: Path) -> dict[tuple[str, str], str]:
    """(clip_id, class_name) -> label of one filled sheet; every row labelled yes / no / unsure (or y / n)."""
    rows = read_csv(path, ("clip_id", "class_name", "label"), "annotation sheet")
    if not rows:
        raise InputError(f"{path}: the annotation sheet has no rows")
    labels: dict[tuple[str, str], str] = {}
    clips: dict[str, int] = {}
    blank, bad = [], []
    for line, row in enumerate(rows, start=2):
        label = _SHORT_LABELS.get(row["label"].lower(), row["label"].lower())
        if row["clip_id"] in clips:
            first = clips[row["clip_id"]]
            raise InputError(f"{path} line {line}: clip {row['clip_id']!r} is listed twice (first on line {first})")
        clips[row["clip_id"]] = line
        if not label:
            blank.append(line)
        elif label not in LABELS:
            bad.append(f"line {line}: {row['label']!r}")
        labels[(row["clip_id"], row["class_name"])] = label
    if bad:
        raise InputError(f"{path}: labels must be yes, no or unsure (or y, n); {len(bad)} are not "
                         f"({'; '.join(bad[:5])})")
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (" ..." if len(blank) > 10 else "")
        raise InputError(f"{path}: {len(blank)} rows have no label (lines {shown}); finish the sheet (write unsure "
                         "where the filmstrip does not tell)")
    return labels


def _decision(votes: Sequence[str]) -> str:
    yes = sum(label == "yes" for label in votes)
    return "keep" if yes == len(votes) else "mixed" if yes else "rejected"


def _agreement(labels: np.ndarray, reviewers: Sequence[str]) -> dict:
    """Agreement statistics of an (N videos, R reviewers) label matrix."""
    keep_labels = np.where(labels == "yes", "yes", "not yes")
    pairs = {f"{reviewers[i]}~{reviewers[j]}": cohen_kappa(labels[:, i], labels[:, j])
             for i, j in combinations(range(len(reviewers)), 2)}
    return {
        "videos": int(labels.shape[0]),
        "label_counts": {c: int((labels == c).sum()) for c in LABELS},
        "unanimous": float(np.mean(np.all(labels == labels[:, :1], axis=1))),
        "fleiss_kappa": fleiss_kappa(label_counts(labels)),
        "fleiss_kappa_keep": fleiss_kappa(label_counts(keep_labels, ("yes", "not yes"))),
        "cohen_kappa": pairs,
    }


def _kappa_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _agreement_markdown(record: dict) -> str:
    overall = record["overall"]
    lines = [
        f"# Annotation agreement: {record['videos']} videos, {len(record['reviewers'])} reviewers "
        f"({', '.join(record['reviewers'])})",
        "",
        f"Kept (every reviewer: yes): **{record['decisions']['keep']}**; dropped as mixed: "
        f"{record['decisions']['mixed']}; rejected (no yes): {record['decisions']['rejected']}.",
        "",
        "| scope | videos | keep | mixed | rejected | unanimous | Fleiss' kappa (yes/no/unsure) | "
        "Fleiss' kappa (yes vs not yes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, block in [("**all**", overall)] + [(c, b) for c, b in record["classes"].items()]:
        lines.append(f"| {name} | {block['videos']} | {block['decisions']['keep']} | {block['decisions']['mixed']} | "
                     f"{block['decisions']['rejected']} | {block['unanimous']:.1%} | "
                     f"{_kappa_text(block['fleiss_kappa'])} | {_kappa_text(block['fleiss_kappa_keep'])} |")
    lines += ["", "Cohen's kappa per pair of reviewers (yes / no / unsure): "
              + ", ".join(f"{pair} {_kappa_text(k)}" for pair, k in overall["cohen_kappa"].items()) + ".", "",
              "'unsure' is a category of its own for agreement; for keeping, it counts as not yes. A kappa is n/a "
              "when every label of its scope is the same (agreement is then complete but kappa is 0 / 0)."]
    return "\n".join(lines) + "\n"


def merge_annotations(config: MergeConfig) -> MergeSummary:
    """Merge the filled sheets: keep the videos every reviewer marked yes, drop the rest, measure agreement.

    Writes `decisions.csv` (clip_id, class_name, decision keep / mixed / rejected, the counts of yes / no / unsure
    and each reviewer's label as `label_<reviewer>`), `agreement.json` and `agreement.md` (per class and overall:
    decisions, share of unanimous videos, Fleiss' kappa over yes / no / unsure and over yes against not yes, and
    Cohen's kappa per pair of reviewers overall).

    Raises:
        FileNotFoundError: a sheet is missing.
        ValueError: a sheet with unlabelled rows, labels other than yes / no / unsure, repeated clips, or sheets
            that do not list the same videos with the same classes.
    """
    reviewers = tuple(Path(p).stem for p in config.sheets)
    sheets = [_read_sheet(Path(p)) for p in config.sheets]
    keys = sorted(sheets[0], key=lambda key: (key[1], key[0]))  # (clip_id, class_name) by class: sheets are shuffled
    for path, sheet in zip(config.sheets[1:], sheets[1:], strict=True):
        if set(sheet) != set(keys):
            missing = sorted(set(keys) - set(sheet))
            extra = sorted(set(sheet) - set(keys))
            raise InputError(f"{path} and {config.sheets[0]} do not list the same videos and classes: "
                             f"{len(missing)} rows only in the first (e.g. {missing[:3]}), {len(extra)} only in the "
                             f"second (e.g. {extra[:3]}); merge sheets made by one `curate sheets` run")
    labels = np.array([[sheet[key] for sheet in sheets] for key in keys], dtype=object).astype(str)  # (N, R)
    decisions = [_decision(row) for row in labels]
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
    header = ["clip_id", "class_name", "decision", *LABELS, *(f"label_{r}" for r in reviewers)]
    write_csv(decisions_path, header, [[clip, name, decision, *(int((row == c).sum()) for c in LABELS), *row]
                                        for (clip, name), decision, row in zip(keys, decisions, labels, strict=True)])
    record = {
        "config": {"sheets": [str(p) for p in config.sheets], "out_dir": str(out_dir)},
        "reviewers": list(reviewers),
        "videos": len(keys),
        "decisions": overall["decisions"],
        "overall": overall,
        "classes": per_class,
        "rules": {"keep": "every reviewer labelled yes", "mixed": "at least one yes and one no / unsure (dropped)",
                  "rejected": "no reviewer labelled yes (dropped)",
                  "unsure": "a category of its own for agreement; not yes for keeping"},
    }
    agreement_json, agreement_md = out_dir / "agreement.json", out_dir / "agreement.md"
    write_json(agreement_json, record)
    write_text(agreement_md, _agreement_markdown(record))
    logger.info("%d videos: %s; Fleiss' kappa %s", len(keys), overall["decisions"],
                _kappa_text(overall["fleiss_kappa"]))
    return MergeSummary(reviewers, len(keys), overall["decisions"], overall["fleiss_kappa"],
                        overall["fleiss_kappa_keep"], overall["unanimous"], decisions_path, agreement_json,
                        agreement_md)
