# The verbs people type. Every target creates the environment first if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python

export DAGSTER_HOME := $(CURDIR)/dagster_home
export BACKTEST_DATA_ROOT ?= $(CURDIR)/data
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: env demo test test-all ui lint bench golden clean

$(VENV)/.ready: pyproject.toml uv.lock
	@test -x .tools/bin/uv || { $(PYTHON) -m venv .tools && .tools/bin/pip install -q uv==$(UV_VERSION); }
	.tools/bin/uv sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

env: $(VENV)/.ready

demo: env ## synthetic data, three symbols, January 2024, into ./data/warehouse.duckdb
	$(PY) -m backtest_assets demo

test: env ## the CI suite (slow tests excluded)
	$(PY) -m pytest

test-all: env
	$(PY) -m pytest -m ""

ui: env ## the Dagster UI and daemon on http://127.0.0.1:3000
	$(VENV)/bin/dagster instance concurrency set duckdb 1
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: env
	$(VENV)/bin/ruff check .

bench: env ## measurements under bench/ (minutes)
	$(PY) bench/ingest_bars.py
	$(PY) bench/research.py
	$(PY) bench/phase2.py
	$(PY) bench/csv_parse.py

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs
