#!/usr/bin/env bash
# The torchmil peer environment for benchmarks/mil_torchmil.py: a separate venv (git-ignored)
# at benchmarks/peers/.venv-torchmil, never the main one and never CI.
# torch is pinned to the CPU build the main venv uses (constraints.txt): an unpinned torch
# would pull a multi-GB CUDA build as torchmil's dependency.
#   bash benchmarks/peers/make_torchmil_env.sh [python]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv-torchmil"
python="${1:-python3}"

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c "$root/constraints.txt" "torch==2.13.0" torchmil numpy
"$venv/bin/python" -c "import torch, torchmil; print('torchmil', torchmil.__version__ if hasattr(torchmil, '__version__') else '?', 'torch', torch.__version__)"
echo "torchmil environment ready: $venv"
