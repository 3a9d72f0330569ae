"""Generation speed of the synthetic benchmark (`curate.synthetic.make_synthetic`), clips per second.

Warms up with a tiny benchmark (imports, spawned workers' first use), then times the configured one for each
worker count in the same process; one JSON line.

    python bench/synthetic_speed.py                      # the demo's default: 24 classes x 8 clips of ~4 s
    python bench/synthetic_speed.py --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.config import SyntheticConfig  # noqa: E402
from curate.synthetic import make_synthetic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=24)
    parser.add_argument("--clips-per-class", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="synthetic_speed_") as work:
        for workers in args.workers:
            make_synthetic(SyntheticConfig(out_dir=Path(work) / f"warm{workers}", classes=4,
                                                               clips_per_class=1, seconds=1.0, workers=workers))
            summary = make_synthetic(SyntheticConfig(
                out_dir=Path(work) / f"run{workers}", classes=args.classes, clips_per_class=args.clips_per_class,
                seconds=args.seconds, workers=workers))
            size = sum(p.stat().st_size for p in summary.out_dir.rglob("*.mp4"))
            results[f"workers{workers}"] = {"elapsed_s": round(summary.elapsed_s, 2),
                                            "clips_per_s": round(summary.n_clips / summary.elapsed_s, 2),
                                            "mp4_mib": round(size / 2**20, 2)}
    print(json.dumps({
        "bench": "synthetic_speed", "device": f"cpu ({os.cpu_count()} cores, {platform.machine()})",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "pyav": av.__version__},
        "settings": {"classes": args.classes, "clips_per_class": args.clips_per_class, "seconds": args.seconds,
                     "clips": args.classes * args.clips_per_class},
        "results": results,
    }))


if __name__ == "__main__":
    main()
