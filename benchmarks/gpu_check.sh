#!/usr/bin/env bash
# The GPU check of issue 15, as one script: the Triton tests on the device, then the edge
# attention benchmark on CUDA (gattn Triton vs PyG TransformerConv: forward and training-step
# time and peak GPU memory, N=50k/E=1M random and power-law graphs and an ogbn-arxiv-sized
# graph, H=4/D=32 and H=8/D=64, float32; bfloat16 at H=4/D=32), and a CUDA profile of gattn's
# step. About 9.5 minutes on an H200 with its limits: one device call of 10.
#
#   PYTHON=/path/to/python-with-cuda-torch bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs a Python with a CUDA build of torch (2.13), triton and torch_geometric; gattn is
# taken from this checkout (PYTHONPATH), nothing is installed. Results (log, JSON, chart)
# go to OUT_DIR (default runs/gpu_check). Each part has its own time limit (TEST_LIMIT,
# BENCH_LIMIT, PROFILE_LIMIT, BF16_LIMIT seconds) so the later parts run even if an earlier
# one hangs.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
SECONDS=0
"$PY" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import torch, triton, torch_geometric
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "pyg", torch_geometric.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
import gattn.kernels as K, gattn.kernels.triton_backend  # noqa: F401  (a failed import would fall back silently)
print("auto backend on CUDA:", K.resolve_backend(None, torch.empty(1, device="cuda")).NAME)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
# the Triton tests (every kernel against the reference, gradcheck in float64, fp16/bf16, power-law hubs)
timeout "${TEST_LIMIT:-160}" "$PY" -m pytest tests/kernels/test_triton.py -q -rf -p no:cacheprovider --durations=5 \
    2>&1 | tee "$OUT/triton_tests.txt" | tail -25
echo "[gpu_check] tests done at ${SECONDS}s"
# float32, gattn against PyG on all six cases (about 20 s per method and case: one process each)
timeout "${BENCH_LIMIT:-250}" "$PY" benchmarks/edge_attention.py --device cuda --repeats 10 --batch full --load none \
    --dtype float32 --methods gattn,pyg --chart "$OUT/edge_attention_cuda.png" \
    --json "$OUT/edge_attention_cuda.json" 2>&1 | tee "$OUT/edge_attention_cuda.txt"
echo "[gpu_check] float32 benchmark done at ${SECONDS}s"
# what bounds gattn's step on the GPU: GPU time per kernel against the step's wall time
timeout "${PROFILE_LIMIT:-40}" "$PY" benchmarks/edge_attention.py --device cuda --profile --graphs random --shapes 4x32 \
    --repeats 5 2>&1 | tee "$OUT/profile_cuda.txt" | tail -30
echo "[gpu_check] profile done at ${SECONDS}s"
# bfloat16 at H=4/D=32, gattn against PyG
timeout "${BF16_LIMIT:-120}" "$PY" benchmarks/edge_attention.py --device cuda --repeats 10 --batch full --load none \
    --dtype bfloat16 --shapes 4x32 --methods gattn,pyg --chart "$OUT/edge_attention_cuda_bf16.png" \
    --json "$OUT/edge_attention_cuda_bf16.json" 2>&1 | tee "$OUT/edge_attention_cuda_bf16.txt"
echo "[gpu_check] bfloat16 benchmark done at ${SECONDS}s"
# the Triton passes timed alone over tile settings: PASSES=1 (about 80 s more: lower the other limits)
if [ "${PASSES:-0}" = 1 ]; then
    timeout 80 "$PY" benchmarks/triton_passes.py --shapes 4x32,8x64 --tiles 4096,8192 --block-e 16,32 --repeats 10 \
        2>&1 | tee "$OUT/triton_passes.txt" | tail -14
fi
