"""Token stores at dataset scale: files per clip, `inspect`, training start-up and reader speed, before and after.

Two stores of the same clips are filled through the store API (as `bench/store_checks.py`, no extraction): "before"
in one file per clip and token array with blocks of 32 clips and without the recorded s_v (a store made before
them), "after" in the default layout (one shard file per token array and block). In the same process, on a warm page
cache, it times:

- `inspect`: before = `summary(disk_usage=True)` (what `inspect` did: walk every file); also the old-layout store
  with sizes from the metadata; after = `summary()` of the sharded store;
- training start-up's s_v: before = every training clip's Kinetics logits read and reduced, 4,096 clips at a time
  (as `fusion.trainer.ClassTargets` does for a store without the recorded s_v); after = the recorded array;
- the trainer's reader: shuffled batches of one view of video tokens, the audio tokens and `has_audio`; before also
  reads `has_audio` per batch, as the reader did (and the old-layout store with today's reader, to part the two).

    python bench/store_scale.py --clips 20000 --layout cpu-small
    python bench/store_scale.py --clips 175000 --layout reduced   # file counts and inspect do not depend on widths

Prints one JSON line; deletes the stores at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract.outputs import TokenLayout  # noqa: E402
from features.config import StoreConfig  # noqa: E402
from features.manifest import ManifestRow  # noqa: E402
from features.reader import BatchReader  # noqa: E402
from features.store import TokenStore, package_versions  # noqa: E402
from fusion.losses import kinetics_class  # noqa: E402

# Token widths cut to a few bytes (for 175k clips on a shared disk); K stays 400, so s_v costs what it does.
REDUCED = TokenLayout(views=2, video_tokens=1, video_dim=8, audio_tokens=1, audio_dim=8, kinetics_classes=400)


def _layout(name: str) -> TokenLayout:
    if name == "reduced":
        return REDUCED
    from extract.config import PROFILES
    from extract.pipeline import ClipExtractor

    return ClipExtractor(dataclasses.replace(PROFILES["cpu-small"], device="cpu", random_init=True)).token_layout()


def _fill(path: Path, layout: TokenLayout, clips: int, store_config: StoreConfig) -> float:
    rng = np.random.default_rng(0)
    tokens = [SimpleNamespace(
        video_tokens=rng.standard_normal(layout.shape("video_tokens")).astype(np.float16),
        audio_tokens=rng.standard_normal(layout.shape("audio_tokens")).astype(np.float16),
        kinetics_logits=rng.standard_normal(layout.shape("kinetics_logits")).astype(np.float32),
        has_audio=bool(i % 5), audio_frames=998, decoded_s=None) for i in range(16)]
    rows = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), f"class{i % 300}", "seen") for i in range(clips)]
    started = time.perf_counter()
    store = TokenStore.create(path, rows, layout, {}, {}, store_config)
    for start, stop in store.block_ranges():
        store.write_clips(list(range(start, stop)), [tokens[i % 16] for i in range(start, stop)])
    return time.perf_counter() - started


def _count(path: Path) -> dict[str, int]:
    files = folders = 0
    for _, dirs, names in os.walk(path):
        files += len(names)
        folders += len(dirs)
    return {"files": files, "folders": folders}


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _kinetics_from_logits(store: TokenStore, index: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, index.size, 4096):
        logits = torch.from_numpy(store.read(index[start:start + 4096], ["kinetics_logits"])["kinetics_logits"])
        out.append(kinetics_class(logits).numpy())
    return np.concatenate(out)


def _reader_clips_per_s(store: TokenStore, clips: int, batches: int, per_batch_scalars: bool) -> float:
    index = np.arange(store.num_clips)
    reader = BatchReader(store, index, batch_size=64, shuffle=True, seed=1, prefetch=2,
                         fields=("video_tokens", "audio_tokens", "has_audio"), float16=True)
    if per_batch_scalars:
        reader._scalars = {}  # noqa: SLF001 - as the reader did before: `has_audio` read with every batch
    views = [np.random.default_rng(i).integers(0, store.token_layout.views, len(b))
             for i, b in enumerate(reader.batch_indices())]
    reader.set_epoch(0, views)
    started, seen = time.perf_counter(), 0
    for n, batch in enumerate(reader):
        seen += len(batch)
        if n + 1 >= batches:
            break
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20000)
    parser.add_argument("--layout", choices=("cpu-small", "reduced"), default="cpu-small")
    parser.add_argument("--batches", type=int, default=100, help="reader batches of 64 timed per store")
    parser.add_argument("--out", type=Path, default=Path("/tmp/store_scale"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    layout = _layout(args.layout)
    paths = {"before": args.out / "before.zarr", "after": args.out / "after.zarr"}
    load = [os.getloadavg()[0]]
    fill = {"before": _fill(paths["before"], layout, args.clips, StoreConfig(clips_per_block=32, shard_blocks=False)),
            "after": _fill(paths["after"], layout, args.clips, StoreConfig())}
    del zarr.open_group(str(paths["before"]), mode="r+")["kinetics_class"]  # as stores made before it
    load.append(os.getloadavg()[0])
    result: dict = {"bench": "store_scale", "clips": args.clips, "layout": args.layout,
                    "token_layout": {k: v for k, v in layout.to_dict().items() if k in ("V", "Nv", "Dv", "Na", "Da")},
                    "platform": platform.platform(), "versions": package_versions(),
                    "fill_s": {k: round(v, 1) for k, v in fill.items()}}
    for name, path in paths.items():
        counts = _count(path)
        result[f"files_{name}"] = counts
        result[f"inodes_per_clip_{name}"] = round((counts["files"] + counts["folders"]) / args.clips, 4)
    result["inspect_before_walk_s"], _ = _timed(lambda: TokenStore.open(paths["before"]).summary(disk_usage=True))
    result["inspect_before_layout_metadata_s"], _ = _timed(lambda: TokenStore.open(paths["before"]).summary())
    result["inspect_after_s"], summary = _timed(lambda: TokenStore.open(paths["after"]).summary())
    assert summary["damaged"] == 0 and summary["done"] == args.clips
    train = np.arange(args.clips)
    result["startup_sv_before_s"], before_sv = _timed(lambda: _kinetics_from_logits(TokenStore.open(paths["before"]),
                                                                                      train))
    result["startup_sv_after_s"], after_sv = _timed(lambda: TokenStore.open(paths["after"]).kinetics_classes(train))
    assert np.array_equal(before_sv, after_sv)
    for name, path, per_batch in (("before", paths["before"], True), ("after", paths["after"], False),
                                  ("old_layout_new_reader", paths["before"], False)):
        store = TokenStore.open(path)
        _reader_clips_per_s(store, args.clips, 5, per_batch)  # warm-up
        result[f"reader_clips_per_s_{name}"] = round(_reader_clips_per_s(store, args.clips, args.batches, per_batch),
                                                     1)
    load.append(os.getloadavg()[0])
    for key in [k for k, v in result.items() if k.endswith("_s") and isinstance(v, float)]:
        result[key] = round(result[key], 3)
    result["ratios"] = {
        "inodes": round(result["inodes_per_clip_before"] / result["inodes_per_clip_after"], 1),
        "inspect": round(result["inspect_before_walk_s"] / result["inspect_after_s"], 1),
        "startup_sv": round(result["startup_sv_before_s"] / max(result["startup_sv_after_s"], 1e-6), 1),
        "reader": round(result["reader_clips_per_s_after"] / result["reader_clips_per_s_before"], 2)}
    result["load_average_1m"] = [round(x, 2) for x in load]
    print(json.dumps(result))
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
