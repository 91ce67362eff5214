#!/usr/bin/env bash
# The CTR peers (DeepCTR-Torch, FuxiCTR) in their own venv, benchmarks/peers/.venv-ctr.
#
# Never in the main venv, never in CI. torch is pinned to the project's CPU build
# (constraints.txt) so an unpinned resolver does not pull a multi-GB CUDA wheel.
#
#     bash benchmarks/peers/make_ctr_env.sh            # create or update
#     benchmarks/peers/.venv-ctr/bin/python -c "import deepctr_torch, fuxictr"
#
# Versions checked with torch 2.13.0 (CPU): deepctr-torch 0.3.0, fuxictr 2.3.10
# (benchmarks/peers/README.md says what each needs and runs).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv-ctr"
python="${PYTHON:-python3}"

DEEPCTR_TORCH_VERSION="${DEEPCTR_TORCH_VERSION:-0.3.0}"
FUXICTR_VERSION="${FUXICTR_VERSION:-2.3.10}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q -c "$root/constraints.txt")
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "deepctr-torch==$DEEPCTR_TORCH_VERSION" "fuxictr==$FUXICTR_VERSION" pyarrow pandas scikit-learn
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

import torch

import deepctr_torch  # noqa: F401
import fuxictr  # noqa: F401
from deepctr_torch.models import DIN  # noqa: F401
from fuxictr.pytorch.layers import DIN_Attention  # noqa: F401
from model_zoo.LongCTR.DIN.DIN import DIN as FuxiDIN  # noqa: F401

print(f"torch {torch.__version__}, deepctr-torch {md.version('deepctr-torch')}, fuxictr {md.version('fuxictr')}: import OK")
PY
