"""The AVCA-GZSL benchmark splits (VGGSound-GZSL, UCF-GZSL, ActivityNet-GZSL) shipped in `data/avgzsl`.

Layout (data/README.md): `<DS>/class-split/all_class.txt` lists every class of the source dataset and a class id
is the index in the *sorted* list (AVCA-GZSL `src/utils.py:get_class_names`). `{main_split,cls_split}/<stage>.txt`
lists the classes of a stage, `<stage>.csv` its videos in one of three formats:
UCF `filename,label,label_code`, ActivityNet `filename,label_code,label`, VGGSound
`youtube_id,start_seconds,label,split,filename,label_code,category`. VGGSound's train CSVs were too large for the
source snapshot; `VGGSound/class-split/main_split_videos_all_stages.csv.gz` (`split,class_name,video_id`) replaces
them.

Two facts of the shipped files shape the readers:
- `cls_split/stage_2_test_unseen.csv` is byte-identical to the main_split one, although `cls_split` drops unseen
  classes that overlap the C3D / VGGish pretraining. The class list (`.txt`) is authoritative: videos of classes
  outside the stage's class list are dropped (and counted in `StageVideos.dropped`).
- main_split and cls_split have identical class lists for both VGGSound train stages, so the main_split video
  table serves the cls_split train stages too.
"""

from __future__ import annotations

import csv
import functools
import gzip
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.names import canonical_name
from features.splits import SplitRole

__all__ = [
    "DATA_ROOT",
    "DATASETS",
    "SPLITS",
    "STAGES",
    "STAGE_ROLES",
    "ClassSplit",
    "StageVideos",
    "dataset_folder",
    "load_class_split",
    "load_stage_videos",
    "load_name_map",
    "name_map_path",
]

logger = logging.getLogger(__name__)

DATA_ROOT = Path(__file__).resolve().parents[1] / "data" / "avgzsl"
DATASETS = ("UCF", "ActivityNet", "VGGSound")  # folder names under DATA_ROOT
SPLITS = ("main_split", "cls_split")
STAGES = (
    "stage_1_train",
    "stage_1_val_seen",
    "stage_1_val_unseen",
    "stage_2_train",
    "stage_2_test_seen",
    "stage_2_test_unseen",
)
# The protocol's word on each stage, stated rather than left to the stage's name: validation may choose an epoch
# or a beta, nothing is ever chosen on a test stage.
STAGE_ROLES = {
    "stage_1_train": SplitRole.TRAIN,
    "stage_1_val_seen": SplitRole.VALIDATION,
    "stage_1_val_unseen": SplitRole.VALIDATION,
    "stage_2_train": SplitRole.TRAIN,
    "stage_2_test_seen": SplitRole.TEST,
    "stage_2_test_unseen": SplitRole.TEST,
}

_ALIASES = {"ucf": "UCF", "ucf101": "UCF", "activitynet": "ActivityNet", "vggsound": "VGGSound"}
_NAME_MAP_FILES = {
    "UCF": "ucf_w2v_class_names.csv",
    "ActivityNet": "activitynet_w2v_class_names.csv",
    "VGGSound": "vggsound_w2v_class_names.csv",
}
_VGGSOUND_ALL_STAGES = "main_split_videos_all_stages.csv.gz"


