"""Curation of an MZSL-style zero-shot evaluation set (the paper's section 3): select, filmstrips, annotate, build.

The protocol, one public function per step (`cli.py curate ...`):

1. `select_classes`: semantic relatedness (eq. 1, `eval.relatedness`) of candidate class names to the classes of
   the chosen seen datasets; keep 0.1 < SR <= 0.8 and grade easy / medium / hard; write the class table.
2. `make_filmstrips`: for every candidate video, frames at 1 fps over its first 100 s in a 10 x 10 grid
   (`eval.filmstrip`), in a process pool; a video that cannot be decoded is recorded with its reason.
3. `make_sheets`: one blank annotation sheet (CSV) per reviewer; `merge_annotations`: keep the videos that every
   reviewer marked "yes", drop mixed ones, and report agreement (Fleiss' kappa over all reviewers, Cohen's kappa
   per pair of reviewers; per class and overall).
4. `build_evaluation_set`: the kept videos as a manifest in the synthetic benchmark's format (split "unseen",
   with each class's group and SR), the class table with video counts, the videos dropped and why, and the
   statistics of the paper's Table 2 (classes and videos per group) and Fig. 3 (videos per class by SR).

Labels are "yes" (the video shows the class), "no" and "unsure". Only "yes" keeps a video: "unsure" counts as not
yes for keeping. For agreement, "unsure" is a category of its own (two reviewers agree only when both are
unsure); the kappa of the keep decision itself (yes against no-or-unsure) is reported beside it.

The steps exchange CSV files whose paths are relative to the file that names them (absolute paths also work),
so a curation folder can be moved or shared with annotators as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval import filmstrip, relatedness
from features.manifest import read_clip_list
from fusion import class_embeddings

__all__ = [
    "BuildConfig",
    "BuildSummary",
    "ClassRow",
    "DECISIONS",
    "FilmstripConfig",
    "FilmstripSummary",
    "GROUPS",
    "LABELS",
    "MergeConfig",
    "MergeSummary",
    "SelectConfig",
    "SelectSummary",
    "SheetsConfig",
    "SheetsSummary",
    "build_evaluation_set",
    "cohen_kappa",
    "fleiss_kappa",
    "label_counts",
    "make_filmstrips",
    "make_sheets",
    "merge_annotations",
    "read_class_table",
    "select_classes",
]

logger = logging.getLogger(__name__)

GROUPS = ("easy", "medium", "hard")  # the groups kept for evaluation (eval.relatedness.GROUPS without the flags)
LABELS = ("yes", "no", "unsure")  # an annotator's label of one video; only "yes" keeps a video
DECISIONS = ("keep", "mixed", "rejected")  # all yes; some yes and some not; no yes at all
SPLIT = "unseen"  # the split of every clip of the evaluation set
_SR_BOUNDS = {"easy": "(0.1, 0.33]", "medium": "(0.33, 0.66]", "hard": "(0.66, 0.8]"}
_CLASS_COLUMNS = ("class_name", "sr", "group", "nearest_seen_class", "nearest_seen_dataset")
_INDEX_COLUMNS = ("clip_id", "class_name", "video", "filmstrip", "status", "reason", "duration_s", "frames",
                  "has_audio", "width_px", "height_px", "fps", "sample_rate_hz", "audio_channels")
_SHEET_COLUMNS = ("clip_id", "class_name", "video", "filmstrip", "label")
_MANIFEST_COLUMNS = ("clip_id", "path", "class_name", "split", "group", "sr", "has_audio", "duration_s", "width_px",
                     "height_px", "fps", "sample_rate_hz", "audio_channels")
_REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- configs and summaries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectConfig:
    """`curate select`: candidate class names -> the class table of the evaluation set."""

    candidates: str  # class file (one name per line, # comments) or a shipped list name, e.g. "hmdb51"
    out_dir: Path  # classes.csv (kept classes) and relatedness.{csv,png,md,json} (every candidate)
    seen: tuple[str, ...] | None = None  # shipped seen lists; None: eval.relatedness.default_seen(candidates)
    vectors: str = class_embeddings.DEFAULT_SPEC  # word vectors (phi of eq. 1)
    name_map: Path | None = None  # CSV original,manual applied to every name before embedding
    missing: str = "error"  # words missing from the vectors: "error" or "skip"

    def __post_init__(self) -> None:
        # The relatedness config validates the shared fields (seen lists, vectors, missing).
        self.relatedness_config()

    def relatedness_config(self) -> relatedness.RelatednessConfig:
        return relatedness.RelatednessConfig(classes=self.candidates, out_dir=Path(self.out_dir), seen=self.seen,
                                             vectors=self.vectors, name_map=self.name_map, missing=self.missing)


@dataclass(frozen=True)
class SelectSummary:
    """What `select_classes` found and wrote."""

    n_candidates: int
    counts: dict[str, int]  # relatedness group -> candidates, every group of eval.relatedness.GROUPS
    kept: tuple[str, ...]  # class names kept, in candidate order
    seen: tuple[str, ...]
    classes_path: Path
    relatedness_csv: Path
    histogram_png: Path


@dataclass(frozen=True)
class FilmstripConfig:
    """`curate filmstrips`: one filmstrip image per candidate video."""

    videos: Path  # candidate videos: a CSV with path,class_name (paths relative to it) or a folder <class>/<video>
    out_dir: Path  # filmstrips/<clip_id>.<jpg|png>, filmstrips.csv (index), failures.csv
    classes: Path | None = None  # a class table (curate select's classes.csv): only videos of its classes
    layout: filmstrip.FilmstripLayout = field(default_factory=filmstrip.FilmstripLayout)
    workers: int = 2  # processes decoding videos in parallel (1: in this process)
    progress: bool = False  # tqdm bar on stderr

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class FilmstripSummary:
    """What `make_filmstrips` did."""

    n_videos: int  # videos of the clip list (of the class table's classes)
    n_ok: int
    n_failed: int
    n_skipped: int  # videos whose class is not in the class table
    index_path: Path
    failures_path: Path
    elapsed_s: float

    @property
    def videos_per_s(self) -> float:
        return self.n_videos / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class SheetsConfig:
    """`curate sheets`: one blank annotation sheet per reviewer."""

    filmstrips: Path  # the index written by make_filmstrips (filmstrips.csv)
    reviewers: tuple[str, ...]  # names; each sheet is <out_dir>/<name>.csv
    out_dir: Path

    def __post_init__(self) -> None:
        if not self.reviewers:
            raise ValueError("name at least one reviewer")
        bad = [name for name in self.reviewers if not _REVIEWER.match(name)]
        if bad:
            raise ValueError(f"reviewer names become file names: use letters, digits, '_', '-', '.'; got {bad}")
        if len({name.lower() for name in self.reviewers}) != len(self.reviewers):
            raise ValueError(f"reviewer names must be distinct (ignoring case), got {list(self.reviewers)}")


@dataclass(frozen=True)
class SheetsSummary:
    """The sheets `make_sheets` wrote."""

    sheets: tuple[Path, ...]
    n_videos: int  # rows per sheet
    n_failed: int  # videos without a filmstrip, left out


@dataclass(frozen=True)
class MergeConfig:
    """`curate merge`: the reviewers' filled sheets -> decisions and agreement."""

    sheets: tuple[Path, ...]  # one CSV per reviewer; the reviewer's name is the file's stem
    out_dir: Path  # decisions.csv, agreement.json, agreement.md

    def __post_init__(self) -> None:
        if len(self.sheets) < 2:
            raise ValueError(f"merging needs the sheets of at least 2 reviewers, got {len(self.sheets)}")
        names = [Path(p).stem for p in self.sheets]
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"two sheets have the same reviewer name (file stem): {names}; rename one")


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


