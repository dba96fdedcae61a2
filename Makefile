# driftloop — two commands: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.driftloop-installed
TORCH := torch==2.13.0

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup test test-unit test-integration lint format demo up down status bench clean lock

setup: $(STAMP)  ## venv in .venv: torch (CPU wheel) first, then the project with the lock

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev]" -c constraints.txt
	@touch $(STAMP)

test: setup  ## all tests: unit (seconds) then integration (real servers)
	$(PY) -m pytest tests -q -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup
	$(PY) -m pytest tests/integration -q

lint: setup  ## the same checks as pre-commit
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup  ## the whole loop on the bundled data
	$(VENV)/bin/driftloop demo --fresh

up: setup
	$(VENV)/bin/driftloop up

down:
	@test -x $(VENV)/bin/driftloop && $(VENV)/bin/driftloop down || true

status: setup
	$(VENV)/bin/driftloop status

bench: setup  ## benchmarks (~9 min on 2 cores); writes bench/RESULTS.md
	@$(PY) -c "import pyinstrument" 2>/dev/null || $(PIP) install --quiet -e ".[bench]" -c constraints.txt
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null 2>&1 \
		|| echo "wrk unavailable: the bundled asyncio load generator (bench/serving/loadgen.py) is used"
	$(PY) -m bench $(BENCH_ARGS)

lock:  ## re-resolve the pinned set from pyproject.toml into constraints.txt
	$(PIP) freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:  ## remove runtime state (not the venv)
	rm -rf .driftloop
