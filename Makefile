# Everything installs into the project: a private uv in .tools/, the locked environment in .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install run test test-postgres test-redis lint format bench bench-dispatch bench-route bench-replicas bench-reorder bench-passes bench-simulate clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced ## Create .venv from uv.lock (dev tools included)

run: install ## Serve on 127.0.0.1:8000 with demo rules, agents and API keys
	SKILLROUTE_DEMO=$${SKILLROUTE_DEMO:-true} $(BIN)/skillroute serve

test: install ## The whole test suite; with the test URLs set, again on PostgreSQL and on Redis
	$(BIN)/pytest
	@if [ -n "$${SKILLROUTE_TEST_DATABASE_URL:-}" ]; then \
		echo "again with every test app on PostgreSQL ($${SKILLROUTE_TEST_DATABASE_URL})"; \
		$(MAKE) --no-print-directory test-postgres; \
	fi
	@if [ -n "$${SKILLROUTE_TEST_REDIS_URL:-}" ]; then \
		echo "again with every test app's real-time state in Redis ($${SKILLROUTE_TEST_REDIS_URL})"; \
		$(MAKE) --no-print-directory test-redis; \
	fi

test-postgres: install ## Every test app on PostgreSQL (SKILLROUTE_TEST_DATABASE_URL) instead of SQLite
	SKILLROUTE_TEST_ALL_ON_POSTGRES="$${SKILLROUTE_TEST_DATABASE_URL:?set SKILLROUTE_TEST_DATABASE_URL}" \
		$(BIN)/pytest -m "not slow"

test-redis: install ## Every test app's real-time state, contacts and locks in Redis (as replicas)
	SKILLROUTE_TEST_ALL_ON_REDIS="$${SKILLROUTE_TEST_REDIS_URL:?set SKILLROUTE_TEST_REDIS_URL}" \
		$(BIN)/pytest -m "not slow"

lint: install ## ruff, formatting and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-dispatch bench-route bench-replicas bench-reorder bench-passes bench-simulate ## All benchmarks (prints the figures the README quotes)

bench-dispatch: install
	$(BIN)/python -m bench.bench_dispatch

bench-route: install
	$(BIN)/python -m bench.bench_route

bench-replicas: install
	$(BIN)/python -m bench.bench_replicas

bench-reorder: install
	$(BIN)/python -m bench.bench_reorder

bench-passes: install
	$(BIN)/python -m bench.bench_passes

bench-simulate: install
	$(BIN)/python -m bench.bench_simulate

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
