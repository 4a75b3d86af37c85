"""Backtest engine (pure functions, no Dagster): target weights on OHLC bars in, equity and
trades out. ``backtest`` is the fast engine (closed form or compiled loop), and
``backtest_reference`` the plain-Python loop it is tested against; the rules are documented
in :mod:`backtest_assets.engine.core`."""

from backtest_assets.engine.core import (
    EXIT_REASONS,
    ORDER_EVENTS,
    REJECT_REASONS,
    Result,
    backtest,
)
from backtest_assets.engine.reference import backtest_reference
from backtest_assets.engine.venue import Bracket, ExitRules, Instrument, LimitOrders, RiskLimits

__all__ = ["EXIT_REASONS", "ORDER_EVENTS", "REJECT_REASONS", "Bracket", "ExitRules",
           "Instrument", "LimitOrders", "Result", "RiskLimits", "backtest",
           "backtest_reference"]
