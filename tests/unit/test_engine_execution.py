"""Scenario tables for the venue's execution rules (issue 18), one rule per test, literal
rows and hand-computed expectations, on the reference loop, the closed form (which leaves
these runs to the loop) and the compiled loop: limit orders with maker fees (touched is not
filled, traded through is, at the limit; unfilled orders expire), mark-price liquidation
(the mark reaches the level while the last does not, and the reverse), funding settled on
the mark, a participation cap splitting a fill over the next bars, square-root impact and
an order refused on a bar without volume.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.engine import Instrument, backtest
from backtest_assets.engine.venue import LimitOrders
from tests.unit.test_engine_scenarios import ENGINES, approx, only_trade, table

NAN = np.nan
CASH = 10_000.0
MAKER = Instrument(symbol="BTCUSDT", maker_bps=2, taker_bps=5, slippage_bps=10)


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


# ---- limit orders -----------------------------------------------------------------------
# Limit buy at bar 0's close less 100 bps: 100 x 0.99 = 99.0. Bar 1's low touches 99.0 (not
# through: unfilled); bar 2's low 98.5 trades through: filled at 99.0, sized from the equity
# at bar 2's open (10,000, flat): 10,000 / 99 = 101.0101... units, maker fee 2 bps of
# 10,000 = 2.0, no slippage. Equity at bar 2's close: -2 + 10,000 x 99.5 / 99.
# Target 0 at bar 2's close: limit sell at 99.5 x 1.01 = 100.495. Bar 3's high touches it;
# bar 4's high 101 trades through: sold at 100.495, fee 2 bps of 101.0101 x 100.495.
LIMIT_ROWS = [
    # open  high     low   close  target
    (100, 101, 99.5, 100.0, 1.0),
    (100, 101, 99.0, 100.0, NAN),    # touched: no fill
    (100, 101, 98.5, 99.5, 0.0),     # through: buy at 99.0
    (99.5, 100.495, 99.0, 100.0, NAN),  # touched: no fill
    (100, 101.0, 99.8, 100.8, NAN),  # through: sell at 100.495
]


def test_a_limit_touched_is_not_filled_and_one_traded_through_fills_at_its_price(run):
    r = run(**table(LIMIT_ROWS), instruments=MAKER, init_cash=CASH,
            limits=LimitOrders(offset_bps=100, valid_bars=2))
    qty = 10_000 / 99
    t = only_trade(r)
    assert (t["entry_bar"], t["exit_bar"], t["exit_reason"]) == (2, 4, "signal")
    assert [t["qty"], t["entry_price"], t["exit_price"]] == approx([qty, 99.0, 100.495])
    exit_fee = 0.0002 * qty * 100.495
    assert r.fees[:, 0].tolist() == approx([0, 0, 2.0, 0, exit_fee])
    assert r.slippage.sum() == 0  # a limit fills at its price
    assert r.position[:, 0].tolist() == approx([0, 0, qty, qty, 0])
    assert r.equity.tolist() == approx([CASH, CASH, -2 + 10_000 * 99.5 / 99,
                                        -2 + 10_000 * 100 / 99,
                                        -2 + qty * 100.495 - exit_fee])
    assert t["pnl"] == approx(qty * (100.495 - 99.0) - 2.0 - exit_fee)
    assert r.orders == {"limit_placed": 2, "limit_filled": 2, "limit_expired": 0,
                        "limit_cancelled": 0, "limit_open": 0, "partial_fills": 0}


def test_an_unfilled_limit_expires_and_is_counted(run):
    """Valid for one bar: bar 1 only touches 99.0, so the buy expires there; bar 2 trades
    through a price nobody is bidding any more. The exit target (0) then has nothing to do
    and places no order."""
    r = run(**table(LIMIT_ROWS), instruments=MAKER, init_cash=CASH,
            limits=LimitOrders(offset_bps=100, valid_bars=1))
    assert r.trades.height == 0 and (r.equity == CASH).all() and r.fees.sum() == 0
    assert r.orders["limit_placed"] == 1 and r.orders["limit_expired"] == 1
    assert r.orders["limit_filled"] == 0


def test_limit_exits_only_leave_entries_as_market_orders(run):
    """entries=False: the buy is a market order at bar 1's open (100 x 1.001 = 100.1 with
    10 bps slippage, taker fee 5 bps), the exit a limit at 99.5 x 1.01 = 100.495 (maker)."""
    r = run(**table(LIMIT_ROWS), instruments=MAKER, init_cash=CASH,
            limits=LimitOrders(offset_bps=100, valid_bars=2, entries=False))
    qty = 10_000 / 100
    t = only_trade(r)
    assert [t["entry_bar"], t["exit_bar"]] == [1, 4]
    assert [t["entry_price"], t["exit_price"]] == approx([100.1, 100.495])
    assert r.fees[:, 0].tolist() == approx([0, 0.0005 * qty * 100.1, 0, 0,
                                            0.0002 * qty * 100.495])
    assert r.orders["limit_placed"] == 1 and r.orders["limit_filled"] == 1


def test_a_new_target_cancels_the_resting_limit(run):
    """The buy at 99.0 rests for 3 bars; a target of 0 at bar 1's close replaces it before
    it fills (bar 2 would have traded through), and with no position the 0 places nothing."""
    rows = [(100, 101, 99.5, 100.0, 1.0), (100, 101, 99.2, 100.0, 0.0),
            (100, 101, 98.0, 100.0, NAN)]
    r = run(**table(rows), instruments=MAKER, init_cash=CASH,
            limits=LimitOrders(offset_bps=100, valid_bars=3))
    assert r.trades.height == 0
    assert r.orders["limit_placed"] == 1 and r.orders["limit_cancelled"] == 1


# ---- mark prices ------------------------------------------------------------------------
# 5x long at setting 10, maintenance 0.5 %: 500 units at 100 (no costs), margin 5,000;
# liquidation price 100 x 0.9 / 0.995 = 90.452261...; the margin left there,
# 5,000 + 500 x (90.452261 - 100) = 226.130653 = 0.5 % x 500 x 90.452261, goes to the
# insurance fund (no clearance fee), and the trader loses the margin: equity 5,000.
LEVERED = Instrument(symbol="BTCUSDT", max_leverage=10, maintenance_margin_rate=0.005)
LIQ = 90 / 0.995
MARK_ROWS = [(100, 101, 99, 100, 5.0), (100, 101, 99, 100, NAN), (100, 101, 91, 95, NAN)]


def marks(low: float) -> dict[str, np.ndarray]:
    """Mark open/high/low equal to the last's but bar 2's mark low."""
    bars = table(MARK_ROWS)
    m_low = bars["low"].copy()
    m_low[2] = low
    return {"mark_open": bars["open_"].copy(), "mark_high": bars["high"].copy(),
            "mark_low": m_low}


def test_the_mark_liquidates_where_the_last_price_would_not(run):
    bars = table(MARK_ROWS)  # last low 91 > 90.452
    assert run(**bars, instruments=LEVERED, init_cash=CASH).trades["exit_reason"][0] == "open"
    r = run(**bars, instruments=LEVERED, init_cash=CASH, **marks(90.3))
    t = only_trade(r)
    assert (t["exit_bar"], t["exit_reason"]) == (2, "liquidation")
    assert t["exit_price"] == approx(LIQ)
    assert r.insurance[2] == approx(0.005 * 500 * LIQ)
    assert r.equity[2] == approx(5_000.0) and t["pnl"] == approx(-5_000.0)


def test_the_last_price_through_the_level_does_not_liquidate_when_the_mark_holds(run):
    bars = table(MARK_ROWS)
    bars["low"][2] = 90.0  # the last trades through 90.452; the mark's low stays at 90.6
    assert only_trade(run(**bars, instruments=LEVERED,
                          init_cash=CASH))["exit_reason"] == "liquidation"
    r = run(**bars, instruments=LEVERED, init_cash=CASH, **marks(90.6))
    assert only_trade(r)["exit_reason"] == "open"
    assert r.equity[2] == approx(CASH + 500 * (95 - 100))


def test_funding_is_settled_on_the_mark(run):
    """A rate of 0.1 % at bar 2 on 500 units: on the mark open 99 (the last opens at 100),
    500 x 99 x 0.001 = 49.5."""
    m = marks(90.6)
    m["mark_open"][2] = 99.0
    rate = np.array([NAN, NAN, 0.001])
    r = run(**table(MARK_ROWS), instruments=LEVERED, init_cash=CASH, funding=rate, **m)
    assert r.funding[:, 0].tolist() == approx([0, 0, 49.5])
    assert r.equity[2] == approx(CASH - 49.5 + 500 * (95 - 100))


def test_a_bar_without_its_mark_is_refused():
    m = marks(90.6)
    m["mark_low"][1] = NAN
    with pytest.raises(ValueError, match=r"BTCUSDT bar 1: mark open/high/low"):
        backtest(**table(MARK_ROWS), instruments=LEVERED, init_cash=CASH, **m)


# ---- liquidity ----------------------------------------------------------------------------
FLAT = [(100, 100, 100, 100, 1.0)] + [(100, 100, 100, 100, NAN)] * 4


def test_a_participation_cap_splits_a_fill_over_the_next_bars(run):
    """Target 100 % = 100 units at 100 (no costs). At most half of each bar's volume: bar 1
    (volume 40) fills 20, bar 2 (volume 100) 50, bar 3 (volume 200) the last 30; each fill
    starts a new trade; bar 4 has nothing left to do."""
    inst = Instrument(symbol="BTCUSDT", participation=0.5)
    volume = np.array([10.0, 40.0, 100.0, 200.0, 500.0])
    r = run(**table(FLAT), instruments=inst, init_cash=CASH, volume=volume)
    assert r.position[:, 0].tolist() == approx([0, 20, 70, 100, 100])
    assert r.trades["qty"].to_list() == approx([20, 70, 100])
    assert r.trades["entry_bar"].to_list() == [1, 2, 3]
    assert r.orders["partial_fills"] == 2
    assert r.cash.tolist() == approx([CASH, 8_000, 3_000, 0, 0])


def test_a_new_target_replaces_the_working_rest(run):
    """The rest of the 100-unit buy (80 after bar 1) is dropped when bar 1's close asks for
    0: bar 2 sells the 20 held (a close is never capped below the cap: 20 <= 50)."""
    rows = [(100, 100, 100, 100, 1.0), (100, 100, 100, 100, 0.0),
            (100, 100, 100, 100, NAN)]
    inst = Instrument(symbol="BTCUSDT", participation=0.5)
    r = run(**table(rows), instruments=inst, init_cash=CASH, volume=np.array([1., 40, 100]))
    assert r.position[:, 0].tolist() == approx([0, 20, 0])
    assert r.orders["partial_fills"] == 1


def test_an_exit_ends_the_working_rest(run):
    """Bar 1 fills 20 of the 100 units (half of its volume 40) at 100, and its low 94 hits
    the 5 % stop at 95 the same bar: the stop closes the 20 and ends the order, so bar 2
    (volume 100) buys nothing: after an exit the symbol stays flat until its target
    changes."""
    from backtest_assets.engine import ExitRules

    rows = [(100, 100, 100, 100, 1.0), (100, 100, 94, 96, NAN), (96, 97, 95.5, 96, NAN)]
    inst = Instrument(symbol="BTCUSDT", participation=0.5)
    r = run(**table(rows), instruments=inst, init_cash=CASH, volume=np.array([1., 40, 100]),
            exits=ExitRules(stop_loss=0.05))
    t = only_trade(r)
    assert (t["qty"], t["exit_bar"], t["exit_reason"]) == (20, 1, "stop_loss")
    assert t["exit_price"] == approx(95.0)
    assert r.position[:, 0].tolist() == [0, 0, 0]
    assert r.equity[-1] == approx(CASH - 20 * 5)


def test_a_stop_cancels_the_resting_limit(run):
    """A market entry (entries are not limits) of 100 at 100; the target 0.5 at bar 1's
    close rests a sell limit at 100 x 1.01 = 101 for 3 bars; bar 2 stops the long out at 95
    (5 % stop), which cancels the sell: bar 3 trades through 101 and nothing fills."""
    from backtest_assets.engine import ExitRules

    rows = [(100, 100, 100, 100, 1.0), (100, 100.5, 99.5, 100, 0.5),
            (99, 99.5, 94, 96, NAN), (100, 102, 99, 101, NAN)]
    r = run(**table(rows), instruments=Instrument(symbol="BTCUSDT"), init_cash=CASH,
            exits=ExitRules(stop_loss=0.05),
            limits=LimitOrders(offset_bps=100, valid_bars=3, entries=False))
    t = only_trade(r)
    assert (t["exit_bar"], t["exit_reason"]) == (2, "stop_loss")
    assert r.orders["limit_placed"] == 1 and r.orders["limit_cancelled"] == 1
    assert r.orders["limit_filled"] == 0 and r.position[-1, 0] == 0


def test_square_root_impact_slips_with_size_over_volume(run):
    """100 units in a bar of 400: slippage 0 + 1 % x sqrt(100 / 400) = 0.5 %: bought at
    100.5; the exit, 100 units in a bar of 2,500: 1 % x sqrt(0.04) = 0.2 %, sold at
    101 x 0.998 = 100.798. P&L 100 x (100.798 - 100.5) = 29.8."""
    rows = [(100, 101, 99, 100, 1.0), (100, 101, 99, 101, 0.0), (101, 102, 100, 101, NAN)]
    inst = Instrument(symbol="BTCUSDT", impact_coef=0.01)
    r = run(**table(rows), instruments=inst, init_cash=CASH,
            volume=np.array([1.0, 400.0, 2_500.0]))
    t = only_trade(r)
    assert [t["entry_price"], t["exit_price"]] == approx([100.5, 100.798])
    assert r.slippage[:, 0].tolist() == approx([0, 50.0, 100 * (101 - 100.798)])
    assert r.equity[-1] == approx(CASH + 29.8)


def test_an_order_on_a_bar_without_volume_is_refused_under_impact(run):
    rows = [(100, 101, 99, 100, 1.0), (100, 101, 99, 101, NAN)]
    inst = Instrument(symbol="BTCUSDT", impact_coef=0.01)
    r = run(**table(rows), instruments=inst, init_cash=CASH, volume=np.array([5.0, 0.0]))
    assert r.trades.height == 0 and r.rejected["no_volume"] == 1


def test_liquidity_rules_need_the_volume():
    inst = Instrument(symbol="BTCUSDT", participation=0.1)
    with pytest.raises(ValueError, match="volume: BTCUSDT cap participation"):
        backtest(**table(FLAT), instruments=inst)
    with pytest.raises(ValueError, match="long_sizing='cash'"):
        backtest(**table(FLAT), instruments=inst, volume=np.ones(5), long_sizing="cash")
