# `make demo` and `make test` each create .venv when missing, install the project, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,ray,tensorboard,wandb]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/seqeval demo

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_protocol.py
	$(BIN)/python benchmarks/bench_agents.py
	$(BIN)/python benchmarks/bench_tracking.py

clean:
	rm -rf $(VENV) .pytest_cache
