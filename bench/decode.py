"""Single-core decode rate of the extraction path (extract.decode.decode_clip) against `ffmpeg -threads 1`.

Ours: demux, decode every video frame, convert only the frames the 3 x 4 views show to RGB, decode the audio to
mono 16 kHz and cut its fbank window (the paper profile's decode). Baseline: `ffmpeg -threads 1 -i FILE -f null -`
(decodes every video and audio frame, converts nothing; Debian's ffmpeg, `apt-get install ffmpeg`, needed for this
benchmark only). A plain PyAV loop that decodes every frame of both streams and converts nothing shows what
our additions cost. All run pinned to one CPU core on the same file, interleaved, best of `--repeats` after a
warm-up; ffmpeg is timed twice: wall clock of the command (with process start-up) and its own `-benchmark`
rtime (without).

    python bench/decode.py [--file CLIP] [--seconds 10] [--width 340] [--height 256] [--repeats 5] [--core 0]

Without --file, a clip like DESIGN section 5's is written: H.264 (x264 veryfast, crf 23) 340 x 256 at 30 fps
with moving textured content, and AAC 44.1 kHz stereo.
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
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract.config import PROFILES  # noqa: E402
from extract.decode import decode_clip  # noqa: E402
from extract.encode import write_mp4  # noqa: E402


def write_motion_clip(path: Path, seconds: float, width: int, height: int) -> Path:
    """Moving coloured stripes and a bouncing square over noise: real motion for the encoder and decoder."""
    rng = np.random.default_rng(0)
    fps, count = 30, round(seconds * 30)
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
    samples = np.arange(round(seconds * 44100)) / 44100
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * samples), 0.2 * np.sin(2 * np.pi * 660 * samples)])
    return write_mp4(path, frames, fps, audio.astype(np.float32), 44100)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, help="clip to decode (default: write a synthetic one)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--core", type=int, default=0, help="CPU core both decoders are pinned to")
    args = parser.parse_args()

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg not found: install it for this benchmark (apt-get install -y ffmpeg)")
    os.sched_setaffinity(0, {args.core})  # this process and its children run on one core
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        path = args.file or write_motion_clip(Path(folder) / "clip.mp4", args.seconds, args.width, args.height)
        frames, duration_s = _count_frames(path)
        config = PROFILES["paper"]
        clip = decode_clip(path, config.video, config.audio)
        command = [ffmpeg, "-hide_banner", "-nostats", "-loglevel", "info", "-benchmark", "-nostdin", "-threads",
                   "1", "-i", str(path), "-f", "null", "-"]
        reported = []  # ffmpeg's own `-benchmark` rtime: the decode without process start-up

        def run_ffmpeg() -> None:
            out = subprocess.run(command, check=True, capture_output=True, text=True).stderr  # "bench: ..." lines
            reported.append(float(re.search(r"rtime=([0-9.]+)s", out).group(1)))

        best = _best_times({"ours": lambda: decode_clip(path, config.video, config.audio), "ffmpeg": run_ffmpeg,
                            "pyav": lambda: _plain_pyav(path)}, args.repeats)
        ours_s, ffmpeg_s, pyav_s, ffmpeg_rtime_s = best["ours"], best["ffmpeg"], best["pyav"], min(reported)
        ffmpeg_version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]

    print(json.dumps({
        "bench": "decode", "device": "cpu (1 core pinned)", "machine": platform.machine(),
        "versions": {"av": av.__version__, "ffmpeg_in_pyav": av.library_versions["libavcodec"],
                     "ffmpeg_cli": ffmpeg_version, "numpy": np.__version__, "torch": torch.__version__},
        "file": {"path": str(args.file) if args.file else "synthetic", "video_frames": frames,
                 "duration_s": round(duration_s, 3)},
        "settings": {"profile": "paper", "views": config.video.views, "rgb_frames_converted": len(clip.frames),
                     "repeats": args.repeats},
        "results": {
            "ours_s_per_clip": round(ours_s, 4), "ours_frames_per_s": round(frames / ours_s, 1),
            "ffmpeg_threads1_s_per_clip": round(ffmpeg_s, 4), "ffmpeg_frames_per_s": round(frames / ffmpeg_s, 1),
            "ffmpeg_reported_rtime_s": round(ffmpeg_rtime_s, 4),
            "plain_pyav_decode_s_per_clip": round(pyav_s, 4),
            "ratio_ours_over_ffmpeg_rate": round(ffmpeg_s / ours_s, 3),
            "ratio_ours_over_ffmpeg_rtime_rate": round(ffmpeg_rtime_s / ours_s, 3),
        },
    }))


if __name__ == "__main__":
    main()
