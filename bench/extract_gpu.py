"""Extraction throughput on a GPU: `run_extraction` end to end, then MViT-v2-S kernels / precisions / compile modes
against torchvision's eager forward in the same run, then AST at the pipeline's batch.

Runs unmodified on a lent H100 / H200 (torch 2.11): nothing is downloaded, backbones are random-init unless
weights are given (their speed does not depend on the weights), the clips are written here. Every measurement
prints one JSON line (device, versions, settings, results); warm-up (and compilation) is excluded from the
timed iterations and reported separately. bench/extract_gpu.sh runs the steps in order of importance, each under
its own timeout. On CUDA torch runs 1 CPU thread, as in the extraction workers (common/threads.py).

    python bench/extract_gpu.py --steps e2e                         # paper profile end to end on cuda
    python bench/extract_gpu.py --steps mvit --attention torchvision,sdpa,flex --modes eager,default
    python bench/extract_gpu.py --device cpu --quick --profile cpu-small   # a check that it all runs, on a laptop

Steps (`--steps`, comma-separated, in the order given):
- `e2e`: `features.runner.run_extraction` (store writes included) over `--clips` manifest rows cycling over
  `--distinct-clips` written clips, per `--e2e-sizes` (360p and 720p by default): wall clips/s, the time to the
  first stored clip, the steady clips/s after it, and on CUDA the GPU-busy fraction (the union of the kernel and
  copy intervals the profiler saw, over the wall time of the run and of its steady part).
- `mvit`: views/s per attention kernel x precision x mode at `--batch-views`, with `vs_torchvision` = the
  speed-up over torchvision's attention in eager mode at the same precision (same process; the eager kernels
  take turns forward by forward with it, compiled ones run after it).
- `ast`: AST clips/s at the pipeline's batch (`batch_views // views` clips per forward), eager and compiled.
- `decode`: clips/s of the decode threads alone (frames of the views + fbank, no backbone).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curate.encode import write_mp4  # noqa: E402
from extract import ast_audio, mvit, spectrogram  # noqa: E402
from extract.config import ATTENTION_KERNELS, COMPILE_MODES, PROFILES, ExtractConfig  # noqa: E402
from extract.decode import decode_clip  # noqa: E402
from features.config import RunnerConfig  # noqa: E402
from features.runner import run_extraction  # noqa: E402
from features.store import TokenStore  # noqa: E402

_STEPS = ("e2e", "mvit", "ast", "decode")
_PRECISIONS = ("bf16", "bf16-pure", "fp32")


def _emit(name: str, args: argparse.Namespace, config: ExtractConfig, results: dict) -> None:
    device = torch.device(args.device)
    print(json.dumps({
        "bench": "extract_gpu", "measure": name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "machine": platform.machine(), "load_average": os.getloadavg()[0],
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
                     "torchvision": __import__("torchvision").__version__, "timm": __import__("timm").__version__,
                     "av": __import__("av").__version__},
        "settings": {"profile": config.profile, "views_per_clip": config.video.views, "batch_views": args.batch_views,
                     "torch_threads": torch.get_num_threads(), "iters": args.iters,
                     "random_init": args.video_weights is None and args.audio_weights is None},
        "results": results,
    }), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(forward, batch: torch.Tensor, args: argparse.Namespace, device: torch.device,
                  precision: str) -> dict:
    """Warm up (compiling if the forward is compiled), then time `args.iters` forwards."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if precision == "bf16-pure":
        batch = batch.to(torch.bfloat16)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
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


def _compiled(module: torch.nn.Module, mode: str):
    return module if mode == "eager" else torch.compile(module, dynamic=False, mode=mode)


