"""The pre-trade risk manager (issue 18): a daily loss cap that stops new risk until the
next UTC day, and position, total and leverage limits; every refusal is counted with its
reason, and orders that only reduce a position always pass.

Scenario tables worked out by hand, on the reference loop, the closed form (which leaves any
run with limits to the loop) and the compiled loop. Cash 10,000, no fees or slippage.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.engine import Instrument
from backtest_assets.engine.venue import RiskLimits
from tests.unit.test_engine_scenarios import ENGINES, approx, table

NAN = np.nan
CASH = 10_000.0
FREE = Instrument(symbol="BTCUSDT", max_leverage=3)


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


def test_a_daily_loss_cap_stops_new_risk_until_the_next_utc_day(run):
    """Cap 4 %: the day's first open has equity 10,000. Bar 1 buys 100 @ 100 and closes at
    95: equity 9,500 <= 9,600, halted. The exit at bar 2 (a reduction) fills @ 95; the
    re-entry decided at bar 2 is refused at bar 3 (same day: ``daily_loss``). Bar 4 opens a
    new UTC day: the reference is 9,500 and the target of 0.5 decided at bar 3 fills,
    0.5 x 9,500 / 96 = 49.479... @ 96."""
    bars = table([
        # open high low close target        day
        (100, 100, 100, 100, 1.0),           # 0
        (100, 100, 95, 95, 0.0),             # 0  buy 100 @ 100; close 9,500: halted
        (95, 95, 95, 95, 1.0),               # 0  sell 100 @ 95 (reduces: passes)
        (95, 95, 95, 95, 0.5),               # 0  buy refused: daily_loss
        (96, 96, 96, 96, NAN),               # 1  new day: buy 49.479 @ 96
        (97, 97, 97, 97, NAN),               # 1
    ])
    r = run(**bars, instruments=FREE, init_cash=CASH, risk=RiskLimits(daily_loss_cap=0.04),
            day=np.array([0, 0, 0, 0, 1, 1]))
    assert r.rejected["daily_loss"] == 1
    assert r.position[:, 0].tolist() == approx([0, 100, 0, 0, 0.5 * 9_500 / 96, 0.5 * 9_500
                                                / 96])
    assert r.equity[-1] == approx(9_500 + 0.5 * 9_500 / 96 * (97 - 96))
    # the same run without the cap re-enters at bar 3
    free = run(**bars, instruments=FREE, init_cash=CASH)
    assert free.position[3, 0] == approx(9_500 / 95)


@pytest.mark.parametrize(("limits", "reason", "filled"), [
    # a target of 1.5 at 100: 150 units, 15,000 of notional, 1.5 x the equity
    (RiskLimits(max_position_notional=12_000), "max_position", False),
    (RiskLimits(max_position_notional=15_000), None, True),
    (RiskLimits(max_total_notional=14_999), "max_total", False),
    (RiskLimits(max_leverage=1.4), "max_leverage", False),
    (RiskLimits(max_leverage=1.5), None, True),
])
def test_position_total_and_leverage_limits(run, limits, reason, filled):
    bars = table([(100, 100, 100, 100, 1.5), (100, 100, 100, 100, 0.0),
                  (100, 100, 100, 100, NAN)])
    r = run(**bars, instruments=FREE, init_cash=CASH, risk=limits)
    assert r.position[1, 0] == approx(150.0 if filled else 0.0)
    refused = {k for k, v in r.rejected.items() if v}
    assert refused == ({reason} if reason else set())


def test_the_total_counts_the_other_symbols_at_this_opens_prices(run):
    """Two symbols, 0.6 each (6,000 + 6,000 at 100): a total limit of 10,000 refuses the
    second (symbol order: the first filled), which then holds nothing."""
    o = np.full((3, 2), 100.0)
    tgt = np.array([[0.6, 0.6], [NAN, NAN], [NAN, NAN]])
    r = run(o, o, o, o, tgt, [FREE, Instrument(symbol="ETHUSDT", max_leverage=3)],
            init_cash=CASH, risk=RiskLimits(max_total_notional=10_000))
    assert r.position[1].tolist() == approx([60.0, 0.0])
    assert r.rejected["max_total"] == 1


def test_limits_are_checked():
    with pytest.raises(ValueError, match="daily_loss_cap"):
        RiskLimits(daily_loss_cap=1.5).validate()
    with pytest.raises(ValueError, match="max_leverage"):
        RiskLimits(max_leverage=0).validate()
    bars = table([(100, 100, 100, 100, 1.0), (100, 100, 100, 100, NAN)])
    with pytest.raises(ValueError, match="UTC days are needed"):
        ENGINES["compiled"](**bars, instruments=FREE, risk=RiskLimits(daily_loss_cap=0.1))
