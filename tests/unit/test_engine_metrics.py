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
    "fees": [0.5, 0.5, 0.1], "funding": [0.0, 0.0, 0.0], "insurance": [0.0, 0.0, 0.0],
    "pnl": [-1.5, 20.5, 0.4],  # the third is still open: not a closed trade
    "exit_reason": ["signal", "take_profit", "open"],
})


def result() -> Result:
    fees = np.array([[0.5], [0.0], [0.5], [0.25], [0.25]])
    return Result(equity=EQUITY, cash=EQUITY - POSITION[:, 0] * CLOSE, position=POSITION,
                  exposure=np.array([1.0, 1.0, 0.0, 1.0, 0.0]), fees=fees,
                  slippage=fees / 5, funding=np.array([[0.0], [0.2], [0.0], [-0.1], [0.0]]),
                  liquidation_fees=np.zeros((5, 1)), insurance=np.zeros((5, 1)),
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
    assert (m["liquidations"], m["liquidation_fee_drag"], m["insurance_drag"]) == (0, 0, 0)


def test_undefined_ratios_are_nan():
    flat = Result(equity=np.full(4, INIT), cash=np.full(4, INIT), position=np.zeros((4, 1)),
                  exposure=np.zeros(4), fees=np.zeros((4, 1)), slippage=np.zeros((4, 1)),
                  funding=np.zeros((4, 1)), liquidation_fees=np.zeros((4, 1)),
                  insurance=np.zeros((4, 1)), trades=TRADES.clear(), rejected={},
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


def test_margin_usage_and_distance_to_liquidation_by_hand():
    # 5x long at a leverage setting of 5, no costs, mmr 1%: order decided at bar 0 (weight 5),
    # filled at open 1 = 100: qty = 5 * 1000 / 100 = 50, margin = 50 * 100 / 5 = 1000 (all
    # the equity: enough), liq = 100 * (1 - 1/5) / 0.99 = 80.808..; closes 100, 95, 90 with it
    # held; flat (target 0 at bar 3) from open 4.
    from backtest_assets.engine import Instrument, backtest

    o = np.array([100.0, 100.0, 100.0, 95.0, 90.0])
    c = np.array([100.0, 100.0, 95.0, 90.0, 90.0])
    h, lo = np.maximum(o, c), np.minimum(o, c)
    target = np.array([5.0, np.nan, np.nan, 0.0, np.nan])
    inst = Instrument(symbol="X", max_leverage=5, maintenance_margin_rate=0.01)
    r = backtest(o, h, lo, c, target, inst, init_cash=1000.0)
    m = metrics(r, c, init_cash=1000.0, bars_per_year=5, instruments=[inst])
    equity = 1000.0 + 50 * (np.array([100.0, 95.0, 90.0]) - 100.0)  # closes 1..3
    liq = 80 / 0.99
    assert m["margin_usage_mean"] == pytest.approx(np.mean(1000.0 / equity))
    assert m["margin_usage_max"] == pytest.approx(1000.0 / 500.0)
    assert m["min_liquidation_distance"] == pytest.approx((90.0 - liq) / 90.0)
    spot = metrics(r, c, init_cash=1000.0, bars_per_year=5,
                   instruments=[Instrument(symbol="X", max_leverage=5)])
    assert math.isnan(spot["margin_usage_mean"]) and math.isnan(spot["min_liquidation_distance"])


@pytest.mark.parametrize("seed", range(40))
def test_no_position_is_held_at_a_close_beyond_its_liquidation_price(seed):
    # A close beyond the level means the bar's extreme crossed it too: the engine must have
    # liquidated, so every held position sits on the safe side of its level.
    from backtest_assets.engine import backtest
    from backtest_assets.engine.core import forward_fill
    from backtest_assets.engine.metrics import margin_path
    from tests.unit.test_engine_parity import synthetic_case

    case = synthetic_case(seed, "leverage")
    r = backtest(**case)
    margin, liq = margin_path(r.trades, case["instruments"], len(r.equity))
    close = forward_fill(case["close"].reshape(len(r.equity), -1), np.nan)
    held = ~np.isnan(liq)
    assert ((margin > 0) == held).all()
    assert (np.sign(r.position[held]) != 0).all()
    long = held & (r.position > 0)
    short = held & (r.position < 0)
    assert (close[long] > liq[long]).all() and (close[short] < liq[short]).all()


def test_liquidation_metrics_split_the_margin_taken_into_fee_and_insurance():
    # The long_in_bar scenario of test_engine_margin: 800 @ 100.1 at setting 10 posts 8,008;
    # liquidated at 91 in bar 2, the 728 left of the margin there is a 364 clearance fee and
    # 364 for the insurance fund. Held at one close (bar 1: equity 9,839.92, close 100).
    from backtest_assets.engine import backtest
    from tests.unit.test_engine_margin import PERP

    o = np.array([100.0, 100.0, 99.0, 92.0])
    h, lo, c = np.array([101.0, 101.0, 100.0, 93.0]), np.array([99.0, 99.0, 90.0, 91.0]), \
        np.array([100.0, 100.0, 92.0, 92.0])
    r = backtest(o, h, lo, c, np.array([8.0, np.nan, np.nan, np.nan]), PERP, init_cash=1e4)
    m = metrics(r, c, init_cash=1e4, bars_per_year=4, instruments=[PERP])
    assert m["liquidations"] == 1
    assert m["liquidation_fee_drag"] == pytest.approx(364 / 1e4)
    assert m["insurance_drag"] == pytest.approx(364 / 1e4)
    assert m["fee_drag"] == pytest.approx((80.08 + 364) / 1e4)  # the clearance fee is a fee
    assert m["margin_usage_max"] == pytest.approx(8_008 / 9_839.92)
    assert m["min_liquidation_distance"] == pytest.approx((100 - 91) / 100)
