"""Manifests from dataset downloads: the videos of an AVCA-GZSL benchmark found under a folder (`manifest avca`).

The AVCA split files name videos by id (`curate.splits`); researchers hold them under their own folder, named as
the dataset names them. `write_avca_manifest` finds each id's file by its name, never by guessing: an id that no
file carries is missing, an id that two files carry is ambiguous, and both are listed in `<out>.missing.csv`
with the reason instead of being written to the manifest.

Some ids are segments of a longer video, written as `start_s,end_s` (the clip is that span of the file):
a VGGSound id `<ytid>_<start:06d>` held as the full video `<ytid>.*` is seconds start to start + 10, and an
ActivityNet id `<ytid>_<i>` is the i-th annotated segment of `v_<ytid>.*` in the official annotations
(`activity_net.v1-3.min.json`, in the order listed there).

Each video appears once, under the first stage of `curate.splits.STAGES` that lists it (stage 2's train stage is
the union of stage 1's three parts), which is the `split` that `protocol avca` reads from a store.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import media_files, read_csv, write_csv
from common.media import Segment
from curate import splits
from curate.config import AVCAManifestConfig, DatasetManifestConfig
from features.manifest import VIDEO_SUFFIXES, ManifestRow, write_manifest

__all__ = ["ManifestSummary", "write_avca_manifest", "write_dataset_manifest", "video_id_of",
           "read_activitynet_segments"]

logger = logging.getLogger(__name__)

MISSING_COLUMNS = ("clip_id", "class_name", "split", "reason")
# VGGSound cuts named `<ytid>_<start>_<end>` (seconds, unpadded); AVCA's id is `<ytid>_<start:06d>`. YouTube ids
# are 11 characters, so an id's own "_digits" never reads as a start.
_VGGSOUND_START_END = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d+)_(?P<end>\d+)$")
VGGSOUND_CLIP_S = 10  # VGGSound's clips: 10 s from start_seconds


@dataclass(frozen=True)
class _Match:
    path: Path
    segment: Segment | None


@dataclass(frozen=True)
class _Wanted:
    """A clip the dataset's lists name, and the file names that may carry it (tried in order)."""

    clip_id: str
    label: str
    split: str
    keys: tuple[tuple[str, Segment | None], ...]  # (file id, the segment of that file), first found wins
    why_missing: str  # the reason recorded when no file carries it


@dataclass(frozen=True)
class ManifestSummary:
    """What `write_avca_manifest` found.

    Attributes:
        manifest_path: the manifest written (`clip_id,path,class_name,split,start_s,end_s`).
        missing_path: the ids not written, with their reason (None when every video was found).
        found: videos written per split (AVCA: per stage, in `curate.splits.STAGES` order).
        missing: videos not found per split.
        ambiguous: ids that several files carry -> those files (also in the missing file).
    """

    manifest_path: Path
    missing_path: Path | None
    found: dict[str, int]
    missing: dict[str, int]
    ambiguous: dict[str, tuple[Path, ...]]

    @property
    def total_found(self) -> int:
        return sum(self.found.values())

    def report(self) -> str:
        """Found / missing per split, the ambiguous ids and where the files went (the command's output)."""
        lines = [f"{split}: {count} found, {self.missing[split]} missing" for split, count in self.found.items()
                 if count or self.missing[split]]
        if self.ambiguous:
            lines.append(f"{len(self.ambiguous)} id(s) carried by several files, not written (listed as missing): "
                         + ", ".join(sorted(self.ambiguous)[:5]))
        missing = "" if self.missing_path is None else f"; missing videos: {self.missing_path}"
        return "\n".join([*lines, f"wrote {self.total_found} clips to {self.manifest_path}{missing}"])


def video_id_of(dataset: str, stem: str) -> str:
    """The clip id a file of `dataset` carries, from its name without extension.

    Files are named by their id (UCF-101 `v_ApplyEyeMakeup_g01_c01`, Kinetics `<ytid>_<start:06d>_<end:06d>`), a
    full video by its YouTube id. VGGSound 10 s cuts are also named `<ytid>_<start>_<end>` (`--Bu2xe4OSo_430_440`),
    which becomes the id `<ytid>_<start:06d>`.
    """
    if dataset.lower() == "vggsound":
        match = _VGGSOUND_START_END.match(stem)
        if match is not None:
            return f"{match['ytid']}_{int(match['start']):06d}"
    return stem


