"""Training throughput of the fusion head: bytes read per clip, the reader alone, and the step, in one run.

Builds a store of random tokens in the requested layout (labels from a shipped class list, so the default GloVe
embeddings apply), then, in the same process:

- reader: clips/s of `features.reader.BatchReader` alone, the old way (all V views and the Kinetics logits,
  fp16 -> fp32 on the CPU) against the new (the one view a step trains on, fp16 handed over; s_v is computed once
  per clip before training), and the bytes each hands to the device per clip;
- step: for every head (`--presets`) and batch size (`--batch-sizes`), `fusion.trainer.train` for `--epochs`
  epochs without validation; the first epoch is warm-up (and compilation), the others are timed from
  `log.jsonl`: clips/s end to end (data + step) and for the step alone (forward, backward, update; CUDA events on
  a GPU). On CUDA also the share of the card's bf16 rate the step reaches (MFU: model FLOPs of a forward and
  backward, counted by `torch.utils.flop_counter`, per second, over `--peak-tflops`).

Prints one JSON line.

    python bench/fusion_step.py --presets demo --layout cpu-small --clips 256 --batch-sizes 64
    python bench/fusion_step.py --presets demo,default --layout paper --device cuda --clips 8192 \\
        --batch-sizes 64,512,1024 --resident-store auto --compile      # bench/fusion_step_gpu.sh
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.threads import apply_thread_plan, plan_threads, set_requested_threads  # noqa: E402
from extract.outputs import TokenLayout  # noqa: E402
from features.manifest import ManifestRow  # noqa: E402
from features.reader import BatchReader  # noqa: E402
from features.store import TokenStore  # noqa: E402
from fusion.config import PRESETS, FusionConfig, TrainConfig, apply_ablations  # noqa: E402
from fusion.model import ModelDims, build_model, count_parameters  # noqa: E402
from fusion.trainer import train  # noqa: E402

# Token layouts (V, Nv, Dv, Na, Da) of the extraction profiles' pooled tokens, as
# `extract.pipeline.ClipExtractor(PROFILES[name]).token_layout()` reports them (not built here: the paper
# profile's backbones need weights). "paper": 3 crops x 4 views, CLS + a 4x2x2 grid of mvit_v2_s (768); AST CLS +
# DIST + 12 x 8 (768). "cpu-small": 1 crop x 2 views of mvit_tiny (384); ast_tiny (192).
LAYOUTS = {
    "paper": (12, 17, 768, 98, 768),
    "cpu-small": (2, 17, 384, 98, 192),
}
_CLASSES = Path(__file__).resolve().parents[1] / "data" / "classlists" / "ucf101.txt"
_FIELDS = ("video_tokens", "audio_tokens", "has_audio", "kinetics_logits")


def _layout(text: str) -> tuple[int, ...]:
    if text in LAYOUTS:
        return LAYOUTS[text]
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 5:
        raise SystemExit(f"--layout takes a name ({', '.join(LAYOUTS)}) or V,Nv,Dv,Na,Da, got {text!r}")
    return values


def _make_store(path: Path, layout: tuple[int, ...], clips: int, classes: int, seed: int) -> TokenStore:
    v, nv, dv, na, da = layout
    names = _CLASSES.read_text(encoding="utf-8").splitlines()[:classes]
    records = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), names[i % classes], "seen") for i in range(clips)]
    token_layout = TokenLayout(views=v, video_tokens=nv, video_dim=dv, audio_tokens=na, audio_dim=da,
                               kinetics_classes=400)
    store = TokenStore.create(path, records, token_layout, {"profile": "bench"}, {"weights": "random"})
    rng = np.random.default_rng(seed)
    for start, stop in store.block_ranges():
        tokens = [SimpleNamespace(
            video_tokens=rng.normal(size=(v, nv, dv)).astype(np.float16),
            audio_tokens=rng.normal(size=(na, da)).astype(np.float16),
            kinetics_logits=rng.normal(size=(v, 400)).astype(np.float32),
            has_audio=i % 10 != 0, audio_frames=500) for i in range(start, stop)]
        store.write_clips(list(range(start, stop)), tokens)
    return TokenStore.open(path)


def _reader_clips_per_s(store: TokenStore, batch_size: int, one_view: bool) -> dict:
    """The reader alone over every clip: the old way (all views, fp32 on the CPU) or the new (one view, fp16)."""
    fields = _FIELDS[:3] if one_view else _FIELDS  # s_v is now computed once per clip, not read per step
    reader = BatchReader(store, np.arange(store.num_clips), batch_size, shuffle=True, fields=fields,
                         float16=one_view)
    reader.set_epoch(1)
    views = [np.random.default_rng(k).integers(store.token_layout.views, size=len(b))
             for k, b in enumerate(reader.batch_indices())] if one_view else None
    reader.set_epoch(1, views=views)
    started, nbytes = time.perf_counter(), 0
    for batch in reader:
        nbytes += sum(getattr(batch, name).nbytes for name in fields)
    seconds = time.perf_counter() - started
    return {"clips_per_s": round(store.num_clips / seconds, 1),
            "bytes_to_device_per_clip": nbytes // store.num_clips}


def _flops_per_clip(fusion: FusionConfig, dims: ModelDims, layout: tuple[int, ...]) -> float:
    """Model FLOPs of one training forward + backward per clip (AV pass and, with MLM, the text pass), counted on
    the CPU (the count does not depend on the device)."""
    from torch.utils.flop_counter import FlopCounterMode

    v, nv, dv, na, da = layout
    model = build_model(fusion, dims)
    b = 8
    text = torch.randint(1, dims.vocab_size, (b, dims.max_text_tokens)) if fusion.uses_mlm else None
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(torch.randn(b, nv, dv), torch.randn(b, na, da), torch.ones(b, dtype=torch.bool), text)
        sum(t.float().sum() for t in vars(output).values() if isinstance(t, torch.Tensor)).backward()
    return counter.get_total_flops() / b


def _train_clips_per_s(store: TokenStore, folder: Path, fusion: FusionConfig, args, batch_size: int) -> dict:
    out = folder / f"run-{len(list(folder.glob('run-*')))}"
    config = TrainConfig(store=store.path, out=out, fusion=fusion, epochs=args.epochs, batch_size=batch_size,
                         device=args.device, seed=args.seed, progress=False, warmup_epochs=0.0,
                         resident_store=args.resident_store, compile=args.compile, log_every_steps=10**6)
    train(config)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    dims = ModelDims(**json.loads((out / "config.json").read_text())["dims"])
    timed = sum(line["clips"] for line in lines)
    step_s = sum(line["step_time_s"] for line in lines)
    data_s = sum(line["data_time_s"] for line in lines)
    result = {"batch_size": batch_size, "train_clips_per_s": round(timed / (step_s + data_s), 1),
              "step_clips_per_s": round(timed / step_s, 1), "data_share": round(data_s / (step_s + data_s), 3),
              "parameters": count_parameters(build_model(fusion, dims))}
    flops = _flops_per_clip(fusion, dims, _layout(args.layout))
    result["gflops_per_clip"] = round(flops / 1e9, 3)
    if args.device == "cuda":
        result["mfu"] = round(flops * timed / step_s / (args.peak_tflops * 1e12), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,default", help="head sizes, comma-separated")
    parser.add_argument("--ablation", action="append", default=[], help="ablation name(s) of fusion.config")
    parser.add_argument("--layout", default="paper", help=f"{', '.join(LAYOUTS)} or V,Nv,Dv,Na,Da")
    parser.add_argument("--clips", type=int, default=256, help="clips in the temporary store")
    parser.add_argument("--classes", type=int, default=20, help="training classes (UCF-101 names)")
    parser.add_argument("--batch-sizes", default="64", help="comma-separated")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--resident-store", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the head's forward")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the card's dense bf16 TFLOP/s for MFU (H100 / H200 SXM: 989)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: common/threads.py's rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="folder for the temporary store (default: the system's)")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first one is warm-up)")
    set_requested_threads(args.threads or None)
    apply_thread_plan(plan_threads(1))
    layout = _layout(args.layout)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    load_before = os.getloadavg()[0]  # other processes on the machine slow a CPU figure down: record them
    with tempfile.TemporaryDirectory(prefix="fusion_step_", dir=args.tmp) as folder:
        started = time.perf_counter()
        store = _make_store(Path(folder) / "store.zarr", layout, args.clips, args.classes, args.seed)
        store_s = time.perf_counter() - started
        old = _reader_clips_per_s(store, batch_sizes[0], one_view=False)  # before: all views, fp32 on the CPU
        new = _reader_clips_per_s(store, batch_sizes[0], one_view=True)
        steps = {}
        for preset in args.presets.split(","):
            fusion = apply_ablations(PRESETS[preset], args.ablation)
            steps[preset] = [_train_clips_per_s(store, Path(folder), fusion, args, b) for b in batch_sizes]
    print(json.dumps({
        "bench": "fusion_step",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "zarr": importlib.metadata.version("zarr"), "numpy": np.__version__},
        "settings": {"presets": args.presets, "ablations": args.ablation, "layout": dict(zip(
            ("V", "Nv", "Dv", "Na", "Da"), layout, strict=True)), "clips": args.clips, "classes": args.classes,
            "batch_sizes": batch_sizes, "timed_epochs": args.epochs - 1, "resident_store": args.resident_store,
            "compile": args.compile, "autocast": "bf16" if args.device == "cuda" else "off (fp32)",
            "fusion": {p: dataclasses.asdict(PRESETS[p]) for p in args.presets.split(",")}},
        "results": {
            "reader_all_views_fp32": old, "reader_one_view_fp16": new,
            "reader_speedup": round(new["clips_per_s"] / old["clips_per_s"], 2),
            "bytes_ratio": round(new["bytes_to_device_per_clip"] / old["bytes_to_device_per_clip"], 3),
            "step": steps, "store_build_s": round(store_s, 1),
        },
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    main()
