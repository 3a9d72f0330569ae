"""Training throughput of the fusion head (clips/s), through the real trainer on a temporary token store.

Builds a store of random tokens in the requested layout (labels from a shipped class list, so the default GloVe
embeddings apply), runs `fusion.trainer.train` for `--epochs` epochs without validation, discards the first
epoch (warm-up) and reports the mean of the others from `log.jsonl`: clips/s end to end (data reading + step)
and for the step alone (forward, backward, update). Prints one JSON line.

    python bench/fusion_step.py --preset default --layout paper
    python bench/fusion_step.py --preset demo --layout cpu-small --clips 150
    python bench/fusion_step.py --preset default --layout paper --device cuda --clips 2048 --batch-size 64
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

from extract.outputs import TokenLayout  # noqa: E402
from features.manifest import ClipRecord  # noqa: E402
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
    records = [ClipRecord(f"c{i}", Path(f"/c{i}.mp4"), names[i % classes], "seen") for i in range(clips)]
    layout = TokenLayout(views=v, video_tokens=nv, video_dim=dv, audio_tokens=na, audio_dim=da, kinetics_classes=400)
    store = TokenStore.create(path, records, layout, {"profile": "bench"}, {"weights": "random"})
    rng = np.random.default_rng(seed)
    for start, stop in store.block_ranges():
        tokens = [SimpleNamespace(
            video_tokens=rng.normal(size=(v, nv, dv)).astype(np.float16),
            audio_tokens=rng.normal(size=(na, da)).astype(np.float16),
            kinetics_logits=rng.normal(size=(v, 400)).astype(np.float32),
            has_audio=i % 10 != 0, audio_frames=500) for i in range(start, stop)]
        store.write_clips(list(range(start, stop)), tokens)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="head size")
    parser.add_argument("--ablation", action="append", default=[], help="ablation name(s) of fusion.config")
    parser.add_argument("--layout", default="paper", help=f"{', '.join(LAYOUTS)} or V,Nv,Dv,Na,Da")
    parser.add_argument("--clips", type=int, default=256, help="clips in the temporary store")
    parser.add_argument("--classes", type=int, default=20, help="training classes (UCF-101 names)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="epochs; the first is warm-up")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first one is warm-up)")
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = _layout(args.layout)
    fusion: FusionConfig = apply_ablations(PRESETS[args.preset], args.ablation)
    load_before = os.getloadavg()[0]  # other processes on the machine slow a CPU figure down: record them
    with tempfile.TemporaryDirectory(prefix="fusion_step_") as folder:
        started = time.perf_counter()
        store = _make_store(Path(folder) / "store.zarr", layout, args.clips, args.classes, args.seed)
        store_s = time.perf_counter() - started
        config = TrainConfig(store=store.path, out=Path(folder) / "run", fusion=fusion, epochs=args.epochs,
                             batch_size=args.batch_size, device=args.device, seed=args.seed, progress=False,
                             warmup_epochs=0.0)
        train(config)
        lines = [json.loads(line) for line in (config.out / "log.jsonl").read_text().splitlines()][1:]
        dims = json.loads((config.out / "config.json").read_text())["dims"]
    timed_clips = sum(line["clips"] for line in lines)
    step_s = sum(line["step_time_s"] for line in lines)
    data_s = sum(line["data_time_s"] for line in lines)
    parameters = count_parameters(build_model(fusion, ModelDims(**dims)))
    print(json.dumps({
        "bench": "fusion_step",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "zarr": importlib.metadata.version("zarr"), "numpy": np.__version__},
        "settings": {"preset": args.preset, "ablations": args.ablation, "layout": dict(zip(
            ("V", "Nv", "Dv", "Na", "Da"), layout, strict=True)), "clips": args.clips, "classes": args.classes,
            "batch_size": args.batch_size, "timed_epochs": len(lines), "fusion": dataclasses.asdict(fusion),
            "parameters": parameters, "autocast": "bf16" if args.device == "cuda" else "off (fp32)"},
        "results": {
            "train_clips_per_s": round(timed_clips / (step_s + data_s), 2),
            "step_clips_per_s": round(timed_clips / step_s, 2),
            "data_share": round(data_s / (step_s + data_s), 3),
            "store_build_s": round(store_s, 1),
        },
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    main()
