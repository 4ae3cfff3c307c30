# Trinity's developer workflow. `make help` lists the targets.
# Every target that needs the virtual environment sets it up first, so
# `make build` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
THEME  ?= minimal
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup install build test lint format type-check check clean cache-clear

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install Trinity with its development tools

install: ## Install Trinity (without development tools) into the current Python
	$(PYTHON) -m pip install .

build: $(STAMP) ## Build the example site into output/ (THEME=brutalist to switch)
	$(BIN)/trinity build --theme $(THEME)

test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check trinity tests
	$(BIN)/ruff format --check trinity tests

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix trinity tests
	$(BIN)/ruff format trinity tests

type-check: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy --strict trinity

check: lint type-check test ## Everything CI checks

clean: ## Remove build artefacts, caches of tools and output/
	rm -rf output dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

cache-clear: ## Delete every cached LLM answer (.cache/)
	rm -rf .cache
