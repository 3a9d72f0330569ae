"""curate.filmstrip: the frame shown at each second (by timestamp, any GOP structure), blank cells after the end,
stopping after the last cell, rotation, the image grid, pages covering the whole video (a wider stated stride for a
very long one) with the class in each header, and every undecodable input as a MediaError with its reason."""

from __future__ import annotations

import pickle
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from common.media import MediaError, Segment
from curate import filmstrip
from curate.config import FilmstripLayout
from curate.encode import write_mp4
from curate.filmstrip import FilmstripJob, render_filmstrip, render_job, sample_frames, sample_segment
from tests.media import frame_number, numbered_frames

_BITS = 12  # frame numbers up to 4095
_SIZE = (48, 96)  # (H, W) of the test clips


def _numbered(count: int, height: int = _SIZE[0], width: int = _SIZE[1]) -> np.ndarray:
    return numbered_frames(count, height, width, _BITS)


def _number(rgb: np.ndarray) -> int:
    return frame_number(rgb, _BITS)


# x264 settings: lossless without B-frames; lossy open GOPs (keyframes every 5 frames, leading B-frames that
# reference the previous group); intra-only (every frame a keyframe); MPEG-4 part 2 in AVI (B-frames after an
# I-frame shown before it, as in Xvid files).
_ENCODINGS = {
    "lossless": ("libx264", "mp4", {"crf": "0", "threads": "1"}),
    "open_gop": ("libx264", "mp4", {"crf": "12", "threads": "1",
                                    "x264-params": "keyint=5:min-keyint=5:scenecut=0:open-gop=1:bframes=3"}),
    "intra_only": ("libx264", "mp4", {"crf": "0", "threads": "1", "x264-params": "keyint=1"}),
    "mpeg4_bframes": ("mpeg4", "avi", {"g": "12", "bf": "2", "q:v": "2"}),
}


def _write(path, count: int, fps: float, encoding: str = "lossless", rotation: int = 0):
    codec, _, options = _ENCODINGS[encoding]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = _SIZE[1], _SIZE[0], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb in _numbered(count):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _clip(tmp_path, name: str, seconds: float, fps: float, encoding: str = "lossless", rotation: int = 0):
    extension = _ENCODINGS[encoding][1]
    return _write(tmp_path / f"{name}.{extension}", round(seconds * fps), fps, encoding, rotation)


def test_each_cell_shows_the_frame_at_its_second_and_cells_after_the_end_stay_blank(tmp_path):
    video = _clip(tmp_path, "short", 12.3, 10)  # 123 frames: frame k is shown from k / 10 s
    sampled = sample_frames(video, np.arange(100.0), (96, 48))
    assert [_number(f) for f in sampled.frames[:13]] == [10 * k for k in range(13)]
    assert all(f is None for f in sampled.frames[13:])
    assert sampled.duration_s == pytest.approx(12.3)
    assert (sampled.width_px, sampled.height_px, sampled.fps, sampled.has_audio) == (96, 48, 10.0, False)
    assert sampled.frames[0].shape == (48, 96, 3)