def _files_by_id(dataset: str, root: Path) -> dict[str, list[Path]]:
    """Every media file under `root`, by the video id its name carries (a full video: its YouTube id)."""
    by_id: dict[str, list[Path]] = {}
    for path in media_files(root, VIDEO_SUFFIXES):
        by_id.setdefault(video_id_of(dataset, path.stem), []).append(path)
    return by_id


def read_activitynet_segments(path: Path) -> dict[str, list[tuple[float, float]]]:
    """YouTube id -> its annotated segments (start, end seconds), in the order of the official annotation file.

    Raises:
        FileNotFoundError: no such file.
        InputError: not JSON, or not ActivityNet's annotation format (`{"database": {ytid: {"annotations":
            [{"segment": [start, end], ...}]}}}`).
    """
    return {ytid: [bounds for bounds, _ in segments] for ytid, (_, segments) in _activitynet_database(path).items()}


def _activitynet_database(path: Path) -> dict[str, tuple[str, list[tuple[tuple[float, float], str]]]]:
    """YouTube id -> (subset, [((start, end), label)]) of the official annotation file."""
    path = Path(path)
    try:
        database = json.loads(path.read_text(encoding="utf-8"))["database"]
        return {ytid: (str(entry["subset"]), [((float(a["segment"][0]), float(a["segment"][1])), str(a["label"]))
                                             for a in entry["annotations"]])
                for ytid, entry in database.items()}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a JSON file ({error}); expected activity_net.v1-3.min.json") from error
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:
        raise InputError(f"{path}: not ActivityNet's annotations (expected {{'database': {{ytid: {{'subset': ..., "
                         f"'annotations': [{{'segment': [start, end], 'label': ...}}]}}}}}} as in "
                         "activity_net.v1-3.min.json)") from error


def _avca_wanted(dataset: str, video_id: str, label: str, stage: str,
                 annotations: dict[str, list[tuple[float, float]]] | None) -> _Wanted:
    """Which file names (and segments) carry an AVCA video id."""
    folder = splits.dataset_folder(dataset)
    if folder == "UCF":
        return _Wanted(video_id, label, stage, ((video_id, None),), "no file carries this id")
    ytid, _, number = video_id.rpartition("_")
    if not number.isdigit():
        return _Wanted(video_id, label, stage, (), f"not a {folder} id of the form <ytid>_<number>")
    if folder == "VGGSound":
        return _vggsound_wanted(ytid, int(number), label, stage)
    segments = annotations.get(ytid) if annotations is not None else None
    if segments is None or int(number) >= len(segments):
        return _Wanted(video_id, label, stage, (), f"segment {number} of {ytid} is not in the annotations")
    return _activitynet_wanted(ytid, int(number), segments[int(number)], label, stage)


def _vggsound_wanted(ytid: str, start: int, label: str, split: str) -> _Wanted:
    """A VGGSound clip: its 10 s cut, else the full video with the segment."""
    clip_id = f"{ytid}_{start:06d}"
    return _Wanted(clip_id, label, split, ((clip_id, None), (ytid, Segment(start, start + VGGSOUND_CLIP_S))),
                   "no file carries this id or its YouTube id")


def _activitynet_wanted(ytid: str, number: int, bounds: tuple[float, float], label: str, split: str) -> _Wanted:
    """The `number`-th annotated segment of an ActivityNet video (`v_<ytid>.*` or `<ytid>.*`)."""
    clip_id = f"{ytid}_{number}"
    try:
        segment = Segment(*bounds)
    except InputError:
        return _Wanted(clip_id, label, split, (), f"annotated segment {number} of {ytid} is empty or invalid: "
                                                 f"{list(bounds)}")
    return _Wanted(clip_id, label, split, ((f"v_{ytid}", segment), (ytid, segment)), f"no file v_{ytid}.* or {ytid}.*")


