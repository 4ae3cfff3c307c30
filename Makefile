# Trinity's developer workflow. `make help` lists the targets.
# Every target that needs the virtual environment sets it up first, so
# `make build` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
THEME  ?= minimal
STAMP  := $(VENV)/.installed
# Wheels built here once (llama-cpp-python compiles for minutes) and reused by every
# later setup, in this clone or a fresh one.
WHEELHOUSE ?= $(HOME)/.cache/trinity/wheels
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.DEFAULT_GOAL := help
.PHONY: help setup install build test lint format type-check check bench clean cache-clear

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Building wheels into $(WHEELHOUSE) (the first time, llama-cpp-python compiles for several minutes)"
	$(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELHOUSE) --find-links $(WHEELHOUSE) ".[local]"
	$(BIN)/python -m pip install --quiet --find-links $(WHEELHOUSE) -e ".[dev,local]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv; install Trinity, the embedded model and the development tools

install: ## Install Trinity and the embedded model (no development tools) into the current Python
	$(PYTHON) -m pip install ".[local]"

build: $(STAMP) ## Build the example site with the embedded model (THEME=brutalist to switch)
	$(BIN)/trinity build --theme $(THEME)

test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check trinity tests benchmarks
	$(BIN)/ruff format --check trinity tests benchmarks

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix trinity tests benchmarks
	$(BIN)/ruff format trinity tests benchmarks

type-check: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy --strict trinity

check: lint type-check test ## Everything CI checks

bench: $(STAMP) ## Run the benchmarks (results and method in BENCHMARKS.md)
	$(BIN)/python benchmarks/embedded_model.py
	$(BIN)/python benchmarks/cache_latency.py

clean: ## Remove build artefacts, caches of tools and output/
	rm -rf output dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

cache-clear: $(STAMP) ## Delete every cached LLM answer (every enabled tier)
	$(BIN)/trinity cache clear
