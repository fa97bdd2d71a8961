# Phoenix: two commands do all the set-up on a fresh machine.
#   make run    create .venv if missing, install Phoenix, start it with the example services
#   make test   the same environment plus dev tools; run the whole suite (lint, types, tests)
#   make soak   the long runs (Phoenix SIGKILLed during 500 triggers); .ci/run runs it too
#   make bench  the benchmarks under bench/ (figures go in BENCHMARKS.md)

# The first Python 3.11+ on PATH (never a version too old to run Phoenix).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
CODE := src tests bench examples

.PHONY: run test soak bench lint format clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Phoenix needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/phoenix serve --config examples/phoenix.yaml

test: $(VENV)/.installed-dev lint
	$(BIN)/pytest

soak: $(VENV)/.installed-dev
	PHOENIX_SOAK=1 $(BIN)/pytest tests/soak -s

lint: $(VENV)/.installed-dev
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/ruff check $(CODE)
	$(BIN)/mypy src
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
