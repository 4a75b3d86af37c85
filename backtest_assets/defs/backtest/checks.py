"""Checks on the backtest frames: pandera models plus the accounting that must reconcile."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pandera.polars as pa
import polars as pl

from backtest_assets.defs.shared import blocking_checks, check_result, schema_result
from backtest_assets.engine import ORDER_EVENTS
from backtest_assets.partitions import study_blueprint_partitions_def, study_partitions_def
from backtest_assets.schemas.research import STUDY_COLUMN

BLUEPRINT_CHECKS = [dg.AssetCheckSpec(
    "blueprints_valid", asset="strategy_blueprints", blocking=True,
    partitions_def=study_partitions_def,
    description="every blueprint names known symbols, events and features, a known venue and "
                "a leverage within its cap; names are unique")]


def _specs(asset: str, names: dict[str, str]) -> list[dg.AssetCheckSpec]:
    return blocking_checks(asset, names, study_blueprint_partitions_def)


BACKTEST_CHECKS = [
    *_specs("backtest_trades", {
        "schema": "columns and dtypes of the trades model; qty, prices > 0; fees >= 0",
        "trades_in_window": "every fill inside the study window; exits not before entries",
    }),
    *_specs("backtest_equity", {
        "schema": "columns and dtypes of the equity model; one row per bar, in time order",
        "pnl_reconciles": "the trades' P&L adds up to the equity change (to 1e-6 of capital)",
    }),
    *_specs("backtest_metrics", {
        "schema": "one row per blueprint with every metric",
        "metrics_reconcile": "total return and max drawdown agree with the equity curve",
        "ledger_balances": "available balance + posted margin + unrealized P&L, rebuilt from "
                           "the trades, fees, funding and liquidation forfeits "
                           "(engine/ledger.py), equal the equity at every bar (to 1e-9)",
    }),
]

# The ledger rebuilt from the trades balances to within 1e-13 of the capital (float rounding).
LEDGER_TOL = 1e-9

TRADES_MODEL = pa.DataFrameSchema({
    **STUDY_COLUMN, "blueprint": pa.Column(pl.String), "symbol": pa.Column(pl.String),
    "entry_ts": pa.Column(pl.Datetime("us")), "exit_ts": pa.Column(pl.Datetime("us"),
                                                                    nullable=True),
    "entry_bar": pa.Column(pl.Int64), "exit_bar": pa.Column(pl.Int64, nullable=True),
    "side": pa.Column(pl.String, pa.Check.isin(["long", "short"])),
    "qty": pa.Column(pl.Float64, pa.Check.gt(0)),
    "entry_price": pa.Column(pl.Float64, pa.Check.gt(0)),
    "exit_price": pa.Column(pl.Float64, pa.Check.gt(0)),
    "fees": pa.Column(pl.Float64, pa.Check.ge(0)), "funding": pa.Column(pl.Float64),
    "pnl": pa.Column(pl.Float64), "return": pa.Column(pl.Float64),
    "exit_reason": pa.Column(pl.String),
}, strict=True)
EQUITY_MODEL = pa.DataFrameSchema({
    **STUDY_COLUMN, "blueprint": pa.Column(pl.String), "ts": pa.Column(pl.Datetime("us")),
    "equity": pa.Column(pl.Float64), "cash": pa.Column(pl.Float64),
    "exposure": pa.Column(pl.Float64, pa.Check.ge(0)),
    "drawdown": pa.Column(pl.Float64, pa.Check.le(0)),
    "fees": pa.Column(pl.Float64, pa.Check.ge(0)), "slippage": pa.Column(pl.Float64),
    "funding": pa.Column(pl.Float64),
}, strict=True, unique=["blueprint", "ts"])
METRICS_MODEL = pa.DataFrameSchema({
    **STUDY_COLUMN, "blueprint": pa.Column(pl.String, unique=True),
    "init_cash": pa.Column(pl.Float64, pa.Check.gt(0)),
    "total_return": pa.Column(pl.Float64), "sharpe": pa.Column(pl.Float64, nullable=True),
    "max_drawdown": pa.Column(pl.Float64, pa.Check.le(0)),
    "trades": pa.Column(pl.Float64, pa.Check.ge(0)),
    "fee_drag": pa.Column(pl.Float64, pa.Check.ge(0)),
    "margin_usage_max": pa.Column(pl.Float64, nullable=True),
    "min_liquidation_distance": pa.Column(pl.Float64, nullable=True),
    "liquidations": pa.Column(pl.Float64, pa.Check.ge(0)),
    "liquidation_fee_drag": pa.Column(pl.Float64, pa.Check.ge(0)),
    "insurance_drag": pa.Column(pl.Float64, pa.Check.ge(0)),
    "rejected_insufficient_margin": pa.Column(pl.Int64, pa.Check.ge(0)),
    "rejected_leverage_bracket": pa.Column(pl.Int64, pa.Check.ge(0)),
    "rejected_no_volume": pa.Column(pl.Int64, pa.Check.ge(0)),
    **{k: pa.Column(pl.Int64, pa.Check.ge(0)) for k in ORDER_EVENTS},
    "mark_fallback_bars": pa.Column(pl.Int64, pa.Check.ge(0)),
    "ledger_residual": pa.Column(pl.Float64, pa.Check.ge(0)),
    "funding_missing": pa.Column(pl.Int64, pa.Check.ge(0)),
    "funding_constant_runs": pa.Column(pl.Int64, pa.Check.ge(0)),
})


def check_backtest(trades: pl.DataFrame, equity: pl.DataFrame, metrics: pl.DataFrame
                   ) -> Iterator[dg.AssetCheckResult]:
    """Every check of ``BACKTEST_CHECKS`` on the frames of one run (any number of
    blueprints)."""
    yield schema_result("backtest_trades", trades, TRADES_MODEL)
    windows = metrics.select("blueprint", "window_start", "window_end")
    bad = trades.join(windows, on="blueprint", how="left").filter(
        (pl.col("entry_ts") < pl.col("window_start")) | (pl.col("entry_ts") >= pl.col("window_end"))
        | (pl.col("exit_ts") < pl.col("entry_ts")) | pl.col("window_start").is_null())
    yield check_result("trades_in_window", "backtest_trades", bad.is_empty(),
                  f"{bad.height} trades outside their window, e.g. {bad.head(2).to_dicts()}")

    ordered = equity["ts"].equals(equity.sort("blueprint", "ts", maintain_order=True)["ts"])
    schema = schema_result("backtest_equity", equity, EQUITY_MODEL)
    yield schema if ordered else check_result("schema", "backtest_equity", False,
                                         "rows are not in time order within each blueprint")
    last = equity.group_by("blueprint").agg(pl.col("equity").last(), pl.col("drawdown").min())
    pnl = trades.group_by("blueprint").agg(pl.col("pnl").sum())
    rec = (metrics.select("blueprint", "init_cash", "total_return", "max_drawdown")
           .join(last, on="blueprint", how="left").join(pnl, on="blueprint", how="left")
           .with_columns(pl.col("pnl").fill_null(0.0)))
    off = rec.filter(((pl.col("equity") - pl.col("init_cash") - pl.col("pnl")).abs()
                      > 1e-6 * pl.col("init_cash")) | pl.col("equity").is_null())
    yield check_result("pnl_reconciles", "backtest_equity", off.is_empty(),
                  f"equity change != sum of trade P&L: {off.head(3).to_dicts()}")

    yield schema_result("backtest_metrics", metrics, METRICS_MODEL)
    off = rec.filter(
        ((pl.col("equity") / pl.col("init_cash") - 1 - pl.col("total_return")).abs() > 1e-12)
        | ((pl.col("drawdown") - pl.col("max_drawdown")).abs() > 1e-12))
    yield check_result("metrics_reconcile", "backtest_metrics", off.is_empty(),
                  f"metrics disagree with the equity curve: {off.head(3).to_dicts()}")
    off = metrics.filter(pl.col("ledger_residual") > LEDGER_TOL).select(
        "blueprint", "ledger_residual")
    yield check_result("ledger_balances", "backtest_metrics", off.is_empty(),
                       f"the ledger does not balance: {off.head(3).to_dicts()}")