def _avca_videos(config: AVCAManifestConfig) -> Iterator[_Wanted]:
    """Every video of the benchmark split, each id once, under the first stage that lists it."""
    root = splits.DATA_ROOT if config.splits_root is None else Path(config.splits_root)
    class_split = splits.load_class_split(config.dataset, config.split, root)
    annotations = None if config.annotations is None else read_activitynet_segments(config.annotations)
    seen: set[str] = set()
    for stage in splits.STAGES:
        videos = splits.load_stage_videos(class_split, stage, root)
        for video_id, label in zip(videos.video_ids, videos.labels, strict=True):
            if video_id not in seen:
                seen.add(video_id)
                yield _avca_wanted(config.dataset, video_id, label, stage, annotations)


_LAYOUTS = {"UCF": "v_<Class>_gXX_cYY.*", "VGGSound": "<ytid>_<start:06d>.*, <ytid>_<start>_<end>.* or <ytid>.*",
            "ActivityNet": "v_<ytid>.* or <ytid>.* with annotated segments"}


def write_avca_manifest(config: AVCAManifestConfig) -> ManifestSummary:
    """Find the videos of an AVCA benchmark split under `config.videos` and write the manifest.

    Raises:
        FileNotFoundError: the videos folder or the annotation file does not exist.
        InputError: the folder holds no file of the benchmark, or the annotations are not ActivityNet's (nothing
            is written then).
    """
    folder = splits.dataset_folder(config.dataset)
    wanted = list(_avca_videos(config))
    return _write_manifest(wanted, folder, Path(config.videos), Path(config.out), f"{folder} {config.split}",
                           _LAYOUTS[folder], splits.STAGES)


def _write_manifest(wanted: Sequence[_Wanted], dataset: str, root: Path, out: Path, what: str, layout: str,
                    split_order: Sequence[str] = ()) -> ManifestSummary:
    """Match the wanted clips to the files under `root`; write the manifest and the missing list."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected the {what} download, scanned recursively)")
    files = _files_by_id(dataset, root)
    rows, missing_rows = [], []
    found = dict.fromkeys(split_order, 0)
    missing = dict.fromkeys(split_order, 0)
    ambiguous: dict[str, tuple[Path, ...]] = {}
    for clip in wanted:
        found.setdefault(clip.split, 0)
        missing.setdefault(clip.split, 0)
        candidates = next(([_Match(p, segment) for p in files[key]] for key, segment in clip.keys if key in files), [])
        if len(candidates) == 1:
            match = candidates[0]
            rows.append(ManifestRow(clip.clip_id, match.path, clip.label, clip.split, match.segment))
            found[clip.split] += 1
            continue
        missing[clip.split] += 1
        reason = clip.why_missing
        if candidates:
            ambiguous[clip.clip_id] = tuple(m.path for m in candidates)
            reason = f"{len(candidates)} files carry this id: " + "; ".join(str(m.path) for m in candidates)
        missing_rows.append((clip.clip_id, clip.label, clip.split, reason))
    if not rows:
        raise InputError(f"{root}: no file of {what} found (looked for {layout} among "
                         f"{sum(len(p) for p in files.values())} media files); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, rows)
    missing_path = None
    if missing_rows:
        missing_path = write_csv(out.with_name(f"{out.stem}.missing.csv"), MISSING_COLUMNS, missing_rows)
    for split in found:
        if found[split] or missing[split]:
            logger.info("%s: %d found, %d missing", split, found[split], missing[split])
    return ManifestSummary(manifest_path=out, missing_path=missing_path, found=found, missing=missing,
                           ambiguous=ambiguous)


# --- the official datasets (`manifest ucf101|vggsound|activitynet|kinetics`) --------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start}); expected {what}"
                         ) from error


def _ucf101_clips(lists: Path, fold: int) -> Iterator[_Wanted]:
    """UCF-101's trainlist0N.txt / testlist0N.txt (`Class/v_Class_gXX_cYY.avi[ label]`): split train / test."""
    for split in ("train", "test"):
        path = Path(lists) / f"{split}list{fold:02d}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected UCF-101's ucfTrainTestlist folder)")
        for line, text in enumerate(_read_text(path, f"UCF-101's {split} list").splitlines(), start=1):
            if not text.strip():
                continue
            name = text.split()[0]
            label, _, file_name = name.partition("/")
            if not file_name or not file_name.startswith("v_"):
                raise InputError(f"{path}:{line}: expected Class/v_Class_gXX_cYY.avi (UCF-101's {split} list), got "
                                 f"{text!r}")
            clip_id = Path(file_name).stem
            yield _Wanted(clip_id, label, split, ((clip_id, None),), "no file carries this id")


