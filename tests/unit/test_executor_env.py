"""Which executor the jobs get, and the thread budget of a worker's DuckDB connections."""

import dagster as dg
import pytest

from backtest_assets.defs.jobs import executor_from_env
from backtest_assets.warehouse import Warehouse, WarehouseError


def test_in_process_by_default_celery_only_on_the_lake_and_a_typo_is_named(monkeypatch):
    for key in ("BACKTEST_EXECUTOR", "BACKTEST_WAREHOUSE", "BACKTEST_CELERY_BROKER"):
        monkeypatch.delenv(key, raising=False)
    assert executor_from_env() is dg.in_process_executor
    monkeypatch.setenv("BACKTEST_EXECUTOR", "celery")
    with pytest.raises(dg.DagsterInvariantViolationError, match="BACKTEST_WAREHOUSE=ducklake"):
        executor_from_env()
    monkeypatch.setenv("BACKTEST_WAREHOUSE", "ducklake")
    with pytest.raises(Exception, match="needs BACKTEST_CELERY_BROKER"):
        executor_from_env()
    monkeypatch.setenv("BACKTEST_CELERY_BROKER", "redis://127.0.0.1:6390/0")
    assert executor_from_env().name == "celery"
    monkeypatch.setenv("BACKTEST_EXECUTOR", "celeri")
    with pytest.raises(dg.DagsterInvariantViolationError, match="'celeri': choose"):
        executor_from_env()


def test_a_workers_duckdb_thread_budget(tmp_path, monkeypatch):
    wh = Warehouse(tmp_path / "w.duckdb")
    monkeypatch.setenv("BACKTEST_DUCKDB_THREADS", "1")
    with wh.connect() as conn:
        assert conn.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    monkeypatch.setenv("BACKTEST_DUCKDB_THREADS", "zero")
    with pytest.raises(WarehouseError, match="'zero' is not a thread count"), wh.connect():
        pass
