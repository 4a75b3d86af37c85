"""Backfills launched the way the UI launches them, through the real webserver and daemon.

A date range x symbol subset of the market-data assets goes through ``launchPartitionBackfill``
(GraphQL, ``assetSelection`` + ``partitionNames``, as the UI's "Materialize" dialog sends it);
the daemon splits it into single runs over ranges that share the ``duckdb`` pool, and the
warehouse ends up with exactly those keys. On the ``binance`` source, a download that keeps
failing fails its run; after the fault is gone, ``reexecutePartitionBackfill`` with
``FROM_FAILURE`` (the UI's "Re-execute from failure") completes the keys, each exactly once.

Timing: the backfill daemon loops every 30 s. A backfill launched right after the servers start
is picked up by the daemon's first iteration; it is marked done one iteration (30 s) later. The
retry of test B waits for a second cycle (~60 s), hence the ``slow`` mark of its SQLite
variant; test A, whose checks test B's Postgres variant makes too, is slow as well (CI keeps
the Postgres variant: the instance of real work).
"""

import datetime as dt
import json
import time
from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path

import duckdb
import pytest

from backtest_assets.core.schedule import RANGE_START_TAG, keys_of_tags
from backtest_assets.defs.jobs import INGEST_ASSETS
from backtest_assets.partitions import UNIVERSE
from backtest_assets.sources.synthetic import SyntheticSource
from tests.support.archive import daily_klines_path, write_klines_day
from tests.support.dagster_servers import (
    CONCURRENCY,
    DagsterServers,
    run_tags,
    wait_for,
)
from tests.support.http_server import ArchiveServer
from tests.support.postgres import planned_events

INGEST = list(INGEST_ASSETS)
BARS = ["bars_1m", "bars_5m", "bars_15m"]
MARKET_DATA = INGEST + BARS
DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
KEYS = {(d, s) for d in DAYS for s in SYMBOLS}
PARTITIONS = sorted(f"{d.isoformat()}|{s}" for d, s in KEYS)

BACKFILL_TIMEOUT = 240


@pytest.fixture
def start_servers(tmp_path) -> Iterator:
    """Start dagster-webserver and dagster-daemon (fresh instance and data root) with ``env``."""
    started: list[DagsterServers] = []

    def start(instance_yaml: Path | None = None, **env: str) -> DagsterServers:
        servers = DagsterServers(tmp_path / f"servers-{len(started)}", env,
                                 **({"instance_yaml": instance_yaml} if instance_yaml else {}))
        started.append(servers)
        servers.start()
        return servers

    yield start
    for servers in started:
        servers.stop()


# ------------------------------------------------------------------------- helpers


def keys_of_run(run: dict) -> set[tuple[dt.date, str]]:
    """The (date, symbol) keys a run covers: its range (a rectangle) or its single key."""
    return set(keys_of_tags(run_tags(run), UNIVERSE.symbol_names))


def query(db: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the warehouse, opened read-only and closed at once."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def counts(db: Path, table: str, time_col: str = "ts_open", *, by_market: bool = False
           ) -> dict[tuple, int]:
    """Rows per (date, symbol[, market]) of ``table``."""
    market = ", market" if by_market else ""
    rows = query(db, f"SELECT CAST({time_col} AS DATE), symbol{market}, count(*) "  # noqa: S608
                     f"FROM {table} GROUP BY ALL")
    return {tuple(r[:-1]): r[-1] for r in rows}


def duplicates(db: Path, table: str, key: str) -> int:
    (n,) = query(db, f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}")[0]  # noqa: S608
    return n


def assert_steps_never_overlap(runs: Sequence[dict], pooled: set[str]) -> None:
    """Steps in the pool ``duckdb`` (limit 1, the DuckDB writers): never two at once."""
    ran = [(s["startTime"], s["endTime"], r["runId"][:8], s["stepKey"])
           for r in runs for s in r["stepStats"]
           if s["stepKey"] in pooled and s["status"] in ("SUCCESS", "FAILURE")]
    assert {s[3] for s in ran} == pooled, ran
    assert all(s[0] is not None and s[1] is not None for s in ran), ran
    steps = sorted(ran)
    for a, b in pairwise(steps):
        assert b[0] >= a[1], f"{a[2]}/{a[3]} and {b[2]}/{b[3]} ran at the same time"


