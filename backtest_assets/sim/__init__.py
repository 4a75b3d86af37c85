"""Strategies as code (pure; no Dagster): the :mod:`~backtest_assets.sim.api` a strategy is
written against and the :mod:`~backtest_assets.sim.loop` that runs it on the venue rules."""

from backtest_assets.sim.api import (
    Account,
    BarView,
    Cancel,
    Fill,
    Limit,
    LookAheadError,
    Market,
    Stop,
    Strategy,
    TakeProfit,
    Target,
)
from backtest_assets.sim.loop import Run, run_strategy

__all__ = ["Account", "BarView", "Cancel", "Fill", "Limit", "LookAheadError", "Market", "Run",
           "Stop", "Strategy", "TakeProfit", "Target", "run_strategy"]