def _interleaved(forwards: dict[str, object], batch: torch.Tensor, args: argparse.Namespace, device: torch.device,
                 precision: str) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of a forward per entry over `args.iters`, the entries taking turns forward by forward (on a
    shared or throttling machine each entry sees the same conditions as the baseline beside it; the median drops
    the forwards another job's burst slowed), and peak GiB on CUDA."""
    if precision == "bf16-pure":
        batch = batch.to(torch.bfloat16)
    seconds = {name: [] for name in forwards}
    peak_gib = dict.fromkeys(forwards, 0.0)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for forward in forwards.values():
            for _ in range(args.warmup):
                forward(batch)
        for _ in range(args.iters):
            for name, forward in forwards.items():
                _sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                started = time.perf_counter()
                forward(batch)
                _sync(device)
                seconds[name].append(time.perf_counter() - started)
                if device.type == "cuda":
                    peak_gib[name] = max(peak_gib[name], torch.cuda.max_memory_allocated(device) / 2**30)
    return {name: float(np.median(times)) for name, times in seconds.items()}, peak_gib


def _bench_mvit(args: argparse.Namespace, config: ExtractConfig, device: torch.device) -> None:
    size = config.video.crop_size_px
    views = torch.randn(args.batch_views, 3, config.video.frames_per_view, size, size, device=device)

    def build(kernel: str, precision: str) -> mvit.MViTBackbone:
        video, _ = mvit.build_mvit(config.video, args.video_weights, args.video_weights is None, config.seed, kernel)
        return video.to(device, torch.bfloat16 if precision == "bf16-pure" else torch.float32)

    def emit(kernel: str, precision: str, mode: str, views_per_s: float, baseline: float, **timing) -> None:
        _emit("mvit", args, config, {
            "backbone": config.video.architecture, "attention": kernel, "precision": precision, "mode": mode,
            "views_per_s": round(views_per_s, 2), "clips_per_s": round(views_per_s / config.video.views, 2),
            "vs_torchvision": round(views_per_s / baseline, 3), **timing})

    for precision in args.precisions:
        # Eager: torchvision's attention (the baseline) and every kernel asked for, interleaved.
        eager = ["torchvision", *[k for k in args.attention if k != "torchvision" and "eager" in args.modes]]
        seconds, peak_gib = _interleaved({kernel: build(kernel, precision) for kernel in eager}, views, args, device,
                                         precision)
        baseline = args.batch_views / seconds["torchvision"]
        for kernel in eager:
            emit(kernel, precision, "eager", args.batch_views / seconds[kernel], baseline,
                 median_forward_s=round(seconds[kernel], 4), peak_memory_gib=round(peak_gib[kernel], 2))
        # Compiled: one at a time (each compiles on its own), against the eager baseline above.
        for kernel, mode in [(k, m) for k in args.attention for m in args.modes if m != "eager"]:
            video = build(kernel, precision)
            try:
                timing = _time_forward(_compiled(video, mode), views, args, device, precision)
            except Exception as error:  # noqa: BLE001 - reported; the other rows still run
                _emit("mvit", args, config, {"attention": kernel, "precision": precision, "mode": mode,
                                             "error": f"{type(error).__name__}: {str(error)[:300]}"})
                continue
            finally:
                del video
                torch._dynamo.reset()  # no recompile limit across rows
            emit(kernel, precision, mode, timing.pop("items_per_s"), baseline, **timing)
    del views
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _bench_ast(args: argparse.Namespace, config: ExtractConfig, device: torch.device) -> None:
    clips_per_forward = max(1, args.batch_views // config.video.views)  # what ClipExtractor batches
    fbank = torch.randn(clips_per_forward, config.audio.target_frames, config.audio.num_mel_bins, device=device)
    for precision in args.precisions:
        for mode in ["eager", *[m for m in args.modes if m != "eager"]]:
            audio, _ = ast_audio.build_ast(config.audio, args.audio_weights, args.audio_weights is None,
                                           config.seed + 1)
            audio = audio.to(device, torch.bfloat16 if precision == "bf16-pure" else torch.float32)
            timing = _time_forward(_compiled(audio, mode), fbank, args, device, precision)
            del audio
            torch._dynamo.reset()
            _emit("ast", args, config, {"backbone": config.audio.architecture, "precision": precision, "mode": mode,
                                        "clips_per_forward": clips_per_forward,
                                        "clips_per_s": timing.pop("items_per_s"), **timing})


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


def _write_clips(args: argparse.Namespace, folder: Path) -> dict[tuple[int, int], tuple[Path, float]]:
    """Per `--e2e-sizes` entry: a manifest of `--clips` rows cycling over the distinct clips written, and the
    seconds writing took. Written before this process touches CUDA (the writers fork)."""
    distinct = min(args.clips, args.distinct_clips)
    jobs = [(folder / f"{w}x{h}" / f"clip{i:03d}.mp4", args.clip_seconds, w, h, i)
            for w, h in args.e2e_sizes for i in range(distinct)]
    for job in jobs:
        job[0].parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1)) as pool:
        written = list(pool.map(_write_clip, jobs))
    write_s = (time.perf_counter() - started) / len(args.e2e_sizes)
    manifests = {}
    for n, size in enumerate(args.e2e_sizes):
        paths = written[n * distinct:(n + 1) * distinct]
        manifest = folder / f"{size[0]}x{size[1]}.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["clip_id", "path", "class_name", "split"])
            writer.writerows([f"clip{i:05d}", paths[i % distinct], f"class{i % 4}", "train"] for i in range(args.clips))
        manifests[size] = (manifest, write_s)
    return manifests


