"""The market-data job through Dagster with the synthetic source and a real instance."""

import datetime as dt
import subprocess
import sys

import dagster as dg
import polars as pl
import pytest

from backtest_assets.cli import run
from backtest_assets.resources import WarehouseResource
from backtest_assets.sources.synthetic import SyntheticSource
from tests.conftest import REPO, subprocess_env

TABLES = ["raw_perp_klines_1m", "raw_spot_klines_1m", "raw_funding_rates", "raw_open_interest",
          "bars_1m", "bars_5m", "bars_15m"]
D1, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 3)


def snapshot() -> dict[str, pl.DataFrame]:
    wh = WarehouseResource().warehouse()
    with wh.connect(read_only=True) as conn:
        out = {}
        for t in TABLES:
            cols = [r[0] for r in conn.execute(f"DESCRIBE {t}").fetchall()]
            out[t] = conn.sql(f"SELECT * FROM {t} ORDER BY ALL").pl()  # noqa: S608
            assert out[t].columns == cols
    return out


def test_single_run_backfill_over_days_and_symbols(data_root, instance):
    assert run(D1, D3, ["BTCUSDT", "ETHUSDT"], instance=instance, quiet=True, research=False)
    runs = instance.get_runs()
    assert len(runs) == 1  # three days x two symbols in one run
    snap = snapshot()
    assert snap["raw_perp_klines_1m"].height == 3 * 2 * 1440
    assert snap["bars_1m"].height == 3 * 2 * 2 * 1440
    assert snap["bars_5m"].height == 3 * 2 * 2 * 288
    assert snap["bars_15m"].height == 3 * 2 * 2 * 96
    assert snap["raw_funding_rates"].height == 3 * 2 * 3
    assert snap["raw_open_interest"].height == 3 * 2 * 288
    assert sorted(snap["bars_5m"]["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"]
    # Every (date, symbol) key of every asset was recorded as materialized.
    for t in TABLES:
        keys = instance.get_materialized_partitions(dg.AssetKey(t))
        assert keys == {f"2024-01-0{d}|{s}" for d in (1, 2, 3) for s in ("BTCUSDT", "ETHUSDT")}
    # A 5m bar equals the same five 1m source rows aggregated by hand.
    raw = snap["raw_perp_klines_1m"].filter(
        (pl.col("symbol") == "ETHUSDT")
        & pl.col("ts_open").is_between(dt.datetime(2024, 1, 2, 13, 5),
                                       dt.datetime(2024, 1, 2, 13, 9)))
    bar = snap["bars_5m"].filter((pl.col("symbol") == "ETHUSDT") & (pl.col("market") == "perp")
                                 & (pl.col("ts_open") == dt.datetime(2024, 1, 2, 13, 5))).row(
        0, named=True)
    assert raw.height == 5
    assert bar["open"] == raw["open"][0] and bar["close"] == raw["close"][-1]
    assert bar["high"] == raw["high"].max() and bar["low"] == raw["low"].min()
    assert bar["volume"] == pytest.approx(raw["volume"].sum(), rel=1e-12)
    assert bar["n_source_bars"] == 5
    # The catalog's rows and columns: Dagster's standard table metadata on the materialization.
    event = instance.get_latest_materialization_event(dg.AssetKey("bars_5m"))
    meta = event.asset_materialization.metadata
    assert meta["dagster/row_count"].value == snap["bars_5m"].height  # the run wrote them all
    columns = meta["dagster/column_schema"].value.columns
    assert [c.name for c in columns] == snap["bars_5m"].columns
    by_name = {c.name: c for c in columns}
    assert by_name["close"].type == "Float64" and by_name["symbol"].type == "String"
    assert by_name["close"].constraints.nullable is False
    preview = meta["preview"].value.splitlines()
    assert preview[0].startswith("| symbol |") and len(preview) == 2 + 5


def test_rematerializing_gives_identical_rows(data_root, instance):
    assert run(D1, D3, None, instance=instance, quiet=True, research=False)
    first = snapshot()
    assert run(D1, D3, None, instance=instance, quiet=True, research=False)
    assert run(dt.date(2024, 1, 2), dt.date(2024, 1, 2), ["ETHUSDT"], instance=instance,
               quiet=True, research=False)
    again = snapshot()
    for t in TABLES:
        assert again[t].equals(first[t]), t


def test_a_non_contiguous_symbol_selection_runs_once_per_block(data_root, instance):
    assert run(D1, D1, ["SOLUSDT", "BTCUSDT"], instance=instance, quiet=True, research=False)
    assert len(instance.get_runs()) == 2
    assert sorted(snapshot()["bars_15m"]["symbol"].unique()) == ["BTCUSDT", "SOLUSDT"]


def test_blocking_check_failure_keeps_previous_data_and_stops_downstream(
        data_root, instance, monkeypatch):
    assert run(D1, D1, ["BTCUSDT"], instance=instance, quiet=True, research=False)
    before = snapshot()
    original = SyntheticSource.klines_1m

    def broken(self, market, symbol, day):
        batch = original(self, market, symbol, day)
        batch.frame = batch.frame.with_columns(high=pl.col("low") * 0.99)  # high < low
        return batch

    monkeypatch.setattr(SyntheticSource, "klines_1m", broken)
    # every key is up to date: only --rebuild asks the source again
    assert not run(D1, D1, ["BTCUSDT"], instance=instance, quiet=True, research=False,
                   rebuild=True)
    failed_run = instance.get_runs(limit=1)[0]
    assert failed_run.status == dg.DagsterRunStatus.FAILURE
    records = instance.get_records_for_run(failed_run.run_id).records
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records
                   if r.event_log_entry.dagster_event
                   and r.event_log_entry.dagster_event.event_type_value ==
                   "ASSET_CHECK_EVALUATION"]
    failed = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed}
    assert ("raw_perp_klines_1m", "ohlc_sanity") in failed
    after = snapshot()
    for t in TABLES:
        assert after[t].equals(before[t]), t


@pytest.mark.parametrize("tz", ["America/New_York"])
def test_non_utc_machine_time_zone_gives_the_same_warehouse(tmp_path, tz):
    contents = {}
    for zone in ("UTC", tz):
        root = tmp_path / zone.replace("/", "_")
        env = subprocess_env(TZ=zone, BACKTEST_DATA_ROOT=str(root / "data"),
                             DAGSTER_HOME=str(root / "home"))
        (root / "home").mkdir(parents=True)
        proc = subprocess.run(
            [sys.executable, "-m", "backtest_assets", "run", "--start", "2024-01-01",
             "--end", "2024-01-02", "--symbols", "BTCUSDT", "--market-data-only"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        import duckdb
        con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
        try:
            contents[zone] = {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").pl()  # noqa: S608
                              for t in TABLES}
        finally:
            con.close()
    for t in TABLES:
        assert contents[tz][t].equals(contents["UTC"][t]), t
        assert contents[tz][t].height > 0
    bars = contents[tz]["bars_1m"]
    assert bars["ts_open"].min() == dt.datetime(2024, 1, 1)
    assert bars["ts_open"].max() == dt.datetime(2024, 1, 2, 23, 59)
