"""The layers stay light: gattn.kernels, gattn.nn, gattn.transforms and gattn.models need only
torch, PyG, numpy, numba and scipy; the training stack is the ``pipelines`` extra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

GATTN = Path(__file__).resolve().parents[1] / "gattn"
LIGHT = ("kernels", "nn", "transforms", "models")
# triton and pymetis are optional: imported only by the GPU backend and by the METIS ordering
# (reorder="metis", or "auto" where pymetis is installed)
ALLOWED = {"torch", "torch_geometric", "numpy", "numba", "scipy", "triton", "pymetis", "gattn", "__future__"}
TRAINING_STACK = ("lightning", "pytorch_lightning", "optuna", "optuna_integration", "matplotlib", "pandas",
                  "sklearn", "ogb", "torchmetrics", "yaml", "pyarrow")


def _imports(path: Path) -> set[str]:
    """Top-level names of every import in the file, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_light_packages_import_only_the_light_dependencies():
    stdlib = set(sys.stdlib_module_names)
    problems = {}
    for package in LIGHT:
        for path in sorted((GATTN / package).rglob("*.py")):
            extra = {name for name in _imports(path) if name not in ALLOWED and name not in stdlib}
            if extra:
                problems[str(path.relative_to(GATTN.parent))] = sorted(extra)
    assert not problems, f"layer modules importing outside torch/PyG/numpy/numba/scipy: {problems}"


def test_layers_import_does_not_pull_the_training_stack_or_the_pipelines():
    code = (
        "import sys, torch, torch_geometric, numpy, numba, scipy; before = set(sys.modules);"
        "import gattn.kernels, gattn.nn, gattn.models, gattn.transforms;"
        "new = set(sys.modules) - before;"
        "print(' '.join(sorted(new)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    tops = {name.split(".")[0] for name in loaded}
    assert not tops & set(TRAINING_STACK), sorted(tops & set(TRAINING_STACK))
    assert not [m for m in loaded if m.startswith(("gattn.pipelines", "gattn.tune", "gattn.cli", "gattn.datasets"))]
