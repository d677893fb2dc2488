# Shelfwise: `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --python $(PY) -q -c requirements.lock -e '.[dev,postgres,dask]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Shelfwise with dev + PostgreSQL + Dask extras

lock: ## Re-resolve requirements.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra postgres --extra dask -q -o requirements.lock

browser: ## Install Debian's chromium for the UI checks (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if [ -n "$$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then \
	    echo "chromium is missing and installing it needs root or sudo (apt-get install chromium)"; \
	    exit 1; fi; \
	  $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }; }
	@command -v chromium >/dev/null 2>&1 && chromium --version 2>/dev/null || true

test: install browser ## Run every test (unit, model quality, real servers, PostgreSQL, browser) on PYTEST_WORKERS=2 xdist workers
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: install ## Unit tests only (no slow/integration)
	$(PY) -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

lint: install ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff autoformat
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: install ## Run the loop on the real data against the local stack (DEMO_ARGS=--keep|--reduced)
	$(VENV)/bin/shelfwise demo $(DEMO_ARGS)

up: install ## Start the local stack (MLflow, Prefect server + worker, BentoML, Evidently UI)
	$(VENV)/bin/shelfwise stack up

wheel: install ## Build the Shelfwise wheel into dist/ (installs only the shelfwise package)
	rm -f dist/shelfwise-*.whl
	$(VENV)/bin/uv build --wheel --out-dir dist -q

bento: wheel ## Build the Bento (bentofile.yaml: the wheel + requirements.lock)
	$(VENV)/bin/bentoml build .

bench: install ## Run the benchmarks; results in benchmarks/results/*.json and *.md
	$(PY) -m benchmarks.run

down: install ## Stop every local server Shelfwise started
	$(VENV)/bin/shelfwise stack down

clean: ## Remove local state (.shelfwise) but keep .venv
	rm -rf .shelfwise

.PHONY: help install browser lock test test-fast lint format demo up wheel bento bench down clean
