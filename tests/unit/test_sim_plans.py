"""Blind decisions (issue 19's speed): a strategy that never reads its account and only sets
targets has them collected bar by bar and run by the compiled engine; anything else, or any
such read midway, runs on the event loop, with the same results either way."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backtest_assets.engine import backtest
from backtest_assets.sim import Market, Strategy, Target, run_strategy
from tests.unit.test_engine_parity import REGIMES, assert_same, synthetic_case
from tests.unit.test_live_adapter import _renumbered
from tests.unit.test_sim_loop import ENGINE_ARGS, Replay


def _case(seed: int, regime: str):
    case = synthetic_case(seed, regime)
    target = np.asarray(case["target"], dtype=float).reshape(len(case["close"]), -1)
    return target, {k: case[k] for k in ENGINE_ARGS if k in case}


@pytest.mark.parametrize("regime", REGIMES)
def test_collected_targets_give_the_engines_result_and_the_loops_fills(regime):
    for seed in range(12):
        target, args = _case(seed, regime)
        run = run_strategy(Replay(target=target), **args)
        assert run.plan == "collected"
        assert_same(run.result, backtest(**args, target=target))
        full = run_strategy(Replay(target=target), **args, skip_quiet=False)
        assert full.plan == "loop"
        assert_same(run.result, full.result)
        assert run.fills == full.fills  # replayed on the loop when asked for


class Peeking(Replay):
    """Replay, reading its account at one bar (or never)."""

    def on_bar(self, bar, account):
        if bar.index == self.peek_at:
            self.seen = account.equity
        return super().on_bar(bar, account)


class Ordering(Replay):
    """Replay, with one market order at one bar."""

    def on_bar(self, bar, account):
        out = super().on_bar(bar, account)
        return [*out, Market(symbol=bar.symbols[0], qty=1e-9)] if bar.index == 3 else out


class Twice(Replay):
    """Two targets for one symbol at one bar: changed and changed back."""

    def on_bar(self, bar, account):
        out = super().on_bar(bar, account)
        if bar.index == 5:
            s = bar.symbols[0]
            return [Target(s, 0.37), Target(s, 0.0), *out]
        return out


class Hearing(Replay):
    def on_fill(self, fill, account):
        self.heard = getattr(self, "heard", 0) + 1


class Locked(Replay):
    """State that cannot be copied."""

    def on_start(self, symbols):
        return None


@pytest.mark.parametrize(("make", "why"), [
    (lambda t: Peeking(target=t, peek_at=10), "reads its account at bar 10"),
    (lambda t: Ordering(target=t), "sends a market order"),
    (lambda t: Twice(target=t), "sets two targets for a symbol in one bar"),
    (lambda t: Hearing(target=t), "listens to its fills"),
    (lambda t: Locked(target=t, lock=threading.Lock()), "holds state that cannot be copied"),
])
def test_a_strategy_that_can_see_the_venue_runs_on_the_loop(make, why):
    for seed in range(4):
        target, args = _case(seed, "venue")
        run = run_strategy(make(target), **args)
        assert run.plan == "loop", why
        full = run_strategy(make(target), **args, skip_quiet=False)
        assert_same(run.result, full.result)
        assert _renumbered(run.fills) == _renumbered(full.fills)


def test_a_collected_strategy_keeps_the_state_of_its_run():
    class Counting(Strategy):
        def on_start(self, symbols):
            self.bars, self.symbol = 0, symbols[0]

        def on_bar(self, bar, account):
            self.bars += 1
            b = bar[self.symbol]
            return Target(self.symbol, 0.5 if b.close[-1] > b.open[-1] else 0.0)

    _, args = _case(1, "exits")
    strategy = Counting()
    run = run_strategy(strategy, **args)
    assert run.plan == "collected" and strategy.bars == len(args["close"])
    assert run.result.trades.height > 0
    peeked = Peeking(target=np.full(np.shape(args["close"]), np.nan).reshape(
        len(args["close"]), -1), peek_at=7)
    assert run_strategy(peeked, **args).plan == "loop" and peeked.seen > 0


def test_a_target_no_venue_takes_is_refused_as_on_the_loop():
    """A non-finite weight or an unknown symbol leaves the collected plan: the loop refuses
    it, naming the bar."""
    target, args = _case(2, "exits")

    class Bad(Replay):
        def on_bar(self, bar, account):
            if bar.index == 4:
                return Target(self.symbol, self.weight_at_4)
            return super().on_bar(bar, account)

    for weight, symbol, message in ((float("inf"), "S0USDT", "weight inf is not a finite"),
                                    (0.1, "NOPE", "symbol 'NOPE' is not in the run")):
        with pytest.raises(ValueError, match=f"bar 4: intent .*{message}"):
            run_strategy(Bad(target=target, symbol=symbol, weight_at_4=weight), **args)
