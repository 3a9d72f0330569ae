"""`curate filmstrips`: one filmstrip per candidate video (the paper's section 3, step 2), in a process pool.

For every video of the clip list (of the class table's classes), frames at 1 fps over its first 100 s in a
10 x 10 grid (`curate.filmstrip`); a video that cannot be decoded is recorded with its reason, never fatal.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from curate import filmstrip
from curate.config import FilmstripConfig
from curate.tables import INDEX_COLUMNS, format_float, read_class_table, relative_path
from extract.errors import InputError
from extract.files import write_csv
from features.manifest import read_clip_list

__all__ = ["FilmstripSummary", "make_filmstrips"]

logger = logging.getLogger(__name__)


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


def _filmstrip_path(root: Path, clip_id: str, image_format: str) -> Path:
    """`root/<clip_id>.<format>`, kept under `root`.

    A clip id with '..' or a root (a clip list's paths outside its folder give such ids) loses those parts and
    gains a short hash of the whole id, so that two ids never share an image.
    """
    parts = Path(clip_id).parts
    kept = [part for part in parts if part not in ("..", ".") and part != Path(clip_id).anchor]
    if not kept:
        raise InputError(f"clip id {clip_id!r} names no file; give the clip list a clip_id column")
    if len(kept) != len(parts):
        kept[-1] += "~" + hashlib.sha256(clip_id.encode("utf-8")).hexdigest()[:8]
    return root.joinpath(*kept[:-1], f"{kept[-1]}.{image_format}")


def _run_jobs(jobs: list[filmstrip.FilmstripJob], workers: int, progress: bool) -> Iterator[filmstrip.FilmstripResult]:
    bar = dict(total=len(jobs), desc="filmstrips", unit="video", disable=not progress, dynamic_ncols=True)
    if workers == 1 or len(jobs) <= 1:
        yield from tqdm(map(filmstrip.render_job, jobs), **bar)
        return
    # Spawned workers import curate.filmstrip (PyAV, numpy, Pillow; no torch) and inherit no threads or locks. Chunks of
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
    clips = read_clip_list(config.videos, required=("path", "class_name"))  # candidates: no split before curation
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
            raise InputError(f"{config.videos}: no video of a class in {config.classes} (video classes are the "
                             "class_name column or the parent folder's name and must equal the table's names)")
        clips = chosen
    out_dir = Path(config.out_dir)
    image_root = out_dir / "filmstrips"
    layout = config.layout
    jobs = [filmstrip.FilmstripJob(clip.clip_id, clip.path, _filmstrip_path(image_root, clip.clip_id,
                                                                            layout.image_format), layout, clip.segment)
            for clip in clips]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = list(_run_jobs(jobs, config.workers, config.progress))

    index_rows, failure_rows = [], []
    for clip, result in zip(clips, results, strict=True):
        video = relative_path(clip.path, out_dir)
        if result.ok:
            index_rows.append([clip.clip_id, clip.label, video, relative_path(result.out_path, out_dir), "ok", "",
                               format_float(result.duration_s), result.frames, int(result.has_audio),
                               result.width_px, result.height_px, f"{result.fps:g}", result.sample_rate_hz,
                               result.audio_channels])
        else:
            logger.warning("no filmstrip for %s: %s", clip.clip_id, result.reason)
            index_rows.append([clip.clip_id, clip.label, video, "", "failed", result.reason] + [""] * 8)
            failure_rows.append([clip.clip_id, clip.label, video, result.reason])
    index_path, failures_path = out_dir / "filmstrips.csv", out_dir / "failures.csv"
    write_csv(failures_path, ("clip_id", "class_name", "video", "reason"), failure_rows)
    write_csv(index_path, INDEX_COLUMNS, index_rows)
    summary = FilmstripSummary(len(clips), len(clips) - len(failure_rows), len(failure_rows), skipped, index_path,
                               failures_path, time.perf_counter() - start)
    logger.info("%d filmstrips, %d videos failed (%s), %.1f videos/s", summary.n_ok, summary.n_failed, failures_path,
                summary.videos_per_s)
    return summary
