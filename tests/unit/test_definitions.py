"""The code location loads, and its asset graph is pinned so a change to it is a visible diff."""

import dagster as dg
import pytest

from backtest_assets.definitions import defs
from backtest_assets.partitions import REGISTRY, date_symbol_partitions_def

DATE_SYMBOL_ASSETS = ["bars_15m", "bars_1m", "bars_5m", "event_table", "forward_labels",
                      "pit_features", "raw_funding_rates", "raw_mark_price_klines_1m",
                      "raw_open_interest", "raw_perp_klines_1m", "raw_premium_index_klines_1m",
                      "raw_spot_klines_1m"]
PHASE2_ASSETS = ["phase2_candidates_raw", "phase2_fdr", "phase2_pvals", "phase2_report"]
BACKTEST_ASSETS = ["backtest_equity", "backtest_metrics", "backtest_trades"]
WALKFORWARD_ASSETS = ["walkforward_equity", "walkforward_results", "walkforward_summary"]
REPORT_ASSETS = ["promotion_decisions", "research_report", "tear_sheets"]
LIFECYCLE_ASSETS = ["demo_days", "run_epochs"]
PORTFOLIO_ASSETS = ["edge_contracts", "portfolio_equity", "portfolio_metrics",
                    "portfolio_weights"]
ALPHA_ASSETS = ["alpha_model", "alpha_scores", "alpha_signals", "edge_candidates",
                "expectancy_report", "expectancy_robustness", "regime_series",
                "universe_snapshot"]
ASSETS = sorted([*DATE_SYMBOL_ASSETS, "event_quality_report", *PHASE2_ASSETS, "spec_registry",
                 "study_record", "strategy_blueprints", *BACKTEST_ASSETS, "walkforward_folds",
                 *WALKFORWARD_ASSETS, *REPORT_ASSETS, *PORTFOLIO_ASSETS, *ALPHA_ASSETS,
                 *LIFECYCLE_ASSETS])
BASE_CHECKS = {"schema", "unique_keys", "monotonic_time", "row_count", "complete_days"}


def test_asset_graph_is_pinned():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == ASSETS
    deps = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
            for k in graph.get_all_asset_keys()}
    assert deps == {
        "raw_perp_klines_1m": [], "raw_spot_klines_1m": [], "raw_funding_rates": [],
        "raw_open_interest": [], "raw_mark_price_klines_1m": [],
        "raw_premium_index_klines_1m": [],
        "bars_1m": ["raw_mark_price_klines_1m", "raw_perp_klines_1m", "raw_spot_klines_1m"],
        "bars_5m": ["bars_1m"], "bars_15m": ["bars_1m"],
        "pit_features": ["bars_5m", "raw_funding_rates", "raw_open_interest"],
        "forward_labels": ["bars_5m"], "event_table": ["pit_features"],
        "study_record": [],
        "event_quality_report": ["bars_5m", "event_table", "forward_labels", "pit_features",
                                 "study_record"],
        "phase2_candidates_raw": ["event_quality_report", "event_table", "forward_labels",
                                  "pit_features"],
        "phase2_pvals": ["phase2_candidates_raw"],
        "phase2_fdr": ["phase2_candidates_raw", "phase2_pvals"],
        "phase2_report": ["phase2_candidates_raw", "phase2_fdr", "phase2_pvals"],
        "spec_registry": [],
        "strategy_blueprints": ["alpha_scores", "phase2_fdr", "study_record"],
        **{name: ["bars_5m", "event_table", "pit_features", "raw_funding_rates",
                  "strategy_blueprints"] for name in BACKTEST_ASSETS},
        "walkforward_folds": ["strategy_blueprints"],
        **{name: ["bars_5m", "event_table", "phase2_fdr", "pit_features", "raw_funding_rates",
                  "strategy_blueprints", "walkforward_folds"] for name in WALKFORWARD_ASSETS},
        "promotion_decisions": ["backtest_metrics", "strategy_blueprints",
                                "walkforward_summary"],
        "research_report": ["alpha_model", "backtest_equity", "backtest_metrics", "bars_5m",
                            "event_table", "expectancy_report",
                            "phase2_fdr", "portfolio_equity", "portfolio_metrics",
                            "portfolio_weights", "promotion_decisions", "tear_sheets",
                            "walkforward_equity", "walkforward_results", "walkforward_summary"],
        "tear_sheets": ["backtest_equity", "backtest_metrics", "backtest_trades", "bars_5m",
                        "event_table", "phase2_fdr", "portfolio_equity", "portfolio_metrics",
                        "portfolio_weights", "promotion_decisions", "strategy_blueprints",
                        "walkforward_equity", "walkforward_results", "walkforward_summary"],
        **{name: ["backtest_equity", "backtest_trades", "bars_5m", "event_table",
                  "pit_features", "raw_funding_rates", "strategy_blueprints", "study_record",
                  "walkforward_summary"] for name in PORTFOLIO_ASSETS},
        # inside the bundle: data -> universe, signals, regime -> model -> scores -> rest
        "universe_snapshot": ["bars_5m", "event_table", "raw_funding_rates", "study_record"],
        "alpha_signals": ["universe_snapshot"], "regime_series": ["universe_snapshot"],
        "alpha_model": ["alpha_signals"], "alpha_scores": ["alpha_model", "regime_series"],
        **{name: ["alpha_scores", "alpha_signals"]
           for name in ("expectancy_report", "expectancy_robustness")},
        "edge_candidates": ["expectancy_report", "phase2_fdr"],
        # the demo reads the day's data and the study's decisions; the epochs the study's
        # evaluations (and the demo days' table, undeclared: it is daily over every day)
        "demo_days": ["bars_5m", "event_table", "pit_features", "promotion_decisions",
                      "raw_funding_rates", "walkforward_equity", "walkforward_summary"],
        "run_epochs": ["backtest_metrics", "backtest_trades", "promotion_decisions",
                       "strategy_blueprints", "walkforward_summary"],
    }


