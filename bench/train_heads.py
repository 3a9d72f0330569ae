"""Training throughput of every method (mzst and each registered comparison head) on two store layouts, one run.

Builds two stores of random tokens through the store API (labels from a shipped class list, so the default GloVe
embeddings apply), then trains every method on each with `fusion.trainer.train` for `--epochs` epochs without
validation; the first epoch is warm-up, the others are timed from `log.jsonl`:

- "paper": the extracted tokens of the default profile (`bench/fusion_step.py`'s LAYOUTS["paper"]: 12 views of
  17 x 768 video tokens, 98 x 768 audio tokens, Kinetics logits; 4 temporal views x 3 crops and AST's 12 x 8 grid,
  which TCaF's time steps read);
- "avca": AVCA-GZSL's 512-d per-clip features as `import-avca` stores them (one view, one 512-d token per
  modality, no Kinetics logits, `source` "avca-h5"), the input of the peers' published numbers.

Per method and layout: clips/s end to end (data + step) and for the step alone, the parameters, and the wall time
of the whole run (a comparison head first reduces every training clip to its per-clip vectors,
`fusion.heads.inputs`, once per run). An MZST epoch is one pass over the clips; a comparison head's is
`--n-batches` class-balanced batches (AVCA-GZSL's `n_batches`), so the clips of an epoch differ, the clips/s do not
depend on it. The MZST head on the "avca" store trains without the phi(s_v) term (the store has no Kinetics
logits). Prints one JSON line with the load average before and after.

    python bench/train_heads.py                                        # CPU, < 3 minutes on 2 cores
    python bench/train_heads.py --device cuda --clips 4096 --batch-size 256 --n-batches 100   # train_heads_gpu.sh
"""

from __future__ import annotations

import argparse
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
from features.store import TokenStore  # noqa: E402
from fusion.config import train_config_from_options  # noqa: E402
from fusion.heads import list_heads  # noqa: E402
from fusion.trained_run import load_run  # noqa: E402
from fusion.trainer import train  # noqa: E402

# The token layouts: "paper" as bench/fusion_step.py LAYOUTS["paper"] (V, Nv, Dv, Na, Da); "avca" as import-avca writes.
LAYOUTS = {
    "paper": TokenLayout(views=12, video_tokens=17, video_dim=768, audio_tokens=98, audio_dim=768,
                         kinetics_classes=400, crops=3, temporal_views=4, video_token_grid=(4, 2, 2),
                         audio_token_grid=(12, 8)),  # the default extraction's grids (TCaF's time steps read them)
    "avca": TokenLayout(views=1, video_tokens=1, video_dim=512, audio_tokens=1, audio_dim=512, kinetics_classes=0,
                        source="avca-h5"),
}
_CLASSES = Path(__file__).resolve().parents[1] / "data" / "classlists" / "ucf101.txt"


def _make_store(path: Path, layout: TokenLayout, clips: int, classes: int, seed: int) -> TokenStore:
    names = _CLASSES.read_text(encoding="utf-8").splitlines()[:classes]
    records = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), names[i % classes], "seen") for i in range(clips)]
    store = TokenStore.create(path, records, layout, {"profile": "bench"}, {"weights": "random"})
    rng = np.random.default_rng(seed)
    for start, stop in store.block_ranges():
        tokens = []
        for i in range(start, stop):
            fields = {"video_tokens": rng.normal(size=(layout.views, layout.video_tokens, layout.video_dim)),
                      "audio_tokens": rng.normal(size=(layout.audio_tokens, layout.audio_dim)),
                      "has_audio": i % 10 != 0, "audio_frames": 500}
            fields = {k: v.astype(np.float16) if isinstance(v, np.ndarray) else v for k, v in fields.items()}
            if layout.kinetics_classes:
                fields["kinetics_logits"] = rng.normal(size=(layout.views, 400)).astype(np.float32)
            tokens.append(SimpleNamespace(**fields))
        store.write_clips(list(range(start, stop)), tokens)
    return TokenStore.open(path)


def _train(store: TokenStore, out: Path, method: str, layout: str, args) -> dict:
    options = {"store": store.path, "out": out, "method": method, "epochs": args.epochs, "batch_size": args.batch_size,
               "device": args.device, "seed": args.seed, "progress": False, "log_every_steps": 10**6}
    preset = None
    if method == "mzst":
        options["warmup_epochs"] = 0.0
        preset = args.mzst_preset
        if not LAYOUTS[layout].kinetics_classes:
            options["se_target"] = "class"  # no Kinetics logits, so no phi(s_v) term
    else:
        options["n_batches"] = args.n_batches
    started = time.perf_counter()
    train(train_config_from_options(options, preset=preset))
    wall = time.perf_counter() - started
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][1:]
    timed = sum(line["clips"] for line in lines)
    step_s = sum(line["step_time_s"] for line in lines)
    data_s = sum(line["data_time_s"] for line in lines)
    model, _ = load_run(out, "last", "cpu")
    return {"train_clips_per_s": round(timed / (step_s + data_s), 1), "step_clips_per_s": round(timed / step_s, 1),
            "clips_per_timed_epoch": timed // len(lines), "run_wall_s": round(wall, 1),
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated (default: mzst and every registered head)")
    parser.add_argument("--layouts", default="paper,avca", help=f"of {', '.join(LAYOUTS)}")
    parser.add_argument("--clips", type=int, default=64, help="clips in each temporary store")
    parser.add_argument("--classes", type=int, default=20, help="training classes (UCF-101 names)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-batches", type=int, default=20, help="a comparison head's batches per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs; the first is warm-up")
    parser.add_argument("--mzst-preset", default="default", help="the MZST head's size (fusion.config.PRESETS)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: common/threads.py's rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="folder for the temporary stores (default: the system's)")
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first one is warm-up)")
    methods = [m for m in args.methods.split(",") if m] or ["mzst", *list_heads()]
    layouts = [name for name in args.layouts.split(",") if name]
    set_requested_threads(args.threads or None)
    apply_thread_plan(plan_threads(1))
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="train_heads_", dir=args.tmp) as folder:
        for layout in layouts:
            started = time.perf_counter()
            store = _make_store(Path(folder) / f"{layout}.zarr", LAYOUTS[layout], args.clips, args.classes, args.seed)
            results[layout] = {"store_build_s": round(time.perf_counter() - started, 1)}
            for method in methods:
                results[layout][method] = _train(store, Path(folder) / f"{layout}-{method}", method, layout, args)
    print(json.dumps({
        "bench": "train_heads",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "zarr": importlib.metadata.version("zarr"), "numpy": np.__version__},
        "settings": {"methods": methods, "clips": args.clips, "classes": args.classes, "batch_size": args.batch_size,
                     "n_batches": args.n_batches, "timed_epochs": args.epochs - 1, "mzst_preset": args.mzst_preset,
                     "layouts": {name: {k: getattr(LAYOUTS[name], k) for k in ("views", "video_tokens", "video_dim",
                                                                              "audio_tokens", "audio_dim",
                                                                              "kinetics_classes", "source")}
                                 for name in layouts},
                     "autocast": "bf16" if args.device == "cuda" else "off (fp32)"},
        "results": results,
        "load_average_1_5_15min": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]},
    }))


if __name__ == "__main__":
    main()
