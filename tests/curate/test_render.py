"""curate.render (`curate filmstrips`): the index is written video by video, a rerun skips finished videos, a killed
run resumes, batches into one folder merge, and a folder keeps one layout; long videos get pages and a stated
stride."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from curate import filmstrip, render
from curate.config import FilmstripConfig, FilmstripLayout, SheetsConfig
from curate.encode import write_mp4
from curate.render import make_filmstrips
from curate.sheets import make_sheets
from curate.tables import INDEX_COLUMNS

_LAYOUT = FilmstripLayout(rows=2, columns=5, cell_width_px=64, cell_height_px=48, max_pages=2)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _batch(folder, name: str, clips: dict[str, float], fps: int = 2):
    """A candidate list `name`.csv of clips (clip id -> seconds; class = the id's first part) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(clips))
    lines = ["clip_id,path,class_name"]
    for clip_id, seconds in clips.items():
        path = folder / f"{clip_id}.mp4"
        if not path.exists():
            write_mp4(path, rng.integers(0, 255, (round(seconds * fps), 32, 48, 3), np.uint8), fps)
        lines.append(f"{clip_id},{path.name},{clip_id.split('_')[0]}")
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.csv"


def _run(videos, out_dir, layout=_LAYOUT, workers=1):
    return make_filmstrips(FilmstripConfig(videos=videos, out_dir=out_dir, layout=layout, workers=workers))


def test_a_rerun_skips_finished_videos_and_retries_failed_ones(tmp_path):
    videos = _batch(tmp_path / "v", "first", {"cooking_1": 3.0, "cooking_2": 4.0, "diving_1": 2.0})
    with open(videos, "a") as handle:
        handle.write("broken,broken.mp4,diving\n")
    (tmp_path / "v" / "broken.mp4").write_bytes(b"not a video" * 50)
    out = tmp_path / "out"
    first = _run(videos, out, workers=2)
    assert (first.n_ok, first.n_failed, first.n_done_before, first.n_index) == (3, 1, 0, 4)
    assert [row["clip_id"] for row in _rows(first.index_path)] == ["cooking_1", "cooking_2", "diving_1", "broken"]
    assert list(_rows(first.index_path)[0]) == list(INDEX_COLUMNS)
    image = out / "filmstrips" / "cooking_1.jpg"
    stamp = image.stat().st_mtime_ns
    (out / "filmstrips" / "cooking_2.jpg").unlink()  # an image that went missing is drawn again
    again = _run(videos, out)
    assert (again.n_ok, again.n_failed, again.n_done_before, again.n_index) == (3, 1, 2, 4)
    assert image.stat().st_mtime_ns == stamp and (out / "filmstrips" / "cooking_2.jpg").is_file()
    assert [row["clip_id"] for row in _rows(out / "failures.csv")] == ["broken"]


def test_a_killed_run_resumes_from_the_rows_written_so_far(tmp_path, monkeypatch, caplog):
    videos = _batch(tmp_path / "v", "list", {"a_1": 2.0, "a_2": 2.0, "a_3": 2.0})
    out = tmp_path / "out"
    rendered, real = [], filmstrip.render_job

    def killed_at_the_third(job):
        if len(rendered) == 2:
            raise KeyboardInterrupt  # the run is stopped while the third video is drawn
        rendered.append(job.clip_id)
        return real(job)

    monkeypatch.setattr(filmstrip, "render_job", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        _run(videos, out)
    assert [row["clip_id"] for row in _rows(out / "filmstrips.csv")] == ["a_1", "a_2"]  # each row as it finished
    with caplog.at_level(logging.WARNING):
        sheets = make_sheets(SheetsConfig(filmstrips=out / "filmstrips.csv", reviewers=("r",), out_dir=tmp_path / "s"))
    assert sheets.n_videos == 2 and any("did not finish" in r.getMessage() for r in caplog.records)
    with open(out / "filmstrips.csv", "rb+") as handle:  # and a write cut in the middle of the second row
        handle.truncate(os.path.getsize(out / "filmstrips.csv") - 7)
    monkeypatch.setattr(filmstrip, "render_job", lambda job: (rendered.append(job.clip_id), real(job))[1])
    summary = _run(videos, out)
    assert rendered[2:] == ["a_2", "a_3"] and summary.n_done_before == 1
    assert [row["clip_id"] for row in _rows(summary.index_path)] == ["a_1", "a_2", "a_3"]
    assert all(row["status"] == "ok" for row in _rows(summary.index_path))


def test_a_second_batch_merges_into_the_index_and_conflicts_are_refused(tmp_path):
    out = tmp_path / "out"
    _run(_batch(tmp_path / "one", "one", {"surfing_1": 2.0, "surfing_2": 2.0}), out)
    second = _run(_batch(tmp_path / "two", "two", {"rowing_1": 2.0}), out)
    assert (second.n_videos, second.n_index) == (1, 3)
    assert [row["clip_id"] for row in _rows(second.index_path)] == ["surfing_1", "surfing_2", "rowing_1"]
    with pytest.raises(ValueError, match="'surfing_1' is in .* already for .*one/surfing_1.mp4"):
        _run(_batch(tmp_path / "three", "three", {"surfing_1": 2.0}), out)  # the same id, another file
    with pytest.raises(ValueError, match="another layout .*rows 2 -> 3"):
        _run(tmp_path / "two" / "two.csv", out, layout=FilmstripLayout(rows=3, columns=5, max_pages=2))
    assert len(_rows(out / "filmstrips.csv")) == 3  # nothing changed by the refused runs


def test_long_videos_get_pages_and_a_stated_stride_in_the_index(tmp_path, caplog):
    videos = _batch(tmp_path / "v", "list", {"hiking_short": 4.0, "hiking_mid": 15.0, "hiking_long": 50.0}, fps=1)
    with caplog.at_level(logging.WARNING):
        summary = _run(videos, tmp_path / "out")
    rows = {row["clip_id"]: row for row in _rows(summary.index_path)}
    assert {k: (r["pages"], r["seconds_per_frame"], r["frames"]) for k, r in rows.items()} == {
        "hiking_short": ("1", "1", "4"), "hiking_mid": ("2", "1", "15"), "hiking_long": ("2", "3", "17")}
    assert (summary.n_pages, summary.n_widened) == (5, 1)
    assert (tmp_path / "out" / "filmstrips" / "hiking_mid~page2.jpg").is_file()
    assert any("hiking_long lasts 50 s, more than 2 pages at 1 s per frame: 2 pages at one frame every 3 s"
               in record.getMessage() for record in caplog.records)


def test_a_clip_id_that_reads_like_a_page_gets_a_hash():
    root = Path("strips")
    assert render._filmstrip_path(root, "x~page2", "jpg").name.startswith("x~page2~")
    assert render._filmstrip_path(root, "x~pages", "jpg").name == "x~pages.jpg"
