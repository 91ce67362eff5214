PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench results clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Editable install with dev extras; torch is pinned by constraints.txt (CPU build).
$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# A short Optuna search of the Graph Transformer on a locally generated CLUSTER set
# (~2-3 minutes on 2 cores); the result table, best.json and the plots land in runs/demo/.
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/gattn tune graph_transformer --dataset CLUSTER --num-graphs 60 --pe-dim 4 --epochs 5 \
		--batch-size 8 --search-max-layers 3 --search-hidden 16,32 --trials 6 --pruner-startup 2 \
		--pruner-warmup 2 --runs-dir runs/demo --study-name demo-cluster --no-progress

test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check .

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/edge_attention.py

# Graph Transformer accuracy tables (OGB, PATTERN/CLUSTER); meant for a GPU machine.
results: $(STAMP)
	$(PY) benchmarks/graph_transformer_results.py --device cuda --jobs 8 --threads 1 --sbm-max-time 250

clean:
	rm -rf $(VENV) build *.egg-info
