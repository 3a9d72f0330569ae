"""The cost of the store's integrity check and identity, against opening the store and its summary.

`TokenStore.damaged_clips()` stats every done clip's chunk files (no token read) and runs at each `inspect` and
each `extract` resume; `TokenStore.identity` hashes the clip list and runs when a run is trained or evaluated.
Both are timed beside the baseline every command pays anyway, `TokenStore.open` plus `summary()`, in the same
process on the same store, filled through the store API at the cpu-small layout.

    python bench/store_checks.py [--clips 5000] [--out /tmp/store_checks]

Prints one JSON line.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extract.config import PROFILES  # noqa: E402
from extract.pipeline import ClipExtractor  # noqa: E402
from features.config import StoreConfig  # noqa: E402
from features.manifest import ManifestRow  # noqa: E402
from features.store import TokenStore, package_versions  # noqa: E402


def _fill(path: Path, clips: int) -> None:
    layout = ClipExtractor(dataclasses.replace(PROFILES["cpu-small"], device="cpu", random_init=True)).token_layout()
    rng = np.random.default_rng(0)
    tokens = SimpleNamespace(
        video_tokens=rng.standard_normal(layout.shape("video_tokens")).astype(np.float16),
        audio_tokens=rng.standard_normal(layout.shape("audio_tokens")).astype(np.float16),
        kinetics_logits=rng.standard_normal(layout.shape("kinetics_logits")).astype(np.float32),
        has_audio=True, audio_frames=998, decoded_s=None)
    rows = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), f"class{i % 20}", "seen") for i in range(clips)]
    store = TokenStore.create(path, rows, layout, {}, {}, StoreConfig())
    for start, stop in store.block_ranges():
        store.write_clips(list(range(start, stop)), [tokens] * (stop - start))


def _median_s(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/store_checks"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    path = args.out / "store.zarr"
    _fill(path, args.clips)
    load_before = os.getloadavg()[0]
    baseline = _median_s(lambda: TokenStore.open(path).summary(), args.repeats)
    store = TokenStore.open(path)
    damaged = _median_s(store.damaged_clips, args.repeats)
    identity = _median_s(lambda: TokenStore.open(path).identity, args.repeats)
    print(json.dumps({
        "bench": "store_checks", "clips": args.clips, "repeats": args.repeats, "platform": platform.platform(),
        "versions": package_versions(), "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "open_and_summary_s": round(baseline, 4), "damaged_clips_s": round(damaged, 4),
        "damaged_clips_us_per_clip": round(1e6 * damaged / args.clips, 1),
        "damaged_clips_vs_open_and_summary": round(damaged / baseline, 2),
        "identity_with_open_s": round(identity, 4),
    }))
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
