PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-scale pyg-sampling lint docs charts bench results clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The data sets of ../shared/data, for the result tables (the tests and the demo need none).
DATA ?= $(abspath ../shared/data)

# Editable install with the dev and pipelines extras; torch is pinned by constraints.txt (CPU build).
$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Under 3 minutes on 2 cores, nothing downloaded: gated-attention MIL learns to find the bags
# holding a 9 among scikit-learn's bundled digits (5-fold CV, accuracy next to chance; a short
# run, so without the paper protocol's dropout and weight decay, which need its 100 epochs), then
# one row of gattn.nn.TransformerConv against PyG's TransformerConv on a small random graph
# (forward, training step, peak memory). Run folder: runs/demo/mil/digit-bags.
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/gattn train mil --dataset digit-bags --pooling gated --folds 5 --repeats 1 --epochs 12 --batch-size 8 \
		--dropout 0 --weight-decay 1e-4 \
		--lr 1e-3 --hidden 64,32 --threads 1 --runs-dir runs/demo --run-name digit-bags
	$(PY) benchmarks/edge_attention.py --demo

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .
	$(MAKE) docs

# The documentation site (Sphinx) into docs/_build/html, warnings as errors: a docstring that
# does not parse or a reference to a gattn name that does not exist fails the build.
docs: $(STAMP)
	OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 $(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# The README's benchmark charts (docs/charts/*.png), redrawn from the README's tables.
charts: $(STAMP)
	$(PY) benchmarks/readme_charts.py

# Many processes: tuning workers on a PostgreSQL server the tests start on loopback (as root they run it
# as the 'postgres' user, installing Debian's server package when no server binaries are found), and
# distributed training on CPU (gloo). About two minutes.
test-scale: $(STAMP)
	$(PY) -m pytest -q -m scale

# PyG's sampling backend, for its NeighborLoader (optional: gattn.sampling.neighbor_loader falls back to gattn's
# own sampler, and tests/test_pyg_neighbor_loader.py skips without it). Neither pyg-lib nor torch-sparse has a
# PyPI wheel for the pinned torch, so torch-scatter and torch-sparse are built from source against it, in the
# venv (about 15 minutes on 2 cores; not part of `make test` or CI).
pyg-sampling: $(STAMP)
	MAX_JOBS=2 $(PIP) install --no-build-isolation -c constraints.txt torch-scatter torch-sparse

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/edge_attention.py

# The README's result tables from the configs/ files. Graph Transformer: meant for a GPU machine.
results: $(STAMP)
	$(PY) benchmarks/graph_transformer_results.py --root $(DATA) --accelerator gpu --jobs 8 --threads 1 \
		--sbm-max-time 250
	$(PY) benchmarks/mil_results.py --root $(DATA) --runs-dir runs/mil-results --json runs/mil-results/classic.json
	$(PY) benchmarks/latte_results.py --root $(DATA)
	$(PY) benchmarks/gin_attention_results.py --root $(DATA) --threads 1

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/_generated
