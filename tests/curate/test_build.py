"""curate.build with real candidate clips: the annotators' spans become the manifest's start_s,end_s (inside a
candidate's own segment), videos without audio are reported per class and dropped with require_audio, videos with
too few reviewers are dropped with their reason, and the manifest starts with the contract's six columns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from common.media import Segment
from curate.build import build_evaluation_set
from curate.config import BuildConfig, FilmstripConfig, FilmstripLayout, MergeConfig, SheetsConfig
from curate.encode import write_mp4
from curate.merge import merge_annotations
from curate.render import make_filmstrips
from curate.sheets import make_sheets
from curate.tables import read_class_table
from features.manifest import read_clip_list, read_manifest

# clip id -> (class, seconds, audio, candidate segment)
_CLIPS = {
    "alpha_1": ("alpha", 6.0, True, ("", "")),
    "alpha_2": ("alpha", 6.0, False, ("", "")),
    "bravo_1": ("bravo", 10.0, True, ("2", "8")),
    "bravo_2": ("bravo", 4.0, True, ("", "")),
    "charlie_1": ("charlie", 4.0, True, ("", "")),
    "charlie_2": ("charlie", 4.0, False, ("", "")),
}
# reviewer -> clip -> (label, start_s, end_s); unlisted: yes without a span
_LABELS = {
    "r1": {"alpha_1": ("yes", "1", "5"), "bravo_1": ("yes", "1", "3")},
    "r2": {"alpha_1": ("yes", "2", "6.5"), "bravo_2": ("", "", "")},
    "r3": {"bravo_2": ("", "", "")},
}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """Filmstrips, sheets filled by three reviewers (two leave bravo_2 blank) and their merged decisions."""
    root = tmp_path_factory.mktemp("build")
    rng = np.random.default_rng(0)
    lines = ["clip_id,path,class_name,start_s,end_s"]
    for clip, (name, seconds, audio, (start, end)) in _CLIPS.items():
        frames = rng.integers(0, 255, (round(seconds * 5), 32, 48, 3), np.uint8)
        sound = rng.normal(0, 0.1, round(seconds * 16000)).astype(np.float32) if audio else None
        write_mp4(root / f"{clip}.mp4", frames, 5, sound, 16000)
        lines.append(f"{clip},{clip}.mp4,{name},{start},{end}")
    (root / "videos.csv").write_text("\n".join(lines) + "\n")
    table = root / "classes.csv"
    table.write_text("class_name,sr,group\nalpha,0.2,easy\nbravo,0.45,medium\ncharlie,0.7,hard\n")
    strips = make_filmstrips(FilmstripConfig(videos=root / "videos.csv", out_dir=root / "strips", workers=1,
                                             layout=FilmstripLayout(rows=2, columns=5)))
    sheets = make_sheets(SheetsConfig(filmstrips=strips.index_path, reviewers=tuple(_LABELS), out_dir=root / "s"))
    for sheet in sheets.sheets:
        rows = _rows(sheet)
        for row in rows:
            row["label"], row["start_s"], row["end_s"] = _LABELS[sheet.stem].get(row["clip_id"], ("yes", "", ""))
        with open(sheet, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    merged = merge_annotations(MergeConfig(sheets=sheets.sheets, out_dir=root / "merged"))
    return {"root": root, "table": table, "index": strips.index_path, "decisions": merged.decisions_path}


def _build(decided, name, **options):
    return build_evaluation_set(BuildConfig(decisions=decided["decisions"], classes=decided["table"],
                                            filmstrips=decided["index"], out_dir=decided["root"] / name, **options))


def test_annotated_spans_become_the_manifest_segments(decided):
    summary = _build(decided, "final")
    rows = {row["clip_id"]: row for row in _rows(summary.manifest_path)}
    assert list(next(iter(rows.values())))[:6] == ["clip_id", "path", "class_name", "split", "start_s", "end_s"]
    assert set(rows) == {"alpha_1", "alpha_2", "bravo_1", "charlie_1", "charlie_2"}
    # alpha_1: r1 1-5 s, r2 2-6.5 s -> 2-5 s; bravo_1: r1's 1-3 s of the candidate's 2-8 s of its file -> 3-5 s
    assert (rows["alpha_1"]["start_s"], rows["alpha_1"]["end_s"], rows["alpha_1"]["duration_s"]) == ("2", "5", "3.000")
    assert (rows["bravo_1"]["start_s"], rows["bravo_1"]["end_s"]) == ("3", "5")
    assert (rows["charlie_1"]["start_s"], rows["charlie_1"]["end_s"]) == ("", "")
    segments = {record.clip_id: record.segment for record in read_clip_list(summary.manifest_path)}
    assert segments["alpha_1"] == Segment(2.0, 5.0) and segments["bravo_1"] == Segment(3.0, 5.0)
    assert segments["charlie_2"] is None
    dropped = {row["clip_id"]: row["reason"] for row in _rows(summary.dropped_path)}
    assert dropped == {"bravo_2": "too few reviewers: 1 labelled it"}


def test_videos_without_audio_are_reported_per_class_and_dropped_on_request(decided, caplog):
    summary = _build(decided, "with_silent")
    assert summary.without_audio == {"alpha": (1, 2), "bravo": (0, 1), "charlie": (1, 2)}
    statistics = summary.statistics_md.read_text()
    assert "Videos without an audio track, of those the annotators kept: 2 of 5 (40%), kept (pass" in statistics
    assert "| alpha | easy | 2 | 1 | 50% |" in statistics and "| bravo | medium | 1 | 0 | 0% |" in statistics
    assert any("2 of the 5 videos the annotators kept have no audio track" in r.getMessage() for r in caplog.records)
    strict = _build(decided, "audio_only", require_audio=True)
    assert strict.n_videos == 3 and strict.dropped["no audio track"] == 2
    assert {row["has_audio"] for row in _rows(strict.manifest_path)} == {"1"}
    assert "2 of 5 (40%), dropped (`require_audio`)" in strict.statistics_md.read_text()
    record = json.loads((decided["root"] / "audio_only" / "build.json").read_text())
    assert record["config"]["require_audio"] is True and record["without_audio"]["alpha"]["without_audio"] == 1


def _invoke(args, exit_code=0):
    from click.testing import CliRunner

    from cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output
    return result.output


def test_cli_sheets_seed_merge_min_reviewers_build_edges_and_require_audio(decided):
    root = decided["root"]
    _invoke(["curate", "sheets", "--filmstrips", str(decided["index"]), "--reviewers", "r1", "--out-dir",
             str(root / "seed1"), "--seed", "1"])
    order = [[row["clip_id"] for row in _rows(folder / "r1.csv")] for folder in (root / "s", root / "seed1")]
    assert sorted(order[0]) == sorted(order[1]) and order[0] != order[1]  # seed 0 (the fixture's) and seed 1
    sheets = [str(root / "s" / f"{name}.csv") for name in _LABELS]
    output = _invoke(["curate", "merge", *sheets, "--out-dir", str(root / "m1"), "--min-reviewers", "1"])
    assert "6 videos, 3 reviewers: keep 6, mixed 0, rejected 0, too-few-reviews 0" in output  # bravo_2 by r1 alone
    build = ["curate", "build", "--decisions", str(root / "m1" / "decisions.csv"), "--classes", str(decided["table"]),
             "--filmstrips", str(decided["index"])]
    output = _invoke([*build, "--out-dir", str(root / "cli"), "--require-audio"])
    assert "3 classes, 4 videos" in output and "2 videos dropped; 2 without audio (statistics.md)" in output
    output = _invoke([*build, "--out-dir", str(root / "cli2"), "--edges", "0.1,0.5,0.66,0.8"], exit_code=1)
    assert "Error: " in output and "'bravo' (SR 0.45 is easy, not medium)" in output


def test_videos_per_class_figure_keeps_small_groups_captions_apart():
    from curate.build import videos_per_class_figure
    from curate.tables import ClassRow
    from tests.curate.test_relatedness import _assert_readable

    classes = [ClassRow(f"easy class {k}", 0.11 + k * 0.005, "easy") for k in range(40)]
    classes += [ClassRow("one medium", 0.4, "medium"), ClassRow("one hard", 0.7, "hard")]
    figure = videos_per_class_figure(classes, {c.class_name: [{}] * 2 for c in classes}, "a title " * 40)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.texts] == ["easy", "medium", "hard"]
    assert [b.get_height() for b in axes.patches] == [2] * 42
    _assert_readable(figure, axes, axes.texts)
    assert len(axes.get_title().splitlines()) > 1  # wrapped to the figure's width


def test_the_manifest_carries_group_sr_and_media_in_the_contract_order(decided):
    summary = _build(decided, "typed")
    assert summary.manifest_path.read_text(encoding="utf-8").splitlines()[0] == (
        "clip_id,path,class_name,split,start_s,end_s,group,sr,has_audio,duration_s,width_px,height_px,fps,"
        "sample_rate_hz,audio_channels")
    classes = {row.class_name: row for row in read_class_table(decided["table"])}
    rows = read_manifest(summary.manifest_path)
    assert len(rows) == summary.n_videos
    for row in rows:
        assert (row.split, row.group, row.sr) == ("unseen", classes[row.class_name].group,
                                                  pytest.approx(classes[row.class_name].sr, abs=1e-6))
        assert row.has_audio is not None and row.width_px > 0 and row.fps > 0 and row.duration_s > 0