def test_warmup_and_lookahead_are_declared_partition_mappings():
    graph = defs.resolve_asset_graph()
    key = dg.MultiPartitionKey({"date": "2024-01-10", "symbol": "ETHUSDT"})

    def upstream_days(asset, parent):
        mapping = graph.get(dg.AssetKey(asset)).partition_mappings[dg.AssetKey(parent)]
        keys = mapping.get_upstream_mapped_partitions_result_for_partitions(
            date_symbol_partitions_def.subset_with_partition_keys([key]),
            date_symbol_partitions_def, date_symbol_partitions_def).partitions_subset
        return sorted(k.keys_by_dimension["date"] for k in keys.get_partition_keys())

    warmup = [f"2024-01-{d:02d}" for d in range(10 - REGISTRY.feature_warmup_days, 11)]
    assert upstream_days("pit_features", "bars_5m") == warmup
    assert upstream_days("pit_features", "raw_funding_rates") == warmup
    assert upstream_days("forward_labels", "bars_5m") == ["2024-01-10", "2024-01-11"]
    assert upstream_days("event_table", "pit_features") == ["2024-01-09", "2024-01-10"]


def test_every_asset_is_date_symbol_single_run_in_the_duckdb_pool_with_blocking_checks():
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        if name not in DATE_SYMBOL_ASSETS:
            continue
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


def test_e1_report_is_per_study_and_event_type_with_a_partitioned_blocking_gate():
    report = defs.resolve_assets_def("event_quality_report")
    dims = {d.name: d.partitions_def for d in report.partitions_def.partitions_defs}
    assert dims["event_type"].get_partition_keys() == sorted(REGISTRY.events)
    assert dims["study"].name == "study"
    assert report.backfill_policy == dg.BackfillPolicy.multi_run(1)
    (gate,) = [c for c in report.check_specs if c.name == "e1_gate"]
    assert gate.blocking and gate.partitions_def == report.partitions_def
    lint = defs.resolve_assets_def("spec_registry").check_specs
    assert [(c.name, c.blocking) for c in lint] == [("spec_lint", True)]


