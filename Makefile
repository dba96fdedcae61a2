# driftloop — two commands: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.driftloop-installed
# The pinned set with hashes: every distribution of `pip install .[dev,torch,bench]`.
LOCK := requirements.lock
UV_VERSION := 0.13.8
# Where the CPU build of torch comes from. Empty: the indexes pip is configured with
# (PyPI, plus this machine's pip config, which already holds the CPU wheel). Elsewhere
# on Linux: make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (PyPI's own torch wheel for Linux is the CUDA build, several GB).
TORCH_INDEX_URL ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
# uv does not read pip's configuration: pass the torch index and pip's find-links on.
UV_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL) \
	--index-strategy unsafe-best-match) $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS))

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# MLflow reads DO_NOT_TRACK only as "true"; its telemetry thread edits os.environ while
# other threads read it (a KeyError seen in a test run): off by its own switch.
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup chromium test test-fast test-slow test-all test-unit test-integration lint format demo up down status bench clean lock \
	lock-upgrade

setup: $(STAMP)  ## venv in .venv: exactly the lock (hash-checked), then the project editable

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK) $(PIP_INDEX_ARGS)
	$(PIP) install --quiet --no-deps -e .
	@touch $(STAMP)

# Headless Chromium from the OS packages: the browser test and the demo's screenshots.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		>/dev/null 2>&1 || echo "could not install chromium (apt-get install chromium): the browser test will fail and the demo takes no screenshots"; }

test: setup chromium  ## unit + integration tests (real servers), all but those marked slow: < 20 min on 2 cores
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not slow" --durations=25

# The integration tests of the inner loop: alias moves against a real MLflow, and the
# service's edge (labels, hostile bodies) behind a real `bentoml serve`.
FAST_INTEGRATION := tests/integration/test_moves.py tests/integration/test_feedback.py \
	tests/integration/test_hostile_input.py

test-fast: setup  ## the inner loop: unit tests + FAST_INTEGRATION, none marked slow (~8-10 min on 2 cores); make test before pushing
	$(PY) -m pytest tests/unit $(FAST_INTEGRATION) -q -p no:cacheprovider -m "not slow" --durations=10

test-slow: setup chromium  ## the tests marked slow (the loop, faults, PostgreSQL, stack, packaging); CI runs them too
	$(PY) -m pytest tests -q -p no:cacheprovider -m slow --durations=25

test-all: setup chromium  ## every test, slow ones included (what CI runs, as make test + make test-slow)
	$(PY) -m pytest tests -q -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup
	$(PY) -m pytest tests/integration -q

lint: setup  ## the same checks as pre-commit, and the import rules (docs/architecture.md)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup chromium  ## the whole loop on the bundled data
	$(VENV)/bin/driftloop demo --fresh

up: setup
	$(VENV)/bin/driftloop up

down:
	@test -x $(VENV)/bin/driftloop && $(VENV)/bin/driftloop down || true

status: setup
	$(VENV)/bin/driftloop status

bench: setup  ## benchmarks (~16 min on 2 cores, peers included); writes bench/RESULTS.md
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null 2>&1 \
		|| echo "wrk unavailable: the bundled asyncio load generator (bench/serving/loadgen.py) is used"
	$(PY) -m bench $(BENCH_ARGS)

$(VENV)/bin/uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet uv==$(UV_VERSION)

UV_COMPILE = $(VENV)/bin/uv pip compile --python-version 3.11 --custom-compile-command "make lock" \
	$(UV_INDEX_ARGS)

# requirements.lock: everything, with hashes. The Bento's sets (bentos/requirements*.txt,
# what `bentoml containerize` installs) are pinned at the same versions.
lock: $(VENV)/bin/uv  ## re-resolve requirements.lock from pyproject.toml (keeps pins that still fit)
	$(UV_COMPILE) pyproject.toml --all-extras --generate-hashes -o $(LOCK) $(LOCK_ARGS)
	$(UV_COMPILE) bentos/requirements.in -c $(LOCK) --no-annotate -o bentos/requirements.txt
	$(UV_COMPILE) bentos/requirements-torch.in -c $(LOCK) --no-annotate \
		-o bentos/requirements-torch.txt

lock-upgrade:  ## re-resolve with the newest versions pyproject.toml allows
	$(MAKE) lock LOCK_ARGS=--upgrade

clean:  ## remove runtime state (not the venv)
	rm -rf .driftloop
