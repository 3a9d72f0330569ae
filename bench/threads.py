"""Demo training clips/s with a competing job on the cores: the thread rule's default against hand-set threads.

Starts a competing job (`--competing-threads` torch threads multiplying matrices, in its own process) and, while
it runs, trains the demo head in fresh processes, the settings interleaved round by round so that drift in the
machine's load hits them alike:

- "default": no OMP_NUM_THREADS, no --threads: common/threads.py's rule (torch beside the read-ahead thread);
- "omp1": OMP_NUM_THREADS=1, the hand-set figure the rule must reach (goal: default >= 0.8x of it);
- "torch-default": `--threads` = the usable cores, what torch chose by itself before the rule.

Each training run is `bench/fusion_step.py --presets demo --layout cpu-small` (the demo's head and token layout);
its train clips/s (data + step, first epoch left out) is the figure. Prints one JSON line with the medians, the
ratios against "omp1" and the load average before / after.

    python bench/threads.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.threads import usable_cores  # noqa: E402

_BENCH = Path(__file__).resolve().parent / "fusion_step.py"
_COMPETITOR = """
import torch
torch.set_num_threads({threads})
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


def _train(setting: str, args) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [sys.executable, str(_BENCH), "--presets", "demo", "--layout", "cpu-small", "--clips",
               str(args.clips), "--batch-sizes", str(args.batch_size), "--epochs", str(args.epochs)]
    if setting == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    elif setting == "torch-default":
        command += ["--threads", str(usable_cores())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    line = json.loads(result.stdout.strip().splitlines()[-1])
    return line["results"]["step"]["demo"][0]["train_clips_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--competing-threads", type=int, default=2)
    args = parser.parse_args()
    settings = ("default", "omp1", "torch-default")
    load_before = os.getloadavg()[0]
    competitor = (subprocess.Popen([sys.executable, "-c", _COMPETITOR.format(threads=args.competing_threads)])
                  if args.competing_threads else None)  # 0: no competing job (what the rule costs on idle cores)
    figures: dict[str, list[float]] = {s: [] for s in settings}
    try:
        for _ in range(args.rounds):
            for setting in settings:
                figures[setting].append(_train(setting, args))
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    medians = {s: statistics.median(v) for s, v in figures.items()}
    print(json.dumps({
        "bench": "threads", "usable_cores": usable_cores(), "competing_threads": args.competing_threads,
        "settings": {"clips": args.clips, "batch_size": args.batch_size, "epochs": args.epochs,
                     "rounds": args.rounds},
        "train_clips_per_s": figures, "median": medians,
        "ratio_to_omp1": {s: round(m / medians["omp1"], 2) for s, m in medians.items()},
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }))


if __name__ == "__main__":
    main()