def _vggsound_clips(path: Path) -> Iterator[_Wanted]:
    """vggsound.csv: rows `youtube_id,start_seconds,label,split` without a header."""
    rows = csv.reader(_read_text(path, "vggsound.csv").splitlines())
    try:
        for line, row in enumerate(rows, start=1):
            if len(row) != 4 or not row[1].strip().isdigit():
                raise InputError(f"{path}:{line}: expected youtube_id,start_seconds,label,split (vggsound.csv), got "
                                 f"{row[:6]}")
            ytid, start, label, split = (value.strip() for value in row)
            yield _vggsound_wanted(ytid, int(start), label, split)
    except csv.Error as error:
        raise InputError(f"{path}: not a CSV file ({error}); expected vggsound.csv") from error


def _activitynet_clips(path: Path) -> Iterator[_Wanted]:
    """Every annotated segment of activity_net.v1-3.min.json (id `<ytid>_<i>`), split = its subset."""
    for ytid, (subset, segments) in _activitynet_database(path).items():
        for number, (bounds, label) in enumerate(segments):
            yield _activitynet_wanted(ytid, number, bounds, label, subset)


_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


def _kinetics_clips(paths: Sequence[Path]) -> Iterator[_Wanted]:
    """The official Kinetics CSVs (`label,youtube_id,time_start,time_end,split`): id `<ytid>_<start:06d>_<end:06d>`,
    the file of that name, else the full video `<ytid>.*` with the segment."""
    for path in paths:
        for line, row in enumerate(read_csv(path, _KINETICS_COLUMNS, "Kinetics CSV"), start=2):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError as error:
                raise InputError(f"{path}:{line}: time_start / time_end must be seconds, got "
                                 f"{row['time_start']!r}, {row['time_end']!r}") from error
            clip_id = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            yield _Wanted(clip_id, row["label"], row["split"],
                          ((clip_id, None), (row["youtube_id"], Segment(start, end))),
                          "no file carries this id or its YouTube id")


_DATASET_LAYOUTS = {
    "ucf101": "Class/v_Class_gXX_cYY.*",
    "vggsound": "<ytid>_<start:06d>.*, <ytid>_<start>_<end>.* or <ytid>.*",
    "activitynet": "v_<ytid>.* or <ytid>.*",
    "kinetics": "<ytid>_<start:06d>_<end:06d>.* or <ytid>.*",
}


def write_dataset_manifest(config: DatasetManifestConfig) -> ManifestSummary:
    """The manifest of a whole official dataset from its own lists, as found under `config.videos`.

    Raises:
        FileNotFoundError: the videos folder or a list file does not exist.
        InputError: a list file that is not the expected one, or no file of the dataset found (nothing is
            written then).
    """
    lists = config.lists
    wanted = {
        "ucf101": lambda: _ucf101_clips(lists[0], config.fold),
        "vggsound": lambda: _vggsound_clips(lists[0]),
        "activitynet": lambda: _activitynet_clips(lists[0]),
        "kinetics": lambda: _kinetics_clips(lists),
    }[config.dataset]()
    clips = list(wanted)
    twice = [clip_id for clip_id, count in Counter(clip.clip_id for clip in clips).items() if count > 1]
    if twice:
        raise InputError(f"{', '.join(str(p) for p in lists)}: {len(twice)} clip(s) listed more than once: "
                         f"{twice[:5]}")
    return _write_manifest(clips, config.dataset, Path(config.videos), Path(config.out), config.dataset,
                           _DATASET_LAYOUTS[config.dataset])
