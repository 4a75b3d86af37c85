"""The compiled loop's plain variant (``core._plain_loop``) against the full loop.

Runs that can only trade market orders at fixed slippage (no exit rules, funding, risk
limits or margin) take ``_plain_loop``, which leaves out the phases that cannot act. On the
parity suite's random strategies of every regime with those features stripped (1-3 symbols,
Student-t(4) returns, gaps at the open, late listings, lots, ticks and minimum notionals,
targets up to 10x without margin, so accounts blow), with both long sizings, it must give the
full loop's result bit for bit: every per-bar array, every trade, every counter. ``sweep``
takes it too and must give the same metrics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from polars.testing import assert_frame_equal

import backtest_assets.engine.sweep as sweep_mod
from backtest_assets.engine import ExitRules, Instrument, backtest, core
from backtest_assets.engine.venue import LimitOrders, RiskLimits
from tests.unit.test_engine_parity import REGIMES, synthetic_case

ARRAYS = ("equity", "cash", "position", "exposure", "fees", "slippage", "funding",
          "liquidation_fees", "insurance")


def plain_case(seed: int, regime: str) -> dict:
    """A parity case with everything the plain loop leaves out removed."""
    case = synthetic_case(seed, regime)
    for key in ("funding", "exits", "risk", "day", "limits", "volume", "mark_open",
                "mark_high", "mark_low"):
        case.pop(key, None)
    case["instruments"] = [dataclasses.replace(
        i, maintenance_margin_rate=None, brackets=(), participation=None, impact_coef=0.0)
        for i in case["instruments"]]
    return case


def full_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "plain_loop", lambda inp, rules: False)


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("long_sizing", ["equity", "cash"])
def test_plain_loop_equals_the_full_loop_bit_for_bit(regime, long_sizing, monkeypatch):
    taken = blown = 0
    for seed in range(40):
        case = plain_case(seed, regime)
        inp = core.check_inputs(**case)
        assert core.plain_loop(inp, core._rules(inp.instruments))
        fast = backtest(**case, long_sizing=long_sizing)
        with monkeypatch.context() as m:
            full_loop(m)
            slow = backtest(**case, long_sizing=long_sizing)
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name),
                                          err_msg=f"seed {seed}: {name}")
        assert_frame_equal(fast.trades, slow.trades)
        assert (fast.rejected, fast.orders, fast.blown_bar) == \
            (slow.rejected, slow.orders, slow.blown_bar), seed
        taken += fast.trades.height
        blown += fast.blown_bar is not None
    assert taken > 200
    if regime in ("leverage", "brackets", "risk", "venue"):
        assert blown > 0, "no account blew: the blow-up path went untested"


def test_the_plain_loop_is_taken_only_where_nothing_else_can_act():
    case = plain_case(3, "exchange_rules")

    def plain(**changes) -> bool:
        inp = core.check_inputs(**{**case, **changes})
        return core.plain_loop(inp, core._rules(inp.instruments))

    t_n, s_n = case["close"].shape
    margined = [dataclasses.replace(i, maintenance_margin_rate=0.004, max_leverage=10.0)
                for i in case["instruments"]]
    assert plain()
    assert not plain(exits=ExitRules(stop_loss=0.05))
    assert not plain(exits=ExitRules(time_stop=3))
    assert not plain(funding=np.full((t_n, s_n), 1e-4))
    assert not plain(risk=RiskLimits(max_leverage=2.0))
    assert not plain(instruments=margined)
    assert not plain(limits=LimitOrders(offset_bps=1.0, valid_bars=3))
    assert not plain(instruments=[dataclasses.replace(i, participation=0.1)
                                  for i in case["instruments"]],
                     volume=np.ones((t_n, s_n)))


@pytest.mark.parametrize("regime", ["closed_form", "exchange_rules", "leverage"])
def test_a_sweep_on_the_plain_loop_equals_the_full_loop(regime, monkeypatch):
    case = plain_case(7, regime)
    rng = np.random.default_rng(7)
    targets = [np.where(rng.random(case["target"].shape) < 0.1,
                        rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], case["target"].shape), np.nan)
               * min(i.max_leverage for i in case["instruments"]) / case["target"].shape[1]
               for _ in range(9)]
    missing = np.isnan(case["open_"])
    for tgt in targets:  # no order into a bar without a price
        tgt[missing] = np.nan
        tgt[:-1][missing[1:]] = np.nan
    args = (case["open_"], case["high"], case["low"], case["close"], targets,
            case["instruments"])
    fast = sweep_mod.sweep(*args, init_cash=case["init_cash"])
    monkeypatch.setattr(sweep_mod, "plain_loop", lambda inp, rules: False)
    slow = sweep_mod.sweep(*args, init_cash=case["init_cash"])
    assert_frame_equal(fast, slow)
    # and each combination equals its own backtest's final equity
    for k, tgt in enumerate(targets):
        one = backtest(*args[:4], tgt, case["instruments"], init_cash=case["init_cash"])
        assert fast["final_equity"][k] == pytest.approx(one.equity[-1], rel=1e-12)


def test_instrument_without_margin_has_no_liquidation_level():
    rules = core._rules([Instrument(symbol="X", max_leverage=5.0)])
    assert np.isnan(core._tier_liquidation(rules, 0, 100.0, 3.0))
