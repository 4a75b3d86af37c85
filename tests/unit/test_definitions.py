"""The code location loads, and its asset graph is pinned so a change to it is a visible diff."""

import dagster as dg

from backtest_assets.definitions import defs
from backtest_assets.partitions import date_symbol_partitions_def

ASSETS = ["bars_15m", "bars_1m", "bars_5m", "raw_funding_rates", "raw_open_interest",
          "raw_perp_klines_1m", "raw_spot_klines_1m"]
BASE_CHECKS = {"schema", "unique_keys", "monotonic_time", "row_count", "complete_days"}


def test_asset_graph_is_pinned():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == ASSETS
    deps = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
            for k in graph.get_all_asset_keys()}
    assert deps == {
        "raw_perp_klines_1m": [], "raw_spot_klines_1m": [], "raw_funding_rates": [],
        "raw_open_interest": [], "bars_1m": ["raw_perp_klines_1m", "raw_spot_klines_1m"],
        "bars_5m": ["bars_1m"], "bars_15m": ["bars_1m"],
    }


def test_every_asset_is_date_symbol_single_run_in_the_duckdb_pool_with_blocking_checks():
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.partitions_def == date_symbol_partitions_def, name
        assert "partition_expr" in spec.metadata, name
        assets_def = defs.resolve_assets_def(spec.key)
        assert assets_def.backfill_policy == dg.BackfillPolicy.single_run(), name
        assert assets_def.op.pool == "duckdb", name
        checks = {c.name: c for c in assets_def.check_specs}
        assert set(checks) >= BASE_CHECKS, name
        assert all(c.blocking for n, c in checks.items() if n != "complete_days"), name
        assert not checks["complete_days"].blocking, name
    assert {"positive_prices", "ohlc_sanity"} <= {
        c.name for c in defs.resolve_assets_def("bars_5m").check_specs}


def test_main_job_selects_ingest_and_bars():
    job = defs.resolve_job_def("market_data_job")
    assert sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys) == ASSETS
