"""Filmstrips for annotators: a video's frames at 1 fps in pages of 10 x 10 cells, as many pages as the video needs.

The paper's curation protocol (section 3): annotators judge each candidate video from a grid of frames sampled once
per second; here the frame time is printed in each cell, the header names the clip, its class and the page, and the
cells after the end of the video stay blank. The whole video is covered: a video longer than `max_pages` pages at
1 fps is sampled at a wider stride (a whole multiple of `seconds_per_frame`, stated in the header and the index).

Decoding (PyAV) reads only what the grid needs:

- the video stream is demuxed (packets stay compressed) only until the decode time passes the last cell's time:
  every frame shown before then has an earlier decode time, so a long video is never read to its end;
- only the groups of pictures (keyframe to keyframe) that hold a cell's frame are decoded, plus the group before
  each one that has leading frames (shown before its keyframe, they reference the group before: open GOPs); with
  keyframes less than a second apart (intra-only codecs, short-GOP camera files) most groups are skipped;
- a frame that no cell shows and that no other frame references is skipped inside the decoder (FFmpeg's
  `skip_frame`, set per packet from the packets' presentation times, known before decoding; only for the codecs
  of `common.media.SKIPS_ONLY_UNREFERENCED`, as the views' decoder);
- only the frame shown at each cell's time is converted to RGB, at the cell's size in the same swscale call.

The frame shown at time t is `common.media`'s rule, the one the backbones' views use (`extract.decode`); that
module's clip decoder does not fit this sampling: it samples the views, converts at full size, decodes the audio,
and imports torch (about 1 s in every worker process), where this module needs only PyAV, numpy and Pillow.
Text is drawn with Pillow's built-in default font, so the images do not depend on the fonts a system has.

`render_filmstrip` makes one image; `render_job` is the process-pool entry of `curate.render.make_filmstrips`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from common.media import (
    SKIPS_ONLY_UNREFERENCED,
    TIME_TOLERANCE_S,
    MediaError,
    Segment,
    describe,
    display_orientation,
    frames_shown_at,
    open_video,
    presentation_span,
    shown_pts,
)
from curate.config import FilmstripLayout

__all__ = [
    "FilmstripJob",
    "FilmstripResult",
    "SampledVideo",
    "cell_times",
    "page_paths",
    "render_filmstrip",
    "render_job",
    "sample_frames",
    "sample_segment",
]

logger = logging.getLogger(__name__)

_BACKGROUND = (40, 40, 40)  # the grid and blank cells; frames are letterboxed on black
_LETTERBOX = (0, 0, 0)
_GUTTER_PX = 2
_HEADER_PX = 18


@dataclass
class SampledVideo:
    """The frames shown at the cells' times and what the container says about the video.

    Attributes:
        frames: per cell time, the RGB frame fitted into the cell (uint8, display orientation), None after the end.
        duration_s: first frame to the end of the last one when the video was read to its end (shorter than the
            grid); otherwise the container's duration, None when it has none.
        width_px, height_px: display size of the first frame (sample aspect ratio and rotation applied).
        fps: the stream's average frame rate, 0 when unknown.
        has_audio: the container has an audio stream (not decoded).
        sample_rate_hz, audio_channels: of the first audio stream, 0 without one.
        frames_decoded: video frames the decoder produced (for the benchmark).

    Shapes:
        frames: cells x (h, w, 3), with h <= cell_height_px and w <= cell_width_px.
    """

    frames: list[np.ndarray | None]
    duration_s: float | None
    width_px: int
    height_px: int
    fps: float
    has_audio: bool
    sample_rate_hz: int
    audio_channels: int
    frames_decoded: int


@dataclass(frozen=True)
class FilmstripJob:
    """One video for the process pool."""

    clip_id: str
    video: Path
    out_path: Path  # the image of the first page (`page_paths` names the others)
    layout: FilmstripLayout
    segment: Segment | None = None  # the part of the video that is the clip (None: all of it)
    class_name: str = ""  # shown in every page's header


@dataclass(frozen=True)
class FilmstripResult:
    """What happened to one video: the image written, or why there is none (`reason` non-empty)."""

    clip_id: str
    video: Path
    out_path: Path | None  # the first page
    reason: str = ""
    pages: int = 0  # images written: out_path, then `page_paths`
    seconds_per_frame: float = 0.0  # the stride the cells were sampled at (wider than the layout's for long videos)
    covered_s: float | None = None  # where the last page ends when the video's end is unknown (it may go on)
    duration_s: float | None = None
    frames: int = 0  # cells that show a frame
    width_px: int = 0
    height_px: int = 0
    fps: float = 0.0
    has_audio: bool = False
    sample_rate_hz: int = 0
    audio_channels: int = 0
    frames_decoded: int = 0
    seconds: float = 0.0  # wall time of decoding and drawing

    @property
    def ok(self) -> bool:
        return not self.reason


# --- decoding ------------------------------------------------------------------------------------------------


def sample_frames(path: str | Path, times_s: np.ndarray, cell_px: tuple[int, int]) -> SampledVideo:
    """Decode the frames shown at `times_s` (seconds from the first frame), each fitted into a (width, height) box.

    Args:
        path: any container and codec that FFmpeg (in PyAV's wheel) reads.
        times_s: increasing sample times, seconds from the first frame.
        cell_px: (width, height) the frames are scaled to fit, keeping their display aspect ratio.

    Returns:
        The frames (None for times at or after the end of the video) and the container's facts.

    Raises:
        MediaError: missing, empty, not media, no video stream, no decodable frame, corrupt or truncated.

    Shapes:
        times_s: (N,) -> frames: N x (h, w, 3) or None.
    """
    path = Path(path)
    times_s = np.asarray(times_s, dtype=np.float64)
    if times_s.ndim != 1 or times_s.size == 0 or np.any(np.diff(times_s) <= 0) or times_s[0] < 0:
        raise ValueError(f"times_s must be a non-empty increasing sequence of times >= 0, got {times_s}")
    with open_video(path) as container:
        stream = container.streams.video[0]
        if stream.codec_context is None:  # PyAV leaves it unset when FFmpeg has no decoder for the codec
            raise MediaError(path, "video stream in a codec this FFmpeg build cannot decode")
        stream.codec_context.thread_count = 1  # parallelism comes from decoding several videos at once
        audio = container.streams.audio[0] if container.streams.audio else None
        packets, complete = _demux(path, container, stream, float(times_s[-1]))
        # A single frame of unknown length lasts 0 s: it fills the first cell only.
        first_pts, read_duration_s = presentation_span(path, stream, packets, 0.0)
        duration_s = read_duration_s if complete else _header_duration_s(stream, container)
        # Cells at or after the end stay blank; a video demuxed past the last cell shows something at every cell.
        valid = times_s if not complete else times_s[times_s < duration_s - TIME_TOLERANCE_S]
        valid = valid if valid.size else times_s[:1]  # a single frame of unknown length still fills the first cell
        rgb, frames_decoded, first_size = _decode(path, stream, packets, first_pts, valid, cell_px)
        width_px, height_px = first_size
        info = dict(
            fps=float(stream.average_rate) if stream.average_rate else 0.0,
            has_audio=audio is not None,
            sample_rate_hz=int(audio.sample_rate or 0) if audio is not None else 0,
            audio_channels=int(audio.channels or 0) if audio is not None else 0,
        )
    frames: list[np.ndarray | None] = list(rgb) + [None] * (times_s.size - len(rgb))
    logger.debug("%s: %d of %d cells, %d frames decoded of %d packets", path, len(rgb), times_s.size,
                 frames_decoded, len(packets))
    return SampledVideo(frames, duration_s, width_px, height_px, frames_decoded=frames_decoded, **info)


def _demux(path: Path, container, stream, last_time_s: float) -> tuple[list, bool]:
    """Video packets in decode order up to the last one whose decode time is <= the last cell's time.

    A frame shown at time t has a decode time <= t, and the frames it references decode before it, so these
    packets hold every frame up to the last cell. Returns (packets, whether the stream was read to its end).
    """
    packets: list = []
    time_base = float(stream.time_base)
    first_pts = None
    last = None
    try:
        for packet in container.demux(stream):
            if not packet.size:  # the demuxer's final empty packet is a flush marker
                continue
            last = packet
            if packet.pts is not None and not packet.is_discard:  # time 0: the first presented frame
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
            decode_ts = packet.dts if packet.dts is not None else packet.pts
            if first_pts is not None and decode_ts is not None and \
                    (decode_ts - first_pts) * time_base > last_time_s + TIME_TOLERANCE_S:
                return packets, False
            packets.append(packet)
    except av.FFmpegError as error:
        where = float(last.pts * last.time_base) if last is not None and last.pts is not None else 0.0
        raise MediaError(path, f"demuxing failed near {where:.2f} s, corrupt or truncated "
                                   f"({describe(error)})") from error
    return packets, True


def _header_duration_s(stream, container) -> float | None:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _groups(packets: list, first_pts: int, time_base: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of pictures: a new group at each keyframe packet (decode order).

    Returns:
        (group of each packet, each group's earliest frame time in seconds from the first frame, whether each group
        has leading frames: frames decoded after its keyframe but shown before it, which reference the group
        before, as in open GOPs and in MPEG-4 part 2 B-frames).
    """
    group = np.zeros(len(packets), dtype=np.int64)
    g = 0
    for i, packet in enumerate(packets):
        if packet.is_keyframe and i > 0:
            g += 1
        group[i] = g
    starts = np.full(g + 1, np.inf)
    key_pts: dict[int, int] = {}
    leading = np.zeros(g + 1, dtype=bool)
    for packet, k in zip(packets, group, strict=True):
        if packet.pts is None:
            continue
        starts[k] = min(starts[k], (packet.pts - first_pts) * time_base)
        key_pts.setdefault(k, packet.pts)
        leading[k] |= packet.pts < key_pts[k]
    # A group without timestamps (or starting later than the next) starts where the next one does.
    starts = np.minimum.accumulate(starts[::-1])[::-1]
    starts[0] = min(starts[0], 0.0)
    return group, starts, leading


def _fitted_size(width: int, height: int, sar: float, turns: int, cell_px: tuple[int, int]
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((width, height) to convert the coded frame to, display (width, height) of the full frame)."""
    display_w, display_h = width * sar, float(height)
    if turns % 2:
        display_w, display_h = display_h, display_w
    scale = min(cell_px[0] / display_w, cell_px[1] / display_h)
    out_w, out_h = max(1, round(display_w * scale)), max(1, round(display_h * scale))
    convert = (out_h, out_w) if turns % 2 else (out_w, out_h)  # rotated after the conversion
    return convert, (round(display_w), round(display_h))


def _decode(path: Path, stream, packets: list, first_pts: int, targets_s: np.ndarray, cell_px: tuple[int, int]
            ) -> tuple[list[np.ndarray], int, tuple[int, int]]:
    """The frames shown at `targets_s`, converted to RGB at the cell's size; (frames, frames decoded, display size)."""
    time_base = float(stream.time_base)
    group, starts, leading = _groups(packets, first_pts, time_base)
    needed = set((np.searchsorted(starts, targets_s + TIME_TOLERANCE_S, side="right") - 1).clip(0).tolist())
    decoded_groups = needed | {g - 1 for g in needed if g > 0 and leading[g]}
    wanted = shown_pts(packets, targets_s, first_pts, stream.time_base)  # the others may be skipped, if unreferenced
    codec = stream.codec_context
    skips = codec.name in SKIPS_ONLY_UNREFERENCED
    sar = float(codec.sample_aspect_ratio) if codec.sample_aspect_ratio else 1.0  # anamorphic video: non-square
    reformatter = VideoReformatter()
    kept: list[np.ndarray] = []
    convert_size: tuple[int, int] | None = None
    display_size = (0, 0)
    decoded = 0

    def frames():
        nonlocal convert_size, display_size, decoded
        for packet, g in zip(packets, group, strict=True):
            if g in decoded_groups:
                codec.skip_frame = "NONREF" if skips and packet.pts not in wanted else "DEFAULT"
                for frame in stream.decode(packet):
                    decoded += 1
                    if convert_size is None:
                        convert_size, display_size = _fitted_size(frame.width, frame.height, sar,
                                                                  round(frame.rotation / 90) % 4, cell_px)
                    yield frame
        codec.skip_frame = "DEFAULT"
        for frame in stream.decode(None):  # the decoder's delayed frames
            decoded += 1
            yield frame

    last_frame = None
    try:
        for _, frame, _ in frames_shown_at(path, frames(), targets_s, first_pts, stream.time_base):
            if frame is not last_frame:
                rgb = reformatter.reformat(frame, width=convert_size[0], height=convert_size[1], format="rgb24",
                                           interpolation="AREA", threads=1).to_ndarray()  # (h, w, 3)
                last = display_orientation(rgb, frame.rotation)
                last_frame = frame
            kept.append(last)
    except av.FFmpegError as error:
        raise MediaError(path, f"video decoding failed after {decoded} frames, corrupt or truncated "
                               f"({describe(error)})") from error
    return kept, decoded, display_size


# --- drawing ---------------------------------------------------------------------------------------------------


def _time_label(seconds: float, whole: bool) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:02.0f}" if whole else f"{int(minutes)}:{rest:04.1f}"


def _font(size_px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's own default font (embedded in Pillow; a bitmap font when Pillow lacks FreeType): no system fonts.
    return ImageFont.load_default(size=size_px)


def _compose(frames: list[np.ndarray | None], layout: FilmstripLayout, title: str,
             times_s: np.ndarray | None = None) -> Image.Image:
    """Paste the frames into the grid (row by row), each centred in its cell with its time in the top-left corner.

    Shapes:
        frames, times_s: (rows * columns,) of one page; times_s defaults to the first page's (`layout.times_s`).
    """
    times_s = layout.times_s if times_s is None else times_s
    cell_w, cell_h = layout.cell_width_px, layout.cell_height_px
    width = layout.columns * cell_w + (layout.columns + 1) * _GUTTER_PX
    height = _HEADER_PX + layout.rows * cell_h + (layout.rows + 1) * _GUTTER_PX
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), title, fill=(230, 230, 230), font=_font(12))
    label_font = _font(max(9, min(16, cell_h // 8)))
    whole = bool(np.all(np.mod(times_s, 1.0) == 0.0))
    for k, (frame, t) in enumerate(zip(frames, times_s, strict=True)):
        if frame is None:
            continue  # after the end of the video: blank
        row, column = divmod(k, layout.columns)
        left = _GUTTER_PX + column * (cell_w + _GUTTER_PX)
        top = _HEADER_PX + _GUTTER_PX + row * (cell_h + _GUTTER_PX)
        draw.rectangle((left, top, left + cell_w - 1, top + cell_h - 1), fill=_LETTERBOX)
        h, w = frame.shape[:2]
        image.paste(Image.fromarray(frame), (left + (cell_w - w) // 2, top + (cell_h - h) // 2))
        label = _time_label(float(t), whole)
        box = draw.textbbox((left + 2, top + 1), label, font=label_font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((left + 2, top + 1), label, fill=(255, 255, 0), font=label_font)
    return image


# --- pages ------------------------------------------------------------------------------------------------------


def cell_times(length_s: float | None, layout: FilmstripLayout) -> tuple[float, np.ndarray]:
    """(stride, cell times) covering `length_s` seconds in at most `layout.max_pages` pages.

    The stride is the layout's `seconds_per_frame` when that many pages suffice, else the smallest whole multiple
    of it that fits. A video of unknown length gets every page at the layout's stride (cells after its end stay
    blank; a longer one is covered up to the last page only, and `render_job` says so).

    Shapes:
        -> times: (cells,), cells <= rows * columns * max_pages.
    """
    per_video = layout.rows * layout.columns * layout.max_pages
    stride = layout.seconds_per_frame
    if length_s is None:
        return stride, np.arange(per_video) * stride
    cells = max(1, math.ceil((length_s - TIME_TOLERANCE_S) / stride))
    if cells > per_video:
        stride *= math.ceil(cells / per_video)
        cells = max(1, math.ceil((length_s - TIME_TOLERANCE_S) / stride))
    return stride, np.arange(cells) * stride


def page_paths(first: Path, pages: int) -> list[Path]:
    """The images of a filmstrip's pages: `first` (clip.jpg), then clip~page2.jpg, clip~page3.jpg, ..."""
    first = Path(first)
    return [first] + [first.with_name(f"{first.stem}~page{k}{first.suffix}") for k in range(2, pages + 1)]


def _header_length_s(video: str | Path, segment: Segment | None) -> float | None:
    """The clip's length as the container states it (before decoding): what the cells must cover."""
    with open_video(Path(video)) as container:
        stream = container.streams.video[0] if container.streams.video else None
        whole = None if stream is None else _header_duration_s(stream, container)
    if segment is None:
        return whole
    length = segment.end_s - segment.start_s
    return length if whole is None else max(min(length, whole - segment.start_s), TIME_TOLERANCE_S)


def sample_segment(video: str | Path, times_s: np.ndarray, cell_px: tuple[int, int], segment: Segment
                   ) -> SampledVideo:
    """The cells of a segment: times from its start, cells at or after its end blank, the segment's duration.

    Raises:
        MediaError: the video cannot be decoded, or the segment starts after its end.

    Shapes:
        times_s: (N,) seconds from the segment's start -> frames: N x (h, w, 3) or None.
    """
    length_s = segment.end_s - segment.start_s
    inside = times_s[times_s < length_s - TIME_TOLERANCE_S]
    sampled = sample_frames(video, segment.start_s + inside, cell_px)
    if sampled.duration_s is not None and segment.start_s >= sampled.duration_s - TIME_TOLERANCE_S:
        raise MediaError(video, f"segment {segment.start_s:g}-{segment.end_s:g} s starts after the end of the "
                                f"video ({sampled.duration_s:.2f} s)")
    duration_s = None if sampled.duration_s is None else min(length_s, sampled.duration_s - segment.start_s)
    return replace(sampled, frames=sampled.frames + [None] * (times_s.size - inside.size), duration_s=duration_s)


def render_filmstrip(video: str | Path, out_path: str | Path, layout: FilmstripLayout, title: str = "",
                     segment: Segment | None = None, class_name: str = ""
                     ) -> tuple[list[Path], SampledVideo, float]:
    """Decode `video` at cells covering all of it (`cell_times`) and write one image per page of the layout.

    Args:
        video: the video file.
        out_path: the first page's image (its parent is created); the others are `page_paths(out_path, n)`. Each is
            written to a temporary name first, then renamed.
        layout: grid, timing, page limit and image format.
        title: the clip (e.g. its id), first in every page's header; then `class_name`, the page and the times it
            shows, the video's (or segment's) duration and the stride.
        segment: the part of the video that is the clip; cells count from its start (None: the whole video).
        class_name: the class the video is a candidate of.

    Returns:
        (the page images, the sampled video, the stride in seconds).

    Raises:
        MediaError: the video cannot be decoded (see `sample_frames`).
    """
    out_path = Path(out_path)
    stride, times = cell_times(_header_length_s(video, segment), layout)
    cell_px = (layout.cell_width_px, layout.cell_height_px)
    sampled = sample_frames(video, times, cell_px) if segment is None else sample_segment(video, times, cell_px,
                                                                                            segment)
    per_page = layout.rows * layout.columns
    shown = max((k + 1 for k, frame in enumerate(sampled.frames) if frame is not None), default=1)
    pages = math.ceil(shown / per_page)  # pages after the last frame (a header that overstates) are not written
    duration = "duration unknown" if sampled.duration_s is None else f"{sampled.duration_s:.1f} s"
    if segment is not None:
        duration = f"segment {segment.start_s:g}-{segment.end_s:g} s of the file, {duration}"
    wider = f" (widened from {layout.seconds_per_frame:g} s: at most {layout.max_pages} pages)" if (
        stride > layout.seconds_per_frame) else ""
    paths = page_paths(out_path, pages)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for page, path in enumerate(paths):
        cells = slice(page * per_page, (page + 1) * per_page)
        page_times = (page * per_page + np.arange(per_page)) * stride  # (rows * columns,)
        frames = sampled.frames[cells] + [None] * (per_page - len(sampled.frames[cells]))
        whole = float(stride).is_integer()
        span = f"{_time_label(page_times[0], whole)}-{_time_label(min(page_times[-1], times[-1]), whole)}"
        header = "  |  ".join(part for part in (title, class_name, f"page {page + 1}/{pages} ({span})", duration,
                                                 f"1 frame every {stride:g} s{wider}") if part)
        image = _compose(frames, layout, header, page_times)
        partial = path.with_name(f".{path.name}.partial")
        if layout.image_format == "jpg":
            image.save(partial, format="JPEG", quality=layout.jpeg_quality)
        else:
            image.save(partial, format="PNG", compress_level=3)  # level 3: about as small as 6, twice as fast
        os.replace(partial, path)
    return paths, sampled, stride


def render_job(job: FilmstripJob) -> FilmstripResult:
    """Render one video of the pool; a video that cannot be decoded gives a result with its reason, not an error."""
    start = time.perf_counter()
    try:
        paths, sampled, stride = render_filmstrip(job.video, job.out_path, job.layout, title=job.clip_id,
                                                  segment=job.segment, class_name=job.class_name)
    except MediaError as error:  # recorded and logged by the caller (worker processes have no log handlers)
        return FilmstripResult(job.clip_id, job.video, None, reason=error.reason,
                               seconds=time.perf_counter() - start)
    shown = sum(frame is not None for frame in sampled.frames)
    # Neither read to its end nor of known length: it may go on after the last page.
    covered_s = len(sampled.frames) * stride if sampled.duration_s is None else None
    return FilmstripResult(
        job.clip_id, job.video, paths[0], pages=len(paths), seconds_per_frame=stride, covered_s=covered_s,
        duration_s=sampled.duration_s, frames=shown, width_px=sampled.width_px,
        height_px=sampled.height_px, fps=sampled.fps, has_audio=sampled.has_audio,
        sample_rate_hz=sampled.sample_rate_hz, audio_channels=sampled.audio_channels,
        frames_decoded=sampled.frames_decoded, seconds=time.perf_counter() - start)
