"""Strategies as code on the event loop (issue 19): parity with the vectorized engine for a
target-weight strategy on every rule regime, the point-in-time rule, the documented order
of events that share a bar, determinism, and scenario tables for each intent kind."""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.engine import ExitRules, Instrument, backtest
from backtest_assets.sim import (
    Cancel,
    Limit,
    LookAheadError,
    Market,
    Stop,
    Strategy,
    TakeProfit,
    Target,
    run_strategy,
)
from tests.unit.test_engine_parity import REGIMES, assert_same, synthetic_case
from tests.unit.test_engine_scenarios import approx, table

NAN = np.nan
CASH = 10_000.0


class Replay(Strategy):
    """The targets of a (T, S) array, one bar at a time: what the vectorized engine does."""

    def on_bar(self, bar, account):
        row = self.target[bar.index]
        return [Target(symbol=s, weight=float(w)) for s, w in zip(bar.symbols, row,
                                                                   strict=True)
                if not np.isnan(w)]


def sparse_targets(target: np.ndarray) -> int:
    """Bars without a target (where nothing new is ordered)."""
    return int(np.isnan(target).all(axis=1).sum())


ENGINE_ARGS = ("open_", "high", "low", "close", "instruments", "funding", "exits",
               "init_cash", "risk", "day", "mark_open", "mark_high", "mark_low", "volume",
               "limits")


@pytest.mark.parametrize("regime", REGIMES)
def test_a_target_strategy_gives_the_engines_result(regime):
    """On every bar and trade, to 1e-9, with the regime's rules (brackets, risk manager,
    marks, limits, participation, impact in ``venue``), whether the loop skips quiet bars
    or runs every step on every bar."""
    skipped = 0
    for seed in range(40):
        case = synthetic_case(seed, regime)
        target = np.asarray(case["target"], dtype=float).reshape(len(case["close"]), -1)
        args = {k: case[k] for k in ENGINE_ARGS if k in case}
        want = backtest(**args, target=case["target"])
        for skip in (True, False):
            run = run_strategy(Replay(target=target), **args, skip_quiet=skip)
            assert_same(run.result, want)
        skipped += sparse_targets(target)
    assert skipped  # the cases hold quiet stretches to skip


# ---- point in time -------------------------------------------------------------------------
class Peeker(Strategy):
    def on_bar(self, bar, account):
        t = bar.index
        assert len(bar.close) == t + 1 and np.asarray(bar.close).shape == (t + 1,)
        assert bar.close[-1] == bar.close[t]
        if t == 3:
            self.seen = bar.close[t + 1]  # the next bar: not known at this close


def test_reading_after_the_close_is_refused():
    bars = table([(100, 110, 90, 100 + k, NAN) for k in range(6)])
    del bars["target"]
    with pytest.raises(LookAheadError, match="bar 4 is after the current bar 3"):
        run_strategy(Peeker(), **bars, instruments=Instrument(symbol="X"))


def test_features_and_slices_stop_at_the_close():
    seen = []

    class Reader(Strategy):
        def on_bar(self, bar, account):
            f = bar.feature("f")
            seen.append((len(f), f[-1], list(bar.close[-2:])))
            with pytest.raises(LookAheadError):
                f[bar.index + 1]
            with pytest.raises(LookAheadError):
                bar.close[0:bar.index + 2]

    bars = table([(100, 110, 90, 100 + k, NAN) for k in range(3)])
    del bars["target"]
    run_strategy(Reader(), **bars, instruments=Instrument(symbol="X"),
                 features={"f": np.array([1.0, 2.0, 3.0])})
    assert seen == [(1, 1.0, [100.0]), (2, 2.0, [100.0, 101.0]), (3, 3.0, [101.0, 102.0])]


# ---- intents, by hand ------------------------------------------------------------------------
COSTS = Instrument(symbol="X", taker_bps=10, slippage_bps=10, maker_bps=2)


