"""The extraction pipeline's CPU-side costs, on any machine (no GPU needed): one JSON line.

- `write_ms_per_clip`: CPU ms of the store writes of one clip at the paper profile's pooled layout, written as the
  runner's writer thread does (a forward batch of clips per call, inside one block); the same run also times
  the clips written one by one through Zarr (`write_ms_per_clip_one_by_one_zarr`, the write path before the writer
  thread batched them).
- `decode_720p_vs_ffmpeg`: `bench.decode.decode_720p_vs_ffmpeg` (our decode rate over `ffmpeg -threads 1`'s on a
  1280 x 720 H.264 High clip with B-frames, one core, same run; null, with a note, without ffmpeg).
- `host_to_device_bytes_per_clip_720p`: the bytes a 1280 x 720 clip of 10 s sends to the device at the paper
  profile on a GPU, as the pipeline prepares it (`extract.decode_pool.PreparedClip.device_bytes`).
- `null_backbone_block_ratio`: run_extraction's clips/s with no-op backbones (same output shapes, cpu-small
  profile) over blocks of the default 32 clips, divided by the same clips in one block (best of the interleaved
  repeats).
- `decode_processes_vs_threads_beside_busy_thread`: one decode worker's clips/s as a process over as a thread,
  while the calling thread runs Python (the GIL contention that made decode processes the default).
- `startup_s_200k`, `peak_rss_mb_200k`, `metadata_bytes_per_clip_200k`: a child process runs run_extraction over
  a 200,000-row manifest (a few files under distinct ids, no-op backbones) and is stopped a few seconds after
  the first clip is extracted: seconds from the start to that clip, the child's peak RSS (its decode processes
  not counted), and the store's bytes outside the token arrays per clip.

The no-op backbones replace `extract.mvit.build_mvit` / `extract.ast_audio.build_ast` in this process only
(`null_backbones`): each builds the real one (for its grid and width) and gives zeros of its output shapes.

    python bench/pipeline_overhead.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decode import decode_720p_vs_ffmpeg, write_720p_clip  # noqa: E402
from bench.store_io import PAPER_LAYOUT  # noqa: E402
from curate.encode import write_mp4  # noqa: E402
from extract import ast_audio, mvit  # noqa: E402
from extract.config import PROFILES  # noqa: E402
from extract.decode_pool import DecodePool, prepare_clip  # noqa: E402
from extract.outputs import ClipTokens  # noqa: E402
from features.config import RunnerConfig, StoreConfig  # noqa: E402
from features.manifest import ManifestRow  # noqa: E402
from features.runner import run_extraction  # noqa: E402
from features.store import TokenStore  # noqa: E402

_TOKEN_ARRAYS = ("video_tokens", "audio_tokens", "kinetics_logits")
_SMALL = replace(PROFILES["cpu-small"], decode_in="processes")


class _NullBackbone(torch.nn.Module):
    """Zeros of a backbone's output shapes: (B, prefix + prod(grid), width), and (B, classes) logits for video."""

    def __init__(self, real: torch.nn.Module, prefix_tokens: int, classes: int | None) -> None:
        super().__init__()
        self.grid, self.width = tuple(real.grid), real.width
        self._tokens, self._classes = prefix_tokens + math.prod(self.grid), classes

    def forward(self, batch: torch.Tensor):
        tokens = batch.new_zeros((batch.shape[0], self._tokens, self.width))
        return tokens if self._classes is None else (tokens, batch.new_zeros((batch.shape[0], self._classes)))


@contextlib.contextmanager
def null_backbones():
    """ClipExtractor built inside this block gets no-op backbones of the real ones' output shapes."""
    real_video, real_audio = mvit.build_mvit, ast_audio.build_ast

    def video(*args, **kwargs):
        backbone, provenance = real_video(*args, **kwargs)
        return _NullBackbone(backbone, 1, len(mvit.KINETICS400_CATEGORIES)), provenance

    def audio(*args, **kwargs):
        backbone, provenance = real_audio(*args, **kwargs)
        return _NullBackbone(backbone, 2, None), provenance

    mvit.build_mvit, ast_audio.build_ast = video, audio
    try:
        yield
    finally:
        mvit.build_mvit, ast_audio.build_ast = real_video, real_audio


