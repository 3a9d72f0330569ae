"""Decode one clip with PyAV: the frames its video views need (by presentation time) and its mono audio (16 kHz;
48 kHz for CLAP).

One demux pass reads every packet: audio is decoded on the way, video packets are kept compressed. The video
packets' presentation times give the clip's duration, hence the view sample times (extract.views); the video is
then decoded in order and only the frames shown at a sample time are converted to RGB, which is where most of
the decode time would otherwise go (BENCHMARKS.md, decode). Audio is resampled to `AudioConfig.sample_rate_hz` by
FFmpeg's swresample (as `ffmpeg -ar 16000` would), averaged over channels, and cut to the fbank (or CLAP) window
centred on the middle of the views' span.

A clip can be a segment of its file (`common.media.Segment`): the demuxer seeks to the key frame before the
segment and stops soon after its end, and views and audio are sampled inside the segment only, with times counted
from its start. A segment that starts at or after the end of the video is a MediaError.

Bad input raises `common.media.MediaError` (an InputError) naming the file and the reason; a clip without an audio
stream is not an error (`has_audio` False). A file whose video decoding breaks part-way (truncated, damaged) is
decoded again up to the packet before the break, and a file that holds fewer video frames than its index lists
(cut short) is decoded as far as it goes; both are `partial`: views and audio come from the decodable part (unless
`strict`, which fails them). A demuxing error stays a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from common import media
from common.media import MediaError, Segment
from extract import views
from extract.config import AudioConfig, VideoConfig

__all__ = ["DecodedClip", "decode_clip", "MIN_AUDIO_S", "MIN_VIDEO_FRAMES"]

logger = logging.getLogger(__name__)

MIN_AUDIO_S = 0.025  # one 25 ms fbank window; Kaldi's fbank asserts on less
# A clip is a video: a still image (a PNG or JPEG named .mp4, which FFmpeg opens as a one-frame video stream) or a
# one-frame file would give every view the same picture. Short videos are valid: views repeat their last frame.
MIN_VIDEO_FRAMES = 2
# Frames are scaled in the decoder only when this many times larger than the views' short side: below it the bytes
# saved are few, and the swscale filter's difference from the reference resize (docs/extract.md) grows.
_DECODER_SCALING_MIN_RATIO = 2.0
# A segment's demux goes this far past its end: packets arrive in decode order and interleaved by stream, so the
# last frames and samples of the segment can follow packets of a later time.
_SEGMENT_MARGIN_S = 2.0


@dataclass
class DecodedClip:
    """What the backbones need from one clip: frames at the source's size, or at the views' (`scale_frames`).

    Attributes:
        path: the clip's file.
        frames: the distinct RGB frames the views use (display orientation), uint8; full size, or scaled to the
            views' resize short side when `decode_clip` scaled them.
        frame_index: for every temporal view and frame position, the row of `frames` shown at that time.
        frame_times_s: presentation time of each row of `frames`, seconds from the first frame (from the segment's
            start for a segment; the frame shown at its start may begin before it).
        duration_s: first frame's time to the end of the last frame (the segment's length, cut at the file's end).
        audio: mono waveform at the config's rate in [-1, 1] (the audio window at most), float32; None without audio.
        audio_start_s: time of `audio[0]`, seconds from the first video frame (or the segment's start); None
            without audio.
        partial: the video broke part-way (a truncated or damaged file): the clip is the part before the break,
            `duration_s` long, and its audio is taken from that part.
        frames_decoded: video frames the decoder output (of the last pass); a non-reference frame that no view
            shows is skipped, not decoded.

    Shapes:
        frames: (N, H, W, 3). frame_index: (temporal_views, frames_per_view). frame_times_s: (N,). audio: (S,).
    """

    path: Path
    frames: np.ndarray
    frame_index: np.ndarray
    frame_times_s: np.ndarray
    duration_s: float
    audio: np.ndarray | None
    audio_start_s: float | None
    partial: bool = False
    frames_decoded: int = 0

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def decode_clip(path: str | Path, video: VideoConfig, audio: AudioConfig, codec_threads: int = 1,
                segment: Segment | None = None, strict: bool = False, scale_frames: bool = False) -> DecodedClip:
    """Decode the frames of `video`'s views and the audio window of `audio` from one media file.

    Args:
        path: any container and codecs FFmpeg (in PyAV's wheel) reads.
        video: view sampling settings.
        audio: audio settings (rate, fbank window length).
        codec_threads: decoder threads for this clip (1: parallelism comes from decoding several clips at once).
        segment: the part of the file that is the clip (None: the whole file).
        strict: fail a file whose video decoding breaks part-way, instead of keeping the part before the break.
        scale_frames: scale the frames in the RGB conversion (swscale) to the views' resize short side when the
            source's is at least `_DECODER_SCALING_MIN_RATIO` times larger (`ExtractConfig.frame_scaling`
            "decoder"); False: full-size frames, resized by `extract.views.make_views` (the reference).

    Returns:
        The decoded clip (`partial` when only the part before a break in the video could be decoded).

    Raises:
        MediaError: missing, empty, not media, truncated, no video stream, fewer than `MIN_VIDEO_FRAMES` video
            frames (a still image), no decodable video frame, an audio
            stream that cannot be decoded or gives less than 25 ms, a segment that starts after the video ends.
    """
    path = Path(path)
    with media.open_video(path) as container:
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        for stream in (video_stream, audio_stream):
            if stream is not None:
                _check_decodable(path, stream)
                stream.codec_context.thread_count = codec_threads
        stop_s = origin_s = None
        if segment is not None:
            origin_s = _seek(path, container, video_stream, segment)
            stop_s = origin_s + segment.end_s + _SEGMENT_MARGIN_S
        packets, mono_audio, truncation = _demux(path, container, video_stream, audio_stream,
                                                 audio.sample_rate_hz, stop_s)
        if len(packets) < MIN_VIDEO_FRAMES:  # an image under a video's name, or a one-frame file: no motion to see
            raise MediaError(path, f"{len(packets)} video frame(s), not a video (a still image?); a clip needs at "
                                   f"least {MIN_VIDEO_FRAMES}")
        if truncation is None and segment is None and video_stream.frames > len(packets):  # a download cut short
            truncation = f"truncated: the index lists {video_stream.frames} video frames, the file holds {len(packets)}"
        if truncation is not None and strict:
            raise MediaError(path, truncation)
        try:
            first_pts, duration_s, frames, frame_times, frame_index, decoded = _sample_video(
                path, video_stream, packets, video, segment, origin_s, scale_frames)
            partial = truncation is not None
        except _VideoCut as cut:  # a truncated or damaged file: keep the part before the damage, unless strict
            if strict or cut.packets_ok < MIN_VIDEO_FRAMES:
                raise
            logger.warning("%s: %s; using the %d packets before it", path, cut.reason, cut.packets_ok)
            video_stream.codec_context.flush_buffers()  # the failed pass left the decoder mid-stream
            first_pts, duration_s, frames, frame_times, frame_index, decoded = _sample_video(
                path, video_stream, packets[:cut.packets_ok], video, segment, origin_s, scale_frames)
            partial = True
        t0 = float(first_pts * video_stream.time_base)

    waveform = start_s = None
    if mono_audio is not None:
        waveform, start_s = _audio_window(path, mono_audio, audio, t0, _views_centre_s(duration_s, video),
                                          None if segment is None and not partial else duration_s)
    logger.debug("%s: %.2f s, %d packets, %d frames decoded, %d converted, audio %s", path, duration_s,
                 len(packets), decoded, len(frames),
                 "none" if waveform is None else f"{waveform.size} samples from {start_s:.2f} s")
    return DecodedClip(path, frames, frame_index, frame_times, duration_s, waveform, start_s, partial, decoded)


def _sample_video(path: Path, stream, packets: list, video: VideoConfig, segment: Segment | None,
                  origin_s: float | None, scaled: bool) -> tuple[int, float, np.ndarray, np.ndarray, np.ndarray, int]:
    """The clip's span from `packets`, its view times, and the frames shown at them (scaled: see `decode_clip`).

    Returns:
        (first pts, duration in seconds, frames (N, H, W, 3), their times (N,), for each view time the row of
        its frame (n_t, T), frames the decoder output).
    """
    if segment is None:
        first_pts, duration_s = media.presentation_span(path, stream, packets, 1.0 / video.sampling_fps)
    else:
        first_pts, duration_s = _segment_span(path, stream, packets, segment, origin_s, 1.0 / video.sampling_fps)
    times = views.view_times(duration_s, video)  # (n_t, T) seconds from the first frame
    targets, inverse = np.unique(times, return_inverse=True)
    frames, frame_times, slots, decoded = _decode_frames(path, stream, packets, first_pts, targets,
                                                         video.resize_short_side_px if scaled else None)
    return first_pts, duration_s, frames, frame_times, slots[inverse.reshape(times.shape)], decoded


# --- demux and video ------------------------------------------------------------------------------------


def _check_decodable(path: Path, stream) -> None:
    if stream.codec_context is None:  # PyAV leaves it unset when FFmpeg has no decoder for the codec
        raise MediaError(path, f"{stream.type} stream in a codec this FFmpeg build cannot decode")


def _seek(path: Path, container, stream, segment: Segment) -> float:
    """Seek to the key frame at or before the segment's start; returns the time of the stream's start (s)."""
    origin_s = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    try:
        container.seek(int((origin_s + segment.start_s) / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot seek to the segment at {segment.start_s:g} s ({media.describe(error)})"
                         ) from error
    return origin_s


def _segment_span(path: Path, stream, packets: list, segment: Segment, origin_s: float, unknown_frame_s: float
                  ) -> tuple[int, float]:
    """(presentation time stamp of the segment's start, its length cut at the video's end) in the stream."""
    where = f"segment {segment.start_s:g}-{segment.end_s:g} s"
    if not any(p.pts is not None for p in packets):
        raise MediaError(path, f"{where} starts after the end of the video (no frame from there on)")
    first_pts, span_s = media.presentation_span(path, stream, packets, unknown_frame_s)
    video_end_s = float(first_pts * stream.time_base) + span_s
    start_s = origin_s + segment.start_s
    if start_s >= video_end_s - media.TIME_TOLERANCE_S:
        raise MediaError(path, f"{where} starts after the end of the video ({video_end_s - origin_s:.2f} s)")
    return round(start_s / stream.time_base), min(origin_s + segment.end_s, video_end_s) - start_s


def _demux(path: Path, container, video_stream, audio_stream, sample_rate_hz: int, stop_s: float | None = None
           ) -> tuple[list, _MonoAudio | None, str | None]:
    """Read the packets (every one, or up to a packet past `stop_s` seconds): keep the video packets, decode the
    audio to mono `sample_rate_hz` on the way.

    Returns:
        (video packets, audio, None), or with the reason as third item when the file ends inside a packet that
        fails (a truncated file: what came before it is kept).
    """
    packets = []
    audio = _MonoAudio(audio_stream, sample_rate_hz) if audio_stream is not None else None
    streams = [s for s in (video_stream, audio_stream) if s is not None]
    last = None  # the last packet read, to say where a failure happened
    try:
        for packet in container.demux(streams):
            last = packet
            if stop_s is not None and packet.pts is not None and packet.pts * packet.time_base > stop_s:
                break
            if packet.stream is video_stream:
                if packet.size:  # the demuxer's final empty packet is a flush marker, added later
                    packets.append(packet)
            else:
                for frame in packet.decode():
                    audio.push(frame)
        if audio is not None:
            audio.flush()
    except av.FFmpegError as error:
        where = float(last.pts * last.time_base) if last is not None and last.pts is not None else 0.0
        if packets and last is not None and last.pos is not None and last.pos + last.size >= path.stat().st_size:
            if audio is not None:
                audio.flush()
            return packets, audio, f"truncated: the file ends inside a packet near {where:.2f} s"
        raise MediaError(path, f"demuxing or audio decoding failed near {where:.2f} s, corrupt or truncated "
                               f"({media.describe(error)})") from error
    return packets, audio, None


class _VideoCut(MediaError):
    """Video decoding failed part-way; `packets_ok` packets (in decode order) came before the failing one."""

    def __init__(self, path: Path, reason: str, packets_ok: int) -> None:
        super().__init__(path, reason)
        self.packets_ok = packets_ok

    def __reduce__(self):
        return MediaError, (self.path, self.reason)  # leaves this module as the plain error it is


def _decode_frames(path: Path, stream, packets: list, first_pts: int, targets: np.ndarray,
                   short_side_px: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Decode in order; convert to RGB only the frames shown at a target time (`common.media`'s rule).

    A packet whose frame no target shows is decoded with `skip_frame` "NONREF" by the decoders of
    `common.media.SKIPS_ONLY_UNREFERENCED`: the decoder skips the frame when no other frame references it
    (B-frames, mostly), which changes no other frame.

    Args:
        short_side_px: scale the frames in the RGB conversion (swscale) so that their short side is this, when
            it is at least `_DECODER_SCALING_MIN_RATIO` times smaller than the source's; None: full size.

    Returns:
        (frames (N, H, W, 3) uint8, their times (N,), for each target the row of its frame, frames decoded).
    """
    kept, kept_times = [], []
    slots = np.empty(len(targets), dtype=np.int64)
    size: tuple[int, int] | None = None  # (width, height) every frame is converted to, from the first frame
    reformatter = VideoReformatter()  # one per clip: reuses its swscale context (3x faster than to_ndarray)
    codec = stream.codec_context
    shown = media.shown_pts(packets, targets, first_pts, stream.time_base)
    skips = codec.name in media.SKIPS_ONLY_UNREFERENCED
    decoded = fed = 0
    last_kept = None

    def counted_frames() -> Iterator:
        nonlocal decoded, fed, size
        for packet in [*packets, None]:  # None: flush the decoder's delayed frames
            fed += packet is not None
            codec.skip_frame = "NONREF" if skips and packet is not None and packet.pts not in shown else "DEFAULT"
            for frame in stream.decode(packet):
                decoded += 1
                size = size or _conversion_size(frame, short_side_px)
                yield frame

    try:
        for target, frame, frame_s in media.frames_shown_at(path, counted_frames(), targets, first_pts,
                                                            stream.time_base):
            if frame is not last_kept:
                # swscale's default bilinear filter: when scaling down, as wide as the scale (antialiased)
                rgb = reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                           threads=1).to_ndarray()
                kept.append(media.display_orientation(rgb, frame.rotation))  # (H, W, 3)
                kept_times.append(frame_s)
                last_kept = frame
            slots[target] = len(kept) - 1
    except av.FFmpegError as error:
        raise _VideoCut(path, f"video decoding failed after {decoded} frames, corrupt or truncated "
                              f"({media.describe(error)})", packets_ok=fed - 1 if decoded else 0) from error
    return np.stack(kept), np.asarray(kept_times, dtype=np.float64), slots, decoded


