"""Filmstrip throughput of `curate filmstrips` (curate.render.make_filmstrips) on ~4 s clips and on 100 s clips.

Two sets of videos, both written here: the synthetic benchmark's ~4 s clips (160 x 120, 25 fps, H.264 + AAC, via
curate.synthetic.make_synthetic) and a 100 s clip (340 x 256, 30 fps, x264 veryfast crf 23 with its default GOP
of up to 250 frames and B-frames, AAC) linked under several names. For each set: videos/s of the whole step
(process pool, index, JPEG files) with 1 and with `--workers` processes, after a warm-up run.

Baseline, in the same process and on the same files, one video at a time: a plain PyAV loop that decodes every
frame of the first 100 s, converts each to RGB at full size (`frame.to_ndarray`), keeps the frame shown at each
second and scales it with Pillow; the same grid drawing and JPEG writing follow. Ours: `render_filmstrip`
(demux up to 100 s, decode only the groups of pictures that hold a cell, skip unreferenced frames that no cell
shows, convert only the 1 fps frames, at the cell size).

    python bench/filmstrips.py [--short-clips 192] [--long-copies 8] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decode import write_motion_clip  # noqa: E402
from curate import filmstrip  # noqa: E402
from curate.config import FilmstripConfig, FilmstripLayout, SyntheticConfig  # noqa: E402
from curate.render import make_filmstrips  # noqa: E402
from curate.synthetic import make_synthetic  # noqa: E402


def _write_long_clip(path: Path, seconds: float) -> Path:
    return write_motion_clip(path, seconds, width=340, height=256)


def _naive_filmstrip(video: Path, out_path: Path, layout: FilmstripLayout) -> None:
    """Baseline: decode and convert every frame of the first 100 s, keep the one shown at each second."""
    times = layout.times_s
    shown: list[np.ndarray | None] = [None] * times.size
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        t0 = end = None
        for frame in container.decode(stream):
            t0 = frame.time if t0 is None else t0
            t = frame.time - t0
            if t > times[-1] + 1.0:
                break
            rgb = frame.to_ndarray(format="rgb24")  # every frame, full size
            for k in np.flatnonzero(times >= t - 1e-6):  # the latest frame at or before each later time
                shown[k] = rgb
            end = t + 1.0 / float(stream.average_rate)
        shown = [rgb if times[k] < end else None for k, rgb in enumerate(shown)]  # blank after the end
    cells = []
    for rgb in shown:
        if rgb is None:
            cells.append(None)
            continue
        image = Image.fromarray(rgb)
        image.thumbnail((layout.cell_width_px, layout.cell_height_px))
        cells.append(np.asarray(image))
    filmstrip._compose(cells, layout, video.name).save(out_path, format="JPEG", quality=layout.jpeg_quality)


def _per_video_s(function, videos: list[Path], out_dir: Path, layout, repeats: int) -> float:
    """Best-of-`repeats` mean seconds per video, one process, after a warm-up on the first video."""
    function(videos[0], out_dir / "warmup.jpg", layout)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for k, video in enumerate(videos):
            function(video, out_dir / f"{k}.jpg", layout)
        best = min(best, (time.perf_counter() - start) / len(videos))
    return best


def _step_videos_per_s(manifest: Path, out_dir: Path, workers: int, repeats: int) -> float:
    """Best-of-`repeats` videos/s of the whole make_filmstrips step (pool start-up included), after a warm-up."""
    make_filmstrips(FilmstripConfig(videos=manifest, out_dir=out_dir / "warmup", workers=workers))
    best = 0.0
    for r in range(repeats):
        summary = make_filmstrips(FilmstripConfig(videos=manifest, out_dir=out_dir / f"run{r}", workers=workers))
        assert summary.n_failed == 0
        best = max(best, summary.videos_per_s)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short-clips", type=int, default=192, help="~4 s synthetic clips (multiple of 8)")
    parser.add_argument("--long-seconds", type=float, default=100.0, help="length of the long clip")
    parser.add_argument("--long-copies", type=int, default=8, help="names the long clip is linked under")
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = parser.parse_args()
    layout = FilmstripLayout()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        short = make_synthetic(SyntheticConfig(out_dir=root / "short", classes=args.short_clips // 8,
                                               clips_per_class=8, workers=2))
        long_dir = root / "long"
        long_dir.mkdir()
        original = _write_long_clip(long_dir / "long_0.mp4", args.long_seconds)
        lines = ["path,class_name", "long_0.mp4,long"]
        for k in range(1, args.long_copies):
            os.link(original, long_dir / f"long_{k}.mp4")
            lines.append(f"long_{k}.mp4,long")
        (long_dir / "videos.csv").write_text("\n".join(lines) + "\n")
        sets = {"short_4s": (short.manifest_path, sorted((root / "short" / "clips").rglob("*.mp4"))),
                "long_100s": (long_dir / "videos.csv", sorted(long_dir.glob("*.mp4")))}
        for name, (manifest, videos) in sets.items():
            work = root / f"out_{name}"
            work.mkdir()
            sample = videos[: min(len(videos), 16)]
            ours_s = _per_video_s(lambda v, o, lay: filmstrip.render_filmstrip(v, o, lay), sample, work, layout,
                                  args.repeats)
            naive_s = _per_video_s(_naive_filmstrip, sample, work, layout, args.repeats)
            results[name] = {
                "videos": len(videos),
                "one_process_s_per_video": {"ours": round(ours_s, 4), "baseline_decode_all": round(naive_s, 4),
                                            "speedup": round(naive_s / ours_s, 2)},
                "step_videos_per_s": {f"workers_{w}": round(_step_videos_per_s(manifest, work, w, args.repeats), 2)
                                      for w in sorted({1, args.workers})},
            }
    print(json.dumps({
        "bench": "filmstrips",
        "device": f"cpu ({os.cpu_count()} cores)",
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "versions": {"python": platform.python_version(), "av": av.__version__, "pillow": PIL.__version__,
                     "numpy": np.__version__},
        "settings": {"layout": f"{layout.rows}x{layout.columns}, {layout.seconds_per_frame} s, "
                               f"{layout.cell_width_px}x{layout.cell_height_px} px, {layout.image_format}",
                     "short": "synthetic 160x120 25 fps ~4 s", "long": f"{args.long_seconds:g} s 340x256 30 fps x264 "
                     "veryfast crf 23", "repeats": args.repeats},
        "results": results,
    }))


if __name__ == "__main__":
    main()