@dataclass(frozen=True)
class BuildConfig:
    """`curate build`: the final evaluation set and its statistics."""

    decisions: Path  # decisions.csv of merge_annotations
    classes: Path  # the class table (classes.csv of select_classes)
    filmstrips: Path  # the index of make_filmstrips (video paths, decode failures, durations)
    out_dir: Path  # manifest.csv, classes.csv, dropped.csv, statistics.md, videos_per_class.png, build.json
    min_videos_per_class: int = 1  # a class with fewer kept videos is dropped (with its videos), and noted

    def __post_init__(self) -> None:
        if self.min_videos_per_class < 1:
            raise ValueError(f"min_videos_per_class must be at least 1, got {self.min_videos_per_class}")


@dataclass(frozen=True)
class BuildSummary:
    """The evaluation set `build_evaluation_set` wrote."""

    n_classes: int
    n_videos: int
    groups: dict[str, dict[str, int]]  # group -> {"classes": n, "videos": n}
    dropped: dict[str, int]  # reason (without details) -> videos
    dropped_classes: tuple[str, ...]  # classes of the table left without enough videos
    manifest_path: Path
    classes_path: Path
    dropped_path: Path
    statistics_md: Path
    figure_png: Path


@dataclass(frozen=True)
class ClassRow:
    """One class of the class table."""

    class_name: str
    sr: float
    group: str  # easy, medium or hard
    nearest_seen_class: str = ""
    nearest_seen_dataset: str = ""


