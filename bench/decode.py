"""Single-core decode rate of the extraction path (extract.decode.decode_clip) against `ffmpeg -threads 1`.

Ours: demux, decode the video frames the views need (non-reference frames no view shows are skipped), convert
only the frames the 3 x 4 views show to RGB, decode the audio to mono 16 kHz and cut its fbank window (the paper
profile's decode), with the frames at full size (`frame_scaling` "reference"), resized by torch's uint8 kernel
after it ("worker", the paper profile's: what its decode worker does) and scaled in swscale ("decoder").
Baseline: `ffmpeg -threads 1 -i FILE -f null -` (decodes every video and audio frame,
converts nothing; Debian's ffmpeg, `apt-get install ffmpeg`, needed for this benchmark only). A plain PyAV loop
that decodes every frame of both streams and converts nothing shows what our additions cost. All run pinned to
one CPU core on the same file, interleaved, best of `--repeats` after a warm-up; ffmpeg is timed twice: wall clock
of the command (with process start-up) and its own `-benchmark` rtime (without).

    python bench/decode.py [--file CLIP] [--seconds 10] [--width 340] [--height 256] [--repeats 5] [--core 0]
    python bench/decode.py --720p [--quick]   # the 720p clip of decode_720p_vs_ffmpeg; --quick: best of 2

Without --file, the clip of the decode figures in BENCHMARKS.md is written: H.264 (x264 veryfast, crf 23) 340 x 256
at 30 fps with moving textured content, and AAC 44.1 kHz stereo. `--720p` writes a 1280 x 720 H.264 High-profile
clip with 3 B-frames (x264 veryfast, crf 23, no audio) of the same content, the clip `bench/pipeline_overhead.py`
measures through `decode_720p_vs_ffmpeg`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curate.encode import write_mp4  # noqa: E402
from extract import views  # noqa: E402
from extract.config import PROFILES  # noqa: E402
from extract.decode import decode_clip  # noqa: E402

__all__ = ["decode_720p_vs_ffmpeg", "write_720p_clip", "write_motion_clip"]


def _motion_frames(seconds: float, width: int, height: int, fps: int = 30) -> np.ndarray:
    """Moving coloured stripes and a bouncing square over noise: real motion for the encoder and decoder.

    Shapes: returns (round(seconds * fps), height, width, 3) uint8.
    """
    rng = np.random.default_rng(0)
    count = round(seconds * fps)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 40, size=(height, width, 1), dtype=np.uint8).astype(np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for t in range(count):
        phase = 0.15 * t
        rgb = np.stack([128 + 100 * np.sin(xs / 17 + phase), 128 + 100 * np.sin(ys / 11 - phase),
                        128 + 100 * np.sin((xs + ys) / 23 + 0.5 * phase)], axis=-1) + texture
        top, left = int(abs((7 * t) % (2 * (height - 40)) - (height - 40))), (5 * t) % (width - 40)
        rgb[top:top + 40, left:left + 40] = 255
        frames[t] = np.clip(rgb, 0, 255).astype(np.uint8)
    return frames


def write_motion_clip(path: Path, seconds: float, width: int, height: int) -> Path:
    """The decode benchmark's clip: `_motion_frames` in H.264 (`curate.encode.write_mp4`) with AAC stereo."""
    samples = np.arange(round(seconds * 44100)) / 44100
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * samples), 0.2 * np.sin(2 * np.pi * 660 * samples)])
    return write_mp4(path, _motion_frames(seconds, width, height), 30, audio.astype(np.float32), 44100)


def write_720p_clip(path: Path, seconds: float) -> Path:
    """`_motion_frames` at 1280 x 720, 30 fps, H.264 High profile with 3 B-frames (x264 veryfast, crf 23)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(30),
                                      options={"preset": "veryfast", "profile": "high", "crf": "23", "bf": "3"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for rgb in _motion_frames(seconds, 1280, 720):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:  # what was written, not what was asked for
        codec = container.streams.video[0].codec_context
        if codec.profile != "High" or not codec.has_b_frames:
            raise RuntimeError(f"{path}: x264 wrote profile {codec.profile!r}, B-frames {codec.has_b_frames}")
    return path


def _count_frames(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        return frames, float(container.duration / av.time_base)


def _plain_pyav(path: Path) -> None:
    with av.open(str(path)) as container:
        for stream in container.streams:
            stream.codec_context.thread_count = 1
        for _ in container.decode(*container.streams):
            pass


def _best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each run, the runs interleaved (so load from other processes hits both alike)."""
    for run in runs.values():
        run()  # warm-up: page cache, codec and swscale initialisation
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def _ffmpeg() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found: the decode benchmark compares against the ffmpeg command line tool "
                           "(apt-get install ffmpeg)")
    return ffmpeg