class Scripted(Strategy):
    """Intents by bar (``at``) and on fills (``on_fills``: a function of the fill)."""

    def on_bar(self, bar, account):
        return self.at.get(bar.index)

    def on_fill(self, fill, account):
        self.seen = [*getattr(self, "seen", []), (fill.bar, fill.reason, fill.qty)]
        return self.react(fill) if hasattr(self, "react") else None


def run(strategy, rows, **kw):
    bars = table(rows)
    del bars["target"]
    return run_strategy(strategy, **bars, instruments=kw.pop("instruments", COSTS),
                        init_cash=CASH, **kw)


FLAT = [(100, 101, 99, 100, NAN)] * 2 + [(100, 106, 99, 105, NAN), (105, 106, 93, 95, NAN),
                                         (95, 96, 94, 95, NAN)]


def test_a_market_order_and_a_protective_stop_placed_on_its_fill():
    """Buy 10 at bar 0's close: filled at bar 1's open, 100 x 1.001 = 100.1, fee 10 bps of
    1,001 = 1.001. On that fill the strategy places a sell stop at 95 for 10 (reduce-only);
    bar 3's low 93 reaches it: sold at 95 x 0.999 = 94.905, fee 0.94905."""
    s = Scripted(at={0: Market(symbol="X", qty=10)},
                 react=lambda f: Stop(symbol="X", qty=-f.qty, trigger=95.0, reduce_only=True)
                 if f.reason == "market" else None)
    r = run(s, FLAT)
    assert s.seen == [(1, "market", 10.0), (3, "stop", -10.0)]
    t = r.result.trades.row(0, named=True)
    assert [t["entry_price"], t["exit_price"]] == approx([100.1, 94.905])
    assert t["exit_reason"] == "stop_loss"
    assert [t["entry_bar"], t["exit_bar"]] == [1, 3]
    assert r.result.fees[:, 0].tolist() == approx([0, 1.001, 0, 0.94905, 0])
    assert r.result.equity[-1] == approx(CASH + 10 * (94.905 - 100.1) - 1.001 - 0.94905)


def test_take_profit_limit_touch_and_cancel():
    """Bar 0: buy 10 at market and rest a take-profit sell at 105.5 and a limit sell at 106
    (touched by bar 2's high 106, not traded through: unfilled); bar 2's high 106 reaches
    the take-profit: sold at 105.5 x 0.999 = 105.3945. The limit is cancelled at bar 2's
    close."""
    tp = TakeProfit(symbol="X", qty=-10, trigger=105.5)
    lim = Limit(symbol="X", qty=-10, price=106.0, valid_bars=5, reduce_only=True)
    s = Scripted(at={0: [Market(symbol="X", qty=10), tp, lim], 2: Cancel(id=lim.id)})
    r = run(s, FLAT)
    fills = [(f.bar, f.reason, f.qty, f.price) for f in r.fills]
    assert fills == [(1, "market", 10.0, approx(100.1)), (2, "take_profit", -10.0,
                                                          approx(105.3945))]
    assert r.result.orders["limit_placed"] == 1 and r.result.orders["limit_cancelled"] == 1
    assert r.result.orders["limit_filled"] == 0


def test_a_limit_traded_through_fills_at_its_price_with_the_maker_fee():
    """A buy limit at 99.5 for 10: bar 1's low 99 trades through it: bought at 99.5, fee
    2 bps of 995 = 0.199."""
    s = Scripted(at={0: Limit(symbol="X", qty=10, price=99.5, valid_bars=2)})
    r = run(s, FLAT)
    assert [(f.bar, f.reason, f.qty, f.price) for f in r.fills] == [(1, "limit", 10.0, 99.5)]
    assert r.result.fees[1, 0] == approx(0.199)
    assert r.result.orders["limit_filled"] == 1


