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

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from curate import splits
from curate.config import AVCAManifestConfig
from curate.tables import relative_path
from extract.errors import InputError
from extract.files import write_csv
from extract.media import Segment
from features.manifest import VIDEO_SUFFIXES

__all__ = ["ManifestSummary", "write_avca_manifest", "video_id_of", "read_activitynet_segments"]

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "class_name", "split", "clip_id", "start_s", "end_s")
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
class ManifestSummary:
    """What `write_avca_manifest` found.

    Attributes:
        manifest_path: the manifest written (`path,class_name,split,clip_id`).
        missing_path: the ids not written, with their reason (None when every video was found).
        found: videos written per stage, in `curate.splits.STAGES` order.
        missing: videos not found per stage.
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


def video_id_of(dataset: str, stem: str) -> str:
    """The AVCA video id a file of `dataset` carries, from its name without extension.

    UCF-101 files are named by their id (`v_ApplyEyeMakeup_g01_c01`). VGGSound 10 s cuts are named by their id
    (`--Bu2xe4OSo_000430`) or as `<ytid>_<start>_<end>` (`--Bu2xe4OSo_430_440`), which becomes the id.
    """
    if splits.dataset_folder(dataset) == "VGGSound":
        match = _VGGSOUND_START_END.match(stem)
        if match is not None:
            return f"{match['ytid']}_{int(match['start']):06d}"
    return stem


def _files_by_id(dataset: str, root: Path) -> dict[str, list[Path]]:
    """Every media file under `root`, by the video id its name carries (a full video: its YouTube id)."""
    by_id: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
            by_id.setdefault(video_id_of(dataset, path.stem), []).append(path)
    return by_id


def read_activitynet_segments(path: Path) -> dict[str, list[tuple[float, float]]]:
    """YouTube id -> its annotated segments (start, end seconds), in the order of the official annotation file.

    Raises:
        FileNotFoundError: no such file.
        InputError: not JSON, or not ActivityNet's annotation format (`{"database": {ytid: {"annotations":
            [{"segment": [start, end], ...}]}}}`).
    """
    path = Path(path)
    try:
        database = json.loads(path.read_text(encoding="utf-8"))["database"]
        return {ytid: [(float(a["segment"][0]), float(a["segment"][1])) for a in entry["annotations"]]
                for ytid, entry in database.items()}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a JSON file ({error}); expected activity_net.v1-3.min.json") from error
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:
        raise InputError(f"{path}: not ActivityNet's annotations (expected {{'database': {{ytid: {{'annotations': "
                         f"[{{'segment': [start, end]}}]}}}}}} as in activity_net.v1-3.min.json)") from error


def _matches(dataset: str, video_id: str, files: dict[str, list[Path]],
             annotations: dict[str, list[tuple[float, float]]] | None) -> tuple[list[_Match], str]:
    """The files (and segments) that carry a video id, and why there are none when there are none."""
    folder = splits.dataset_folder(dataset)
    if folder == "UCF":
        return [_Match(p, None) for p in files.get(video_id, [])], "no file carries this id"
    ytid, _, number = video_id.rpartition("_")
    if not number.isdigit():
        return [], f"not a {folder} id of the form <ytid>_<number>"
    if folder == "VGGSound":
        cuts = files.get(video_id, [])
        if cuts:
            return [_Match(p, None) for p in cuts], ""
        segment = Segment(int(number), int(number) + VGGSOUND_CLIP_S)
        return [_Match(p, segment) for p in files.get(ytid, [])], "no file carries this id or its YouTube id"
    segments = annotations.get(ytid) if annotations is not None else None
    if segments is None or int(number) >= len(segments):
        return [], f"segment {number} of {ytid} is not in the annotations"
    try:
        segment = Segment(*segments[int(number)])
    except InputError:
        return [], f"annotated segment {number} of {ytid} is empty or invalid: {segments[int(number)]}"
    full = files.get(ytid, []) + files.get(f"v_{ytid}", [])
    return [_Match(p, segment) for p in full], f"no file v_{ytid}.* or {ytid}.*"


def _stage_videos(config: AVCAManifestConfig) -> Iterable[tuple[str, str, str]]:
    """(video id, class name, stage) of every video of the benchmark split, each id once."""
    root = splits.DATA_ROOT if config.splits_root is None else Path(config.splits_root)
    class_split = splits.load_class_split(config.dataset, config.split, root)
    seen: set[str] = set()
    for stage in splits.STAGES:
        videos = splits.load_stage_videos(class_split, stage, root)
        for video_id, label in zip(videos.video_ids, videos.labels, strict=True):
            if video_id not in seen:
                seen.add(video_id)
                yield video_id, label, stage


_LAYOUTS = {"UCF": "v_<Class>_gXX_cYY.*", "VGGSound": "<ytid>_<start:06d>.*, <ytid>_<start>_<end>.* or <ytid>.*",
            "ActivityNet": "v_<ytid>.* or <ytid>.* with annotated segments"}


def write_avca_manifest(config: AVCAManifestConfig) -> ManifestSummary:
    """Find the videos of an AVCA benchmark split under `config.videos` and write the manifest.

    Raises:
        FileNotFoundError: the videos folder or the annotation file does not exist.
        InputError: the folder holds no file of the benchmark, or the annotations are not ActivityNet's (nothing
            is written then).
    """
    root = Path(config.videos)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected the {splits.dataset_folder(config.dataset)} "
                                "download, scanned recursively)")
    annotations = None if config.annotations is None else read_activitynet_segments(config.annotations)
    files = _files_by_id(config.dataset, root)
    out = Path(config.out)
    rows, missing_rows = [], []
    found = {stage: 0 for stage in splits.STAGES}
    missing = {stage: 0 for stage in splits.STAGES}
    ambiguous: dict[str, tuple[Path, ...]] = {}
    for video_id, label, stage in _stage_videos(config):
        candidates, reason = _matches(config.dataset, video_id, files, annotations)
        if len(candidates) == 1:
            match = candidates[0]
            bounds = ("", "") if match.segment is None else (f"{match.segment.start_s:g}", f"{match.segment.end_s:g}")
            rows.append((relative_path(match.path, out.parent), label, stage, video_id, *bounds))
            found[stage] += 1
            continue
        missing[stage] += 1
        if candidates:
            ambiguous[video_id] = tuple(m.path for m in candidates)
            reason = f"{len(candidates)} files carry this id: " + "; ".join(str(m.path) for m in candidates)
        missing_rows.append((video_id, label, stage, reason))
    if not rows:
        layout = _LAYOUTS[splits.dataset_folder(config.dataset)]
        raise InputError(f"{root}: no file of {splits.dataset_folder(config.dataset)} {config.split} found (looked "
                         f"for {layout} among {sum(len(p) for p in files.values())} media files); nothing written")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, MANIFEST_COLUMNS, rows)
    missing_path = None
    if missing_rows:
        missing_path = write_csv(out.with_name(f"{out.stem}.missing.csv"), MISSING_COLUMNS, missing_rows)
    for stage in splits.STAGES:
        if found[stage] or missing[stage]:
            logger.info("%s: %d found, %d missing", stage, found[stage], missing[stage])
    return ManifestSummary(manifest_path=out, missing_path=missing_path, found=found, missing=missing,
                           ambiguous=ambiguous)
