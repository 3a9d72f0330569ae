"""The clipclap profile's towers at their real sizes: clips per second of each, on this machine's device.

The towers are built random-init from the real configs written out in `extract/clip_clap.py` (CLIP ViT-B/32's
image tower, LAION CLAP's unfused HTSAT audio tower): transformers builds them from those values without a
download, and a forward costs the same with any weights. One clip of the clipclap profile is one 224 px frame
for CLIP and one 10 s window (1001 x 64 log-mel) for CLAP; CLAP's log-mel itself is computed in the decode
workers (`extract.clip_clap.clap_features`), timed here per clip on the CPU.

    python bench/clip_clap_towers.py [--device cpu|cuda] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from extract import clip_clap  # noqa: E402
from extract.config import PROFILES  # noqa: E402


def _best_rate(step, items: int, repeats: int, device: torch.device) -> float:
    """Items per second of the fastest of `repeats` runs of `step` (one warm-up run first)."""
    step()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16, help="clips per forward")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    config = PROFILES["clipclap"]
    image, _ = clip_clap.build_clip_image(config.video, None, random_init=True, seed=0)
    audio, _ = clip_clap.build_clap_audio(config.audio, None, random_init=True, seed=1)
    image, audio = image.to(device), audio.to(device)
    views = torch.randn(args.batch, 3, 1, 224, 224, device=device)  # (B, 3, T, S, S): the middle frame
    waveform = torch.randn(config.audio.window_samples) * 0.1
    features = clip_clap.clap_features(waveform, config.audio)[0]
    batch = features.expand(args.batch, *features.shape).contiguous().to(device)  # (B, 1001, 64)
    with torch.inference_mode():
        rows = {
            "clip_image_clips_per_s": _best_rate(lambda: image(views), args.batch, args.repeats, device),
            "clap_audio_clips_per_s": _best_rate(lambda: audio(batch), args.batch, args.repeats, device),
            "clap_log_mel_clips_per_s": _best_rate(lambda: clip_clap.clap_features(waveform, config.audio), 1,
                                                   args.repeats, torch.device("cpu")),
        }
    rows = {name: round(rate, 2) for name, rate in rows.items()}
    print(json.dumps({"device": str(device), "torch_threads": torch.get_num_threads(), "batch": args.batch,
                      "parameters": {"clip_image": sum(p.numel() for p in image.parameters()),
                                     "clap_audio": sum(p.numel() for p in audio.parameters())},
                      "load_average": [round(x, 2) for x in os.getloadavg()], **rows}, indent=2))


if __name__ == "__main__":
    main()