class _ForwardLog(logging.Handler):
    """Times (perf_counter) at which the pipeline read a batch's tokens back (its debug line per forward batch)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.times: list[float] = []
        self.first = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "from queueing to tokens" in record.getMessage():
            self.times.append(time.perf_counter())
            self.first.set()


@contextlib.contextmanager
def _forward_log():
    log, pipeline = _ForwardLog(), logging.getLogger("extract.pipeline")
    level, propagate = pipeline.level, pipeline.propagate
    pipeline.setLevel(logging.DEBUG)
    pipeline.propagate = False  # the debug lines are this bench's clock, not output: the JSON line stays alone
    pipeline.addHandler(log)
    try:
        yield log
    finally:
        pipeline.removeHandler(log)
        pipeline.setLevel(level)
        pipeline.propagate = propagate


# --- store writes ---------------------------------------------------------------------------------------------

def write_ms_per_clip(folder: Path, clips: int, repeats: int) -> dict:
    """CPU ms per clip of `TokenStore.write_clips`, batched as the runner's writer does and one by one via Zarr."""
    rng = np.random.default_rng(0)
    layout = PAPER_LAYOUT
    tokens = ClipTokens(
        video_tokens=rng.standard_normal(layout.shape("video_tokens")).astype(np.float16),
        kinetics_logits=rng.standard_normal(layout.shape("kinetics_logits")).astype(np.float32),
        audio_tokens=rng.standard_normal(layout.shape("audio_tokens")).astype(np.float16),
        has_audio=True, audio_frames=1000, decoded_s=None)
    per_batch = PROFILES["paper"].batch_views // layout.views  # clips of one forward: what the writer gets at once
    records = [ManifestRow(clip_id=f"clip{i}", path=Path(f"/data/clip{i}.mp4"), class_name="a", split="seen")
               for i in range(clips)]
    times: dict[str, list[float]] = {"batched": [], "one_by_one_zarr": []}
    for _ in range(repeats):
        for how in times:
            shutil.rmtree(folder / "w.zarr", ignore_errors=True)
            # One file per clip (the layout this was measured in): a shard is written once per block, not per batch.
            store = TokenStore.create(folder / "w.zarr", records, layout, {}, {}, StoreConfig(shard_blocks=False))
            batch = per_batch
            if how == "one_by_one_zarr":
                store._raw = set()  # one Zarr call per array and clip, as before writes were batched
                batch = 1
            started = time.process_time()
            for start in range(0, clips, batch):
                store.write_clips(list(range(start, min(start + batch, clips))), [tokens] * min(batch, clips - start))
            times[how].append((time.process_time() - started) / clips * 1e3)
    shutil.rmtree(folder / "w.zarr", ignore_errors=True)
    best = {how: min(values) for how, values in times.items()}
    return {"write_ms_per_clip": round(best["batched"], 3),
            "write_ms_per_clip_one_by_one_zarr": round(best["one_by_one_zarr"], 3),
            "write_batch_clips": per_batch, "write_clips": clips}


# --- bytes to the device --------------------------------------------------------------------------------------

def host_to_device_bytes(folder: Path) -> dict:
    clip = write_720p_clip(folder / "720p.mp4", seconds=10.0)
    config = replace(PROFILES["paper"], random_init=True)  # device "cuda": the frames go to the device
    prepared = prepare_clip(clip, None, config, make_views=False)
    return {"host_to_device_bytes_per_clip_720p": prepared.device_bytes,
            "host_to_device_frames_720p": tuple(prepared.frames.shape)}


# --- run_extraction with no-op backbones ----------------------------------------------------------------------

def _manifest(folder: Path, files: list[Path], rows: int) -> Path:
    manifest = folder / f"manifest{rows}.csv"
    with manifest.open("w") as handle:
        handle.write("clip_id,path,class_name,split\n")
        for i in range(rows):
            handle.write(f"clip{i:06d},{files[i % len(files)].name},class{i % 7},{'seen' if i % 3 else 'unseen'}\n")
    return manifest


def _small_clips(folder: Path, count: int) -> list[Path]:
    files = []
    for i in range(count):
        frames = np.zeros((50, 96, 128, 3), dtype=np.uint8)
        frames[:] = ((37 * i) % 256, 90, 160)
        for t in range(len(frames)):
            frames[t, t:t + 16, 2 * t:2 * t + 16] = 255
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(32000) / 16000)
        files.append(write_mp4(folder / f"small{i}.mp4", frames, 25, audio, 16000))
    return files


def block_ratio(folder: Path, blocks: int, repeats: int) -> dict:
    """run_extraction's steady clips/s (from the first forward batch to the last, so that start-up is left out) over
    `blocks` blocks of the default size / over one block of the same clips, best of `repeats` interleaved runs."""
    block = StoreConfig().clips_per_block
    clips = blocks * block
    manifest = _manifest(folder, _small_clips(folder, 4), clips)
    per_batch = _SMALL.batch_views // _SMALL.video.views
    rates: dict[int, list[float]] = {clips: [], block: []}
    with null_backbones():
        for repeat in range(repeats + 1):  # the first round warms up (forkserver start, page cache)
            for size in rates:
                out = folder / f"blocks{size}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                with _forward_log() as log:
                    summary = run_extraction(RunnerConfig(videos=manifest, out=out, extract=_SMALL, progress=False,
                                                          store=StoreConfig(clips_per_block=size)))
                assert summary.done == clips, summary
                if repeat:
                    rates[size].append((clips - per_batch) / (log.times[-1] - log.times[0]))
                shutil.rmtree(out, ignore_errors=True)
    one, many = max(rates[clips]), max(rates[block])
    return {"null_backbone_block_ratio": round(many / one, 3), "null_backbone_clips_per_s_one_block": round(one, 2),
            f"null_backbone_clips_per_s_blocks_of_{block}": round(many, 2), "null_backbone_clips": clips,
            "null_backbone_profile": _SMALL.profile}