def pooled_assets(servers: DagsterServers) -> set[str]:
    """The market-data assets, each of which the server reports in the pool ``duckdb`` only."""
    nodes = servers.gql("{ assetNodes { assetKey { path } pools } }")["assetNodes"]
    pools = {"/".join(n["assetKey"]["path"]): n["pools"] for n in nodes}
    assert {a: pools.get(a) for a in MARKET_DATA} == {a: ["duckdb"] for a in MARKET_DATA}
    return set(MARKET_DATA)


def asset_steps(run: dict) -> list[str]:
    """The run's asset steps (its other steps are asset checks defined apart from the asset)."""
    return sorted(s["stepKey"] for s in run["stepStats"] if s["stepKey"] in MARKET_DATA)


def targeted(backfill: dict) -> dict[str, int]:
    return {"/".join(s["assetKey"]["path"]): s["numPartitionsTargeted"]
            for s in backfill["assetBackfillData"]["assetBackfillStatuses"]
            if s["__typename"] == "AssetPartitionsStatusCounts" and s["numPartitionsTargeted"]}


# ------------------------------------------------------------------------- test A


def assert_range_runs_in_one_pool(servers: DagsterServers, runs: Sequence[dict]) -> None:
    """Single runs over ranges (fewer runs than keys, each a range run of the whole chain)
    in the ``duckdb`` pool: limit 1 on the instance, no slot left claimed afterwards."""
    assert len(runs) < len(PARTITIONS), [run_tags(r) for r in runs]
    for run in runs:
        assert RANGE_START_TAG in run_tags(run), run_tags(run)
        if run["status"] == "SUCCESS":  # (a failed run skips what follows its failed step)
            assert asset_steps(run) == sorted(MARKET_DATA), run["stepStats"]
        assert sorted("/".join(a["path"]) for a in run["assetSelection"]) == sorted(MARKET_DATA)
    instance = servers.gql(CONCURRENCY, pool="duckdb")["instance"]
    assert instance["poolConfig"]["defaultPoolLimit"] == 1
    pool = instance["concurrencyLimit"]
    assert (pool["limit"], pool["slotCount"]) == (1, 1), pool
    assert (pool["activeSlotCount"], pool["pendingStepCount"]) == (0, 0), pool


# The same path as test B's first backfill on the default (SQLite) instance, whose checks
# test B makes too (assert_range_runs_in_one_pool): slow, to keep CI within its budget.
@pytest.mark.slow
def test_ui_backfill_runs_single_runs_over_ranges_in_the_duckdb_pool(start_servers):
    t0 = time.monotonic()
    servers = start_servers(BACKTEST_MARKET_SOURCE="synthetic")
    backfill_id = servers.launch_backfill(MARKET_DATA, PARTITIONS, "e2e date range x symbols")
    backfill = servers.wait_backfill(backfill_id, timeout=BACKFILL_TIMEOUT)
    assert backfill["status"] == "COMPLETED_SUCCESS", servers.describe_backfill(backfill_id)
    assert backfill["numPartitions"] == len(PARTITIONS)
    assert targeted(backfill) == dict.fromkeys(MARKET_DATA, len(PARTITIONS))

    runs = servers.runs(backfill_id)
    assert runs, "the backfill launched no run"
    assert all(r["status"] == "SUCCESS" for r in runs), servers.describe_backfill(backfill_id)
    # Single runs over ranges, together covering the requested keys once each, in the pool
    # (no two steps at once).
    covered = [keys_of_run(r) for r in runs]
    assert sum(len(c) for c in covered) == len(KEYS) and set().union(*covered) == KEYS, covered
    for run in runs:
        assert all(s["status"] == "SUCCESS" for s in run["stepStats"]), run["stepStats"]
    assert_range_runs_in_one_pool(servers, runs)
    assert_steps_never_overlap(runs, pooled_assets(servers))

    # The warehouse: exactly the requested keys, full days, no duplicates.
    servers.wait_idle()
    db = servers.warehouse
    for table in ("raw_perp_klines_1m", "raw_spot_klines_1m", "raw_mark_price_klines_1m",
                  "raw_premium_index_klines_1m"):
        assert counts(db, table) == {k: 1440 for k in KEYS}, table
        assert duplicates(db, table, "symbol, ts_open") == 0, table
    for table, per_day in (("bars_1m", 1440), ("bars_5m", 288), ("bars_15m", 96)):
        assert counts(db, table, by_market=True) == {
            (d, s, m): per_day for d, s in KEYS for m in ("perp", "spot")}, table
        assert duplicates(db, table, "symbol, market, ts_open") == 0, table
    for table in ("raw_funding_rates", "raw_open_interest"):
        assert set(counts(db, table, "ts")) == KEYS, table
    print(f"test A: {len(runs)} runs for {len(KEYS)} keys, {time.monotonic() - t0:.0f} s")


