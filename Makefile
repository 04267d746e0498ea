# `make demo` and `make test` each create .venv when missing, install the project, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,ray,tensorboard,wandb

.PHONY: demo test lint bench clean

# Python caches compiled bytecode (__pycache__) only where PYTHONDONTWRITEBYTECODE is unset;
# container images often set it, and then every process compiles jax, flax, gymnasium... from
# source again: `import jax` took 3.7 s instead of 1.6 s here, and the tests start dozens of
# processes (CLI runs, Ray workers). The caches go into .venv and the ignored __pycache__ folders.
unexport PYTHONDONTWRITEBYTECODE

# uv resolves and downloads in parallel: a cold install takes ~20 s instead of ~2 min with pip
# (measured on the 2-core machine). Where uv cannot be had, pip does the same install.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv \
	  && $(BIN)/python -m uv pip install -q -p $(BIN)/python -e '.[$(EXTRAS)]' \
	  || $(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/seqeval demo

# One pytest worker per core (measured idle on 2 cores: 3 workers took 700 s and 1,136 CPU-s,
# 2 workers 562 s and 896 CPU-s: the third worker's compiles cost more than the waits it fills).
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_protocol.py
	$(BIN)/python benchmarks/bench_agents.py
	$(BIN)/python benchmarks/bench_tracking.py

clean:
	rm -rf $(VENV) .pytest_cache