class _StoreProgress(threading.Thread):
    """Polls the store's done count while a run writes it: when the first clip was stored, and how many then."""

    def __init__(self, path: Path, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.path, self.interval_s = path, interval_s
        self.first: tuple[float, int] | None = None  # (perf_counter time, done clips) at the first non-zero poll
        self.stop = threading.Event()

    def run(self) -> None:
        while self.first is None and not self.stop.wait(self.interval_s):
            try:
                done = TokenStore.open(self.path).counts()["done"]
            except Exception:  # noqa: BLE001 - the store is not created yet, or mid-write: poll again
                continue
            if done:
                self.first = (time.perf_counter(), done)


def _busy_seconds(profile: torch.profiler.profile) -> float:
    """Seconds of the union of the device intervals (kernels, copies, sets) the profiler recorded."""
    intervals = sorted((e.time_range.start, e.time_range.end) for e in profile.events()
                       if e.device_type == torch.autograd.DeviceType.CUDA)
    busy_us, end = 0.0, -float("inf")
    for start, stop in intervals:
        if stop > end:
            busy_us += stop - max(start, end)
            end = stop
    return busy_us / 1e6


def _bench_e2e(args: argparse.Namespace, config: ExtractConfig, manifests: dict, folder: Path) -> None:
    device = torch.device(args.device)
    compiled = args.e2e_compile
    for attention, (width, height) in [(attention, size) for attention in args.e2e_attention for size in manifests]:
        manifest, write_s = manifests[(width, height)]
        extract = replace(config, compile=compiled, attention=attention)
        out = folder / f"store-{width}x{height}-{attention}-{'compiled' if compiled else 'eager'}.zarr"
        run = RunnerConfig(videos=manifest, out=out, extract=extract, gpus=1 if device.type == "cuda" else 0,
                           video_weights=args.video_weights, audio_weights=args.audio_weights, progress=False)
        progress = _StoreProgress(out)
        progress.start()
        profiling = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                     if device.type == "cuda" else contextlib.nullcontext())
        with profiling as profiler:
            started = time.perf_counter()
            summary = run_extraction(run)
            ended = time.perf_counter()
        progress.stop.set()
        progress.join()
        results = {"mode": "compiled" if compiled else "eager", "attention": extract.attention,
                   "precision": extract.precision, "clip_size": [width, height], "clip_seconds": args.clip_seconds,
                   "clips": summary.clips, "done": summary.done, "failed": summary.failed,
                   "decode_threads": extract.decode_threads, "wall_s": round(ended - started, 2),
                   "clips_per_s": round(summary.clips / (ended - started), 2), "write_clips_s": round(write_s, 1)}
        steady_s = None
        if progress.first is not None:
            first_s, first_done = progress.first
            steady_s = ended - first_s
            results.update(first_clip_s=round(first_s - started, 2),
                           steady_clips_per_s=round((summary.done - first_done) / steady_s, 2))
        _emit("e2e", args, config, results)  # before the profile is read: that can take a while
        if profiler is not None:
            busy_s = _busy_seconds(profiler)
            # Of the whole run (startup included: a lower bound) and of the steady part (an upper bound: the
            # startup's warm-up kernels count as busy).
            _emit("e2e_gpu_busy", args, config, {
                "clip_size": [width, height], "mode": results["mode"], "attention": attention,
                "gpu_busy_s": round(busy_s, 2),
                "gpu_busy_fraction_of_wall": round(busy_s / (ended - started), 3),
                "gpu_busy_fraction_steady": round(busy_s / steady_s, 3) if steady_s else None})
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _bench_decode(args: argparse.Namespace, config: ExtractConfig, manifests: dict) -> None:
    for (width, height), (manifest, _) in manifests.items():
        with manifest.open() as handle:
            paths = [Path(row["path"]) for row in csv.DictReader(handle)]

        def prepare(path: Path) -> None:  # what a decode thread does, without the backbones
            clip = decode_clip(path, config.video, config.audio)
            spectrogram.log_mel(torch.from_numpy(clip.audio), config.audio.sample_rate_hz,
                                config.audio.num_mel_bins, config.audio.target_frames)

        with ThreadPoolExecutor(config.decode_threads) as pool:
            list(pool.map(prepare, sorted(set(paths))))  # warm-up: page cache
            started = time.perf_counter()
            list(pool.map(prepare, paths))
            seconds = time.perf_counter() - started
        _emit("decode", args, config, {"clips": len(paths), "decode_threads": config.decode_threads,
                                       "clip_size": [width, height], "clips_per_s": round(len(paths) / seconds, 2)})


