# The verbs people type. Every target creates the environment first if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python

export DAGSTER_HOME := $(CURDIR)/dagster_home
# INSTANCE=postgres: the instance of real work (dagster_home/postgres/dagster.yaml). Without a
# DAGSTER_PG_URL of your own, a local cluster in .postgres/ on 127.0.0.1:$(PG_PORT) is started.
# INSTANCE=lake: the same, with the warehouse a DuckLake whose catalog is that cluster's database
# "lake" (or BACKTEST_LAKE_CATALOG) and the pool "duckdb" at $(POOL_LIMIT) (dagster_home/lake).
INSTANCE ?= sqlite
PG_PORT ?= 5433
POOL_LIMIT := 1
ifneq ($(filter $(INSTANCE),postgres lake),)
export DAGSTER_HOME := $(CURDIR)/dagster_home/$(INSTANCE)
ifeq ($(origin DAGSTER_PG_URL),undefined)
LOCAL_PG := 1
export DAGSTER_PG_URL := postgresql+psycopg2://postgres@127.0.0.1:$(PG_PORT)/dagster
endif
endif
ifeq ($(INSTANCE),lake)
POOL_LIMIT := 4
export BACKTEST_WAREHOUSE := ducklake
export BACKTEST_LAKE_CATALOG ?= postgres:dbname=lake host=127.0.0.1 port=$(PG_PORT) user=postgres
PG_UP_FLAGS := --lake
endif
# The settings the processes that create runs need on this instance (none on SQLite)
RUN_ENV = $$($(PY) -c 'from backtest_assets.deploy.settings import run_creation_env as e; \
	print(*(f"{k}={v}" for k, v in e().items()))')
export BACKTEST_DATA_ROOT ?= $(CURDIR)/data
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: env pg-up demo test test-all ui lint bench bench-peers golden clean

$(VENV)/.ready: pyproject.toml uv.lock
	@test -x .tools/bin/uv || { $(PYTHON) -m venv .tools && .tools/bin/pip install -q uv==$(UV_VERSION); }
	.tools/bin/uv sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

env: $(VENV)/.ready

pg-up: env
	$(if $(LOCAL_PG),$(PY) -m backtest_assets postgres up --port $(PG_PORT) $(PG_UP_FLAGS) >/dev/null,@true)

demo: env pg-up ## synthetic data, three symbols, January 2024, into ./data/warehouse.duckdb
	$(PY) -m backtest_assets demo

# Two worker processes (pytest-xdist), a test file each at a time: module fixtures build once.
TEST_WORKERS ?= 2
test: env ## the CI suite (slow tests excluded)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20

test-all: env
	$(PY) -m pytest -m ""

UI_PORT ?= 3000
ui: env pg-up ## the Dagster UI and daemon on http://127.0.0.1:3000 (UI_PORT=... for another port)
	$(VENV)/bin/dagster instance concurrency set duckdb $(POOL_LIMIT)
	env $(RUN_ENV) $(VENV)/bin/dg dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

lint: env
	$(VENV)/bin/ruff check .

bench: env ## measurements under bench/ (minutes)
	$(PY) bench/ingest_bars.py
	$(PY) bench/research.py
	$(PY) bench/phase2.py
	$(PY) bench/csv_parse.py
	$(PY) bench/walkforward.py

PEERS := ../shared/bench/peers
.venv-peers/.ready: $(PEERS)/requirements-lock.txt | $(VENV)/.ready
	.tools/bin/uv venv -q --clear --python $(PYTHON) .venv-peers
	VIRTUAL_ENV=.venv-peers .tools/bin/uv pip install -q -r $(PEERS)/requirements-lock.txt pyyaml
	@touch $@

bench-peers: .venv-peers/.ready ## the engine beside vectorbt, backtesting.py and NumPy (about 10 min)
	.venv-peers/bin/python bench/engine_vs_peers.py --peak-mem --json bench/results/engine_vs_peers.json \
		--only a/vbt_numba,a/vbt_rust,a/backtesting,a/numpy_exact,a/engine,a/engine_numpy,a/engine_funding,a/engine_venue,b/vbt_loop_numba,b/vbt_loop_rust,b/numpy_exact,b/engine_sweep,b/engine_sweep_1t \
		| tee bench/results/engine_vs_peers.txt

CLAIM_TESTS = $$($(PY) -c 'from pathlib import Path; from backtest_assets.core.claims import load_map; \
	print(*sorted(set(load_map(Path("golden/claim_test_map.csv"))["test_id"])))')

golden: env ## re-pin golden/ from a fresh certification batch, then verify every claim into its log
	$(PY) -m backtest_assets certify --write
	$(PY) -m pytest -m "" --claims-log golden/claim_verification_log.parquet $(CLAIM_TESTS)

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
