"""Token store I/O: bytes per clip under each compressor, and trainer-reader batches/s against plain numpy.

The baseline is what peers write (video_features: one .npy file per clip and modality), read with
`np.load` for the same clips in the same order, in the same process.

    python bench/store_io.py [--source STORE] [--clips 256] [--batch-size 64] [--out /tmp/store_io]

Without --source, tokens are random normal at the paper profile's default layout: such data compresses
worse than real tokens, so the compression ratio is a lower bound; with --source, the clips of an existing
store are replicated.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract.outputs import TokenLayout  # noqa: E402
from features.config import StoreConfig  # noqa: E402
from features.manifest import ManifestRow  # noqa: E402
from features.reader import BatchReader  # noqa: E402
from features.store import TokenStore, package_versions  # noqa: E402

PAPER_LAYOUT = TokenLayout(views=12, video_tokens=17, video_dim=768, audio_tokens=98, audio_dim=768,
                           kinetics_classes=400, crops=3, temporal_views=4)


def _source_tokens(source: str | None, clips: int, seed: int):
    if source is None:
        rng = np.random.default_rng(seed)
        layout = PAPER_LAYOUT
        base = [SimpleNamespace(
            video_tokens=rng.standard_normal(layout.shape("video_tokens")).astype(np.float16),
            audio_tokens=rng.standard_normal(layout.shape("audio_tokens")).astype(np.float16),
            kinetics_logits=rng.standard_normal(layout.shape("kinetics_logits")).astype(np.float32),
            has_audio=True, audio_frames=998) for _ in range(min(clips, 16))]
        return layout, "random-normal", base
    store = TokenStore.open(source)
    done = store.indices()[:16]
    data = store.read(done)
    base = [SimpleNamespace(**{k: v[i] for k, v in data.items()}) for i in range(len(done))]
    return store.token_layout, f"store:{source}", base


def _write_store(path: Path, layout: TokenLayout, base: list, clips: int, store_config: StoreConfig) -> float:
    records = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), "x", "seen") for i in range(clips)]
    store = TokenStore.create(path, records, layout, {}, {}, store_config)
    started = time.perf_counter()
    for start, stop in store.block_ranges():
        store.write_clips(list(range(start, stop)), [base[i % len(base)] for i in range(start, stop)])
    return time.perf_counter() - started


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="replicate the done clips of this store (default: random tokens)")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the clips (after one warm-up)")
    parser.add_argument("--out", default="/tmp/mzst_store_io")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    layout, data_kind, base = _source_tokens(args.source, args.clips, args.seed)
    raw_bytes = sum(getattr(base[0], name).nbytes for name in ("video_tokens", "audio_tokens", "kinetics_logits")
                    if hasattr(base[0], name))

    compression = {}
    for name, store_config in {
        "none": StoreConfig(compressor="none"),  # shards of a block, the default
        "none-one-file-per-clip": StoreConfig(compressor="none", shard_blocks=False),
        "zstd-1": StoreConfig(compressor="zstd", compression_level=1),
        "zstd-3": StoreConfig(compressor="zstd", compression_level=3),
        "zstd-1-sharded": StoreConfig(compressor="zstd", compression_level=1, shard_blocks=True),
    }.items():
        seconds = _write_store(out / f"{name}.zarr", layout, base, args.clips, store_config)
        per_clip = _folder_bytes(out / f"{name}.zarr") / args.clips
        compression[name] = {"bytes_per_clip": round(per_clip), "ratio": round(raw_bytes / per_clip, 3),
                             "write_clips_per_s": round(args.clips / seconds, 1)}

    # Reader: the default store vs one .npy per clip and modality read with np.load.
    store = TokenStore.open(out / "none.zarr")
    npy = out / "npy"
    npy.mkdir()
    for i in range(args.clips):
        for name in ("video_tokens", "audio_tokens"):
            np.save(npy / f"c{i}_{name}.npy", getattr(base[i % len(base)], name))
    reader = BatchReader(store, np.arange(args.clips), args.batch_size, shuffle=True, seed=args.seed, prefetch=2,
                         fields=("video_tokens", "audio_tokens", "has_audio"))
    batch_orders = []

    def run_reader() -> float:
        started, batches = time.perf_counter(), 0
        for epoch in range(args.epochs):
            reader.set_epoch(epoch)
            for batch in reader:
                batches += 1
                batch.video_tokens.sum()  # touch the data, as a training step would
        return batches / (time.perf_counter() - started)

    def run_numpy() -> float:
        import torch

        started, batches = time.perf_counter(), 0
        for epoch in range(args.epochs):
            reader.set_epoch(epoch)
            for index in reader.batch_indices():
                video = np.stack([np.load(npy / f"c{i}_video_tokens.npy") for i in index])
                audio = np.stack([np.load(npy / f"c{i}_audio_tokens.npy") for i in index])
                torch.from_numpy(video).float().sum()
                torch.from_numpy(audio).float()
                batches += 1
        batch_orders.append(batches)
        return batches / (time.perf_counter() - started)

    run_reader(), run_numpy()  # warm-up (page cache, zarr codec pipeline)
    reader_rate, numpy_rate = run_reader(), run_numpy()
    print(json.dumps({
        "bench": "store_io", "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
        "versions": package_versions(), "data": data_kind, "layout": layout.to_dict(), "clips": args.clips,
        "raw_token_bytes_per_clip": raw_bytes, "compression": compression,
        "reader": {"batch_size": args.batch_size, "batchreader_batches_per_s": round(reader_rate, 2),
                   "numpy_npy_files_batches_per_s": round(numpy_rate, 2),
                   "ratio_reader_over_numpy": round(reader_rate / numpy_rate, 3)},
    }))


if __name__ == "__main__":
    main()
