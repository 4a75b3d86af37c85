"""The Postgres instance of real work, through the CLI: a range run in one planned event per
asset (DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS), its failed partitions still marked
failed and named, and a rerun completing them.

The CLI runs in a child process on ``dagster_home/postgres/dagster.yaml`` over a real
PostgreSQL server (tests/support/postgres.py), reading a local Binance archive whose perp file
of one key answers HTTP 500 until the fault is cleared.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from backtest_assets.defs.jobs import INGEST_ASSETS
from backtest_assets.deploy.settings import RUN_CREATION_ENV, instance_kind
from backtest_assets.instance import is_postgres
from backtest_assets.partitions import date_symbol_partitions_def
from backtest_assets.sources.synthetic import SyntheticSource
from tests.conftest import REPO, subprocess_env
from tests.support.archive import daily_klines_path, write_klines_day
from tests.support.http_server import ArchiveServer
from tests.support.postgres import planned_events

DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = sorted(f"{d.isoformat()}|{s}" for d in DAYS for s in SYMBOLS)
BARS = ["bars_1m", "bars_5m", "bars_15m"]
# Each run's steps (perp klines failing fails it and the bars after it)
ASSETS = [*INGEST_ASSETS, *BARS]


def cli(home, data, base_url):
    env = subprocess_env(DAGSTER_HOME=str(home), BACKTEST_DATA_ROOT=str(data))
    for key in RUN_CREATION_ENV:  # the CLI sets them itself on a Postgres instance
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "backtest_assets", "run", "--source", "binance",
         "--base-url", base_url, "--market-data-only", "--start", str(DAYS[0]),
         "--end", str(DAYS[-1]), "--symbols", ",".join(SYMBOLS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def statuses(instance: dg.DagsterInstance, asset: str) -> dict[str, str]:
    found = instance.get_status_by_partition(dg.AssetKey(asset), KEYS, date_symbol_partitions_def)
    return {k: found[k].value if found.get(k) else "MISSING" for k in KEYS}


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    synth = SyntheticSource(seed=5)
    for day in DAYS:
        for symbol in SYMBOLS:
            for market in ("perp", "spot"):
                write_klines_day(root, market, symbol, day,
                                 synth.klines_1m(market, symbol, day).frame)
    with ArchiveServer(root) as server:
        yield server


def test_a_failed_range_run_marks_and_names_its_partitions_and_a_rerun_completes_them(
        postgres_home, archive, tmp_path):
    assert instance_kind(postgres_home) == "postgres"
    bad = "/" + daily_klines_path("perp", SYMBOLS[0], DAYS[-1])
    archive.fail(bad, 500, times=1_000_000)
    data = tmp_path / "data"

    first = cli(postgres_home, data, archive.base_url)
    assert first.returncode == 1, first.stdout + first.stderr
    out = first.stdout
    assert "built 0 of 36 asset keys; 36 not built (failed runs):" in out, out
    # The step failure names its partitions and file; then every asset left unmaterialized.
    assert "raw_perp_klines_1m" in out and "HTTP 500" in out, out
    for asset in ["raw_perp_klines_1m", *BARS]:
        assert f"{asset}: 4 partition(s) not materialized: {KEYS[0]}, {KEYS[1]}, {KEYS[2]}" \
            in out, out
    assert "raw_spot_klines_1m: 4 partition(s) not materialized" not in out, out

    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        assert is_postgres(instance)
        (run,) = instance.get_run_records()
        run_id = run.dagster_run.run_id
        # The setting was in force: one planned event per asset holding the range ...
        subsets, marked = planned_events(instance, run_id)
        assert subsets == [(a, KEYS) for a in sorted(ASSETS)], subsets
        # ... and the partitions the run did not materialize were marked, one event each.
        assert marked == sorted((a, k) for a in ["raw_perp_klines_1m", *BARS] for k in KEYS)
        for asset in ["raw_perp_klines_1m", *BARS]:
            assert statuses(instance, asset) == dict.fromkeys(KEYS, "FAILED"), asset
        for asset in INGEST_ASSETS:
            if asset != "raw_perp_klines_1m":
                assert statuses(instance, asset) == dict.fromkeys(KEYS, "MATERIALIZED"), asset

    archive.clear_faults()
    second = cli(postgres_home, data, archive.base_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "partition(s) not materialized" not in second.stdout, second.stdout
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        for asset in ASSETS:
            assert statuses(instance, asset) == dict.fromkeys(KEYS, "MATERIALIZED"), asset
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.sql("SELECT CAST(ts_open AS DATE), symbol, count(*), "
                       "count(DISTINCT ts_open) FROM raw_perp_klines_1m GROUP BY ALL").fetchall()
    finally:
        con.close()
    assert sorted(rows) == [(d, s, 1440, 1440) for d in DAYS for s in SYMBOLS]


def test_prepare_sets_the_run_creation_settings_and_pools_once_on_postgres_only(
        postgres_home, instance, monkeypatch):
    from backtest_assets.instance import is_postgres, prepare

    for key in RUN_CREATION_ENV:  # set, then deleted: undone at teardown, whatever prepare sets
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert not is_postgres(instance) and prepare(instance) == {}  # the SQLite test instance
    assert not any(key in os.environ for key in RUN_CREATION_ENV)
    with dg.DagsterInstance.from_config(str(postgres_home)) as pg:
        assert is_postgres(pg)
        assert prepare(pg) == RUN_CREATION_ENV
        engine = pg.event_log_storage._engine  # what optimize_for_webserver set
        assert type(engine.pool).__name__ == "QueuePool"
        assert prepare(pg) == RUN_CREATION_ENV and pg.event_log_storage._engine is engine
        assert pg.get_runs() == []  # the pooled connection works



def test_every_process_opening_the_instance_pools_its_event_connection(postgres_home):
    """A run worker, ``dagster job execute`` or a Celery worker opens the instance without
    the CLI's prepare: the event log named in dagster.yaml pools from the start."""
    from backtest_assets.deploy.pooled import PooledPostgresEventLogStorage

    for home in (postgres_home, REPO / "dagster_home" / "lake"):
        with dg.DagsterInstance.from_config(str(home)) as pg:
            assert isinstance(pg.event_log_storage, PooledPostgresEventLogStorage)
            assert type(pg.event_log_storage._engine.pool).__name__ == "QueuePool"
            assert instance_kind(home) == "postgres"
            assert pg.get_runs() == []
