"""End-to-end extraction throughput on this machine, and how well decoding overlaps the backbones.

Three measurements in one process on the same clips:
1. decode only: `ClipExtractor._prepare` per clip (decode, views, fbank), serially;
2. forward only: `ClipExtractor._forward` on the already-decoded clips, in the extractor's batch size;
3. the pipeline: `ClipExtractor.extract_many` (decode threads + prefetch overlapping the forwards);
4. the run itself: `features.runner.run_extraction` into a fresh store (start-up, backbones built, writes).
The overlap ratio is (decode + forward) / pipeline time: 1.0 means no overlap, 2.0 would hide all of the
shorter stage (the stages' sum is the time a pipeline without prefetch would need).

    python bench/extract_throughput.py [--clips 48] [--profile cpu-small] [--workers 1]

The private `_prepare` / `_forward` are used on purpose: they are exactly the two halves of the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from curate.config import SyntheticConfig  # noqa: E402
from curate.synthetic import make_synthetic  # noqa: E402
from extract.config import ExtractConfig  # noqa: E402
from extract.pipeline import ClipExtractor  # noqa: E402
from features.config import RunnerConfig  # noqa: E402
from features.runner import build_extract_config, run_extraction  # noqa: E402
from features.store import package_versions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48, help="clips of the synthetic benchmark to extract")
    parser.add_argument("--profile", default="cpu-small")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder (removed)")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mzst_extract_bench_"))
    data = work / "data"
    if not (data / "manifest.csv").exists():
        classes = max(2, args.clips // 8)
        make_synthetic(SyntheticConfig(out_dir=data, classes=classes, clips_per_class=max(1, args.clips // classes),
                                       seconds=4.0, unseen_fraction=0.25))
    manifest = data / "manifest.csv"
    extract_dict = build_extract_config(args.profile)
    extractor = ClipExtractor(ExtractConfig.from_dict(extract_dict))
    paths = sorted(data.rglob("*.mp4"))

    extractor._forward([extractor._prepare(paths[0])])  # warm-up
    started = time.perf_counter()
    prepared = [extractor._prepare(p) for p in paths]
    decode_s = time.perf_counter() - started
    ready = [p for p in prepared if not isinstance(p, Exception)]
    per_batch = extractor._clips_per_batch
    started = time.perf_counter()
    for start in range(0, len(ready), per_batch):
        extractor._forward(ready[start:start + per_batch])
    forward_s = time.perf_counter() - started

    started = time.perf_counter()
    for _ in extractor.extract_many(paths):
        pass
    pipeline_s = time.perf_counter() - started

    store = work / "bench.zarr"
    shutil.rmtree(store, ignore_errors=True)
    summary = run_extraction(RunnerConfig(videos=manifest, out=store, extract=extract_dict, workers=args.workers,
                                          progress=False))
    store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(json.dumps({
        "bench": "extract_throughput", "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "versions": package_versions(), "profile": args.profile, "workers": args.workers, "clips": len(paths),
        "decode_only_clips_per_s": round(len(paths) / decode_s, 2),
        "forward_only_clips_per_s": round(len(ready) / forward_s, 2),
        "pipeline_clips_per_s": round(len(paths) / pipeline_s, 2),
        "overlap_ratio_sum_over_pipeline": round((decode_s + forward_s) / pipeline_s, 3),
        "runner_clips_per_s_incl_startup_and_writes": round(len(paths) / summary.seconds, 2),
        "store_bytes_per_done_clip": round(store_bytes / max(summary.done, 1)),
    }))
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