def decode_beside_a_busy_thread(folder: Path, clips: int) -> dict:
    """Clips/s of one decode worker, process or thread, while this thread runs Python (as the thread that drives
    the GPU and hands clips to the writer does): the GIL is what the process default avoids."""
    paths = [path for path in _small_clips(folder, 4) for _ in range(clips // 4)]
    rates = {}
    for mode in ("processes", "threads"):
        pool = DecodePool(_SMALL, 1, mode, make_views=True)
        try:
            pool.submit(paths[0], None).result()  # started and warm
            started = time.perf_counter()
            futures = [pool.submit(path, None) for path in paths]
            while not all(future.done() for future in futures):
                sum(i * i for i in range(2000))  # pure Python: holds the GIL between switches
            rates[mode] = len(paths) / (time.perf_counter() - started)
        finally:
            pool.close()
    return {"decode_clips_per_s_beside_busy_thread": {mode: round(rate, 2) for mode, rate in rates.items()},
            "decode_processes_vs_threads_beside_busy_thread": round(rates["processes"] / rates["threads"], 2)}


def startup_200k(folder: Path, rows: int, timeout_s: float) -> dict:
    """Run the child (`--startup-child`) over a `rows`-row manifest; its JSON line, plus the store's metadata size."""
    manifest = _manifest(folder, _small_clips(folder, 4), rows)
    out = folder / "s200k.zarr"
    shutil.rmtree(out, ignore_errors=True)
    child = subprocess.run([sys.executable, __file__, "--startup-child", str(manifest), str(out)],
                           capture_output=True, text=True, timeout=timeout_s + 60)
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"startup_s_200k": None, "peak_rss_mb_200k": None, "startup_note": child.stderr[-500:]}
    result = json.loads(lines[-1])
    metadata = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()
                   and not set(f.relative_to(out).parts[:1]) & set(_TOKEN_ARRAYS))
    shutil.rmtree(out, ignore_errors=True)
    return {**result, "metadata_bytes_per_clip_200k": round(metadata / rows, 2), "rows_200k": rows}


def _startup_child(manifest: Path, out: Path, linger_s: float = 3.0, timeout_s: float = 120.0) -> None:
    """Runs run_extraction, prints seconds to the first extracted batch and the peak RSS, and stops."""
    started = time.perf_counter()

    def run() -> None:
        with null_backbones():
            run_extraction(RunnerConfig(videos=manifest, out=out, extract=_SMALL, progress=False))

    with _forward_log() as log:
        threading.Thread(target=run, daemon=True).start()
        log.first.wait(timeout_s)
        time.sleep(linger_s)  # the run goes on for a moment: memory of the running pipeline, not only its start
    report = {"startup_s_200k": round(log.times[0] - started, 2) if log.times else None,
              "peak_rss_mb_200k": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "startup_stopped_after_s": round(time.perf_counter() - started, 2)}
    print(json.dumps(report), flush=True)
    os._exit(0)  # stopped mid-run, as a killed extract would be; the decode processes follow their owner


def _decode_vs_ffmpeg(quick: bool) -> dict:
    try:
        return {"decode_720p_vs_ffmpeg": decode_720p_vs_ffmpeg(quick)}
    except RuntimeError as error:  # no ffmpeg on this machine: the other figures still stand
        return {"decode_720p_vs_ffmpeg": None, "decode_note": str(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and repeats (about a minute)")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--startup-child", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup_child:
        _startup_child(Path(args.startup_child[0]), Path(args.startup_child[1]))
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        folder = Path(scratch)
        result = {
            **write_ms_per_clip(folder, clips=64 if args.quick else 256, repeats=2 if args.quick else 3),
            **_decode_vs_ffmpeg(args.quick),
            **host_to_device_bytes(folder),
            **block_ratio(folder, blocks=3 if args.quick else 8, repeats=2 if args.quick else 3),
            **decode_beside_a_busy_thread(folder, clips=4 if args.quick else 24),
            **startup_200k(folder, rows=200_000, timeout_s=120),
        }
    result.update({"quick": args.quick, "seconds": round(time.perf_counter() - started, 1),
                   "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
                   "machine": platform.processor() or platform.machine(), "torch": torch.__version__})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
