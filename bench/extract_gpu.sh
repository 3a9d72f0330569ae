#!/usr/bin/env bash
# The GPU run of bench/extract_gpu.py, prepared to fit one device session (BENCHMARKS.md, "Extraction on a GPU"):
# everything under `timeout 540`, the most important numbers first, each step under its own timeout (and never
# past the overall deadline) so that one slow compile cannot eat the rest. Needs torch 2.11 with CUDA, torchvision,
# timm, av and zarr installed; installs nothing, downloads nothing (random-init backbones, clips written here).
#     bash bench/extract_gpu.sh        # in the repo root; JSON lines on stdout and in $OUT/extract_gpu.jsonl
# Order: end to end at 3 crops x 4 views + AST (the fused `sdpa` kernel, then torchvision's attention as the
# baseline) on 360p and 720p clips; the MViT kernels eager at bf16 autocast and pure bf16; the CUDA tests of the
# bf16 tolerance; compiled kernels; AST; compiled end to end if time is left.
set -u
if [ -z "${EXTRACT_GPU_INNER:-}" ]; then
    EXTRACT_GPU_INNER=1 exec timeout 540 bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
out="${OUT:-runs/extract_gpu}"
mkdir -p "$out"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if .venv/bin/python -c "import torch" 2>/dev/null; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONUNBUFFERED=1
results="$out/extract_gpu.jsonl"
deadline=$(( $(date +%s) + 525 ))  # inside the 540 s, with room to print the results

note() { echo "$1" | tee -a "$results"; }

run_step() {  # run_step NAME SECONDS SINK COMMAND...: at most SECONDS, cut to the time left before the deadline
    local name=$1 seconds=$2 sink=$3 left rc
    shift 3
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt "$seconds" ]; then seconds=$left; fi
    if [ "$seconds" -lt 20 ]; then
        note "{\"step\": \"$name\", \"skipped\": \"under 20 s left\"}"
        return
    fi
    timeout "$seconds" "$@" >> "$sink" 2>> "$out/$name.log"
    rc=$?
    note "{\"step\": \"$name\", \"rc\": $rc, \"limit_s\": $seconds, \"timed_out\": $([ $rc -eq 124 ] && echo true || echo false)}"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$out/gpu.csv" 2>&1
note "{\"step\": \"start\", \"date\": \"$(date -u +%FT%TZ)\", \"python\": \"$py\", \"nproc\": $(nproc), \"gpu\": \"$(head -2 "$out/gpu.csv" | tail -1)\"}"

# A check of this script on a machine without a GPU: DEVICE=cpu PROFILE=cpu-small QUICK=1 COMPILE_MODE=eager
bench="$py bench/extract_gpu.py --device ${DEVICE:-cuda} --profile ${PROFILE:-paper} ${QUICK:+--quick}"
compile_mode="${COMPILE_MODE:-default}"
# 1. End to end: 256 manifest rows per size over 8 written 10 s clips, store writes included.
run_step e2e 170 "$results" $bench --steps e2e --e2e-attention sdpa,torchvision --e2e-sizes 640x360,1280x720 \
    --clips 256 --distinct-clips 8
# 2. MViT-v2-S at the pipeline's batch (96 views), eager: torchvision's attention first (the baseline).
run_step mvit_eager 100 "$results" $bench --steps mvit --modes eager --precisions bf16,bf16-pure \
    --attention torchvision,sdpa,sdpa-mask,flex --iters 10 --warmup 2
# 3. The tests that need CUDA (skipped elsewhere): tokens within the stated bf16 tolerance of the fp32 reference,
# every kernel, no host sync (sdpa kernels); pinned buffers reused intact; extract_many on CUDA equal to the CPU's.
run_step cuda_tests 90 "$out/cuda_tests.log" "$py" -m pytest -q -rs -p no:cacheprovider -m "not slow" \
    tests/extract/test_mvit_attention.py tests/extract/test_extract_pipeline.py tests/extract/test_extract_pipeline_workers.py
# 4. Compiled (torch.compile mode "default"; max-autotune-no-cudagraphs did not finish in 7 min on an H200).
run_step mvit_compiled 130 "$results" $bench --steps mvit --modes "$compile_mode" --precisions bf16 --attention sdpa,flex,torchvision \
    --iters 10 --warmup 2
# 5. AST at the pipeline's batch (8 clips), eager and compiled, both bf16 precisions.
run_step ast 50 "$results" $bench --steps ast --modes "eager,$compile_mode" --precisions bf16,bf16-pure --iters 10 --warmup 2
# 6. Only if time is left: compiled end to end at 360p.
[ -z "${QUICK:-}" ] && run_step e2e_compiled 120 "$results" $bench --steps e2e --e2e-compile --e2e-attention sdpa --e2e-sizes 640x360 \
    --clips 256 --distinct-clips 8

cat "$results"