def _conversion_size(frame, short_side_px: int | None) -> tuple[int, int]:
    """(width, height) of the RGB conversion: the coded size, or scaled so that the short side is `short_side_px`
    (the long side as `extract.views.resized_size` gives it; a display rotation after it swaps both alike) when
    the source is large enough."""
    if short_side_px is None or min(frame.width, frame.height) < _DECODER_SCALING_MIN_RATIO * short_side_px:
        return frame.width, frame.height
    height, width = views.resized_size(frame.height, frame.width, short_side_px)
    return width, height


def _views_centre_s(duration_s: float, video: VideoConfig) -> float:
    """Middle of the span from the first view's start to the last view's end, seconds from the first frame."""
    grid = views.view_grid_indices(max(1, round(duration_s * video.sampling_fps)), video)  # (n_t, T)
    clip_size = video.frames_per_view * video.frame_stride
    return (int(grid[0, 0]) + int(grid[-1, 0]) + clip_size) / 2 / video.sampling_fps


# --- audio ----------------------------------------------------------------------------------------------


class _MonoAudio:
    """Decoded audio frames -> one mono float32 waveform at the target rate.

    FFmpeg's swresample changes only the sample format (to planar float) and the rate; the channels are then
    averaged here, because swresample's downmix matrix is not a plain mean (AST takes the mean). A new
    resampler starts, after flushing the old one, whenever the format, layout or rate changes mid-stream
    (PyAV's resampler raises on such a change).
    """

    def __init__(self, stream, sample_rate_hz: int) -> None:
        self.stream = stream
        self.rate = sample_rate_hz
        self.start_s: float | None = None  # presentation time of the first decoded sample
        self._resampler = None
        self._key = None
        self._chunks: list[np.ndarray] = []

    def push(self, frame) -> None:
        if self.start_s is None and frame.pts is not None:
            self.start_s = float(frame.pts * self.stream.time_base)
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key != self._key:
            self.flush()
            self._resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=self.rate)
            self._key = key
        self._collect(self._resampler.resample(frame))

    def flush(self) -> None:
        if self._resampler is not None:
            self._collect(self._resampler.resample(None))  # the resampler's buffered tail
            self._resampler = self._key = None

    def waveform(self) -> np.ndarray:
        """Shapes: returns (S,)."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)

    def _collect(self, frames) -> None:
        for frame in frames:
            self._chunks.append(frame.to_ndarray().mean(axis=0, dtype=np.float32))  # (C, S) planar -> (S,)


def _audio_window(path: Path, audio: _MonoAudio, config: AudioConfig, video_t0: float, centre_s: float,
                  span_s: float | None = None) -> tuple[np.ndarray, float]:
    """The fbank window of the mono waveform centred on `centre_s` (the whole waveform when shorter).

    With `span_s` (a segment), only the samples from `video_t0` to `video_t0 + span_s` are used.

    Returns:
        (waveform (S,) float32, its start in seconds from the first video frame).
    """
    waveform, rate = audio.waveform(), config.sample_rate_hz
    audio_t0 = video_t0 if audio.start_s is None else audio.start_s
    if span_s is not None:
        first = max(0, round((video_t0 - audio_t0) * rate))
        waveform = waveform[first:max(first, round((video_t0 + span_s - audio_t0) * rate))]
        audio_t0 += first / rate
    if waveform.size < round(MIN_AUDIO_S * rate):
        raise MediaError(path, f"audio track shorter than 25 ms ({waveform.size / rate * 1000:.1f} ms at "
                               f"{rate} Hz); remove the track or the clip")
    start = 0
    if waveform.size > config.window_samples:
        centre = round((video_t0 + centre_s - audio_t0) * rate)
        start = min(max(centre - config.window_samples // 2, 0), waveform.size - config.window_samples)
        waveform = waveform[start:start + config.window_samples]
    return np.ascontiguousarray(waveform), audio_t0 - video_t0 + start / rate
