"""A file trimmed by stream copy (`ffmpeg -ss 3.2 -i in.mp4 -c copy out.mp4`, made here with PyAV): time 0 is its
first presented frame, not the discarded packets from the key frame before the cut."""

import av
import numpy as np
import pytest

from common.media import Segment
from extract import views
from extract.config import PROFILES
from extract.decode import decode_clip
from tests.media import shown_frame_index, stream_copy_trim

VIDEO, AUDIO = PROFILES["paper"].video, PROFILES["paper"].audio
_FPS, _FRAMES, _CUT_S = 25, 150, 3.2  # 6 s; the cut is frame 80


@pytest.fixture
def trimmed(numbered_clip, helpers, tmp_path):
    seconds = _FRAMES / _FPS
    t = np.arange(round(seconds * 16000)) / 16000
    ramp = (0.05 + 0.5 * t / seconds) * np.sin(2 * np.pi * 440 * t)  # the amplitude tells the time
    source = numbered_clip("source.mp4", _FRAMES, _FPS, audio=ramp.astype(np.float32))
    path, before_cut = stream_copy_trim(source, tmp_path / "trimmed.mp4", _CUT_S)
    return path, before_cut


def test_the_trimmed_file_is_what_ffmpeg_writes(trimmed):
    path, before_cut = trimmed
    assert b"elst" in path.read_bytes()  # an edit list
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    discarded = [p for p in packets if p.is_discard]
    assert before_cut > 0 and len(discarded) == before_cut  # the packets from the key frame to the cut
    assert discarded[0].is_keyframe and all(p.pts < 0 for p in discarded)


def test_views_and_duration_follow_the_presented_timeline(trimmed, helpers):
    path, _ = trimmed
    clip = decode_clip(path, VIDEO, AUDIO)
    assert clip.duration_s == pytest.approx((_FRAMES - 80) / _FPS)  # 2.8 s, not 2.8 s plus the discarded part
    numbers = np.array([helpers.frame_number(frame) for frame in clip.frames])[clip.frame_index]
    presented = np.arange(80, _FRAMES)
    expected = presented[shown_frame_index((presented - 80) / _FPS, views.view_times(clip.duration_s, VIDEO))]
    np.testing.assert_array_equal(numbers, expected)
    assert numbers[0, 0] == 80 and not clip.partial
    # The audio keeps the same timeline: its first samples are those heard at 3.2 s of the source.
    assert clip.audio_start_s == pytest.approx(0.0, abs=0.03)
    heard_s = (np.sqrt(2 * np.mean(clip.audio[:1600] ** 2)) - 0.05) / 0.5 * (_FRAMES / _FPS)
    assert heard_s == pytest.approx(_CUT_S + 0.05, abs=0.15)


def test_a_segment_of_a_trimmed_file_counts_from_its_first_presented_frame(trimmed, helpers):
    path, _ = trimmed
    clip = decode_clip(path, VIDEO, AUDIO, segment=Segment(1.0, 2.0))
    numbers = np.array([helpers.frame_number(frame) for frame in clip.frames])[clip.frame_index]
    assert clip.duration_s == pytest.approx(1.0)
    assert numbers.min() == 80 + 25 and numbers.max() <= 80 + 50