def _measure(path: Path, repeats: int, core: int, all_runs: bool = True) -> dict:
    """Best times (s) on one core of ours with decoder-scaled frames and ffmpeg; with `all_runs`, also ours with
    the reference's full-size frames and a plain PyAV decode, and the frames' sizes.

    The caller's CPU affinity is restored afterwards (the pipeline benchmark imports this).
    """
    ffmpeg = _ffmpeg()
    video, audio = PROFILES["paper"].video, PROFILES["paper"].audio
    command = [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "info", "-benchmark", "-nostdin", "-threads", "1",
               "-i", str(path), "-f", "null", "-"]
    reported = []  # ffmpeg's own `-benchmark` rtime: the decode without process start-up

    def run_ffmpeg() -> None:
        out = subprocess.run(command, check=True, capture_output=True, text=True).stderr  # "bench: ..." lines
        reported.append(float(re.search(r"rtime=([0-9.]+)s", out).group(1)))

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # this process and its children run on one core
    try:
        runs = {"ours_worker_scaled": lambda: _worker_scaled(path), "ffmpeg": run_ffmpeg,
                "ours_decoder_scaled": lambda: decode_clip(path, video, audio, scale_frames=True)}
        if all_runs:
            runs.update(ours_reference=lambda: decode_clip(path, video, audio), pyav=lambda: _plain_pyav(path))
        best = _best_times(runs, repeats)
    finally:
        os.sched_setaffinity(0, affinity)
    if not all_runs:
        return {**best, "ffmpeg_rtime": min(reported)}
    reference = decode_clip(path, video, audio)
    scaled = decode_clip(path, video, audio, scale_frames=True)
    return {**best, "ffmpeg_rtime": min(reported), "frames_converted": len(reference.frames),
            "frames_decoded": reference.frames_decoded, "frame_bytes_reference": reference.frames.nbytes,
            "frame_bytes_scaled": scaled.frames.nbytes}


def _worker_scaled(path: Path):
    """The paper profile's frame work in its decode worker (frame_scaling "worker"): decode, then resize the uint8
    frames (the fbank is not counted, as for the other runs)."""
    paper = PROFILES["paper"]
    return views.resize_frames(torch.from_numpy(decode_clip(path, paper.video, paper.audio).frames), paper.video)


def decode_720p_vs_ffmpeg(quick: bool) -> float:
    """Our decode rate over `ffmpeg -threads 1`'s on the 720p clip (`write_720p_clip`), one core, same run.

    Ours is the paper profile's decode worker without the fbank (`decode_clip`, then the uint8 frames resized to the
    views' short side, frame_scaling "worker"); ffmpeg's time is its own
    `-benchmark` rtime (no process start-up). A 10 s clip, best of 2 runs after a warm-up with `quick`, else of 5
    (about 20 s and 45 s on an idle core).

    Raises:
        RuntimeError: ffmpeg is not installed (apt-get install ffmpeg).
    """
    _ffmpeg()
    with tempfile.TemporaryDirectory() as folder:
        path = write_720p_clip(Path(folder) / "720p.mp4", 10.0)
        times = _measure(path, 2 if quick else 5, core=min(os.sched_getaffinity(0)), all_runs=False)
    return times["ffmpeg_rtime"] / times["ours_worker_scaled"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, help="clip to decode (default: write a synthetic one)")
    parser.add_argument("--720p", dest="hd", action="store_true", help="write and decode the 720p clip")
    parser.add_argument("--quick", action="store_true", help="best of 2")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--core", type=int, default=0, help="CPU core both decoders are pinned to")
    args = parser.parse_args()
    ffmpeg = _ffmpeg()
    seconds, repeats = args.seconds, 2 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as folder:
        if args.file:
            path = args.file
        elif args.hd:
            path = write_720p_clip(Path(folder) / "720p.mp4", seconds)
        else:
            path = write_motion_clip(Path(folder) / "clip.mp4", seconds, args.width, args.height)
        frames, duration_s = _count_frames(path)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            size, profile = (stream.codec_context.width, stream.codec_context.height), stream.codec_context.profile
        best = _measure(path, repeats, args.core)
        ffmpeg_version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]

    ours_s, ffmpeg_s, rtime_s = best["ours_worker_scaled"], best["ffmpeg"], best["ffmpeg_rtime"]
    print(json.dumps({
        "bench": "decode", "device": "cpu (1 core pinned)", "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "versions": {"av": av.__version__, "ffmpeg_in_pyav": av.library_versions["libavcodec"],
                     "ffmpeg_cli": ffmpeg_version, "numpy": np.__version__},
        "file": {"path": str(args.file) if args.file else ("synthetic 720p" if args.hd else "synthetic"),
                 "size": size, "profile": profile, "video_frames": frames, "duration_s": round(duration_s, 3)},
        "settings": {"profile": "paper", "rgb_frames_converted": best["frames_converted"],
                     "video_frames_decoded": best["frames_decoded"], "repeats": repeats},
        "results": {
            "ours_s_per_clip": round(ours_s, 4), "ours_frames_per_s": round(frames / ours_s, 1),
            "ours_reference_s_per_clip": round(best["ours_reference"], 4),
            "frame_mb_per_clip": round(best["frame_bytes_scaled"] / 1e6, 1),
            "frame_mb_per_clip_reference": round(best["frame_bytes_reference"] / 1e6, 1),
            "ffmpeg_threads1_s_per_clip": round(ffmpeg_s, 4), "ffmpeg_reported_rtime_s": round(rtime_s, 4),
            "plain_pyav_decode_s_per_clip": round(best["pyav"], 4),
            "ratio_ours_over_ffmpeg_rate": round(ffmpeg_s / ours_s, 3),
            "ratio_ours_over_ffmpeg_rtime_rate": round(rtime_s / ours_s, 3),
            "ratio_reference_over_ffmpeg_rtime_rate": round(rtime_s / best["ours_reference"], 3),
            "ratio_decoder_scaled_over_ffmpeg_rtime_rate": round(rtime_s / best["ours_decoder_scaled"], 3),
        },
    }))


if __name__ == "__main__":
    main()
