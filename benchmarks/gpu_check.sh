#!/usr/bin/env bash
# The GPU check of issue 15, as one script: the Triton tests on the device, then the edge
# attention benchmark on CUDA (gattn Triton vs PyG TransformerConv vs the reference: forward
# and training-step time and peak GPU memory, N=50k/E=1M random and power-law graphs and an
# ogbn-arxiv-sized graph, H=4/D=32 and H=8/D=64).
#
#   PYTHON=/path/to/python-with-cuda-torch bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Needs a Python with a CUDA build of torch (2.13), triton and torch_geometric; gattn is
# taken from this checkout (PYTHONPATH), nothing is installed. Results (log, JSON, chart)
# go to OUT_DIR (default runs/gpu_check). Each part has its own time limit so the second
# part runs even if the first one hangs.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PY' 2>&1 | tee "$OUT/env.txt"
import torch, triton, torch_geometric
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "pyg", torch_geometric.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
timeout 240 "$PY" -m pytest tests/kernels/test_triton.py -q -x -p no:cacheprovider 2>&1 | tee "$OUT/triton_tests.txt" | tail -5
timeout 330 "$PY" benchmarks/edge_attention.py --device cuda --repeats 5 --batch full --load none --dtype float32,bfloat16 \
    --chart "$OUT/edge_attention_cuda.png" --json "$OUT/edge_attention_cuda.json" 2>&1 | tee "$OUT/edge_attention_cuda.txt"
