"""Frames no view shows that no other frame references (B-frames) are not decoded, and the views are unchanged."""

from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from extract.config import PROFILES
from extract.decode import decode_clip
from tests.media import numbered_frames

VIDEO, AUDIO = PROFILES["paper"].video, PROFILES["paper"].audio


def _write(path, codec: str, options: dict[str, str]):
    """10 s of numbered frames at 30 fps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(30), options=options)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for rgb in numbered_frames(300, 64, 96, 8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _every_frame(path) -> tuple[dict[float, np.ndarray], int]:
    """Every frame decoded (nothing skipped), RGB, by seconds from the first frame; and the count of B-frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames, b_frames, first_pts = {}, 0, None
        for frame in container.decode(stream):  # in presentation order
            first_pts = frame.pts if first_pts is None else first_pts
            frames[round(float((frame.pts - first_pts) * stream.time_base), 6)] = frame.to_ndarray(format="rgb24")
            b_frames += frame.pict_type == PictureType.B
        return frames, b_frames


# x264 veryfast (3 B-frames, some of them references: b-pyramid); MPEG-4 part 2 in AVI (B-frames, never references).
@pytest.mark.parametrize(("name", "codec", "options"), [
    ("bframes.mp4", "libx264", {"preset": "veryfast", "crf": "23", "threads": "1"}),
    ("bframes.avi", "mpeg4", {"g": "12", "bf": "2", "q:v": "4"}),
], ids=["h264", "mpeg4"])
def test_skipping_non_reference_frames_changes_no_view_frame(tmp_path, name, codec, options):
    path = _write(tmp_path / name, codec, options)
    every, b_frames = _every_frame(path)
    assert b_frames > 100  # a clip with many B-frames
    clip = decode_clip(path, VIDEO, AUDIO)
    assert clip.frames_decoded < len(every) - 50  # skipped: frames no view shows and nothing references
    for rgb, time_s in zip(clip.frames, clip.frame_times_s, strict=True):
        np.testing.assert_array_equal(rgb, every[round(time_s, 6)])  # bit-identical to a full decode


def test_hevc_frames_are_all_decoded(tmp_path):
    # HEVC's sub-layer non-reference pictures may be references of higher temporal sub-layers: never skipped.
    path = _write(tmp_path / "hevc.mp4", "libx265", {"preset": "veryfast", "x265-params": "bframes=3:log-level=error"})
    every, b_frames = _every_frame(path)
    assert b_frames > 100
    clip = decode_clip(path, VIDEO, AUDIO)
    assert clip.frames_decoded > len(every) - 5  # all but the last few, after the last view's (decoding stops)
    for rgb, time_s in zip(clip.frames, clip.frame_times_s, strict=True):
        np.testing.assert_array_equal(rgb, every[round(time_s, 6)])
