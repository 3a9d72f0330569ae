"""Configuration of the curate stage: where clips and class lists come from (defaults documented once, here).

`SyntheticConfig` is the built-in benchmark (`make-synthetic`); `RelatednessConfig` scores class names against
the seen datasets (`relatedness`); the rest are the steps of building an MZSL-style evaluation set (`curate ...`,
docs/curation.md): `SelectConfig` -> `FilmstripConfig` (with its `FilmstripLayout`) -> `SheetsConfig` ->
`MergeConfig` -> `BuildConfig`; `AVCAManifestConfig` finds a benchmark's videos in a download (`manifest avca`);
`AVCAImportConfig` brings the peers' feature files into a store (`import-avca`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.settings import Seed, check_fields, config_dict, setting
from curate import classlists, splits
from text.class_embeddings import AVCA_TABLES, DEFAULT_SPEC, EmbeddingSpec

__all__ = [
    "IMAGE_FORMATS",
    "round_half_up",
    "SyntheticConfig",
    "RelatednessConfig",
    "SelectConfig",
    "FilmstripLayout",
    "FilmstripConfig",
    "SheetsConfig",
    "MergeConfig",
    "BuildConfig",
    "AVCAManifestConfig",
    "DATASET_LISTS",
    "DatasetManifestConfig",
    "AVCAImportConfig",
]

IMAGE_FORMATS = ("jpg", "png")  # filmstrip image formats
_REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a reviewer's name becomes a file name


def round_half_up(value: float) -> int:
    """Round half up (Python's round() rounds half to even: 2.5 -> 2)."""
    return math.floor(value + 0.5)


@dataclass(frozen=True)
class SyntheticConfig:
    """What `make_synthetic` generates. The defaults are the demo's benchmark (24 classes x 8 clips of ~4 s).

    Attributes:
        out_dir: output folder; must not exist yet or be empty.
        classes: number of classes drawn from the embedding table.
        clips_per_class: clips rendered per class, seen and unseen alike.
        seconds: nominal clip length; each clip lasts `seconds * U(0.75, 1.25)` (the short clip excepted).
        unseen_fraction: share of the classes held out as unseen (rounded half up; at least one seen and one
            unseen).
        seed: seeds the class draw, the seen / unseen split, the special clips and every clip's randomness.
        embedding_table: which shipped AVCA table the class names (and, with `vectors` "table", the
            embeddings) come from (`text.class_embeddings.AVCA_TABLES`).
        vectors: the class-name vectors the content follows: "table" (the table's 300-d fastText vectors,
            stored L2-normalised, which embed only its own names) or a word-vector source such as
            `glove-6b-50d` (raw vectors that also embed Kinetics-400 labels).
        pretraining_classes: Kinetics-400 labels rendered as video-only "pretraining" classes by the same rule
            (`curate.pretrain` fits the random-init video backbone's Kinetics head on them); 0: none. Needs
            word `vectors`.
        pretraining_clips_per_class: clips rendered per pretraining class.
        frame_width_px: width of landscape clips; portrait clips swap width and height.
        frame_height_px: height of landscape clips.
        fps: video frame rate.
        sample_rate_hz: sample rate of the mono audio of most clips.
        no_audio_fraction: share of clips written without an audio track (at least one when > 0).
        portrait_fraction: share of clips written in portrait orientation (at least one when > 0).
        other_audio_fraction: share of the clips with audio written at 44.1 kHz stereo or 22.05 kHz mono
            instead (alternating), so that the extractor's resampling and downmix are exercised.
        short_clip_seconds: length of the one clip that is shorter than a 16-frame view (64 frames at 30 fps).
        workers: processes rendering and encoding clips; the output does not depend on it.
    """

    out_dir: Path = setting(affects_result=False)
    classes: int = setting(24, help="Number of classes drawn from the embedding table.")
    clips_per_class: int = setting(8, help="Clips rendered per class.")
    seconds: float = setting(4.0, help="Nominal clip length in seconds; each clip lasts seconds x U(0.75, 1.25).")
    unseen_fraction: float = setting(0.25, help="Share of the classes held out as unseen.")
    seed: Seed = setting(0, help="Seed of the class draw, the split and every clip; same seed, same bytes.")
    embedding_table: str = setting("vggsound", choices=tuple(AVCA_TABLES),
                                   help="Shipped 300-d class-name embeddings the classes come from.")
    vectors: str = setting("table", help="Class-name vectors the content follows: 'table' (the table's, "
                           "L2-normalised) or a word-vector source such as glove-6b-50d (raw; embeds Kinetics labels).")
    pretraining_classes: int = setting(0, help="Kinetics-400 labels rendered as video-only pretraining classes "
                                       "(for fitting the video backbone's Kinetics head); 0: none.")
    pretraining_clips_per_class: int = setting(6)  # clips per pretraining class
    frame_width_px: int = setting(160)
    frame_height_px: int = setting(120)
    fps: float = setting(25.0)
    sample_rate_hz: int = setting(16000)
    no_audio_fraction: float = setting(0.05)
    portrait_fraction: float = setting(0.1)
    other_audio_fraction: float = setting(0.25)
    short_clip_seconds: float = setting(0.6)
    workers: int = setting(2, affects_result=False,
                           help="Processes rendering and encoding clips (the output does not depend on it).")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.classes < 2:
            raise InputError(f"classes must be at least 2 (one seen, one unseen), got {self.classes}")
        if self.clips_per_class < 1:
            raise InputError(f"clips_per_class must be at least 1, got {self.clips_per_class}")
        if self.classes * self.clips_per_class < 4:
            raise InputError("classes x clips_per_class must be at least 4 (the special clips need room), got "
                             f"{self.classes} x {self.clips_per_class}")
        if not 0.0 < self.unseen_fraction < 1.0:
            raise InputError(f"unseen_fraction must be in (0, 1), got {self.unseen_fraction}")
        n_unseen = round_half_up(self.unseen_fraction * self.classes)
        if not 1 <= n_unseen <= self.classes - 1:
            raise InputError(f"unseen_fraction {self.unseen_fraction} of {self.classes} classes gives {n_unseen} "
                             "unseen classes; choose a fraction that leaves at least one seen and one unseen")
        if self.embedding_table not in AVCA_TABLES:
            raise InputError(f"embedding_table must be one of {sorted(AVCA_TABLES)}, got "
                             f"{self.embedding_table!r}")
        if self.vectors != "table":
            spec = EmbeddingSpec.parse(self.vectors)
            if not spec.embeds_any_name:
                raise InputError(f"vectors must be 'table' or a word-vector source that embeds any name, got "
                                 f"{self.vectors!r}")
        if self.pretraining_classes < 0 or self.pretraining_clips_per_class < 1:
            raise InputError(f"pretraining_classes must be >= 0 and pretraining_clips_per_class >= 1, got "
                             f"{self.pretraining_classes} and {self.pretraining_clips_per_class}")
        if self.pretraining_classes and self.vectors == "table":
            raise InputError("pretraining classes are named after Kinetics-400 labels, which a table cannot embed: "
                             "set `vectors` to a word-vector source such as glove-6b-50d")
        if not 0.5 <= self.seconds <= 60.0:
            raise InputError(f"seconds must be in [0.5, 60], got {self.seconds}")
        for name in ("frame_width_px", "frame_height_px"):
            value = getattr(self, name)
            if value < 32 or value % 2:
                raise InputError(f"{name} must be even and at least 32 (H.264 yuv420p), got {value}")
        if not 1.0 <= self.fps <= 120.0:
            raise InputError(f"fps must be in [1, 120], got {self.fps}")
        if not 8000 <= self.sample_rate_hz <= 48000:
            raise InputError(f"sample_rate_hz must be in [8000, 48000], got {self.sample_rate_hz}")
        for name in ("no_audio_fraction", "portrait_fraction", "other_audio_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 0.5:
                raise InputError(f"{name} must be in [0, 0.5], got {value}")
        if not 2.0 / self.fps <= self.short_clip_seconds < 0.75 * self.seconds:
            raise InputError(f"short_clip_seconds must be at least 2 frames and below 0.75 x seconds, got "
                             f"{self.short_clip_seconds}")
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class RelatednessConfig:
    """One relatedness run (the `relatedness` command)."""

    classes: str = setting()  # a class file (one name per line, # comments) or the name of a shipped list, e.g.
    # "ucf101"
    out_dir: Path = setting(affects_result=False)  # output folder (created): relatedness.{csv,png,md,json}
    seen: tuple[str, ...] | None = setting(None, help="Seen lists: shipped names or class files (the researcher's own "
                                                      "training classes; default: the six standard lists but the "
                                                      "scored one, `curate.relatedness.default_seen`).")
    embeddings: str = setting(DEFAULT_SPEC,
                              help="Word vectors: glove-6b-50d, word2vec:PATH (binary or text), fasttext:PATH (.bin, "
                                   "mean of word vectors) or fasttext-phrase:PATH (vector of the whole name, as "
                                   "AVCA-GZSL), minilm, clip:PATH / clap:PATH / clipclap:CLIP_PATH,CLAP_PATH "
                                   "(ClipClap's prompt ensembles); a table embeds only its own names.")
    name_map: Path | None = setting(None, help="CSV with columns original,manual: names rewritten before embedding "
                                               "(e.g. AVCA-GZSL's *_w2v_class_names.csv).")
    missing: str = setting("error", choices=("error", "skip"),
                           help="Words not in the vectors: error lists them all; skip drops them from their names.")
    compare: str | None = setting(None, help="A second source (e.g. minilm): both SR distributions side by side "
                                             "(relatedness_compare.png).")
    edges: tuple[float, ...] = setting((0.1, 0.33, 0.66, 0.8),
                                       help="Upper SR bounds of overlap, easy, medium and hard (the paper's).")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.classes.strip():
            raise InputError("classes must name a class file or a shipped class list")
        if self.seen is not None:
            if not self.seen:
                raise InputError("seen must name at least one class list")
            canonical = [_seen_key(name) for name in self.seen]
            if len(set(canonical)) != len(canonical):
                raise InputError(f"seen lists a dataset twice: {', '.join(self.seen)}")
        _check_edges(self.edges)
        for spec in (self.embeddings, self.compare or self.embeddings):
            if not EmbeddingSpec.parse(spec).embeds_any_name:
                raise InputError(f"{spec}: the avca tables embed only their own dataset's names; relatedness needs "
                                 "a source that embeds any name (glove-6b-50d, word2vec:PATH, fasttext:PATH, minilm)")
        if self.missing not in ("error", "skip"):
            raise InputError(f"missing must be 'error' or 'skip', got {self.missing!r}")


def _seen_key(name: str) -> str:
    """A seen list's identity: the canonical shipped name, or the resolved path of a class file."""
    try:
        return classlists.canonical_classlist(name)
    except ValueError:
        if Path(name).is_file():
            return str(Path(name).resolve())
        shipped = ", ".join(classlists.available_classlists())
        raise InputError(f"seen list {name!r} is neither a shipped list ({shipped}) nor a class file") from None


@dataclass(frozen=True)
class SelectConfig:
    """`curate select`: candidate class names -> the class table of the evaluation set."""

    candidates: str = setting()  # class file (one name per line, # comments) or a shipped list name, e.g. "hmdb51"
    out_dir: Path = setting(affects_result=False)  # classes.csv (kept classes) and relatedness.{csv,png,md,json} (every
    # candidate)
    seen: tuple[str, ...] | None = setting(None)  # shipped seen lists; None:
    # curate.relatedness.default_seen(candidates)
    embeddings: str = setting(DEFAULT_SPEC)  # word vectors (phi of eq. 1)
    name_map: Path | None = setting(None)  # CSV original,manual applied to every name before embedding
    missing: str = setting("error")  # words missing from the vectors: "error" or "skip"
    compare: str | None = setting(None)  # a second embedding source drawn beside the first (RelatednessConfig.compare)
    edges: tuple[float, ...] = setting((0.1, 0.33, 0.66, 0.8))  # SR group bounds (RelatednessConfig.edges)
    # a shipped list whose SR distribution (against the standard lists without it, same vectors and edges) is
    # reported beside the candidates'; None: none
    reference: str | None = setting("ucf101")

    def __post_init__(self) -> None:
        check_fields(self)
        # The relatedness config validates the shared fields (seen lists, embeddings, missing).
        self.relatedness_config()
        if self.reference is not None:
            classlists.canonical_classlist(self.reference)

    def relatedness_config(self) -> RelatednessConfig:
        return RelatednessConfig(classes=self.candidates, out_dir=Path(self.out_dir), seen=self.seen,
                                 embeddings=self.embeddings, name_map=self.name_map, missing=self.missing,
                                 compare=self.compare, edges=tuple(self.edges))


@dataclass(frozen=True)
class FilmstripLayout:
    """How a filmstrip looks. The defaults are the paper's: pages of 10 x 10 frames, one per second.

    Attributes:
        rows: grid rows of a page.
        columns: grid columns; cells are filled row by row, page after page.
        seconds_per_frame: time between the frames of consecutive cells (1.0: 1 fps).
        max_pages: pages per video at most (10: 1000 s at 1 fps); a longer video is sampled at the smallest whole
            multiple of `seconds_per_frame` that fits it into them, and the header and the index say so.
        cell_width_px: width of a cell; the frame is scaled to fit the cell and keeps its aspect ratio.
        cell_height_px: height of a cell (192 x 108: a 10 x 10 grid fills a 1920 x 1080 screen).
        image_format: "jpg" or "png".
        jpeg_quality: JPEG quality (1-95, Pillow's scale).
    """

    rows: int = setting(10, help="Page rows.")
    columns: int = setting(10, help="Page columns; cells are filled row by row, page after page.")
    seconds_per_frame: float = setting(1.0, help="Seconds between the frames of consecutive cells (1.0: 1 fps).")
    max_pages: int = setting(10,
                             help="Pages per video at most; a longer video is sampled at the smallest whole multiple "
                                  "of `seconds_per_frame` that fits it into them.")
    cell_width_px: int = setting(192,
                                 help="Cell width in px; the frame is scaled to fit the cell and keeps its aspect "
                                      "ratio.")
    cell_height_px: int = setting(108, help="Cell height in px (192 x 108: a 10 x 10 grid fills a 1920 x 1080 screen).")
    image_format: str = setting("jpg", choices=IMAGE_FORMATS, help="Image format.")
    jpeg_quality: int = setting(85, help="JPEG quality (1-95, Pillow's scale).")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("rows", "columns"):
            if not 1 <= getattr(self, name) <= 100:
                raise InputError(f"{name} must be in [1, 100], got {getattr(self, name)}")
        if not 1 <= self.max_pages <= 1000:
            raise InputError(f"max_pages must be in [1, 1000], got {self.max_pages}")
        if not (math.isfinite(self.seconds_per_frame) and self.seconds_per_frame > 0):
            raise InputError(f"seconds_per_frame must be > 0, got {self.seconds_per_frame}")
        for name in ("cell_width_px", "cell_height_px"):
            if not 16 <= getattr(self, name) <= 4096:
                raise InputError(f"{name} must be in [16, 4096], got {getattr(self, name)}")
        if self.image_format not in IMAGE_FORMATS:
            raise InputError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 95:
            raise InputError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")

    @property
    def times_s(self) -> np.ndarray:
        """Sample time of every cell of the first page, seconds from the first frame. Shapes: (rows * columns,)."""
        return np.arange(self.rows * self.columns) * self.seconds_per_frame


@dataclass(frozen=True)
class FilmstripConfig:
    """`curate filmstrips`: one filmstrip image per candidate video."""

    videos: Path = setting()  # candidate videos: a CSV with path,class_name (paths relative to it) or a folder
    # <class>/<video>
    out_dir: Path = setting(affects_result=False)  # filmstrips/<clip_id>.<jpg|png>, filmstrips.csv (index),
    # failures.csv
    classes: Path | None = setting(None)  # a class table (curate select's classes.csv): only videos of its classes
    layout: FilmstripLayout = setting(factory=FilmstripLayout)
    workers: int = setting(2, affects_result=False, help="Processes decoding videos in parallel (1: in this process).")
    progress: bool = setting(False, affects_result=False)  # on stderr (`common.progress`)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")


@dataclass(frozen=True)
class SheetsConfig:
    """`curate sheets`: one blank annotation sheet per reviewer."""

    filmstrips: Path = setting()  # the index written by make_filmstrips (filmstrips.csv)
    reviewers: tuple[str, ...] = setting()  # names; each sheet is <out_dir>/<name>.csv
    out_dir: Path = setting(affects_result=False)
    seed: Seed = setting(0, help="Seeds each reviewer's own order of the videos.")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.reviewers:
            raise InputError("name at least one reviewer")
        bad = [name for name in self.reviewers if not _REVIEWER.match(name)]
        if bad:
            raise InputError(f"reviewer names become file names: use letters, digits, '_', '-', '.'; got {bad}")
        if len({name.lower() for name in self.reviewers}) != len(self.reviewers):
            raise InputError(f"reviewer names must be distinct (ignoring case), got {list(self.reviewers)}")


@dataclass(frozen=True)
class MergeConfig:
    """`curate merge`: the reviewers' filled sheets -> decisions and agreement."""

    sheets: tuple[Path, ...] = setting()  # one CSV per reviewer; the reviewer's name is the file's stem
    out_dir: Path = setting(affects_result=False)  # decisions.csv, agreement.json, agreement.md
    # a video is decided only when at least this many reviewers labelled it (blank rows or missing rows: not seen);
    # the others are "too-few-reviews", reported and never kept
    min_reviewers: int = setting(2,
                                 help="Videos labelled by fewer reviewers are reported as too-few-reviews, not "
                                      "decided.")

    def __post_init__(self) -> None:
        check_fields(self)
        if len(self.sheets) < 2:
            raise InputError(f"merging needs the sheets of at least 2 reviewers, got {len(self.sheets)}")
        if not 1 <= self.min_reviewers <= len(self.sheets):
            raise InputError(f"`min_reviewers` must be between 1 and the {len(self.sheets)} sheets, got "
                             f"{self.min_reviewers}")
        names = [Path(p).stem for p in self.sheets]
        if len({n.lower() for n in names}) != len(names):
            raise InputError(f"two sheets have the same reviewer name (file stem): {names}; rename one")


@dataclass(frozen=True)
class BuildConfig:
    """`curate build`: the final evaluation set and its statistics."""

    decisions: Path = setting()  # decisions.csv of merge_annotations
    classes: Path = setting()  # the class table (classes.csv of select_classes)
    filmstrips: Path = setting()  # the index of make_filmstrips (video paths, decode failures, durations)
    out_dir: Path = setting(affects_result=False)  # manifest.csv, classes.csv, dropped.csv, statistics.md,
    # videos_per_class.png, build.json
    min_videos_per_class: int = setting(1, help="Drop classes with fewer kept videos (with their videos; noted).")
    edges: tuple[float, ...] = setting((0.1, 0.33, 0.66, 0.8),
                                       help="Upper SR bounds of overlap, easy, medium and hard: the class table's "
                                            "groups must agree with them (curate select's).")
    require_audio: bool = setting(False, help="Drop videos without an audio track (reported per class anyway).")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.min_videos_per_class < 1:
            raise InputError(f"min_videos_per_class must be at least 1, got {self.min_videos_per_class}")
        _check_edges(self.edges)


def _check_edges(edges: tuple[float, ...]) -> None:
    if len(edges) != 4 or list(edges) != sorted(set(edges)) or not 0 < edges[0] < 2:
        raise InputError(f"edges must be 4 increasing SR values (overlap, easy, medium, hard upper bounds) in "
                         f"(0, 2), got {','.join(map(str, edges))}")


def _check_manifest_name(out: Path) -> None:
    if Path(out).suffix.lower() != ".csv":
        raise InputError(f"{out}: the manifest is a CSV file; name it *.csv")


@dataclass(frozen=True)
class AVCAManifestConfig:
    """`manifest avca`: the videos of an AVCA-GZSL benchmark found under a download folder -> a manifest.

    Each AVCA video id becomes one row, `clip_id` = the id and `split` = its stage (the first of
    `curate.splits.STAGES` that lists it), as `protocol avca` reads a store. Layouts found (any media extension,
    flat or in class folders): UCF-101 `v_<Class>_gXX_cYY.*`; VGGSound 10 s cuts `<ytid>_<start:06d>.*` or
    `<ytid>_<start>_<end>.*`, else the full video `<ytid>.*` with the segment from `start` to `start + 10` s;
    ActivityNet full videos `v_<ytid>.*` or `<ytid>.*`, id `<ytid>_<i>` = the i-th annotated segment of the
    official annotations (`annotations`, activity_net.v1-3.min.json).
    """

    dataset: str = setting()  # "ucf", "vggsound" or "activitynet" (any spelling `curate.splits.dataset_folder` takes)
    videos: Path = setting()  # the download folder, scanned recursively
    out: Path = setting()  # the manifest CSV; the videos not found go to <out stem>.missing.csv beside it
    split: str = setting("main_split")  # "main_split" or "cls_split"
    annotations: Path | None = setting(None)  # ActivityNet's activity_net.v1-3.min.json (required for ActivityNet)
    splits_root: Path | None = setting(None)  # folder holding <DS>/class-split (None: the shipped data/avgzsl)

    def __post_init__(self) -> None:
        check_fields(self)
        folder = splits.dataset_folder(self.dataset)
        if folder == "ActivityNet" and self.annotations is None:
            raise InputError("ActivityNet's AVCA ids are annotated segments of full videos: give `annotations` "
                             "(the official activity_net.v1-3.min.json)")
        if folder != "ActivityNet" and self.annotations is not None:
            raise InputError(f"`annotations` are ActivityNet's; {folder} needs none")
        if self.split not in splits.SPLITS:
            raise InputError(f"split must be one of {splits.SPLITS}, got {self.split!r}")
        _check_manifest_name(self.out)


# Each official dataset's own lists, as `manifest <dataset>` reads them.
DATASET_LISTS = {
    "ucf101": "the ucfTrainTestlist folder (trainlist0N.txt, testlist0N.txt)",
    "vggsound": "vggsound.csv (youtube_id,start_seconds,label,split)",
    "activitynet": "activity_net.v1-3.min.json",
    "kinetics": "the official CSVs (label,youtube_id,time_start,time_end,split), e.g. train.csv validate.csv",
}


@dataclass(frozen=True)
class DatasetManifestConfig:
    """`manifest ucf101|vggsound|activitynet|kinetics`: a whole official dataset, from its own lists.

    The split column is the dataset's own (UCF-101 train / test of a fold, VGGSound train / test, ActivityNet
    training / validation, Kinetics train / val / test): `protocol mzsl` trains on all classes of a benchmark
    from such a manifest. Files are found by name under `videos` as in `manifest avca` (docs/datasets.md).
    """

    dataset: str = setting()  # one of DATASET_LISTS
    videos: Path = setting()  # the download folder, scanned recursively
    lists: tuple[Path, ...] = setting()  # the dataset's list file(s) (DATASET_LISTS); several only for Kinetics
    out: Path = setting()  # the manifest CSV; the clips not found go to <out stem>.missing.csv beside it
    fold: int = setting(1)  # UCF-101's train / test split: 1, 2 or 3

    def __post_init__(self) -> None:
        check_fields(self)
        if self.dataset not in DATASET_LISTS:
            raise InputError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASET_LISTS)}")
        if not self.lists or (self.dataset != "kinetics" and len(self.lists) != 1):
            raise InputError(f"{self.dataset} needs exactly one list: {DATASET_LISTS[self.dataset]}"
                             if self.dataset != "kinetics" else f"kinetics needs {DATASET_LISTS['kinetics']}")
        if self.fold not in (1, 2, 3):
            raise InputError(f"UCF-101 has folds 1, 2 and 3, got `fold={self.fold}`")
        _check_manifest_name(self.out)


