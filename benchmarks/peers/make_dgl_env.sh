#!/usr/bin/env bash
# DGL in its own venv, benchmarks/peers/.venv-dgl: for gattn.interop's tests (from_dgl / to_dgl)
# against the real library. Never in the main venv, never in CI.
#
# DGL's wheels on PyPI import only with an old torch: dgl 2.1.0 with torch 2.2.1 (PyPI's Linux
# wheel of torch 2.2.1 brings its CUDA libraries: a ~5 GB venv), torchdata < 0.8 (later ones
# dropped the datapipes DGL imports), setuptools < 70 and numpy < 2 (DGL 2.1 is built against
# numpy 1; its graphbolt imports pandas and pydantic). gattn itself is installed without its
# dependencies (its pinned torch is 2.13): gattn.interop needs only torch and torch_geometric.
#
#     bash benchmarks/peers/make_dgl_env.sh               # create or update
#     benchmarks/peers/.venv-dgl/bin/python -m pytest tests/test_interop.py -q
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv-dgl"
python="${PYTHON:-python3}"

DGL_VERSION="${DGL_VERSION:-2.1.0}"
TORCH_VERSION="${TORCH_VERSION:-2.2.1}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
"$venv/bin/python" -m pip install -q "torch==$TORCH_VERSION" "dgl==$DGL_VERSION" 'torchdata<0.8' \
    'setuptools<70' 'numpy<2' pandas pydantic torch_geometric scipy pytest pyyaml
"$venv/bin/python" -m pip install -q --no-deps -e "$root"
"$venv/bin/python" - <<'PY'
import dgl
import torch
import torch_geometric

print(f"DGL env ready: dgl {dgl.__version__}, torch {torch.__version__}, torch_geometric {torch_geometric.__version__}")
PY
