"""Test media whose frames carry their own number, so a test can tell which frame a decoder returned."""

import numpy as np


def numbered_frames(count: int, height: int, width: int, bits: int) -> np.ndarray:
    """Frames whose lower half shows the frame number in binary (`bits` stripes, white = 1) over mid grey.

    Shapes: (count, height, width, 3) uint8.
    """
    frames = np.full((count, height, width, 3), 128, dtype=np.uint8)
    stripe = width // bits
    for i in range(count):
        for bit in range(bits):
            frames[i, height // 2:, bit * stripe:(bit + 1) * stripe] = 255 if (i >> bit) & 1 else 0
    return frames


def frame_number(rgb: np.ndarray, bits: int, margin_px: int = 1) -> int:
    """Inverse of `numbered_frames` on a decoded (possibly resized) frame; `margin_px` skips stripe edges."""
    height, width = rgb.shape[:2]
    stripe = width / bits
    lower = rgb[height // 2 + 2:, :, 0].astype(np.float64)
    return sum(1 << bit for bit in range(bits)
               if lower[:, round(bit * stripe) + margin_px:round((bit + 1) * stripe) - margin_px].mean() > 128)


def shown_frame_index(frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The test oracle of `common.media`'s rule: for each time (any order), the index of the last frame whose
    time is <= it (within 1e-6 s), else frame 0."""
    index = np.searchsorted(np.asarray(frame_times, dtype=np.float64), np.asarray(times) + 1e-6, side="right") - 1
    return np.maximum(index, 0)


def truncated_playable(source, target, keep_fraction: float):
    """`source` (an mp4) with its index moved to the front (`movflags=+faststart`, by remuxing with PyAV), then
    cut to `keep_fraction` of its bytes: a truncated download that players still play up to the cut."""
    import av

    whole = target.with_name(f"{target.stem}.whole.mp4")
    with av.open(str(source)) as reader, av.open(str(whole), "w", format="mp4",
                                                 options={"movflags": "+faststart"}) as writer:
        streams = {s.index: writer.add_stream_from_template(s) for s in reader.streams}
        for packet in reader.demux():
            if packet.dts is not None:  # the demuxer's final flush packets carry no data
                packet.stream = streams[packet.stream.index]
                writer.mux(packet)
    data = whole.read_bytes()
    whole.unlink()
    target.write_bytes(data[: int(len(data) * keep_fraction)])
    return target


def stream_copy_trim(source, target, start_s: float):
    """`source` (an mp4) cut at `start_s` as `ffmpeg -ss START -i SOURCE -c copy TARGET` cuts it: every packet from
    the video key frame at or before `start_s` on, copied (not re-encoded), timestamps shifted by -`start_s`. The
    packets before the cut get negative times, for which the mp4 muxer writes an edit list; reading it back,
    FFmpeg's demuxer marks them `is_discard` and the decoder drops their frames.

    Returns:
        (target, how many video packets were copied from before the cut).
    """
    import av

    with av.open(str(source)) as reader:
        video = reader.streams.video[0]
        packets = [p for p in reader.demux() if p.dts is not None]  # the demuxer's final flush packets: no data
        keys = [p.pts * video.time_base for p in packets
                if p.stream is video and p.is_keyframe and p.pts * video.time_base <= start_s]
        first_s = max(keys)
        with av.open(str(target), "w", format="mp4") as writer:
            streams = {s.index: writer.add_stream_from_template(s) for s in reader.streams}
            before = 0
            for packet in packets:
                if packet.pts * packet.time_base < first_s:
                    continue
                shift = round(start_s / packet.time_base)
                before += packet.stream is video and packet.pts < shift
                packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                packet.stream = streams[packet.stream.index]
                writer.mux(packet)
    return target, before
