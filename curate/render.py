"""`curate filmstrips`: one filmstrip per candidate video (the paper's section 3, step 2), in a process pool.

For every video of the clip list (of the class table's classes), frames at 1 fps over the whole video in pages of
10 x 10 cells (`curate.filmstrip`); a video that cannot be decoded is recorded with its reason, never fatal.

The step resumes: each video's index row is appended (one `write` of one line) as soon as its images are written,
so a killed run loses only the videos in progress; a rerun skips the videos the index lists as done (status ok, every
page on disk) and a second batch into the same folder adds its rows to the index. `filmstrips.json` records the
layout: a folder holds filmstrips of one layout only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import InputError
from common.files import write_csv, write_json, write_text
from common.processes import worker_pool
from common.progress import track
from curate import filmstrip
from curate.config import FilmstripConfig
from curate.tables import INDEX_COLUMNS, format_float, read_class_table, read_index, relative_path, resolve_path
from features.manifest import ManifestRow, read_clip_list, segment_text

__all__ = ["FilmstripSummary", "make_filmstrips"]

logger = logging.getLogger(__name__)

_PAGE_NAME = re.compile(r"~page\d+$")  # the stem of a filmstrip's later page
_FAILURE_COLUMNS = ("clip_id", "class_name", "video", "reason")


@dataclass(frozen=True)
class FilmstripSummary:
    """What `make_filmstrips` did."""

    n_videos: int  # videos of the clip list (of the class table's classes)
    n_ok: int  # of them, with a filmstrip (rendered now or before)
    n_failed: int
    n_skipped: int  # videos whose class is not in the class table
    n_done_before: int  # videos of the list that an earlier run into the folder had finished: not rendered again
    n_index: int  # rows of the index: this list's videos and those of earlier batches
    n_pages: int  # images of this list's filmstrips
    n_widened: int  # videos longer than max_pages pages at the layout's stride: sampled at a wider one
    index_path: Path
    failures_path: Path
    elapsed_s: float

    @property
    def videos_per_s(self) -> float:
        """Videos rendered (not those done before) per second of the step."""
        rendered = self.n_videos - self.n_done_before
        return rendered / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _filmstrip_path(root: Path, clip_id: str, image_format: str) -> Path:
    """`root/<clip_id>.<format>`, kept under `root`.

    A clip id with '..' or a root (a clip list's paths outside its folder give such ids) loses those parts and
    gains a short hash of the whole id, so that two ids never share an image; so does an id that reads like a later
    page's image (`<id>~page<k>`, `curate.filmstrip.page_paths`).
    """
    parts = Path(clip_id).parts
    kept = [part for part in parts if part not in ("..", ".") and part != Path(clip_id).anchor]
    if not kept:
        raise InputError(f"clip id {clip_id!r} names no file; give the clip list a clip_id column")
    if len(kept) != len(parts) or _PAGE_NAME.search(kept[-1]):
        kept[-1] += "~" + hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:8]
    return root.joinpath(*kept[:-1], f"{kept[-1]}.{image_format}")


def _run_jobs(jobs: list[filmstrip.FilmstripJob], workers: int, progress: bool) -> Iterator[filmstrip.FilmstripResult]:
    """The jobs' results as each video finishes (any order with several workers)."""
    bar = dict(total=len(jobs), description="filmstrips", unit="videos", enabled=progress)
    if workers == 1 or len(jobs) <= 1:
        yield from track(map(filmstrip.render_job, jobs), **bar)
        return
    # Spawned workers import curate.filmstrip (PyAV, numpy, Pillow; no torch) and inherit no threads or locks. One
    # future per video: its row is written when it finishes, not when a chunk of videos does.
    with worker_pool(min(workers, len(jobs)), multiprocessing.get_context("spawn")) as pool:  # ends with the command
        futures = [pool.submit(filmstrip.render_job, job) for job in jobs]
        yield from track((future.result() for future in as_completed(futures)), **bar)


def _row(clip: ManifestRow, result: filmstrip.FilmstripResult, out_dir: Path) -> list:
    """The index row of one video (INDEX_COLUMNS)."""
    video = relative_path(clip.path, out_dir)
    if not result.ok:
        return [clip.clip_id, clip.class_name, video, *segment_text(clip.segment), "", "", "", "failed",
                " ".join(result.reason.split())] + [""] * 8  # one line: the index is appended line by line
    return [clip.clip_id, clip.class_name, video, *segment_text(clip.segment), relative_path(result.out_path, out_dir),
            result.pages, f"{result.seconds_per_frame:g}", "ok", "", format_float(result.duration_s), result.frames,
            int(result.has_audio), result.width_px, result.height_px, f"{result.fps:g}", result.sample_rate_hz,
            result.audio_channels]


def _earlier_rows(index_path: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier run's index (clip id -> row); a last line cut by a killed write is dropped."""
    if not index_path.is_file():
        return {}
    text = index_path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        logger.warning("%s: the last line was cut by an interrupted run; its video is rendered again", index_path)
        write_text(index_path, text[: text.rfind("\n") + 1])
    return {row["clip_id"]: row for row in read_index(index_path)}


def _check_layout(record_path: Path, layout) -> None:
    layout_record = asdict(layout)
    earlier = json.loads(record_path.read_text(encoding="utf-8"))["layout"] if record_path.is_file() else None
    if earlier is not None and earlier != layout_record:
        changed = ", ".join(f"{k} {earlier.get(k)} -> {v}" for k, v in layout_record.items() if earlier.get(k) != v)
        raise InputError(f"{record_path.parent} holds filmstrips of another layout ({changed}); give the same layout "
                         "options or another output folder")


def _done(row: dict[str, str], clip: ManifestRow, out_dir: Path) -> bool:
    """Whether an earlier run finished this clip (and its images are still there).

    Raises:
        InputError: the index lists the clip id for another video, class or segment (another batch's clip).
    """
    earlier = (resolve_path(row["video"], out_dir), row["class_name"], row.get("start_s", ""), row.get("end_s", ""))
    if earlier != (clip.path.resolve(), clip.class_name, *segment_text(clip.segment)):
        raise InputError(f"clip id {clip.clip_id!r} is in {out_dir / 'filmstrips.csv'} already for "
                         f"{earlier[0]} ({earlier[1]!r}), here for {clip.path} ({clip.class_name!r}); give the clip "
                         "list a clip_id column with ids of its own, or use another output folder")
    pages = filmstrip.page_paths(resolve_path(row["filmstrip"], out_dir), int(row.get("pages") or 1)) if (
        row["status"] == "ok") else []
    return bool(pages) and all(page.is_file() for page in pages)


def _append_line(handle: int, row: list) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    os.write(handle, buffer.getvalue().encode("utf-8"))  # one write of one line: a kill never leaves half a row


def make_filmstrips(config: FilmstripConfig) -> FilmstripSummary:
    """Render the filmstrip pages of every candidate video; videos that cannot be decoded are recorded, not fatal.

    Writes `out_dir/filmstrips/<clip_id>.<format>` (and `<clip_id>~page<k>.<format>` for later pages), the index
    `filmstrips.csv` (one row per video: clip_id, class_name, video, start_s, end_s, filmstrip (the first page),
    pages, seconds_per_frame, status ok / failed, reason, and what the container says: duration, frames shown,
    audio, size, frame rate), `failures.csv` (clip_id, class_name, video, reason) and `filmstrips.json` (the layout,
    the counts). Paths are relative to `out_dir`. Into a folder of an earlier run, the videos it finished are kept
    and skipped, the failed ones are tried again, and the rows of other videos stay (batches merge).

    Raises:
        FileNotFoundError: no clip list, or no class table.
        ValueError: a malformed clip list, class table or earlier index, no video of the table's classes, an earlier
            run of another layout, or a clip id the earlier index holds for another video.
    """
    start = time.perf_counter()
    clips = read_clip_list(config.videos, split_required=False)  # candidates: no split before curation
    skipped = 0
    if config.classes is not None:
        names = {row.class_name for row in read_class_table(config.classes)}
        chosen = [clip for clip in clips if clip.class_name in names]
        skipped = len(clips) - len(chosen)
        if skipped:
            others = sorted({clip.class_name for clip in clips if clip.class_name not in names})
            logger.warning("%d videos of %d classes not in %s are skipped: %s", skipped, len(others), config.classes,
                           ", ".join(repr(name) for name in others[:10]))
        if not chosen:
            raise InputError(f"{config.videos}: no video of a class in {config.classes} (video classes are the "
                             "class_name column or the parent folder's name and must equal the table's names)")
        clips = chosen
    out_dir = Path(config.out_dir)
    layout = config.layout
    index_path, failures_path, record_path = (out_dir / name for name in ("filmstrips.csv", "failures.csv",
                                                                          "filmstrips.json"))
    _check_layout(record_path, layout)
    earlier = _earlier_rows(index_path)
    done = {clip.clip_id for clip in clips if clip.clip_id in earlier and _done(earlier[clip.clip_id], clip, out_dir)}
    batch = {clip.clip_id for clip in clips}
    kept = [row for clip_id, row in earlier.items() if clip_id not in batch or clip_id in done]
    image_root = out_dir / "filmstrips"
    jobs = [filmstrip.FilmstripJob(clip.clip_id, clip.path, _filmstrip_path(image_root, clip.clip_id,
                                                                            layout.image_format), layout,
                                   clip.segment, clip.class_name) for clip in clips if clip.clip_id not in done]
    if done:
        logger.info("%d of %d videos have filmstrips from an earlier run in %s: not rendered again", len(done),
                    len(clips), out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(record_path, {"layout": asdict(layout), "finished": False})
    # The index holds the finished videos only: the earlier rows kept, then a line per video as it finishes.
    write_csv(index_path, INDEX_COLUMNS, [[row.get(column, "") for column in INDEX_COLUMNS] for row in kept])
    by_id = {clip.clip_id: clip for clip in clips}
    new_rows: dict[str, list] = {}
    widened = 0
    handle = os.open(index_path, os.O_WRONLY | os.O_APPEND)
    try:
        for result in _run_jobs(jobs, config.workers, config.progress):
            clip = by_id[result.clip_id]
            new_rows[clip.clip_id] = _row(clip, result, out_dir)
            _append_line(handle, new_rows[clip.clip_id])
            if not result.ok:
                logger.warning("no filmstrip for %s: %s", clip.clip_id, result.reason)
            elif result.seconds_per_frame > layout.seconds_per_frame:
                widened += 1
                logger.warning("%s lasts %.0f s, more than %d pages at %g s per frame: %d pages at one frame every "
                               "%g s", clip.clip_id, result.duration_s or 0.0, layout.max_pages,
                               layout.seconds_per_frame, result.pages, result.seconds_per_frame)
            elif result.covered_s is not None:
                logger.warning("%s has no known duration and goes on after %d pages: the filmstrip shows its first "
                               "%.0f s", clip.clip_id, result.pages, result.covered_s)
    finally:
        os.close(handle)
    # Rewritten whole (atomically) in a fixed order: earlier rows, then this list's in its order.
    rows = [[row.get(column, "") for column in INDEX_COLUMNS] for row in kept if row["clip_id"] not in batch]
    rows += [new_rows[clip.clip_id] if clip.clip_id in new_rows else
             [earlier[clip.clip_id].get(column, "") for column in INDEX_COLUMNS] for clip in clips]
    write_csv(index_path, INDEX_COLUMNS, rows)
    status, reason = INDEX_COLUMNS.index("status"), INDEX_COLUMNS.index("reason")
    failures = [[row[0], row[1], row[2], row[reason]] for row in rows if row[status] == "failed"]
    write_csv(failures_path, _FAILURE_COLUMNS, failures)
    listed = [row for row in rows if row[0] in batch]
    n_failed = sum(row[status] == "failed" for row in listed)
    pages = sum(int(row[INDEX_COLUMNS.index("pages")] or 0) for row in listed)
    summary = FilmstripSummary(len(clips), len(clips) - n_failed, n_failed, skipped, len(done), len(rows), pages,
                               widened, index_path, failures_path, time.perf_counter() - start)
    write_json(record_path, {"layout": asdict(layout), "finished": True, "videos": len(rows),
                             "failed": len(failures)})
    logger.info("%d filmstrips (%d pages), %d videos failed (%s), %.1f videos/s", summary.n_ok, pages,
                summary.n_failed, failures_path, summary.videos_per_s)
    return summary
