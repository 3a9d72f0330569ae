"""Filmstrips of a file trimmed by stream copy (`ffmpeg -ss 3.2 -i in.mp4 -c copy out.mp4`, made here with PyAV)
follow what players show: time 0 is the first presented frame, the duration is the presented part's."""

import numpy as np
import pytest

from curate.encode import write_mp4
from curate.filmstrip import sample_frames
from tests.media import frame_number, numbered_frames, stream_copy_trim

_BITS = 12


def test_cells_show_the_presented_timeline_of_a_stream_copy_trim(tmp_path):
    source = write_mp4(tmp_path / "source.mp4", numbered_frames(250, 48, 96, _BITS), 25, crf=0)  # 10 s
    trimmed, before_cut = stream_copy_trim(source, tmp_path / "trimmed.mp4", 3.2)  # frame 80 is the cut
    assert before_cut > 0  # packets from the key frame before the cut, marked to be discarded
    sampled = sample_frames(trimmed, np.arange(10.0), (96, 48))
    assert sampled.duration_s == pytest.approx(6.8)
    assert [frame_number(f, _BITS) for f in sampled.frames[:7]] == [80 + 25 * k for k in range(7)]
    assert all(f is None for f in sampled.frames[7:])  # 7 s and later: after the end
    untrimmed = sample_frames(source, np.arange(3.0), (96, 48))
    assert [frame_number(f, _BITS) for f in untrimmed.frames] == [0, 25, 50] and untrimmed.duration_s == 10.0
