#!/usr/bin/env bash
# The GPU run of bench/fusion_step.py, prepared to fit one device session (BENCHMARKS.md, "Fusion training"):
# the demo and default heads at batch 64 / 512 / 1024 on the paper layout, tokens resident on the card, each part
# under `timeout 540`. Results go to $OUT (the device tool's folder) or runs/.
#     bash bench/fusion_step_gpu.sh
set -u
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv > "$out/gpu.csv" 2>&1
timeout 540 .venv/bin/python bench/fusion_step.py --device cuda --layout paper --clips 8192 --epochs 3 \
    --presets demo,default --batch-sizes 64,512,1024 --resident-store auto \
    > "$out/fusion_step_gpu.json" 2> "$out/fusion_step_gpu.log"
echo "fusion_step rc=$?" >> "$out/fusion_step_gpu.log"
tail -n 3 "$out/fusion_step_gpu.log"
cat "$out/fusion_step_gpu.json"