def test_frame_between_samples_is_the_one_on_screen(tmp_path):
    video = _clip(tmp_path, "three_fps", 5.0, 3)  # frames at 0, 1/3, 2/3, 1, ...: at 2.5 s frame 7 (2.33 s)
    sampled = sample_frames(video, np.array([0.0, 0.5, 1.0, 2.5, 4.99]), (96, 48))
    assert [_number(f) for f in sampled.frames] == [0, 1, 3, 7, 14]


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path):
    path = tmp_path / "vfr.mp4"
    pts_ms = [0, 100, 1500, 1600, 3900]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={"threads": "1", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = _SIZE[1], _SIZE[0], "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for rgb, pts in zip(_numbered(len(pts_ms)), pts_ms, strict=True):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    sampled = sample_frames(path, np.array([0.0, 1.0, 2.0, 3.0, 3.9]), (96, 48))
    assert [_number(f) for f in sampled.frames] == [0, 1, 3, 3, 4]  # the frame on screen, not every n-th frame


@pytest.mark.parametrize("encoding", list(_ENCODINGS))
def test_a_long_video_fills_every_cell_and_is_read_only_to_100_s(tmp_path, encoding):
    fps = 4
    video = _clip(tmp_path, f"long_{encoding}", 110.0, fps, encoding)  # 440 frames
    sampled = sample_frames(video, np.arange(100.0), (96, 48))
    assert [_number(f) for f in sampled.frames] == [fps * k for k in range(100)], encoding
    assert sampled.frames_decoded <= 100 * fps  # nothing after the last cell's frame (396) is decoded
    assert sampled.duration_s == pytest.approx(110.0, abs=0.3)  # from the header: the end was never read
    if encoding == "intra_only":
        assert sampled.frames_decoded == 100  # every keyframe starts a group: only the cells' frames are decoded


def test_display_rotation_gives_portrait_cells(tmp_path):
    upright = sample_frames(_clip(tmp_path, "upright", 3.0, 5), np.arange(3.0), (96, 96)).frames
    rotated = sample_frames(_clip(tmp_path, "rotated", 3.0, 5, rotation=90), np.arange(3.0), (96, 96))
    assert (rotated.width_px, rotated.height_px) == (48, 96)
    for up, turned in zip(upright, rotated.frames, strict=True):
        assert turned.shape == (96, 48, 3)  # scaled to fit 96 x 96, shown portrait
        np.testing.assert_array_equal(turned, np.rot90(up))  # counter-clockwise, as extract.decode shows it


def test_render_filmstrip_draws_the_grid_times_and_blank_cells(tmp_path):
    layout = FilmstripLayout(rows=2, columns=3, cell_width_px=96, cell_height_px=64, image_format="png")
    video = _clip(tmp_path, "four_s", 4.0, 5)  # cells at 0..3 s show frames, 4 s and 5 s are after the end
    (path,), sampled, stride = render_filmstrip(video, tmp_path / "out" / "strip.png", layout, title="clip")
    assert stride == 1.0
    image = np.asarray(Image.open(path).convert("RGB"))
    gutter, header = filmstrip._GUTTER_PX, filmstrip._HEADER_PX
    assert image.shape == (header + 2 * 64 + 3 * gutter, 3 * 96 + 4 * gutter, 3)
    assert sum(f is not None for f in sampled.frames) == 4
    for k in range(6):
        row, column = divmod(k, 3)
        top, left = header + gutter + row * (64 + gutter), gutter + column * (96 + gutter)
        cell = image[top:top + 64, left:left + 96].astype(int)
        if k < 4:
            label = cell[:12, :24]
            assert ((label[..., 0] > 150) & (label[..., 1] > 150) & (label[..., 2] < 80)).sum() > 5, k  # yellow
            assert (cell[-8:] == 0).all() and not (cell[8:-8] == 0).all()  # 96 x 48 letterboxed in 96 x 64
            assert _number(cell[8:-8]) == 5 * k  # the frame shown at k seconds
        else:
            assert (cell == filmstrip._BACKGROUND).all(), k  # blank: after the end of the video
    assert not list((tmp_path / "out").glob(".*partial"))  # written under a temporary name, then renamed


def test_time_labels():
    assert filmstrip._time_label(0.0, True) == "0:00"
    assert filmstrip._time_label(99.0, True) == "1:39"
    assert filmstrip._time_label(7.5, False) == "0:07.5"


def _bad_files(tmp_path):
    good = write_mp4(tmp_path / "good.mp4", _numbered(50), 25)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"  # moov (the index) is at the end: half a file does not open
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    audio_only = write_mp4(tmp_path / "audio_only.mp4", None, 25, np.zeros(16000, np.float32), 16000)
    zeroed = tmp_path / "zeroed.mp4"  # every video packet's bytes zeroed
    data = good.read_bytes()
    mdat, end = data.index(b"mdat") + 4, data.index(b"moov") - 4
    zeroed.write_bytes(data[:mdat] + bytes(end - mdat) + data[end:])
    return {text: "not a media file", empty: "empty file", truncated: "not a media file or truncated",
            audio_only: "no video stream", zeroed: "video decoding failed", tmp_path / "missing.mp4": "file not found"}


def test_every_undecodable_input_is_a_filmstrip_error_and_render_job_records_it(tmp_path):
    layout = FilmstripLayout()
    for path, reason in _bad_files(tmp_path).items():
        with pytest.raises(MediaError) as caught:
            sample_frames(path, layout.times_s, (192, 108))
        assert caught.value.path == path and reason in caught.value.reason, (path, caught.value.reason)
        result = render_job(FilmstripJob(path.stem, path, tmp_path / "strips" / f"{path.stem}.jpg", layout))
        assert not result.ok and result.out_path is None and reason in result.reason
    assert not (tmp_path / "strips").exists()
    result = render_job(FilmstripJob("good", tmp_path / "good.mp4", tmp_path / "strips" / "good.jpg", layout))
    assert result.ok and result.out_path.is_file() and result.frames == 2  # 50 frames at 25 fps: cells 0 s, 1 s
    assert Image.open(result.out_path).format == "JPEG"
    error = pickle.loads(pickle.dumps(MediaError("/a/b.mp4", "empty file (0 bytes)")))
    assert (str(error.path), error.reason) == ("/a/b.mp4", "empty file (0 bytes)")


@pytest.mark.parametrize("field, value", [("rows", 0), ("columns", 101), ("seconds_per_frame", 0.0),
                                          ("cell_width_px", 8), ("image_format", "gif"), ("jpeg_quality", 100)])
def test_layout_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field if field != "image_format" else "image_format"):
        FilmstripLayout(**{field: value})


