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

# One setting moves the whole example fleet: `make run PORT_OFFSET=1000` (or PHOENIX_PORT_OFFSET
# in the environment) adds 1000 to every service port of examples/phoenix.yaml and serves the
# API on 3051 + 1000 (PORT, when given, still names the API port itself).
PORT_OFFSET ?= $(or $(PHOENIX_PORT_OFFSET),0)

run: $(VENV)/.installed-run
	@case '$(PORT_OFFSET)' in ''|*[!0-9]*) \
		echo "make run: PORT_OFFSET must be a whole number of ports, 0 or more (got '$(PORT_OFFSET)')" >&2; \
		exit 2;; esac
	PHOENIX_PORT_OFFSET=$(PORT_OFFSET) $(BIN)/phoenix serve --config examples/phoenix.yaml \
		--port $(if $(PORT),$(PORT),$$((3051 + $(PORT_OFFSET))))

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
