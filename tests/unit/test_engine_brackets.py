"""Margin brackets (issue 18): the maintenance margin of a position follows the notional tier
it is in at the price, so the liquidation price comes from the tier holding the notional
there; an order taking a position above the largest notional the leverage setting allows is
refused; the venues' tables are checked when loaded.

Scenario tables worked out by hand in the comments, on the reference loop, the closed form
and the compiled loop. Unless a scenario says otherwise: cash 100,000, no fees or slippage,
leverage setting 10, Binance's first two BTCUSDT tiers: 0.4 % up to 50,000 USDT (125x), then
0.5 % with a maintenance amount of 50 up to 600,000 (100x).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest_assets.engine import Instrument
from backtest_assets.engine.core import liquidation_price
from backtest_assets.engine.venue import Bracket
from backtest_assets.specs.registry import load_registry
from tests.unit.test_engine_scenarios import ENGINES, approx, only_trade, table

NAN = np.nan
CASH = 100_000.0
TIERS = (Bracket(cap=50_000, max_leverage=125, mmr=0.004),
         Bracket(cap=600_000, max_leverage=100, mmr=0.005, maint_amount=50))
PERP = Instrument(symbol="BTCUSDT", max_leverage=10, maintenance_margin_rate=0.004,
                  liquidation_fee_rate=0.0125, brackets=TIERS)


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


# Long 1,000 @ 100 (target 1 at setting 10: notional 100,000, margin 10,000). At a level P the
# notional 1,000 P is in the second tier, where margin + 1,000 (P - 100) = 1,000 P 0.005 - 50:
# P = (90 - 0.05) / 0.995 = 90.402010050... (notional 90,402: in [50,000, 600,000)). The first
# tier's rate alone would give 90 / 0.996 = 90.361445...: a low of 90.38 liquidates under the
# brackets and not under one 0.4 % rate. Margin left at the level: 10,000 + 1,000 (90.40201 -
# 100) = 402.01 (= 0.5 % of 90,402.01 - 50); the clearance fee 1.25 % x 90,402 = 1,130 is
# capped at it, nothing for the insurance fund; the trader loses the 10,000 margin.
LONG_T2 = (90 - 50 / 1000) / 0.995
# Short 1,000 @ 100: (110 + 0.05) / 1.005 = 109.50248756...; one rate: 110 / 1.004 = 109.5617.
SHORT_T2 = (110 + 50 / 1000) / 1.005


@pytest.mark.parametrize(("target", "bar2", "level", "liquidated"), [
    #  target  bar 2 (o, h, l, c)             level     liquidated
    (1.0,  (99, 100, 90.38, 95),     LONG_T2,  True),    # between the two levels
    (1.0,  (99, 100, 90.41, 95),     LONG_T2,  False),   # above the tiered level
    (-1.0, (101, 109.52, 100, 105),  SHORT_T2, True),
    (-1.0, (101, 109.50, 100, 105),  SHORT_T2, False),
])
def test_the_liquidation_price_is_the_tier_of_the_notional_there(run, target, bar2, level,
                                                                 liquidated):
    assert abs(LONG_T2 - 90.40201005025126) < 1e-12 and abs(SHORT_T2 - 109.50248756218906) < 1e-12
    assert liquidation_price(100.0, 10, 0.004, 1.0) < 90.38  # one rate would not liquidate
    assert liquidation_price(100.0, 10, 0.004, -1.0) > 109.52
    bars = table([(100, 100, 100, 100, target), (100, 100, 100, 100, NAN),
                  (*bar2, NAN), (95, 96, 94, 95, NAN)])
    r = run(**bars, instruments=PERP, init_cash=CASH)
    trade = r.trades.row(0, named=True)
    if not liquidated:
        assert trade["exit_reason"] == "open" and r.liquidation_fees.sum() == 0
        return
    assert trade["exit_reason"] == "liquidation" and trade["exit_price"] == approx(level)
    left = 402.0100502512563 if target > 0 else 1000 * SHORT_T2 * 0.005 - 50
    assert r.liquidation_fees[2, 0] == approx(left) and r.insurance.sum() == approx(0.0)
    assert r.equity[2] == approx(CASH - 10_000)  # the posted margin, no more


def test_the_tier_is_that_of_the_notional_at_the_level_not_at_entry(run):
    """Long 600 @ 100 at setting 2: 60,000 of notional at entry (second tier), but at the
    level the notional is below 50,000, so the first tier applies: 50 / 0.996 = 50.2008 (the
    second tier's (50 - 50/600) / 0.995 = 50.1675 would put the notional at 30,100, outside
    it). A low of 50.19 liquidates; at 50.2008 the margin left is 0.4 % of 30,120.5."""
    inst = dataclasses.replace(PERP, max_leverage=2)
    bars = table([(100, 100, 100, 100, 0.6), (100, 100, 100, 100, NAN),
                  (60, 61, 50.19, 55, NAN)])
    trade = only_trade(run(**bars, instruments=inst, init_cash=CASH))
    assert trade["exit_reason"] == "liquidation"
    assert trade["exit_price"] == approx(50 / 0.996)
    assert 600 * trade["exit_price"] < 50_000


def test_an_order_above_the_notional_the_leverage_allows_is_refused(run):
    """Setting 100x: the tiers allowing 100x end at 600,000 of notional. With 10,000 of cash
    a target of 70 asks 700,000: refused (``leverage_bracket``), the account stays flat; a
    target of 50 (500,000) fills; raising it to 65 (650,000) is refused and the 50 held."""
    inst = dataclasses.replace(PERP, max_leverage=100, liquidation_fee_rate=0.0)
    assert inst.max_notional == 600_000
    r = run(**table([(100, 100, 100, 100, 70.0), (100, 100, 100, 100, NAN)]),
            instruments=inst, init_cash=10_000.0)
    assert r.rejected["leverage_bracket"] == 1 and r.trades.is_empty()
    r = run(**table([(100, 100, 100, 100, 50.0), (100, 100, 100, 100, 65.0),
                     (100, 100, 100, 100, NAN)]), instruments=inst, init_cash=10_000.0)
    assert r.rejected["leverage_bracket"] == 1
    assert r.position[-1, 0] == approx(5_000.0)


def test_bracket_tables_are_checked():
    good = dict(symbol="X", max_leverage=10, maintenance_margin_rate=0.004)
    Instrument(**good, brackets=TIERS).validate()
    bad_amount = (TIERS[0], dataclasses.replace(TIERS[1], maint_amount=40))
    with pytest.raises(ValueError, match=r"maint_amount: 40 is not 50"):
        Instrument(**good, brackets=bad_amount).validate()
    with pytest.raises(ValueError, match="not above the previous cap"):
        Instrument(**good, brackets=(TIERS[0], dataclasses.replace(TIERS[1], cap=40_000))
                   ).validate()
    with pytest.raises(ValueError, match="first bracket's rate"):
        Instrument(**{**good, "maintenance_margin_rate": 0.01}, brackets=TIERS).validate()
    with pytest.raises(ValueError, match="above the first bracket's"):
        Instrument(**{**good, "max_leverage": 150}, brackets=TIERS).validate()


def test_the_published_tables_load_and_are_continuous():
    """specs/fees.yaml holds Binance's BTC, ETH and SOL brackets (freqtrade's snapshot of
    /fapi/v1/leverageBracket, 2024-10-24); loading checks each is continuous."""
    venue = load_registry().fees.venues["binance_usdm_vip0"]
    for symbol, tiers, first in (("BTCUSDT", 12, 0.004), ("ETHUSDT", 12, 0.004),
                                 ("SOLUSDT", 10, 0.005)):
        inst = Instrument.from_venue(symbol, venue)
        inst.validate()
        assert len(inst.brackets) == tiers and inst.maintenance_margin_rate == first
    btc = Instrument.from_venue("BTCUSDT", venue)
    assert btc.max_notional == 100_000_000  # 20x: up to the sixth tier
    assert Instrument.from_venue("BTCUSDT", venue, max_leverage=100).max_notional == 600_000
