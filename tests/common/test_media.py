"""The frame shown at a time (`common.media`), on frames as a decoder yields them, and the clip timing rules."""

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from common import media
from tests.media import shown_frame_index


def _frames(times_s, time_base=Fraction(1, 1000)):
    return [SimpleNamespace(pts=round(t / time_base)) for t in times_s]


def test_frames_shown_at_takes_the_frame_shown_at_each_time_under_variable_frame_rate():
    frame_times = np.array([0.0, 0.1, 0.15, 0.5, 0.52])
    times = np.array([0.0, 0.12, 0.15 - 1e-9, 0.4, 0.6, -0.1, 0.1])
    expected = dict(zip(times.tolist(), [0, 1, 2, 2, 4, 0, 1], strict=True))
    assert shown_frame_index(frame_times, times).tolist() == [0, 1, 2, 2, 4, 0, 1]  # the oracle agrees
    frames = _frames(frame_times)
    targets = np.sort(times)
    shown = list(media.frames_shown_at(Path("x.mp4"), iter(frames), targets, 0, Fraction(1, 1000)))
    assert [j for j, _, _ in shown] == list(range(len(targets)))
    assert [frames.index(frame) for _, frame, _ in shown] == [expected[t] for t in targets.tolist()]
    assert [t for _, _, t in shown] == pytest.approx([frame_times[expected[t]] for t in targets.tolist()])


def test_frames_shown_at_stops_decoding_once_every_target_has_its_frame():
    consumed = []

    def frames():
        for frame in _frames([0.0, 0.04, 0.08, 0.12, 0.16]):
            consumed.append(frame.pts)
            yield frame

    shown = list(media.frames_shown_at(Path("x.mp4"), frames(), np.array([0.0, 0.05]), 0, Fraction(1, 1000)))
    assert [frame.pts for _, frame, _ in shown] == [0, 40]
    assert consumed == [0, 40, 80]  # the frame after the last target tells that 40 is shown; nothing later is read


def test_frames_shown_at_needs_timestamps_and_a_frame():
    with pytest.raises(media.MediaError, match="without a timestamp"):
        list(media.frames_shown_at(Path("x.mp4"), [SimpleNamespace(pts=None)], np.array([0.0]), 0, Fraction(1, 25)))
    with pytest.raises(media.MediaError, match="no decodable frame"):
        list(media.frames_shown_at(Path("x.mp4"), [], np.array([0.0]), 0, Fraction(1, 25)))