# ------------------------------------------------------------------------- test B


def assert_planned_in_subsets(servers: DagsterServers, runs: Sequence[dict], bad_run: str,
                              bad_partitions: list[str]) -> None:
    """The daemon created the runs with one planned event per asset (the setting was in
    force), and the failed run's unmaterialized partitions were marked one by one."""
    import dagster as dg

    from backtest_assets.deploy.pooled import PooledPostgresEventLogStorage

    with dg.DagsterInstance.from_config(str(servers.home)) as inst:
        assert isinstance(inst.event_log_storage, PooledPostgresEventLogStorage)
        for run in runs:
            subsets, singles = planned_events(inst, run["runId"])
            assert [a for a, _ in subsets] == sorted(
                "/".join(a["path"]) for a in run["assetSelection"]), (run["runId"], subsets)
            expected = sorted((a, k) for a in ["raw_perp_klines_1m", *BARS]
                              for k in bad_partitions) if run["runId"] == bad_run else []
            assert singles == expected, (run["runId"], singles)


def write_archive(root: Path) -> None:
    """Perp and spot 1m klines of every requested key (funding and metrics stay absent:
    the binance source records those days as missing, which is no failure)."""
    synth = SyntheticSource(seed=5)
    for day, symbol in sorted(KEYS):
        for market in ("perp", "spot"):
            write_klines_day(root, market, symbol, day, synth.klines_1m(market, symbol, day).frame)


@pytest.mark.parametrize("instance", [pytest.param("sqlite", marks=pytest.mark.slow),
                                      "postgres"])