def test_sample_times_must_increase(tmp_path):
    with pytest.raises(ValueError, match="increasing"):
        sample_frames(tmp_path / "any.mp4", np.array([1.0, 0.0]), (96, 48))


def test_a_segment_fills_cells_from_its_start_and_blanks_after_its_end(tmp_path):
    video = _clip(tmp_path, "long", 12.3, 10)  # 123 frames: frame k is shown from k / 10 s
    layout = FilmstripLayout()
    sampled = sample_segment(video, layout.times_s, (192, 108), Segment(4.0, 9.5))
    assert [_number(f) for f in sampled.frames[:6]] == [40, 50, 60, 70, 80, 90]  # 4 s .. 9 s
    assert all(f is None for f in sampled.frames[6:]) and sampled.duration_s == pytest.approx(5.5)
    past = sample_segment(video, layout.times_s, (192, 108), Segment(10.0, 30.0))  # cut at the video's end
    assert [_number(f) for f in past.frames[:3]] == [100, 110, 120] and past.frames[3] is None
    assert past.duration_s == pytest.approx(2.3)
    result = render_job(FilmstripJob("late", video, tmp_path / "late.jpg", layout, Segment(20.0, 30.0)))
    assert not result.ok and "segment 20-30 s starts after the end of the video (12.30 s)" in result.reason
    done = render_job(FilmstripJob("mid", video, tmp_path / "mid.jpg", layout, Segment(4.0, 9.5)))
    assert done.ok and done.frames == 6 and done.duration_s == pytest.approx(5.5)


def _headers(monkeypatch) -> list[str]:
    """Record the header text of every page drawn (the real drawing still runs)."""
    titles, compose = [], filmstrip._compose
    monkeypatch.setattr(filmstrip, "_compose", lambda frames, layout, title, times=None: (
        titles.append(title), compose(frames, layout, title, times))[1])
    return titles


def test_pages_cover_the_whole_video_and_name_the_class(tmp_path, monkeypatch):
    layout = FilmstripLayout(rows=2, columns=5, cell_width_px=96, cell_height_px=48, max_pages=3, image_format="png")
    video = _clip(tmp_path, "long", 25.0, 2)  # 50 frames: frame k shown from k / 2 s; cells 0..24 s on 3 pages
    titles = _headers(monkeypatch)
    paths, sampled, stride = render_filmstrip(video, tmp_path / "out" / "clip.png", layout, title="c1",
                                              class_name="making origami")
    assert stride == 1.0 and [p.name for p in paths] == ["clip.png", "clip~page2.png", "clip~page3.png"]
    assert [_number(f) for f in sampled.frames[:25]] == [2 * k for k in range(25)]
    assert len(sampled.frames) == 25 and filmstrip.page_paths(paths[0], 3) == paths
    assert titles == [f"c1  |  making origami  |  page {k}/3 ({span})  |  25.0 s  |  1 frame every 1 s"
                      for k, span in ((1, "0:00-0:09"), (2, "0:10-0:19"), (3, "0:20-0:24"))]
    last = np.asarray(Image.open(paths[2]).convert("RGB"))
    gutter, header = filmstrip._GUTTER_PX, filmstrip._HEADER_PX
    for k in range(10):  # page 3: cells at 20..24 s, then blank
        row, column = divmod(k, 5)
        top, left = header + gutter + row * (48 + gutter), gutter + column * (96 + gutter)
        cell = last[top:top + 48, left:left + 96]
        if k < 5:
            assert _number(cell) == 2 * (20 + k)
        else:
            assert (cell == filmstrip._BACKGROUND).all(), k


def test_a_very_long_video_is_sampled_at_a_wider_stated_stride(tmp_path, monkeypatch):
    layout = FilmstripLayout(rows=2, columns=5, cell_width_px=96, cell_height_px=48, max_pages=3)
    assert filmstrip.cell_times(70.0, layout)[0] == 3.0  # 70 cells at 1 s > 30: every 3 s, 24 cells
    assert filmstrip.cell_times(30.0, layout)[1].tolist() == list(range(30))
    assert filmstrip.cell_times(None, layout)[1].size == 30  # unknown length: every page
    video = _clip(tmp_path, "very_long", 70.0, 1)
    titles = _headers(monkeypatch)
    result = render_job(FilmstripJob("v", video, tmp_path / "v.jpg", layout, class_name="kayaking"))
    assert result.ok and (result.pages, result.seconds_per_frame, result.frames) == (3, 3.0, 24)
    assert titles[0].endswith("70.0 s  |  1 frame every 3 s (widened from 1 s: at most 3 pages)")
    assert "page 3/3 (1:00-1:09)" in titles[2] and result.covered_s is None