def test_reduce_only_never_opens_nor_flips():
    """Flat, a reduce-only sell lapses; long 10, a reduce-only sell of 25 sells 10."""
    s = Scripted(at={0: Market(symbol="X", qty=-5, reduce_only=True),
                     1: Market(symbol="X", qty=10),
                     2: Market(symbol="X", qty=-25, reduce_only=True)})
    r = run(s, FLAT)
    assert [(f.bar, f.qty) for f in r.fills] == [(2, 10.0), (3, -10.0)]
    assert r.result.position[:, 0].tolist() == [0, 0, 10, 0, 0]


# ---- events that share a bar -------------------------------------------------------------------
def test_funding_is_paid_on_the_position_held_into_the_open_before_its_orders():
    """Funding 1 % at bar 2's open and at bar 3's. Bought 10 at bar 2's open: nothing paid
    at bar 2 (the position came after the print); at bar 3 the 10 held into the open pay
    10 x 105 x 1 % = 10.5 and then the sell fills."""
    rate = np.array([NAN, NAN, 0.01, 0.01, NAN])
    s = Scripted(at={1: Market(symbol="X", qty=10), 2: Market(symbol="X", qty=-10)})
    r = run(s, FLAT, instruments=Instrument(symbol="X"), funding=rate)
    assert r.result.funding[:, 0].tolist() == approx([0, 0, 0, 10.5, 0])
    assert [(f.bar, f.qty) for f in r.fills] == [(2, 10.0), (3, -10.0)]


def test_a_liquidation_comes_before_the_strategys_stop_in_the_same_bar():
    """Long 50 units at 100 with a setting of 10 (5x; maintenance 0.5 %): liquidation
    price 100 x 0.9 / 0.995 = 90.452. The strategy's sell stop at 91 sits above it; bar 3's
    low 89 reaches both: the liquidation is checked first, the position is gone, and the
    reduce-only stop lapses unfilled."""
    inst = Instrument(symbol="X", max_leverage=10, maintenance_margin_rate=0.005)
    rows = [(100, 101, 99, 100, NAN), (100, 101, 99, 100, NAN), (100, 101, 99, 100, NAN),
            (99, 99, 89, 90, NAN)]
    s = Scripted(at={0: [Market(symbol="X", qty=50),
                         Stop(symbol="X", qty=-50, trigger=91.0, reduce_only=True)]})
    r = run(s, rows, instruments=inst)
    assert [(f.bar, f.reason) for f in r.fills] == [(1, "market"), (3, "liquidation")]
    assert r.result.trades["exit_reason"].to_list() == ["liquidation"]
    assert r.fills[-1].price == approx(90 / 0.995)


def test_a_run_repeated_is_identical():
    case = synthetic_case(7, "venue")
    target = np.asarray(case["target"], dtype=float).reshape(len(case["close"]), -1)
    args = {k: case[k] for k in ENGINE_ARGS if k in case}
    a, b = (run_strategy(Replay(target=target), **args) for _ in range(2))
    assert a.fills == b.fills
    for name in ("equity", "cash", "position", "fees", "funding"):
        assert getattr(a.result, name).tobytes() == getattr(b.result, name).tobytes()
    assert a.result.trades.equals(b.result.trades)


def test_an_intent_for_an_unknown_symbol_is_refused():
    s = Scripted(at={0: Market(symbol="Y", qty=1)})
    with pytest.raises(ValueError, match="symbol 'Y' is not in the run"):
        run(s, FLAT)


def test_exits_of_the_engine_reach_on_fill():
    """The engine's 5 % stop on a target position is a fill the strategy hears about."""
    s = Scripted(at={0: Target(symbol="X", weight=1.0)})
    r = run(s, FLAT, instruments=Instrument(symbol="X"), exits=ExitRules(stop_loss=0.05))
    assert [(f.bar, f.reason) for f in r.fills] == [(1, "signal"), (3, "stop_loss")]


