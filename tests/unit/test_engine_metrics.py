"""Metrics on a literal result, with the expected numbers worked out beside the inputs."""

import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine.core import Result
from backtest_assets.engine.metrics import metrics

INIT = 100.0
# bar:          0      1      2      3      4
EQUITY = np.array([110.0, 99.0, 99.0, 121.0, 121.0])
# r = 0.1, -0.1, 0, 2/9, 0 (from 100, 110, 99, 99, 121)
R = np.array([0.1, -0.1, 0.0, 22 / 99, 0.0])
POSITION = np.array([[1.0], [1.0], [0.0], [2.0], [0.0]])
CLOSE = np.array([110.0, 99.0, 99.0, 60.5, 60.5])
# traded notional: |1|*110 + 0 + |-1|*99 + |2|*60.5 + |-2|*60.5 = 451
TRADES = pl.DataFrame({
    "symbol": ["X", "X", "X"], "entry_bar": [0, 3, 4], "exit_bar": [2, 4, None],
    "side": ["long", "long", "long"], "qty": [1.0, 2.0, 1.0],
    "entry_price": [100.0, 50.0, 60.0], "exit_price": [99.0, 60.5, 60.5],
    "fees": [0.5, 0.5, 0.1], "funding": [0.0, 0.0, 0.0],
    "pnl": [-1.5, 20.5, 0.4],  # the third is still open: not a closed trade
    "exit_reason": ["signal", "take_profit", "open"],
})


def result() -> Result:
    fees = np.array([[0.5], [0.0], [0.5], [0.25], [0.25]])
    return Result(equity=EQUITY, cash=EQUITY - POSITION[:, 0] * CLOSE, position=POSITION,
                  exposure=np.array([1.0, 1.0, 0.0, 1.0, 0.0]), fees=fees,
                  slippage=fees / 5, funding=np.array([[0.0], [0.2], [0.0], [-0.1], [0.0]]),
                  trades=TRADES, rejected={}, blown_bar=None, path="reference")


def test_metrics_match_hand_computed_values():
    m = metrics(result(), CLOSE, init_cash=INIT, bars_per_year=5)
    sd = R.std(ddof=1)
    assert m["total_return"] == pytest.approx(0.21)                 # 121 / 100 - 1
    assert m["annualized_return"] == pytest.approx(0.21)            # 5 bars = one "year"
    assert m["volatility"] == pytest.approx(sd * math.sqrt(5))
    assert m["sharpe"] == pytest.approx(R.mean() / sd * math.sqrt(5))
    assert m["sortino"] == pytest.approx(R.mean() / math.sqrt(0.01 / 5) * math.sqrt(5))
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)         # -10 %
    assert m["max_drawdown_bars"] == 2                              # bars 1 and 2
    assert m["calmar"] == pytest.approx(0.21 / 0.1)
    assert m["trades"] == 2                                         # the open one excluded
    assert m["win_rate"] == pytest.approx(0.5)
    assert m["profit_factor"] == pytest.approx(20.5 / 1.5)
    assert m["expectancy"] == pytest.approx(9.5)                    # (20.5 - 1.5) / 2
    assert m["avg_holding_bars"] == pytest.approx(1.5)              # (2 + 1) / 2
    assert m["turnover_per_year"] == pytest.approx(451 / EQUITY.mean() * 5 / 5)
    assert m["exposure"] == pytest.approx(0.6)
    assert m["time_in_market"] == pytest.approx(0.6)
    assert m["fee_drag"] == pytest.approx(0.015)                    # 1.5 / 100
    assert m["slippage_drag"] == pytest.approx(0.003)
    assert m["funding_pnl"] == pytest.approx(-0.001)                # paid 0.2, got 0.1


def test_undefined_ratios_are_nan():
    flat = Result(equity=np.full(4, INIT), cash=np.full(4, INIT), position=np.zeros((4, 1)),
                  exposure=np.zeros(4), fees=np.zeros((4, 1)), slippage=np.zeros((4, 1)),
                  funding=np.zeros((4, 1)), trades=TRADES.clear(), rejected={},
                  blown_bar=None, path="reference")
    m = metrics(flat, np.full(4, 10.0), init_cash=INIT, bars_per_year=4)
    assert m["total_return"] == 0 and m["max_drawdown"] == 0 and m["max_drawdown_bars"] == 0
    for name in ("sharpe", "sortino", "calmar", "win_rate", "profit_factor", "expectancy"):
        assert math.isnan(m[name]), name
    assert m["trades"] == 0 and m["turnover_per_year"] == 0


def test_a_blown_account_annualizes_to_minus_one():
    blown = result()
    blown = Result(**{**blown.__dict__, "equity": np.array([50.0, 0.0, 0.0, 0.0, 0.0])})
    m = metrics(blown, CLOSE, init_cash=INIT, bars_per_year=5)
    assert m["total_return"] == -1 and m["annualized_return"] == -1
    assert m["max_drawdown"] == -1