@pytest.mark.parametrize(("job", "assets"), [
    ("market_data_job", ["bars_15m", "bars_1m", "bars_5m", "raw_funding_rates",
                         "raw_mark_price_klines_1m", "raw_open_interest", "raw_perp_klines_1m",
                         "raw_premium_index_klines_1m", "raw_spot_klines_1m"]),
    ("research_job", ["event_table", "forward_labels", "pit_features"]),
    ("study_job", ["study_record"]),
    ("event_quality_job", ["event_quality_report"]),
    ("discovery_job", ["event_quality_report", *PHASE2_ASSETS]),
    ("blueprints_job", ["strategy_blueprints"]),
    ("backtest_job", BACKTEST_ASSETS),
    ("walkforward_job", sorted(["walkforward_folds", *WALKFORWARD_ASSETS])),
    ("report_job", sorted([*REPORT_ASSETS, "run_epochs"])),
    ("demo_job", ["demo_days"]),
])
def test_jobs_select_their_layers(job, assets):
    keys = defs.resolve_job_def(job).asset_layer.executable_asset_keys
    assert sorted(k.to_user_string() for k in keys) == assets


def test_backtests_are_one_simulation_per_dynamic_blueprint_partition_with_blocking_checks():
    bt = defs.resolve_assets_def("backtest_equity")
    assert {k.to_user_string() for k in bt.keys} == set(BACKTEST_ASSETS)  # one multi-asset
    assert isinstance(bt.partitions_def, dg.MultiPartitionsDefinition)
    assert {d.name: d.partitions_def.name for d in bt.partitions_def.partitions_defs} == {
        "study": "study", "blueprint": "blueprint"}  # study x blueprint, both dynamic
    assert bt.backfill_policy == dg.BackfillPolicy.single_run() and bt.op.pool == "duckdb"
    checks = {(c.asset_key.to_user_string(), c.name): c for c in bt.check_specs}
    assert set(checks) == {
        ("backtest_trades", "schema"), ("backtest_trades", "trades_in_window"),
        ("backtest_equity", "schema"), ("backtest_equity", "pnl_reconciles"),
        ("backtest_metrics", "schema"), ("backtest_metrics", "metrics_reconcile"),
        ("backtest_metrics", "ledger_balances")}
    assert all(c.blocking for c in checks.values())
    catalog = defs.resolve_assets_def("strategy_blueprints")
    assert catalog.partitions_def.name == "study"
    assert [c.name for c in catalog.check_specs] == ["blueprints_valid"]


def test_walk_forward_and_report_partitions_and_blocking_checks():
    wf = defs.resolve_assets_def("walkforward_summary")
    assert {k.to_user_string() for k in wf.keys} == set(WALKFORWARD_ASSETS)  # one evaluation
    assert [d.name for d in wf.partitions_def.partitions_defs] == ["blueprint", "study"]
    assert wf.op.pool == "duckdb"
    assert wf.backfill_policy == dg.BackfillPolicy.single_run()
    folds = defs.resolve_assets_def("walkforward_folds")
    assert {c.name for c in folds.check_specs} == {"schema", "folds_do_not_leak"}
    assert all(c.blocking for a in (wf, folds) for c in a.check_specs)
    for name in REPORT_ASSETS:
        a = defs.resolve_assets_def(name)
        assert a.partitions_def.name == "study"  # dynamic: a study is registered when run
        # a tear sheet over 5 MB warns: it is still right, and the report links it
        assert {c.name for c in a.check_specs if not c.blocking} == (
            {"sheets_under_5mb"} if name == "tear_sheets" else set())


def test_the_code_location_imports_neither_matplotlib_nor_scipy_stats_or_optimize():
    """Every run worker imports the code location: charts and statistics load at first use
    (1 s of a 2.7 s import before they did)."""
    import subprocess
    import sys

    probe = ("import sys, backtest_assets.definitions; print(sorted(m for m in sys.modules "
             "if m.split('.')[0] == 'matplotlib' or m in ('scipy.stats', 'scipy.optimize', "
             "'scipy.sparse', 'scipy.linalg')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "[]", out