def test_ui_retry_from_failure_completes_every_key_exactly_once(start_servers, tmp_path,
                                                                  instance, request):
    t0 = time.monotonic()
    # Postgres: the instance of real work (dagster_home/postgres), on a real server, with the
    # run-creation settings in the webserver's and daemon's environment
    home = request.getfixturevalue("postgres_home") if instance == "postgres" else None
    write_archive(tmp_path / "archive")
    bad_day, bad_symbol = DAYS[-1], SYMBOLS[0]
    bad_file = "/" + daily_klines_path("perp", bad_symbol, bad_day)
    with ArchiveServer(tmp_path / "archive") as archive:
        archive.fail(bad_file, 500, times=1_000_000)  # beyond any retry
        servers = start_servers(home and home / "dagster.yaml",
                                BACKTEST_MARKET_SOURCE="binance",
                                BACKTEST_BINANCE_BASE_URL=archive.base_url)
        first = servers.launch_backfill(MARKET_DATA, PARTITIONS, "e2e binance with a bad file")
        backfill = servers.wait_backfill(first, timeout=BACKFILL_TIMEOUT)
        assert backfill["status"] == "COMPLETED_FAILED", servers.describe_backfill(first)
        t_failed = time.monotonic()

        runs = servers.runs(first)
        assert_range_runs_in_one_pool(servers, runs)
        failed = [r for r in runs if r["status"] == "FAILURE"]
        assert len(failed) == 1 and len(runs) > 1, servers.describe_backfill(first)
        assert all(r["status"] == "SUCCESS" for r in runs if r not in failed)
        (bad_run,) = failed
        bad_keys = keys_of_run(bad_run)
        assert (bad_day, bad_symbol) in bad_keys
        messages = "\n".join(servers.failures(bad_run["runId"]))
        assert bad_file.rsplit("/", 1)[1] in messages and "HTTP 500" in messages, messages
        steps = {s["stepKey"]: s["status"] for s in bad_run["stepStats"]}
        assert steps["raw_perp_klines_1m"] == "FAILURE", steps
        tries = [r for r in archive.requests if r.path == bad_file]
        assert len(tries) > 1 and all(r.status == 500 for r in tries), tries  # retried

        # Nothing of the failed step was written; the other run's keys are complete.
        servers.wait_idle()
        db = servers.warehouse
        assert counts(db, "raw_perp_klines_1m") == {k: 1440 for k in KEYS - bad_keys}

        archive.clear_faults()
        retry = servers.reexecute_backfill(first, "FROM_FAILURE")
        backfill = servers.wait_backfill(retry, timeout=BACKFILL_TIMEOUT)
        assert backfill["status"] == "COMPLETED_SUCCESS", servers.describe_backfill(retry)
        assert {"key": "dagster/parent_backfill_id", "value": first} in backfill["tags"]
        # From failure: the failed asset and its downstream, for the failed run's keys only.
        assert targeted(backfill) == dict.fromkeys(
            ["raw_perp_klines_1m", *BARS], len(bad_keys)), targeted(backfill)
        retry_runs = servers.runs(retry)
        assert retry_runs and all(r["status"] == "SUCCESS" for r in retry_runs)
        assert set().union(*(keys_of_run(r) for r in retry_runs)) == bad_keys
        assert_steps_never_overlap(runs + retry_runs, pooled_assets(servers))
        assert [r.status for r in archive.requests if r.path == bad_file][-1] == 200

    servers.wait_idle()
    assert counts(db, "raw_perp_klines_1m") == {k: 1440 for k in KEYS}
    assert duplicates(db, "raw_perp_klines_1m", "symbol, ts_open") == 0
    assert counts(db, "bars_1m", by_market=True) == {
        (d, s, m): 1440 for d, s in KEYS for m in ("perp", "spot")}
    assert duplicates(db, "bars_1m", "symbol, market, ts_open") == 0
    assert counts(db, "bars_5m", by_market=True) == {
        (d, s, m): 288 for d, s in KEYS for m in ("perp", "spot")}
    # One manifest row per (asset, key): the klines files kept, funding and metrics missing.
    files = query(db, "SELECT asset, symbol, date, status, count(*) FROM ingest_files "
                      "GROUP BY ALL ORDER BY ALL")
    expected_status = {"raw_perp_klines_1m": "ok", "raw_spot_klines_1m": "ok",
                       "raw_funding_rates": "missing", "raw_open_interest": "missing",
                       "raw_mark_price_klines_1m": "missing",
                       "raw_premium_index_klines_1m": "missing"}
    assert sorted(files) == sorted((a, s, d, expected_status[a], 1)
                                   for a in INGEST for d, s in KEYS), files
    kept = servers.data_root / "raw" / bad_file.lstrip("/")
    assert kept.is_file()

    # The daemon's run_failure_recorder sensor logged the failed run, once.
    log = servers.data_root / "ops" / "run_failures.jsonl"

    def recorded() -> list[dict]:
        lines = log.read_text().splitlines() if log.is_file() else []
        return [r for r in map(json.loads, lines) if r["run_id"] == bad_run["runId"]]

    (record,) = wait_for(recorded, timeout=90, what=f"{bad_run['runId']} in {log}",
                         details=servers.log_tails)
    assert record["backfill"] == first and "HTTP 500" in json.dumps(record["steps"]), record
    # ... naming the partitions it left unmaterialized (and marking them failed)
    bad_partitions = sorted(f"{d.isoformat()}|{s}" for d, s in bad_keys)
    assert record["not_materialized"] == dict.fromkeys(
        sorted(["raw_perp_klines_1m", *BARS]), bad_partitions), record
    if instance == "postgres":
        assert_planned_in_subsets(servers, runs + retry_runs, bad_run["runId"], bad_partitions)
    print(f"test B: failed after {t_failed - t0:.0f} s, done after {time.monotonic() - t0:.0f} s")