# --- shared CSV helpers ---------------------------------------------------------------------------------------


def _read_csv(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV with a header that has the `required` columns (values stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets often add a BOM
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"{path}: {what} needs columns {', '.join(required)}; missing {', '.join(missing)}")
            return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read the {what} as UTF-8 CSV ({error})") from error


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(partial, path)


def _relative(path: Path, base: Path) -> str:
    """`path` relative to the folder `base`, with / separators (the manifest contract)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _resolve(text: str, base: Path) -> Path:
    return (Path(base) / text).resolve()


def _format_float(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


# --- 1. select ------------------------------------------------------------------------------------------------


def read_class_table(path: str | Path) -> list[ClassRow]:
    """The class table: CSV with columns class_name,sr,group (and optionally the nearest seen class / dataset).

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, an SR that is not a number, a group other than easy / medium / hard, or a
            class listed twice.
    """
    path = Path(path)
    rows = _read_csv(path, ("class_name", "sr", "group"), "class table")
    table: dict[str, ClassRow] = {}
    for line, row in enumerate(rows, start=2):
        name, group = row["class_name"], row["group"].lower()
        if not name:
            raise ValueError(f"{path} line {line}: empty class_name")
        if group not in GROUPS:
            raise ValueError(f"{path} line {line}: group {row['group']!r} of {name!r} is not one of {GROUPS}")
        try:
            sr = float(row["sr"])
        except ValueError as error:
            raise ValueError(f"{path} line {line}: sr {row['sr']!r} of {name!r} is not a number") from error
        if name in table:
            raise ValueError(f"{path} line {line}: class {name!r} is listed twice")
        table[name] = ClassRow(name, sr, group, row.get("nearest_seen_class", ""),
                               row.get("nearest_seen_dataset", ""))
    if not table:
        raise ValueError(f"{path}: the class table lists no class")
    return list(table.values())


def select_classes(config: SelectConfig) -> SelectSummary:
    """Score the candidate class names (eq. 1) and write the class table of those with 0.1 < SR <= 0.8.

    `eval.relatedness.run_relatedness` writes its report of every candidate (relatedness.csv with the overlap and
    too-far flags, the SR histogram, the provenance of the lists and vectors) into `out_dir`; `classes.csv` lists
    the kept classes with their SR, group and nearest seen class, in candidate order.

    Raises:
        ValueError / FileNotFoundError: as `run_relatedness` (class file, lists, vectors, missing words).
    """
    report = relatedness.run_relatedness(config.relatedness_config())
    rows = _read_csv(report.csv_path, ("class", "sr", "group"), "relatedness table")
    kept = [row for row in rows if row["group"] in GROUPS]
    classes_path = Path(config.out_dir) / "classes.csv"
    _write_csv(classes_path, _CLASS_COLUMNS, [[row["class"], row["sr"], row["group"], row["nearest_seen_class"],
                                               row["nearest_seen_dataset"]] for row in kept])
    if not kept:
        logger.warning("no candidate class has 0.1 < SR <= 0.8: the class table %s is empty", classes_path)
    logger.info("kept %d of %d candidate classes: %s", len(kept), len(rows),
                ", ".join(f"{g} {report.counts[g]}" for g in GROUPS))
    return SelectSummary(len(rows), report.counts, tuple(row["class"] for row in kept), report.seen, classes_path,
                         report.csv_path, report.png_path)


# --- 2. filmstrips --------------------------------------------------------------------------------------------


def _filmstrip_path(root: Path, clip_id: str, image_format: str) -> Path:
    """`root/<clip_id>.<format>`, kept under `root`.

    A clip id with '..' or a root (a clip list's paths outside its folder give such ids) loses those parts and
    gains a short hash of the whole id, so that two ids never share an image.
    """
    parts = Path(clip_id).parts
    kept = [part for part in parts if part not in ("..", ".") and part != Path(clip_id).anchor]
    if not kept:
        raise ValueError(f"clip id {clip_id!r} names no file; give the clip list a clip_id column")
    if len(kept) != len(parts):
        kept[-1] += "~" + hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:8]
    return root.joinpath(*kept[:-1], f"{kept[-1]}.{image_format}")


def _run_jobs(jobs: list[filmstrip.FilmstripJob], workers: int, progress: bool) -> Iterator[filmstrip.FilmstripResult]:
    bar = dict(total=len(jobs), desc="filmstrips", unit="video", disable=not progress, dynamic_ncols=True)
    if workers == 1 or len(jobs) <= 1:
        yield from tqdm(map(filmstrip.render_job, jobs), **bar)
        return
    # Spawned workers import only eval.filmstrip (PyAV, numpy, Pillow) and inherit no threads or locks. Chunks of
    # several videos amortise the inter-process traffic on short clips (about 10 ms each) and still leave about
    # 16 chunks per worker to balance long ones.
    chunksize = max(1, len(jobs) // (16 * workers))
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from tqdm(pool.map(filmstrip.render_job, jobs, chunksize=chunksize), **bar)


def make_filmstrips(config: FilmstripConfig) -> FilmstripSummary:
    """Render a filmstrip for every candidate video; videos that cannot be decoded are recorded, not fatal.

    Writes `out_dir/filmstrips/<clip_id>.<format>`, the index `filmstrips.csv` (one row per video: clip_id,
    class_name, video, filmstrip, status ok / failed, reason, and what the container says: duration, frames shown,
    audio, size, frame rate) and `failures.csv` (clip_id, class_name, video, reason). Paths in both are relative to
    `out_dir`.

    Raises:
        FileNotFoundError: no clip list, or no class table.
        ValueError: a malformed clip list or class table, or no video of the table's classes.
    """
    start = time.perf_counter()
    clips = read_clip_list(config.videos)
    skipped = 0
    if config.classes is not None:
        names = {row.class_name for row in read_class_table(config.classes)}
        chosen = [clip for clip in clips if clip.label in names]
        skipped = len(clips) - len(chosen)
        if skipped:
            others = sorted({clip.label for clip in clips if clip.label not in names})
            logger.warning("%d videos of %d classes not in %s are skipped: %s", skipped, len(others), config.classes,
                           ", ".join(repr(name) for name in others[:10]))
        if not chosen:
            raise ValueError(f"{config.videos}: no video of a class in {config.classes} (video classes are the "
                             "class_name column or the parent folder's name and must equal the table's names)")
        clips = chosen
    out_dir = Path(config.out_dir)
    image_root = out_dir / "filmstrips"
    layout = config.layout
    jobs = [filmstrip.FilmstripJob(clip.clip_id, clip.path, _filmstrip_path(image_root, clip.clip_id,
                                                                            layout.image_format), layout)
            for clip in clips]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = list(_run_jobs(jobs, config.workers, config.progress))

    index_rows, failure_rows = [], []
    for clip, result in zip(clips, results, strict=True):
        video = _relative(clip.path, out_dir)
        if result.ok:
            index_rows.append([clip.clip_id, clip.label, video, _relative(result.out_path, out_dir), "ok", "",
                               _format_float(result.duration_s), result.frames, int(result.has_audio),
                               result.width_px, result.height_px, f"{result.fps:g}", result.sample_rate_hz,
                               result.audio_channels])
        else:
            logger.warning("no filmstrip for %s: %s", clip.clip_id, result.reason)
            index_rows.append([clip.clip_id, clip.label, video, "", "failed", result.reason] + [""] * 8)
            failure_rows.append([clip.clip_id, clip.label, video, result.reason])
    index_path, failures_path = out_dir / "filmstrips.csv", out_dir / "failures.csv"
    _write_csv(failures_path, ("clip_id", "class_name", "video", "reason"), failure_rows)
    _write_csv(index_path, _INDEX_COLUMNS, index_rows)
    summary = FilmstripSummary(len(clips), len(clips) - len(failure_rows), len(failure_rows), skipped, index_path,
                               failures_path, time.perf_counter() - start)
    logger.info("%d filmstrips, %d videos failed (%s), %.1f videos/s", summary.n_ok, summary.n_failed, failures_path,
                summary.videos_per_s)
    return summary


def _read_index(path: Path) -> list[dict[str, str]]:
    rows = _read_csv(path, ("clip_id", "class_name", "video", "filmstrip", "status", "reason"), "filmstrip index")
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if row["status"] not in ("ok", "failed"):
            raise ValueError(f"{path} line {line}: status {row['status']!r} is not 'ok' or 'failed'")
        if row["clip_id"] in seen:
            raise ValueError(f"{path} line {line}: clip id {row['clip_id']!r} is listed twice")
        seen.add(row["clip_id"])
    return rows


# --- 3. annotation sheets, merge, agreement -------------------------------------------------------------------


def make_sheets(config: SheetsConfig) -> SheetsSummary:
    """Write one blank annotation sheet per reviewer: clip_id, class_name, video, filmstrip, label (to fill in).

    Every sheet lists the same videos (those with a filmstrip) in the index's order; paths are relative to the
    sheet. A reviewer fills `label` with yes (the video shows the class), no or unsure.

    Raises:
        FileNotFoundError: no index.
        FileExistsError: a reviewer's sheet exists already (it may hold annotations): it is never overwritten.
        ValueError: a malformed index, or an index without any filmstrip.
    """
    index_path = Path(config.filmstrips)
    rows = _read_index(index_path)
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        raise ValueError(f"{index_path}: no video has a filmstrip; nothing to annotate")
    out_dir = Path(config.out_dir)
    sheets = [out_dir / f"{name}.csv" for name in config.reviewers]
    existing = [str(p) for p in sheets if p.exists()]
    if existing:
        raise FileExistsError(f"annotation sheets exist already and may hold labels: {', '.join(existing)}; move "
                              "them away or choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = index_path.parent
    table = [[row["clip_id"], row["class_name"], _relative(_resolve(row["video"], base), out_dir),
              _relative(_resolve(row["filmstrip"], base), out_dir), ""] for row in ok]
    for sheet in sheets:
        _write_csv(sheet, _SHEET_COLUMNS, table)
    logger.info("wrote %d sheets of %d videos to %s", len(sheets), len(ok), out_dir)
    return SheetsSummary(tuple(sheets), len(ok), len(rows) - len(ok))


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


def _read_sheet(path: Path) -> dict[tuple[str, str], str]:
    """(clip_id, class_name) -> label of one filled sheet; every row labelled yes / no / unsure."""
    rows = _read_csv(path, ("clip_id", "class_name", "label"), "annotation sheet")
    if not rows:
        raise ValueError(f"{path}: the annotation sheet has no rows")
    labels: dict[tuple[str, str], str] = {}
    clips: dict[str, int] = {}
    blank, bad = [], []
    for line, row in enumerate(rows, start=2):
        label = row["label"].lower()
        if row["clip_id"] in clips:
            first = clips[row["clip_id"]]
            raise ValueError(f"{path} line {line}: clip {row['clip_id']!r} is listed twice (first on line {first})")
        clips[row["clip_id"]] = line
        if not label:
            blank.append(line)
        elif label not in LABELS:
            bad.append(f"line {line}: {row['label']!r}")
        labels[(row["clip_id"], row["class_name"])] = label
    if bad:
        raise ValueError(f"{path}: labels must be yes, no or unsure; {len(bad)} are not ({'; '.join(bad[:5])})")
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (" ..." if len(blank) > 10 else "")
        raise ValueError(f"{path}: {len(blank)} rows have no label (lines {shown}); finish the sheet (write unsure "
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
    keys = list(sheets[0])  # (clip_id, class_name), in the first sheet's order
    for path, sheet in zip(config.sheets[1:], sheets[1:], strict=True):
        if set(sheet) != set(keys):
            missing = sorted(set(keys) - set(sheet))
            extra = sorted(set(sheet) - set(keys))
            raise ValueError(f"{path} and {config.sheets[0]} do not list the same videos and classes: "
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
    _write_csv(decisions_path, header, [[clip, name, decision, *(int((row == c).sum()) for c in LABELS), *row]
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
    agreement_json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    agreement_md.write_text(_agreement_markdown(record), encoding="utf-8")
    logger.info("%d videos: %s; Fleiss' kappa %s", len(keys), overall["decisions"],
                _kappa_text(overall["fleiss_kappa"]))
    return MergeSummary(reviewers, len(keys), overall["decisions"], overall["fleiss_kappa"],
                        overall["fleiss_kappa_keep"], overall["unanimous"], decisions_path, agreement_json,
                        agreement_md)


# --- 4. build -------------------------------------------------------------------------------------------------


def _read_decisions(path: Path) -> list[dict[str, str]]:
    rows = _read_csv(path, ("clip_id", "class_name", "decision"), "decisions file")
    for line, row in enumerate(rows, start=2):
        if row["decision"] not in DECISIONS:
            raise ValueError(f"{path} line {line}: decision {row['decision']!r} is not one of {DECISIONS}")
    return rows


def _statistics_markdown(classes: list[ClassRow], videos: dict[str, list[dict[str, str]]],
                         dropped: Counter, dropped_classes: list[str], title: str) -> str:
    lines = [f"# {title}", "", "Classes and videos per group (the paper's Table 2):", "",
             "| group | SR | classes | videos | videos per class (min / mean / max) | hours | with audio |",
             "|---|---|---:|---:|---|---:|---:|"]

    def row(name: str, bounds: str, members: list[ClassRow]) -> str:
        counts = [len(videos[c.class_name]) for c in members]
        clips = [v for c in members for v in videos[c.class_name]]
        hours = sum(float(v["duration_s"] or 0.0) for v in clips) / 3600
        audio = sum(v["has_audio"] == "1" for v in clips)
        spread = f"{min(counts)} / {np.mean(counts):.1f} / {max(counts)}" if counts else "-"
        share = f"{audio / len(clips):.0%}" if clips else "-"
        return f"| {name} | {bounds} | {len(members)} | {len(clips)} | {spread} | {hours:.2f} | {share} |"

    for group in GROUPS:
        lines.append(row(group, _SR_BOUNDS[group], [c for c in classes if c.group == group]))
    lines.append(row("**all**", "(0.1, 0.8]", classes))
    lines += ["", "Videos per class, by SR (the paper's Fig. 3: videos_per_class.png):", "",
              "| class | group | SR | videos | nearest seen class |", "|---|---|---:|---:|---|"]
    for c in sorted(classes, key=lambda c: (c.sr, c.class_name)):
        nearest = f"{c.nearest_seen_class} ({c.nearest_seen_dataset})" if c.nearest_seen_class else ""
        lines.append(f"| {c.class_name} | {c.group} | {c.sr:.3f} | {len(videos[c.class_name])} | {nearest} |")
    lines += ["", f"Dropped videos: {sum(dropped.values())} (dropped.csv lists each with its reason)", ""]
    lines += [f"- {reason}: {count}" for reason, count in sorted(dropped.items())]
    if dropped_classes:
        lines += ["", f"Classes dropped for want of videos: {', '.join(dropped_classes)}"]
    return "\n".join(lines) + "\n"


def _videos_per_class_figure(path: Path, classes: list[ClassRow], videos: dict[str, list], title: str) -> None:
    """Bars of videos per class, classes in order of SR, coloured by SR, group boundaries marked (Fig. 3)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders the PNG
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(classes, key=lambda c: (c.sr, c.class_name))
    figure = Figure(figsize=(max(6.0, 0.28 * len(ordered) + 2.0), 4.5), dpi=120)
    axes = figure.add_subplot()
    norm, cmap = Normalize(0.1, 0.8), colormaps["viridis"]
    x = np.arange(len(ordered))
    axes.bar(x, [len(videos[c.class_name]) for c in ordered], color=[cmap(norm(c.sr)) for c in ordered])
    for k in range(1, len(ordered)):
        if ordered[k].group != ordered[k - 1].group:
            axes.axvline(k - 0.5, color="black", linestyle="--", linewidth=0.8)
    for group in GROUPS:
        members = [k for k, c in enumerate(ordered) if c.group == group]
        if members:
            axes.text((members[0] + members[-1]) / 2, 1.01, group, transform=axes.get_xaxis_transform(),
                      ha="center", va="bottom", fontsize=9)
    axes.set_xticks(x, [c.class_name for c in ordered], rotation=90, fontsize=7)
    axes.set_xlim(-0.6, len(ordered) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("videos")
    axes.set_title(title, fontsize=9, pad=16)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="SR (min cosine distance to a seen class)")
    figure.tight_layout()
    figure.savefig(path, format="png")


def build_evaluation_set(config: BuildConfig) -> BuildSummary:
    """Assemble the evaluation set from the annotators' decisions, the class table and the filmstrip index.

    A video is kept when it has a filmstrip, its class is in the class table, and every reviewer said yes; a
    class keeps its videos when it has at least `min_videos_per_class` of them. Everything else is dropped with
    its reason (a video that could not be decoded is noted with the decoder's reason, never an error).

    Writes into `out_dir`: `manifest.csv` (clip_id, path relative to it, class_name, split "unseen", group, sr,
    has_audio, duration_s, width_px, height_px, fps, sample_rate_hz, audio_channels: the synthetic benchmark's
    columns plus group and sr; `features.manifest.read_clip_list` and `protocol mzsl --groups` read it),
    `classes.csv` (class_name, sr, group, videos, nearest seen class and dataset), `dropped.csv` (clip_id,
    class_name, reason), `statistics.md` (classes and videos per group, videos per class), `videos_per_class.png`
    and `build.json`.

    Raises:
        FileNotFoundError: a missing input.
        ValueError: malformed inputs, decisions for videos the index does not list or of another class, or no
            video left.
    """
    classes = {row.class_name: row for row in read_class_table(config.classes)}
    index_path = Path(config.filmstrips)
    index = {row["clip_id"]: row for row in _read_index(index_path)}
    decisions = _read_decisions(Path(config.decisions))
    dropped_rows: list[list[str]] = []
    dropped: Counter = Counter()

    def drop(clip_id: str, class_name: str, reason: str, detail: str = "") -> None:
        dropped[reason] += 1
        dropped_rows.append([clip_id, class_name, f"{reason}: {detail}" if detail else reason])

    decided: set[str] = set()
    kept: dict[str, list[dict[str, str]]] = {name: [] for name in classes}
    for line, row in enumerate(decisions, start=2):
        clip_id, name = row["clip_id"], row["class_name"]
        if clip_id not in index:
            raise ValueError(f"{config.decisions} line {line}: clip {clip_id!r} is not in the filmstrip index "
                             f"{index_path}; use the decisions made from that index's sheets")
        if index[clip_id]["class_name"] != name:
            raise ValueError(f"{config.decisions} line {line}: clip {clip_id!r} has class {name!r}, the index "
                             f"{index_path} says {index[clip_id]['class_name']!r}")
        if clip_id in decided:
            raise ValueError(f"{config.decisions} line {line}: clip {clip_id!r} is listed twice")
        decided.add(clip_id)
        video = index[clip_id]
        if video["status"] != "ok":
            drop(clip_id, name, "could not be decoded", video["reason"])
        elif name not in classes:
            drop(clip_id, name, "class not in the class table")
        elif row["decision"] == "mixed":
            votes = ", ".join(f"{c} {row[c]}" for c in LABELS if row.get(c, "0") != "0")
            drop(clip_id, name, "mixed annotations", votes)
        elif row["decision"] == "rejected":
            drop(clip_id, name, "no reviewer said yes")
        else:
            kept[name].append(video)
    for clip_id, video in index.items():
        if clip_id in decided:
            continue
        if video["status"] != "ok":
            drop(clip_id, video["class_name"], "could not be decoded", video["reason"])
        else:
            drop(clip_id, video["class_name"], "not annotated")
    dropped_classes = [name for name, videos in kept.items() if len(videos) < config.min_videos_per_class]
    for name in dropped_classes:
        for video in kept[name]:
            drop(video["clip_id"], name, f"class has fewer than {config.min_videos_per_class} kept videos")
        del kept[name]
    if not kept:
        raise ValueError(f"{config.decisions}: no video is left for the evaluation set (dropped: "
                         f"{dict(dropped)}); check the annotations and the class table")

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = [classes[name] for name in classes if name in kept]  # class table order
    manifest_rows = []
    for row in final:
        for video in sorted(kept[row.class_name], key=lambda v: v["clip_id"]):
            path = _relative(_resolve(video["video"], index_path.parent), out_dir)
            manifest_rows.append([video["clip_id"], path, row.class_name, SPLIT, row.group, f"{row.sr:.6f}",
                                  *(video.get(c, "") for c in _MANIFEST_COLUMNS[6:])])
    manifest_path, classes_path = out_dir / "manifest.csv", out_dir / "classes.csv"
    dropped_path, statistics_md = out_dir / "dropped.csv", out_dir / "statistics.md"
    figure_png = out_dir / "videos_per_class.png"
    _write_csv(classes_path, ("class_name", "sr", "group", "videos", "nearest_seen_class", "nearest_seen_dataset"),
               [[c.class_name, f"{c.sr:.6f}", c.group, len(kept[c.class_name]), c.nearest_seen_class,
                 c.nearest_seen_dataset] for c in final])
    _write_csv(dropped_path, ("clip_id", "class_name", "reason"), dropped_rows)
    title = f"{len(final)} classes, {len(manifest_rows)} videos ({out_dir.name})"
    statistics_md.write_text(_statistics_markdown(final, kept, dropped, dropped_classes, title), encoding="utf-8")
    _videos_per_class_figure(figure_png, final, kept, title)
    groups = {g: {"classes": sum(c.group == g for c in final),
                  "videos": sum(len(kept[c.class_name]) for c in final if c.group == g)} for g in GROUPS}
    record = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "classes": len(final),
        "videos": len(manifest_rows),
        "groups": groups,
        "dropped": dict(dropped),
        "dropped_classes": dropped_classes,
    }
    (out_dir / "build.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    # The manifest is written last: its presence means the set is complete.
    _write_csv(manifest_path, _MANIFEST_COLUMNS, manifest_rows)
    logger.info("evaluation set: %d classes, %d videos (%s); %d videos dropped", len(final), len(manifest_rows),
                ", ".join(f"{g} {groups[g]['classes']}/{groups[g]['videos']}" for g in GROUPS), sum(dropped.values()))
    return BuildSummary(len(final), len(manifest_rows), groups, dict(dropped), tuple(dropped_classes),
                        manifest_path, classes_path, dropped_path, statistics_md, figure_png)
