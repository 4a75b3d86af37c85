"""Pandera models of the portfolio tables (one study x portfolio partition each)."""

import pandera.polars as pa
import polars as pl

from backtest_assets.portfolio.contracts import STATES
from backtest_assets.schemas.research import STUDY_COLUMN

_KEY = {**STUDY_COLUMN, "portfolio": pa.Column(pl.String)}

EDGE_CONTRACTS = pa.DataFrameSchema({
    **_KEY, "as_of": pa.Column(pl.Datetime("us")), "edge": pa.Column(pl.String),
    "identity": pa.Column(pl.String),
    "state": pa.Column(pl.String, pa.Check.isin(STATES)),
    "previous_state": pa.Column(pl.String, pa.Check.isin(STATES), nullable=True),
    "in_book": pa.Column(pl.Boolean), "reasons": pa.Column(pl.String),
    "evidence_hash": pa.Column(pl.String, nullable=True),
    "spec_hash": pa.Column(pl.String)}, strict=True,
    unique=["study", "portfolio", "as_of", "edge"], name="edge_contracts")

PORTFOLIO_WEIGHTS = pa.DataFrameSchema({
    **_KEY, "rebalance_ts": pa.Column(pl.Datetime("us")), "edge": pa.Column(pl.String),
    "eligible": pa.Column(pl.Boolean),
    "weight": pa.Column(pl.Float64, pa.Check.ge(0)),
    "risk_contribution": pa.Column(pl.Float64),
    "turnover": pa.Column(pl.Float64, pa.Check.ge(0)),
    "binding": pa.Column(pl.String)}, strict=True,
    unique=["study", "portfolio", "rebalance_ts", "edge"], name="portfolio_weights")

PORTFOLIO_EQUITY = pa.DataFrameSchema({
    **_KEY, "book": pa.Column(pl.String, pa.Check.isin(["book", "equal_weight"])),
    "ts": pa.Column(pl.Datetime("us")), "equity": pa.Column(pl.Float64),
    "gross": pa.Column(pl.Float64, pa.Check.ge(0)), "net": pa.Column(pl.Float64),
    "drawdown": pa.Column(pl.Float64, pa.Check.le(0))}, strict=True,
    unique=["study", "portfolio", "book", "ts"], name="portfolio_equity")

PORTFOLIO_METRICS = pa.DataFrameSchema({
    **_KEY, "book": pa.Column(pl.String, pa.Check.isin(["book", "equal_weight"])),
    "total_return": pa.Column(pl.Float64), "sharpe": pa.Column(pl.Float64),
    "max_drawdown": pa.Column(pl.Float64, pa.Check.le(0)),
    "fees": pa.Column(pl.Float64, pa.Check.ge(0)), "trades": pa.Column(pl.Int64, pa.Check.ge(0)),
    "max_target_gross": pa.Column(pl.Float64, pa.Check.ge(0)),
    "max_target_net": pa.Column(pl.Float64, pa.Check.ge(0)),
    "max_gross": pa.Column(pl.Float64, pa.Check.ge(0)),
    "max_net": pa.Column(pl.Float64, pa.Check.ge(0)),
    "edges": pa.Column(pl.Int64, pa.Check.ge(0)), "oos_start": pa.Column(pl.Datetime("us")),
    "selection": pa.Column(pl.String, pa.Check.isin(["as_of", "study"])),
    "spec_hash": pa.Column(pl.String)}, strict=True, unique=["study", "portfolio", "book"],
    name="portfolio_metrics")
