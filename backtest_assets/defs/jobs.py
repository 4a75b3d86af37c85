"""Jobs, the shared resources and the executor."""

from __future__ import annotations

import os

import dagster as dg

from backtest_assets.deploy.celery import EXECUTOR_ENV, broker_from_env
from backtest_assets.resources import (
    MarketSourceResource,
    SpecRegistryResource,
    WarehouseIOManager,
    WarehouseResource,
)
from backtest_assets.warehouse import BACKEND_ENV

# The daily-ingested assets, and the name of their freshness checks (defs.automation).
INGEST_ASSETS = ("raw_perp_klines_1m", "raw_spot_klines_1m", "raw_mark_price_klines_1m",
                 "raw_premium_index_klines_1m", "raw_funding_rates", "raw_open_interest")
FRESHNESS_CHECK = "yesterday_ingested"

market_data_job = dg.define_asset_job(
    "market_data_job",
    # the freshness checks judge the instance, not the data a run writes (freshness_job)
    selection=dg.AssetSelection.groups("ingest", "bars") - dg.AssetSelection.checks(*[
        dg.AssetCheckKey(dg.AssetKey(name), FRESHNESS_CHECK) for name in INGEST_ASSETS]),
    description="Raw Binance-format data to canonical 1m/5m/15m bars, per date x symbol.",
)
research_job = dg.define_asset_job(
    "research_job",
    selection=dg.AssetSelection.groups("features", "events"),
    description="Point-in-time features, forward labels and events, per date x symbol "
                "(needs bars for the warm-up days before and the day after).",
)
study_job = dg.define_asset_job(
    "study_job",
    selection=dg.AssetSelection.assets("study_record"),
    description="Record a study (window, symbols, event types, spec hashes), or check that "
                "its specs are still the recorded ones.",
)
event_quality_job = dg.define_asset_job(
    "event_quality_job",
    selection=dg.AssetSelection.assets("event_quality_report"),
    description="Gate E-1 for one study x event type.",
)
discovery_job = dg.define_asset_job(
    "discovery_job",
    selection=dg.AssetSelection.assets("event_quality_report")
    | dg.AssetSelection.groups("discovery"),
    description="Gate E-1, then Phase 2 (blocked by a failed e1_gate) for one study x event "
                "type.",
)
blueprints_job = dg.define_asset_job(
    "blueprints_job",
    selection=dg.AssetSelection.assets("strategy_blueprints"),
    description="Catalog a study's baseline blueprints and Phase-2 survivors; register each "
                "as a blueprint partition.",
)
backtest_job = dg.define_asset_job(
    "backtest_job",
    selection=dg.AssetSelection.assets("backtest_trades", "backtest_equity",
                                       "backtest_metrics"),
    description="Backtest study x blueprint partitions (trades, equity with its chart, "
                "metrics).",
)

walkforward_job = dg.define_asset_job(
    "walkforward_job",
    selection=dg.AssetSelection.groups("walkforward"),
    description="Walk-forward folds, the parameter grid in and out of sample, deflated Sharpe "
                "and PBO, per blueprint partition.",
)
demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.groups("demo"),
    description="A day of the demo stage: every blueprint in demo paper-traded through the "
                "day, tested against its backtest, held, promoted to live or archived.",
)
portfolio_job = dg.define_asset_job(
    "portfolio_job",
    selection=dg.AssetSelection.groups("portfolio"),
    description="A study's portfolio (study x portfolio): edge contracts, weights walked "
                "forward, the netted book and the equal-weight book beside it.",
)
alpha_job = dg.define_asset_job(
    "alpha_job",
    selection=dg.AssetSelection.groups("alpha"),
    description="A study's alpha bundle (study x alpha_model): the point-in-time liquid "
                "universe, signals, regime, the orthogonalized ridge walked forward, its "
                "out-of-sample scores, conditional expectancy and the edge-candidate export.",
)
report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.groups("report"),
    description="Promotion decisions and the HTML research report of a study.",
)


def executor_from_env() -> dg.ExecutorDefinition:
    """The jobs' executor, from ``BACKTEST_EXECUTOR``.

    ``in_process`` (the default): one process, whose steps share the DuckDB file's single
    writer and skip ~3 s of start-up each. ``celery``: each step a task on Celery workers
    (``deploy.celery``; broker ``BACKTEST_CELERY_BROKER``), which write at once, so only on a
    DuckLake warehouse. The CLI runs in process whatever this says; runs launched by the
    webserver, the daemon or ``dagster job execute`` use it.
    """
    kind = os.environ.get(EXECUTOR_ENV) or "in_process"
    if kind == "in_process":
        return dg.in_process_executor
    if kind != "celery":
        raise dg.DagsterInvariantViolationError(
            f"{EXECUTOR_ENV}={kind!r}: choose in_process or celery")
    if os.environ.get(BACKEND_ENV) != "ducklake":
        raise dg.DagsterInvariantViolationError(
            f"{EXECUTOR_ENV}=celery runs steps in several processes at once, and the DuckDB "
            f"file has one writer: use the DuckLake warehouse ({BACKEND_ENV}=ducklake)")
    from dagster_celery import celery_executor

    broker, backend = broker_from_env()
    return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")


defs = dg.Definitions(
    jobs=[market_data_job, research_job, study_job, event_quality_job, discovery_job,
          blueprints_job,
          backtest_job, walkforward_job, demo_job, portfolio_job, alpha_job, report_job],
    resources={
        "io_manager": WarehouseIOManager(),
        "warehouse": WarehouseResource(),
        "market_source": MarketSourceResource(),
        "specs": SpecRegistryResource(),
    },
    executor=executor_from_env(),
)