def _csv(kind, allowed=None):
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {allowed}")
        return values
    return parse


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--steps", type=_csv(str, _STEPS), default=list(_STEPS), help=",".join(_STEPS))
    parser.add_argument("--precision", choices=_PRECISIONS, help="end to end (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--attention", type=_csv(str, ATTENTION_KERNELS), default=list(ATTENTION_KERNELS),
                        help="mvit step kernels (default: all; torchvision eager always runs first)")
    parser.add_argument("--precisions", type=_csv(str, _PRECISIONS), help="mvit / ast steps (default: bf16,bf16-pure "
                        "on cuda, fp32 on cpu)")
    parser.add_argument("--modes", type=_csv(str, ("eager", *COMPILE_MODES)),
                        help="mvit / ast: eager and torch.compile modes (default: eager,default; --quick: eager)")
    parser.add_argument("--batch-views", type=int, help="video views per forward (default: the profile's)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--e2e-compile", action="store_true", help="end to end with compiled backbones (not eager)")
    parser.add_argument("--e2e-attention", type=_csv(str, ATTENTION_KERNELS),
                        help="end-to-end runs per kernel, in this order (default: the profile's)")
    parser.add_argument("--e2e-sizes", type=_csv(_size), default=[(640, 360), (1280, 720)], help="WxH,WxH")
    parser.add_argument("--clips", type=int, default=256, help="manifest rows per end-to-end run")
    parser.add_argument("--distinct-clips", type=int, default=16, help="clips written per size (rows cycle)")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--decode-threads", type=int, help="default: CPU cores, at most 16")
    parser.add_argument("--video-weights", type=Path, help="torchvision mvit_v2_s weights (default: random init)")
    parser.add_argument("--audio-weights", type=Path, help="AST weights (default: random init)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks that everything runs")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device; use --device cpu")
    if (args.video_weights is None) != (args.audio_weights is None):
        raise SystemExit("give both --video-weights and --audio-weights, or neither (random init)")
    base = PROFILES[args.profile]
    if args.quick:
        args.iters, args.warmup, args.clips, args.distinct_clips, args.clip_seconds = 2, 1, 4, 2, 3.0
        args.e2e_sizes = [(160, 120), (320, 180)]
        args.batch_views = args.batch_views or base.video.views  # one clip per forward
    args.batch_views = args.batch_views or base.batch_views
    args.modes = args.modes or (["eager"] if args.quick else ["eager", "default"])
    args.precisions = args.precisions or (["bf16", "bf16-pure"] if device.type == "cuda" else ["fp32"])
    # CUDA: 1 torch thread, as each extraction worker runs; CPU: every core for the backbones.
    torch.set_num_threads(1 if device.type == "cuda" else os.cpu_count() or 1)
    config = replace(
        base, device=args.device, random_init=args.video_weights is None and args.audio_weights is None,
        precision=args.precision or ("bf16" if device.type == "cuda" else "fp32"), batch_views=args.batch_views,
        decode_threads=args.decode_threads or min(16, os.cpu_count() or 1),
    )
    args.e2e_attention = args.e2e_attention or [base.attention]
    with tempfile.TemporaryDirectory() as folder:
        manifests = _write_clips(args, Path(folder)) if {"e2e", "decode"} & set(args.steps) else {}
        for step in args.steps:
            if step == "e2e":
                _bench_e2e(args, config, manifests, Path(folder))
            elif step == "mvit":
                _bench_mvit(args, config, device)
            elif step == "ast":
                _bench_ast(args, config, device)
            else:
                _bench_decode(args, config, manifests)


if __name__ == "__main__":
    main()
