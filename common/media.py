"""Media files as every stage opens them: one error type, one way to open a video, one rule for the frame shown
at a time. Torch-free (PyAV and numpy only), so that process pools that only decode (`curate filmstrips`) start
without importing torch.

The frame shown at time t is the last frame whose presentation time is <= t (within `TIME_TOLERANCE_S`), times
counted from the first presented frame; a time before the first frame shows the first frame, a time after the last
frame shows the last. Presented: not marked to be discarded. An MP4 trimmed by stream copy (`ffmpeg -ss 3.3 -c copy`)
starts at the key frame before the cut and carries an edit list; FFmpeg's demuxer marks the packets before the edit
(`packet.is_discard`, negative times) and its decoder drops their frames, as players do, so they count neither for
time 0 nor for the duration. `frames_shown_at` applies the rule to frames as a decoder yields them, so the caller
converts only the frames that some time shows: `extract.decode` (the backbones' views) and `curate.filmstrip`
(annotators' grids); `shown_pts` names their packets before decoding, so that the others may be skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from common.errors import InputError

__all__ = ["TIME_TOLERANCE_S", "SKIPS_ONLY_UNREFERENCED", "MediaError", "Segment", "open_video", "describe",
           "presentation_span", "shown_pts", "frames_shown_at", "display_orientation"]

TIME_TOLERANCE_S = 1e-6  # sample times within this of a frame's time count as at or after it (float rounding)
# Decoders whose non-reference frames (`skip_frame` "NONREF") no other frame references: H.264's nal_ref_idc 0
# pictures, and B-frames of the MPEG family. Not HEVC: its sub-layer non-reference pictures can be references of
# higher temporal sub-layers (phone video), and FFmpeg skips them all.
SKIPS_ONLY_UNREFERENCED = frozenset({"h264", "mpeg4", "mpeg1video", "mpeg2video", "h263"})


class MediaError(InputError):
    """A clip that cannot be used: not media, empty, truncated, no video, undecodable, or audio under 25 ms.

    Attributes:
        path: the clip's file.
        reason: one line saying what is wrong.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # keeps the two-argument constructor picklable (worker processes)
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class Segment:
    """A span of a media file that is the clip (an ActivityNet annotation, a VGGSound 10 s cut of a full video).

    Seconds from the start of the file's video stream; `end_s` past the end of the file is cut to it.
    """

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s) and 0 <= self.start_s < self.end_s):
            raise InputError(f"a segment needs 0 <= start_s < end_s, got {self.start_s}, {self.end_s}")


def open_video(path: Path):
    """Open a media file that has a video stream (the container must be closed: use it in a `with`).

    Raises:
        MediaError: missing, a folder, empty, not media or unreadable, or without a video stream.
    """
    if path.is_dir():
        raise MediaError(path, "is a folder, not a media file")
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot be opened as media, not a media file or truncated ({describe(error)})") \
            from error
    if not container.streams.video:
        container.close()
        raise MediaError(path, "no video stream")
    return container


def describe(error: av.FFmpegError) -> str:
    """One line for an FFmpeg error, without the file path (the caller's message names it)."""
    return f"{type(error).__name__}: {error.strerror or error}"  # strerror: FFmpeg's text without the path


def presentation_span(path: Path, stream, packets: list, unknown_frame_s: float) -> tuple[int, float]:
    """(presentation time stamp of the first presented frame, first frame to the end of the last one in seconds).

    From the presentation times of the packets not marked discard, never from header frame counts. The last frame
    lasts its packet's duration, else the median frame interval, else one frame of the stream's average rate, else
    `unknown_frame_s` (a single frame of unknown length).

    Raises:
        MediaError: no presented packet has a timestamp.
    """
    timed = [p for p in packets if p.pts is not None and not p.is_discard]
    if not timed:
        raise MediaError(path, "video stream has no packets with timestamps (other than discarded ones)")
    pts = np.array(sorted(p.pts for p in timed), dtype=np.int64)
    time_base: Fraction = stream.time_base  # exact, as the frames' own times
    last = max(timed, key=lambda p: p.pts)
    if last.duration and last.duration > 0:
        last_s = float(last.duration * time_base)
    elif pts.size > 1 and np.median(np.diff(pts)) > 0:
        last_s = float(np.median(np.diff(pts)) * float(time_base))
    elif stream.average_rate:
        last_s = 1.0 / float(stream.average_rate)
    else:
        last_s = unknown_frame_s
    return int(pts[0]), float(int(pts[-1] - pts[0]) * time_base) + last_s


def shown_pts(packets: list, targets_s: np.ndarray, first_pts: int, time_base: Fraction) -> set[int]:
    """Presentation time stamps of the packets whose frames `targets_s` show (the module's rule, computed as
    `frames_shown_at` computes it), so that a decoder may skip the other frames when nothing references them."""
    pts = np.array(sorted(p.pts for p in packets if p.pts is not None and not p.is_discard), dtype=np.int64)
    if not pts.size:
        return set()
    shown = np.searchsorted((pts - first_pts) * float(time_base), np.asarray(targets_s) + TIME_TOLERANCE_S,
                            side="right") - 1
    return set(pts[shown.clip(0)].tolist())


def frames_shown_at(path: Path, frames: Iterable, targets_s: np.ndarray, first_pts: int, time_base: Fraction
                    ) -> Iterator[tuple[int, object, float]]:
    """For each target time, the decoded frame shown then (the module's rule), in target order.

    Frames are consumed in presentation order, as a decoder yields them; decoding stops once every target has
    its frame. Consecutive targets that show the same frame yield the same frame object.

    Args:
        path: the file (for error messages).
        frames: decoded frames with `pts`, in presentation order.
        targets_s: increasing target times, seconds from the first frame.
        first_pts: presentation time stamp of the first presented frame (`presentation_span`).
        time_base: the stream's time base.

    Yields:
        (target index, frame, the frame's time in seconds from the first frame).

    Raises:
        MediaError: a frame without a timestamp, or no frame at all.
    """
    time_base_s = float(time_base)
    previous = previous_s = None
    j = 0
    for frame in frames:
        if frame.pts is None:
            raise MediaError(path, "decoded a video frame without a timestamp")
        frame_s = (frame.pts - first_pts) * time_base_s
        if previous is None:  # times before the first frame show the first frame
            previous, previous_s = frame, frame_s
        while j < len(targets_s) and frame_s > targets_s[j] + TIME_TOLERANCE_S:  # earlier targets show `previous`
            yield j, previous, previous_s
            j += 1
        if j == len(targets_s):
            return
        previous, previous_s = frame, frame_s
    if previous is None:
        raise MediaError(path, "video stream has no decodable frame")
    for k in range(j, len(targets_s)):  # targets after the last frame show it
        yield k, previous, previous_s


def display_orientation(rgb: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Apply a stream's display rotation (counter-clockwise degrees), as players and ffmpeg do.

    Shapes:
        rgb (H, W, 3) -> (H, W, 3), or (W, H, 3) for a quarter turn.
    """
    turns = round(rotation_deg / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb
