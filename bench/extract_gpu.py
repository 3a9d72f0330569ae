"""Extraction throughput on a GPU: MViT-v2-S views/s (eager and torch.compile), AST clips/s, decode -> tokens clips/s.

Runs unmodified on a lent H100 / H200 (torch 2.11): nothing is downloaded, backbones are random-init unless
weights are given (their speed does not depend on the weights), the clips for the end-to-end run are written
here. Every measurement prints one JSON line (device, versions, settings, results); warm-up (and compilation)
is excluded from the timed iterations and reported separately.

    python bench/extract_gpu.py                                   # paper profile on cuda, bf16 autocast
    python bench/extract_gpu.py --device cpu --quick --profile cpu-small   # a check that it runs, on a laptop

Measurements: `mvit` (eager, then compiled) views/s and clips/s at `--batch-views`; `ast` (eager, compiled) clips/s
at `--audio-batch`; `decode` clips/s of the decode threads alone (frames of the views + fbank, no backbone);
`end_to_end` clips/s of `ClipExtractor.extract_many` over `--clips` synthetic clips (eager, plus compiled with
`--e2e-compile`). DESIGN section 5 has the anchors measured before (one H200: eager 234 views/s, compiled 397).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract import ast_audio, mvit, spectrogram  # noqa: E402
from extract.config import PROFILES, ExtractConfig  # noqa: E402
from extract.decode import decode_clip  # noqa: E402
from extract.encode import write_mp4  # noqa: E402
from extract.pipeline import ClipExtractor  # noqa: E402


def _emit(name: str, args: argparse.Namespace, config: ExtractConfig, results: dict) -> None:
    device = torch.device(args.device)
    print(json.dumps({
        "bench": "extract_gpu", "measure": name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "machine": platform.machine(),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "torchvision": __import__("torchvision").__version__, "timm": __import__("timm").__version__,
                     "av": __import__("av").__version__},
        "settings": {"profile": config.profile, "precision": config.precision, "views_per_clip": config.video.views,
                     "batch_views": args.batch_views, "audio_batch": args.audio_batch, "iters": args.iters,
                     "random_init": args.video_weights is None and args.audio_weights is None},
        "results": results,
    }), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(forward, batch: torch.Tensor, args: argparse.Namespace, device: torch.device, bf16: bool) -> dict:
    """Warm up (compiling if the forward is compiled), then time `args.iters` forwards."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        started = time.perf_counter()
        for _ in range(args.warmup):
            forward(batch)
        _sync(device)
        warmup_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(args.iters):
            forward(batch)
        _sync(device)
        seconds = time.perf_counter() - started
    out = {"warmup_s": round(warmup_s, 2), "timed_s": round(seconds, 3),
           "items_per_s": round(batch.shape[0] * args.iters / seconds, 2)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def _bench_backbones(args: argparse.Namespace, config: ExtractConfig, device: torch.device) -> None:
    bf16 = config.precision == "bf16"
    video, _ = mvit.build_mvit(config.video, args.video_weights, args.video_weights is None, config.seed)
    video = video.to(device)
    size = config.video.crop_size_px
    views = torch.randn(args.batch_views, 3, config.video.frames_per_view, size, size, device=device)
    for mode in ("eager", "compiled") if args.compile else ("eager",):
        forward = torch.compile(video, dynamic=False) if mode == "compiled" else video
        timing = _time_forward(forward, views, args, device, bf16)
        views_per_s = timing.pop("items_per_s")
        _emit("mvit", args, config, {"backbone": config.video.architecture, "mode": mode, "views_per_s": views_per_s,
                                     "clips_per_s": round(views_per_s / config.video.views, 2), **timing})
    del video, views

    audio, _ = ast_audio.build_ast(config.audio, args.audio_weights, args.audio_weights is None, config.seed + 1)
    audio = audio.to(device)
    fbank = torch.randn(args.audio_batch, config.audio.target_frames, config.audio.num_mel_bins, device=device)
    for mode in ("eager", "compiled") if args.compile else ("eager",):
        forward = torch.compile(audio, dynamic=False) if mode == "compiled" else audio
        timing = _time_forward(forward, fbank, args, device, bf16)
        _emit("ast", args, config, {"backbone": config.audio.architecture, "mode": mode,
                                    "clips_per_s": timing.pop("items_per_s"), **timing})
    del audio, fbank
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _write_clip(job: tuple[Path, float, int, int, int]) -> Path:
    """A clip with moving textured content and AAC stereo audio (as bench/decode.py, seeded per clip)."""
    path, seconds, width, height, seed = job
    rng = np.random.default_rng(seed)
    count = round(seconds * 30)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    offsets = rng.uniform(0, 6, size=3)
    for t in range(count):
        rgb = np.stack([128 + 100 * np.sin(xs / 17 + 0.15 * t + offsets[0]),
                        128 + 100 * np.sin(ys / 11 - 0.15 * t + offsets[1]),
                        128 + 100 * np.sin((xs + ys) / 23 + offsets[2])], axis=-1)
        frames[t] = np.clip(rgb + rng.integers(0, 20, size=(height, width, 1)), 0, 255).astype(np.uint8)
    samples = np.arange(round(seconds * 44100)) / 44100
    audio = np.stack([0.3 * np.sin(2 * np.pi * (300 + 50 * seed) * samples), 0.2 * np.sin(2 * np.pi * 660 * samples)])
    return write_mp4(path, frames, 30, audio.astype(np.float32), 44100)


def _write_clips(args: argparse.Namespace, folder: Path) -> tuple[list[Path], float]:
    """`args.clips` paths cycling over `args.distinct_clips` written clips, and the seconds writing took."""
    distinct = min(args.clips, args.distinct_clips)
    jobs = [(folder / f"clip{i:03d}.mp4", args.clip_seconds, args.clip_width, args.clip_height, i)
            for i in range(distinct)]
    started = time.perf_counter()
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        written = list(pool.map(_write_clip, jobs))
    return [written[i % distinct] for i in range(args.clips)], time.perf_counter() - started


def _bench_end_to_end(args: argparse.Namespace, config: ExtractConfig, paths: list[Path], write_s: float) -> None:
    distinct = len(set(paths))

    def prepare(path: Path) -> None:  # what a decode thread does, without the backbones
        clip = decode_clip(path, config.video, config.audio)
        spectrogram.log_mel(torch.from_numpy(clip.audio), config.audio.sample_rate_hz, config.audio.num_mel_bins,
                            config.audio.target_frames)

    with ThreadPoolExecutor(config.decode_threads) as pool:
        list(pool.map(prepare, paths[:distinct]))  # warm-up: page cache
        started = time.perf_counter()
        list(pool.map(prepare, paths))
        decode_s = time.perf_counter() - started
    _emit("decode", args, config, {"clips": args.clips, "decode_threads": config.decode_threads,
                                   "clips_per_s": round(args.clips / decode_s, 2), "clip_seconds": args.clip_seconds,
                                   "clip_size": [args.clip_width, args.clip_height],
                                   "write_s": round(write_s, 1)})

    for compiled in (False, True) if args.e2e_compile else (False,):
        extractor = ClipExtractor(replace(config, compile=compiled), args.video_weights, args.audio_weights)
        warm = paths[:max(1, config.batch_views // config.video.views)]
        started = time.perf_counter()
        for _ in extractor.extract_many(warm):  # warm-up (and compilation) on one batch
            pass
        warmup_s = time.perf_counter() - started
        started = time.perf_counter()
        failures = sum(isinstance(result, Exception) for _, result in extractor.extract_many(paths))
        seconds = time.perf_counter() - started
        _emit("end_to_end", args, config, {
            "mode": "compiled" if compiled else "eager", "clips": args.clips, "failures": failures,
            "decode_threads": config.decode_threads, "clips_per_s": round(args.clips / seconds, 2),
            "views_per_s": round(args.clips * config.video.views / seconds, 1), "warmup_s": round(warmup_s, 1),
            "timed_s": round(seconds, 2)})
        del extractor
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--batch-views", type=int, help="video views per forward (default: the profile's)")
    parser.add_argument("--audio-batch", type=int, default=64, help="AST clips per forward")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile runs")
    parser.add_argument("--e2e-compile", action="store_true", help="also run end to end with compiled backbones")
    parser.add_argument("--clips", type=int, default=192, help="clips in the end-to-end run")
    parser.add_argument("--distinct-clips", type=int, default=32, help="clips written (the run cycles over them)")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--clip-width", type=int, default=340)
    parser.add_argument("--clip-height", type=int, default=256)
    parser.add_argument("--decode-threads", type=int, help="default: CPU cores, at most 16")
    parser.add_argument("--video-weights", type=Path, help="torchvision mvit_v2_s weights (default: random init)")
    parser.add_argument("--audio-weights", type=Path, help="AST weights (default: random init)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that everything runs")
    parser.add_argument("--skip-backbones", action="store_true", help="only the decode and end-to-end runs")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    if (args.video_weights is None) != (args.audio_weights is None):
        raise SystemExit("give both --video-weights and --audio-weights, or neither (random init)")
    base = PROFILES[args.profile]
    if args.quick:
        args.iters, args.warmup, args.clips, args.distinct_clips = 2, 1, 2, 2
        args.audio_batch, args.clip_seconds, args.clip_width, args.clip_height = 2, 3.0, 160, 120
        args.batch_views = args.batch_views or base.video.views  # one clip per forward
    args.batch_views = args.batch_views or base.batch_views
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    config = replace(
        base, device=args.device, random_init=args.video_weights is None and args.audio_weights is None,
        precision=args.precision or ("bf16" if device.type == "cuda" else "fp32"), batch_views=args.batch_views,
        decode_threads=args.decode_threads or min(16, os.cpu_count() or 1),
    )
    with tempfile.TemporaryDirectory() as folder:
        # Clips first: the writer processes fork before this process touches CUDA or starts torch threads.
        paths, write_s = _write_clips(args, Path(folder))
        if not args.skip_backbones:
            _bench_backbones(args, config, device)
        _bench_end_to_end(args, config, paths, write_s)


if __name__ == "__main__":
    main()