def test_the_readme_example_runs_as_written():
    """The README's strategy, verbatim, on a flat stretch (whose close already equals its
    20-bar high), a climb and a fall: one market entry, then its stop 2 % under the fill,
    sold with the 1 bp slippage."""
    from pathlib import Path

    text = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    section = text[text.index("## Strategies as code"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    close = np.concatenate([np.full(25, 100.0), [101.0, 102.0, 103.0],
                            np.linspace(103, 95, 10)])
    open_ = np.concatenate([[100.0], close[:-1]])
    scope = {"open_": open_, "high": np.maximum(open_, close) + 0.5,
             "low": np.minimum(open_, close) - 0.5, "close": close}
    exec(compile(code, "README.md", "exec"), scope)
    fills = [(f.bar, f.reason, f.qty) for f in scope["run"].fills]
    assert fills[0][1:] == ("market", 1.0) and fills[1][1:] == ("stop", -1.0)
    entry = scope["run"].fills[0].price
    assert scope["run"].fills[1].price == approx(entry * 0.98 * (1 - 1e-4))


def test_a_stop_placed_on_a_fill_watches_the_rest_of_that_bar():
    """Bought at bar 1's open (100.1 with costs); on the fill a sell stop at 99.5; bar 1's
    low 99 reaches it in the same bar: sold at 99.5 x 0.999 = 99.4005. A market order
    returned by the same on_fill would wait for the next open."""
    s = Scripted(at={0: Market(symbol="X", qty=10)},
                 react=lambda f: [Stop(symbol="X", qty=-f.qty, trigger=99.5, reduce_only=True),
                                  Market(symbol="X", qty=1)] if f.reason == "market"
                 and f.qty == 10 else None)
    r = run(s, FLAT)
    assert [(f.bar, f.reason, f.qty) for f in r.fills] == [
        (1, "market", 10.0), (1, "stop", -10.0), (2, "market", 1.0)]
    assert r.fills[1].price == approx(99.4005)


def test_two_symbols_a_pair_trade():
    """Long 1 A and short 2 B at the same open, each with its own costs and rules; the
    fills come in the order given, and each symbol's position is its own."""
    a = Instrument(symbol="A", taker_bps=10)
    b = Instrument(symbol="B", taker_bps=20)
    rows = np.array([[100.0, 50.0], [101.0, 49.0], [102.0, 48.0]])
    s = Scripted(at={0: [Market(symbol="A", qty=1), Market(symbol="B", qty=-2)]})
    r = run_strategy(s, rows, rows * 1.01, rows * 0.99, rows, [a, b], init_cash=CASH)
    assert [(f.symbol, f.bar, f.qty, f.price) for f in r.fills] == [
        ("A", 1, 1.0, 101.0), ("B", 1, -2.0, 49.0)]
    assert r.result.fees[1].tolist() == approx([0.101, 0.196])
    assert r.result.position[-1].tolist() == [1.0, -2.0]
    assert r.result.equity[-1] == approx(CASH + (102 - 101) - 2 * (48 - 49) - 0.101 - 0.196)


@pytest.mark.parametrize(("intent", "message"), [
    (Target(symbol="X", weight=float("nan")), "weight nan is not a finite number"),
    (Market(symbol="X", qty=0.0), "qty 0.0 is not a non-zero finite number"),
    (Limit(symbol="X", qty=1.0, price=-1.0), "price -1.0 is not a positive finite number"),
    (Stop(symbol="X", qty=-1.0, trigger=float("inf")), "trigger inf is not a positive"),
    (Target(symbol="X", weight=1.5), "target gross leverage 1.5 exceeds the max leverage 1"),
])
def test_intents_no_venue_would_take_are_refused(intent, message):
    """As the engine refuses such targets before simulating, the loop refuses them when
    given, naming the bar, the intent and what is wrong."""
    with pytest.raises(ValueError, match=f"bar 0: .*{message}|X bar 0: {message}"):
        run(Scripted(at={0: intent}), FLAT)