@dataclass(frozen=True)
class ClassSplit:
    """Class lists of one benchmark split; class id = index in the sorted `all_class.txt`.

    Attributes:
        dataset: folder name ("UCF", "ActivityNet", "VGGSound").
        split: "main_split" or "cls_split".
        all_classes: every class of the source dataset, sorted.
        stages: class names per stage in the order of the stage files, spelled as in `all_class.txt` (class names
            match case-insensitively, as AVCA's UCF reader does: the UCF split files write "HandStandPushups",
            all_class.txt "HandstandPushups").
    """

    dataset: str
    split: str
    all_classes: tuple[str, ...]
    stages: dict[str, tuple[str, ...]]

    def class_id(self, name: str) -> int:
        """The id of a class name (index in the sorted class list); case-insensitive like AVCA's UCF reader."""
        index = self._index.get(canonical_name(name).lower())
        if index is None:
            raise InputError(f"class {name!r} is not in {self.dataset}/class-split/all_class.txt")
        return index

    def canonical(self, name: str) -> str:
        """The `all_class.txt` spelling of a class name (UCF's split files write "HandStandPushups")."""
        return self.all_classes[self.class_id(name)]

    def ids(self, stage: str) -> np.ndarray:
        """Sorted int64 class ids of a stage's classes."""
        return np.sort(np.array([self.class_id(name) for name in self._stage(stage)], dtype=np.int64))

    def seen_unseen_ids(self, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(seen, unseen) class ids of stage 1 (train / val-unseen) or stage 2 (train / test-unseen)."""
        if stage == 1:
            return self.ids("stage_1_train"), self.ids("stage_1_val_unseen")
        if stage == 2:
            return self.ids("stage_2_train"), self.ids("stage_2_test_unseen")
        raise InputError(f"stage must be 1 or 2, got {stage}")

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {name.lower(): i for i, name in enumerate(self.all_classes)}

    def _stage(self, stage: str) -> tuple[str, ...]:
        if stage not in self.stages:
            raise InputError(f"unknown stage {stage!r}; choose one of {STAGES}")
        return self.stages[stage]


@dataclass(frozen=True)
class StageVideos:
    """The videos of one stage: id, class name and class id per video, in file order.

    Attributes:
        stage: the stage name.
        video_ids: the file stem AVCA uses (`filename` / `video_id` column), which its feature files list in
            `video_urls`.
        labels: class name per video, spelled as in `all_class.txt`.
        class_ids: class id per video.
        dropped: rows of the CSV whose class is not in the stage's class list (see the module docstring).
    """

    stage: str
    video_ids: tuple[str, ...]
    labels: tuple[str, ...]
    class_ids: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return len(self.video_ids)


def dataset_folder(dataset: str) -> str:
    """Canonical folder name of a dataset given any common spelling ("ucf", "UCF", "activitynet", ...)."""
    if dataset in DATASETS:
        return dataset
    folder = _ALIASES.get(dataset.lower())
    if folder is None:
        raise InputError(f"unknown AVCA dataset {dataset!r}; choose one of {DATASETS}")
    return folder


def load_class_split(dataset: str, split: str = "main_split", root: Path = DATA_ROOT) -> ClassSplit:
    """Read `all_class.txt` and the six stage class lists of a benchmark split.

    Raises:
        FileNotFoundError: a file of the split is missing.
        ValueError: unknown dataset or split, a stage class not in `all_class.txt`, or stage-1 classes that
            overlap the test-unseen classes (a split that would leak test classes into validation).
    """
    folder = Path(root) / dataset_folder(dataset) / "class-split"
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {SPLITS}")
    all_classes = tuple(sorted(_read_lines(folder / "all_class.txt")))
    lowered = [name.lower() for name in all_classes]
    if len(set(lowered)) != len(lowered):
        raise InputError(f"{folder / 'all_class.txt'} has names that differ only in case; class lookup is case-free")
    known = {name.lower(): name for name in all_classes}
    stages = {}
    for stage in STAGES:
        names = _read_lines(folder / split / f"{stage}.txt")
        unknown = [n for n in names if n.lower() not in known]
        if unknown:
            raise InputError(f"{folder / split / stage}.txt lists classes not in all_class.txt: {unknown[:5]}")
        stages[stage] = tuple(known[n.lower()] for n in names)
    leaked = set(stages["stage_2_test_unseen"]) & (set(stages["stage_1_train"]) | set(stages["stage_1_val_unseen"]))
    if leaked:
        raise InputError(f"{folder / split}: test-unseen classes also in stage 1: {sorted(leaked)[:5]}")
    return ClassSplit(dataset=dataset_folder(dataset), split=split, all_classes=all_classes, stages=stages)


def load_stage_videos(class_split: ClassSplit, stage: str, root: Path = DATA_ROOT) -> StageVideos:
    """Read the per-video table of one stage (the stage CSV, or VGGSound's all-stages table for train stages).

    Raises:
        FileNotFoundError: neither the stage CSV nor (VGGSound) the all-stages table exists.
        ValueError: a CSV label not in `all_class.txt`, or a `label_code` that is not the class id.
    """
    names = {name.lower() for name in class_split._stage(stage)}
    folder = Path(root) / class_split.dataset / "class-split"
    path = folder / class_split.split / f"{stage}.csv"
    if path.is_file():
        rows = _read_stage_csv(path, class_split)
    elif class_split.dataset == "VGGSound" and (folder / _VGGSOUND_ALL_STAGES).is_file():
        path = folder / _VGGSOUND_ALL_STAGES
        rows = _read_all_stages(path, stage)
    else:
        raise FileNotFoundError(f"{path} not found (the per-video table of {class_split.dataset} {stage})")
    video_ids, labels, dropped = [], [], 0
    for video_id, label in rows:
        if label.lower() not in names:
            dropped += 1
            continue
        video_ids.append(video_id)
        labels.append(class_split.canonical(label))
    if dropped:
        logger.debug("%s: dropped %d videos of classes outside %s/%s.txt", path, dropped, class_split.split, stage)
    class_ids = np.array([class_split.class_id(label) for label in labels], dtype=np.int64)
    return StageVideos(stage=stage, video_ids=tuple(video_ids), labels=tuple(labels), class_ids=class_ids,
                       dropped=dropped)


def name_map_path(dataset: str, root: Path = DATA_ROOT) -> Path:
    """Path of the `original,manual[,...]` name map whose manual names the shipped embeddings were made from."""
    folder = dataset_folder(dataset)
    return Path(root) / folder / "class-split" / _NAME_MAP_FILES[folder]


def load_name_map(dataset: str, root: Path = DATA_ROOT) -> dict[str, str]:
    """The `original -> manual` class-name map of a dataset (e.g. "CleanAndJerk" -> "Weight Lifting")."""
    path = name_map_path(dataset, root)
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"original", "manual"} <= set(reader.fieldnames):
            raise InputError(f"{path}: expected columns original,manual; got {reader.fieldnames}")
        return {row["original"]: row["manual"] for row in reader}


def _read_stage_csv(path: Path, class_split: ClassSplit) -> Iterator[tuple[str, str]]:
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        if not {"filename", "label", "label_code"} <= fields:
            raise InputError(f"{path}: expected columns filename,label,label_code; got {reader.fieldnames}")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        class_id = class_split.class_id(row["label"])
        if int(row["label_code"]) != class_id:
            raise InputError(
                f"{path} line {line}: label_code {row['label_code']} of {row['label']!r} is not its class id "
                f"{class_id} (index in the sorted all_class.txt)"
            )
        yield row["filename"], row["label"]


def _read_all_stages(path: Path, stage: str) -> Iterator[tuple[str, str]]:
    rows = _all_stages_table(path).get(stage)
    if not rows:
        raise InputError(f"{path} has no rows of stage {stage!r}")
    yield from rows


@functools.lru_cache(maxsize=4)
def _all_stages_table(path: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    """Stage -> (video id, class name) rows of VGGSound's all-stages table (93,752 rows: read once per process)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        if not {"split", "class_name", "video_id"} <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: expected columns split,class_name,video_id; got {reader.fieldnames}")
        for row in reader:
            stages.setdefault(row["split"], []).append((row["video_id"], row["class_name"]))
    return {stage: tuple(rows) for stage, rows in stages.items()}


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with _open_text(path) as f:
        return [canonical_name(line) for line in f if canonical_name(line)]


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")
