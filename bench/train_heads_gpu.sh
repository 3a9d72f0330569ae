#!/usr/bin/env bash
# The GPU run of bench/train_heads.py, prepared to fit one device session (BENCHMARKS.md, "Comparison heads:
# training throughput"): every method on the paper layout and on AVCA's 512-d features, 4096 clips per store,
# batch 256, under `timeout 540`. Results go to $OUT (the device tool's folder) or runs/.
#     bash bench/train_heads_gpu.sh
set -u
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv > "$out/gpu.csv" 2>&1
timeout 540 .venv/bin/python bench/train_heads.py --device cuda --clips 4096 --batch-size 256 --n-batches 100 \
    --epochs 3 > "$out/train_heads_gpu.json" 2> "$out/train_heads_gpu.log"
echo "train_heads rc=$?" >> "$out/train_heads_gpu.log"
tail -n 3 "$out/train_heads_gpu.log"
cat "$out/train_heads_gpu.json"
