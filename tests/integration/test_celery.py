"""Steps on a real distributed executor: Dagster's Celery executor, a Redis broker
(Debian's redis-server on loopback) and two worker processes, over the DuckLake warehouse and
the Postgres instance. A backfill's steps land on both workers and its tables equal a local
run's."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from backtest_assets import cli
from backtest_assets.core.schedule import range_tags
from backtest_assets.deploy.celery import CeleryError, LocalRedis, Workers, redis_server
from backtest_assets.deploy.postgres import free_port
from backtest_assets.deploy.settings import RUN_CREATION_ENV
from backtest_assets.partitions import register_listed_symbols
from backtest_assets.resources.warehouse import make_warehouse
from tests.conftest import REPO, subprocess_env
from tests.integration.test_lake_pipeline import tables

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture
def redis(tmp_path):
    try:
        redis_server()
    except CeleryError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Celery executor's tests: {exc}")
        pytest.skip(str(exc))
    server = LocalRedis(tmp_path / "redis", port=free_port()).start()
    yield server
    server.stop()


def step_workers(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Step key -> the Celery worker (``w1@host``) that ran it, from the run's event log:
    the worker's engine event names itself when it picks the step up."""
    out = {}
    for rec in instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        data = rec.event_log_entry.dagster_event.engine_event_data
        worker = (data.metadata or {}).get("Celery worker") if data else None
        if worker is not None:
            out[rec.event_log_entry.step_key] = worker.value
    return out


def test_a_backfill_on_two_celery_workers_lands_on_both_and_equals_a_local_run(
        lake_env, redis, tmp_path, monkeypatch):
    for k, v in {"BACKTEST_EXECUTOR": "celery", "BACKTEST_CELERY_BROKER": redis.url(0),
                 **RUN_CREATION_ENV}.items():
        monkeypatch.setenv(k, v)
    with dg.DagsterInstance.get() as instance:
        register_listed_symbols(instance)
    workers = Workers(tmp_path / "workers", redis.url(0), redis.url(1), count=2).start()
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("dagster")), "job", "execute", "-m",
             "backtest_assets.definitions", "-j", "market_data_job", "--tags",
             json.dumps(range_tags(D1, D2, SYMBOLS))],
            env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=900)
        logs = "\n".join(p.read_text()[-3000:] for p in (tmp_path / "workers").glob("*.log"))
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:], logs)
    finally:
        workers.stop()
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/asset_partition_range_end"] == f"{D2}|{SYMBOLS[-1]}"
        mapping = step_workers(instance, run.run_id)
    assert set(mapping.values()) == set(workers.names), mapping
    assert len(mapping) >= 9  # six raw assets and three bar intervals, at least
    on_workers = tables(make_warehouse())

    monkeypatch.setenv("BACKTEST_WAREHOUSE", "duckdb")
    monkeypatch.setenv("BACKTEST_EXECUTOR", "in_process")
    monkeypatch.setenv("BACKTEST_DATA_ROOT", str(tmp_path / "local"))
    (tmp_path / "local_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "local_home")) as instance:
        assert cli.run(D1, D2, SYMBOLS, instance=instance, quiet=True, research=False)
    local = tables(make_warehouse())
    assert sorted(on_workers) == sorted(local)
    assert on_workers["bars_5m"].height == 2 * 2 * 2 * 288
    for name in local:
        assert on_workers[name].equals(local[name]), name
