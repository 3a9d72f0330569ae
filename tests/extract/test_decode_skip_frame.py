"""Frames no view shows that no other frame references (B-frames) are not decoded, and the views are unchanged."""

from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from extract.config import PROFILES
from extract.decode import decode_clip
from extract.encode import write_mp4
from tests.media import numbered_frames

VIDEO, AUDIO = PROFILES["paper"].video, PROFILES["paper"].audio


def _every_frame(path) -> tuple[dict[int, np.ndarray], int, Fraction]:
    """Every frame decoded (nothing skipped), RGB, by presentation time stamp; the count of B-frames; the time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = {}
        b_frames = 0
        for frame in container.decode(stream):
            frames[frame.pts] = frame.to_ndarray(format="rgb24")
            b_frames += frame.pict_type == PictureType.B
        return frames, b_frames, stream.time_base


def test_skipping_non_reference_frames_changes_no_view_frame(tmp_path):
    # x264 veryfast (write_mp4): 3 B-frames, some of them references (b-pyramid), the others not.
    path = write_mp4(tmp_path / "bframes.mp4", numbered_frames(300, 64, 96, 8), 30, crf=23)  # 10 s
    every, b_frames, time_base = _every_frame(path)
    assert b_frames > 100  # a clip with many B-frames
    clip = decode_clip(path, VIDEO, AUDIO)
    assert clip.frames_decoded < len(every) - 50  # skipped: frames no view shows and nothing references
    by_time = {round(float(pts * time_base), 6): rgb for pts, rgb in every.items()}
    for rgb, time_s in zip(clip.frames, clip.frame_times_s, strict=True):
        np.testing.assert_array_equal(rgb, by_time[round(time_s, 6)])  # bit-identical to a full decode