@dataclass(frozen=True)
class AVCAImportConfig:
    """`cli.py import-avca`: AVCA-GZSL (or TCAF) feature files -> a token store the fusion head trains on.

    AVCA layout: `<features>/{audio,video}/<stage>/<Class>.h5` with datasets `data` (clips, D) and `video_urls`.
    TCAF ships pickles (`.pkl`) of temporal features; reading them runs arbitrary code from the file, so it
    needs `trust_pickle=True`.
    """

    features: Path = setting(help="AVCA-GZSL / TCAF feature folder holding audio/<stage>/<Class>.h5 (or .pkl) and "
                                  "video/...")
    dataset: str = setting()  # "UCF", "ActivityNet" or "VGGSound": class names resolve against its all_class.txt
    out: Path = setting(affects_result=False, help="The token store to create.")
    stages: tuple[str, ...] = setting((), help="Stage folders to import (default: every stage folder present).")
    trust_pickle: bool = setting(False,
                                 help="Allow TCAF .pkl files; unpickling runs code from the file, so only for files "
                                      "you trust.")
    sequence_tokens: int = setting(8, help="Tokens per modality kept from temporal (TCAF) features, as segment means.")
    clips_per_block: int = setting(256, affects_result=False)  # store write block (vectors are small)

    def __post_init__(self) -> None:
        check_fields(self)
        from curate import splits

        splits.dataset_folder(self.dataset)
        unknown = [s for s in self.stages if s not in splits.STAGES]
        if unknown:
            raise InputError(f"unknown stages {unknown}; choose from {splits.STAGES}")
        if self.clips_per_block < 1:
            raise InputError(f"clips_per_block must be >= 1, got {self.clips_per_block}")
        if self.sequence_tokens < 1:
            raise InputError(f"sequence_tokens must be >= 1, got {self.sequence_tokens}")

    def to_dict(self) -> dict:
        return config_dict(self)
