# Two entry points that work on a fresh machine: `make demo` and `make test`.
# torch is pinned here (a local CPU wheel), not in pyproject.toml: an unpinned torch
# pulls several GB of CUDA packages.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.edgegate-installed

.PHONY: demo test test-slow test-all lint format bench weights clean

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev,coreml,executorch,hf]'
	touch $@

# The main job on the embedded default: gc-mobilenet, its shipped weights, built-in digits.
demo: $(STAMP)
	$(VENV)/bin/edgegate deploy -o demo_out

test: $(STAMP)
	$(VENV)/bin/pytest

# The slow acceptance tests (every target's export/validate matrix, INT8 checks, QAT, the
# TensorRT kits, hf: models); CI runs them after `make test`.
test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow

test-all: $(STAMP)
	$(VENV)/bin/pytest -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/lint_imports.py

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py

# Retrain every shipped checkpoint (minutes on 2 cores); the commands are in README.md.
weights: $(STAMP)
	bash scripts/train_shipped_weights.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
