"""The LIVE stage's interface (issue 19): a strategy driven through the venue adapter sends
the same intents and gets the same fills as in its backtest; checked against the simulator,
the only adapter built (no exchange connection)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.engine import Instrument
from backtest_assets.sim import run_strategy
from backtest_assets.sim.examples import TrailingBreakout
from backtest_assets.sim.live import SimAdapter, VenueAdapter, drive
from tests.unit.test_engine_parity import REGIMES, assert_same, synthetic_case
from tests.unit.test_sim_loop import ENGINE_ARGS, Replay


def _renumbered(fills):
    ids: dict[int, int] = {}
    return [(f.bar, f.symbol, f.qty, f.price, f.fee, f.reason,
             ids.setdefault(f.order_id, len(ids)) if f.order_id else 0) for f in fills]


class Recording:
    """An adapter in front of another that records every intent it is sent and every fill
    it reports: what a live connection would carry."""

    def __init__(self, inner: VenueAdapter) -> None:
        self.inner, self.symbols, self.sent, self.heard = inner, inner.symbols, [], []

    def connect(self, on_fill):
        def hear(fill, account):
            self.heard.append(fill)
            return on_fill(fill, account)
        self.inner.connect(hear)

    def submit(self, intents):
        self.sent.extend(intents)
        self.inner.submit(intents)

    def next_bar(self):
        return self.inner.next_bar()

    def account(self):
        return self.inner.account()


@pytest.mark.parametrize("regime", REGIMES)
def test_a_strategy_driven_through_the_adapter_gets_its_backtests_run(regime):
    for seed in range(8):
        case = synthetic_case(seed, regime)
        target = np.asarray(case["target"], dtype=float).reshape(len(case["close"]), -1)
        args = {k: case[k] for k in ENGINE_ARGS if k in case}
        want = run_strategy(Replay(target=target), **args)
        adapter = SimAdapter(**args)
        drive(Replay(target=target), adapter)
        got = adapter.run()
        assert_same(got.result, want.result)
        assert got.fills == want.fills


def test_orders_stops_cancels_and_fills_pass_unchanged():
    """A path-dependent strategy (entries, stops placed on fills, stops moved by cancel and
    replace): the adapter carries the same intents in the same order, reports the same
    fills, and the run equals the backtest's."""
    rng = np.random.default_rng(3)
    n = 3000
    close = 100 * np.exp(np.cumsum(0.004 * rng.standard_t(3, n) / np.sqrt(3)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high, low = np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998
    inst = Instrument(symbol="BTCUSDT", taker_bps=4.0, slippage_bps=1.0)

    def strat():
        return TrailingBreakout(lookback=24, trail=0.01, weight=0.5)

    want = run_strategy(strat(), open_, high, low, close, inst, init_cash=1e5)
    rec = Recording(SimAdapter(open_, high, low, close, inst, init_cash=1e5))
    drive(strat(), rec)
    got = rec.inner.run()
    assert_same(got.result, want.result)
    assert got.fills == tuple(rec.heard)
    # order ids are handed out by a process-wide counter: compare them by first appearance
    assert _renumbered(got.fills) == _renumbered(want.fills)
    kinds = {type(i).__name__ for i in rec.sent}
    assert kinds == {"Target", "Stop", "Cancel"}, kinds
    assert sum(f.reason == "stop" for f in rec.heard) > 10
