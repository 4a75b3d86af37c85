"""Blueprints of kind ``code``: a Strategy class named by a spec is backtested and walk-
forwarded by the same functions as a rule blueprint, and a class that decides what a rule
says gives the rule's results exactly (pure; no Dagster)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import backtest
from backtest_assets.sim import Strategy, Target, run_strategy
from backtest_assets.sim.examples import SmaCross, TrailingBreakout
from backtest_assets.specs.loader import SpecError, build
from backtest_assets.specs.models import (
    CodeEntry,
    Condition,
    CostStress,
    Entry,
    Exits,
    StrategySpec,
    VenueSpec,
    WalkForwardSpec,
)
from backtest_assets.specs.registry import blueprint_problems
from backtest_assets.strategies import Panel
from backtest_assets.strategies.blueprints import exit_rules
from backtest_assets.strategies.code import build_strategy, held_target, strategy_class
from backtest_assets.strategies.run import instruments_for, run_blueprint
from backtest_assets.walkforward.evaluate import Market, evaluate
from backtest_assets.walkforward.grid import variants

VENUE = VenueSpec(maker_bps=2.0, taker_bps=4.0, slippage_bps=1.0, max_leverage=5.0)
SPEC = WalkForwardSpec(scheme="rolling", folds=4, train_days=4, purge_bars=12,
                       embargo_bars=12, min_trades=3, cpcv_groups=4, cscv_groups=4)


class SigFollower(Strategy):
    """What the rule ``|sig| > threshold, continuation, time stop hold`` decides (the hold
    rule of strategies/blueprints.py), written bar by bar."""

    threshold: float = 1.0
    hold: int = 1

    def on_start(self, symbols):
        self.symbol, self.start = symbols[0], None

    def on_bar(self, bar, account):
        t = bar.index
        if self.start is not None and t <= self.start + self.hold:
            return Target(self.symbol, 0.0) if t == self.start + self.hold else None
        v = bar.feature("sig")[-1]
        if math.isnan(v) or abs(v) <= self.threshold:
            return None
        self.start = t
        return Target(self.symbol, self.weight * math.copysign(1.0, v))


def _market(seed: int, days: int = 12, beta: float = 0.0005, tails: bool = False,
            effect_until: int | None = None, clustered: bool = True) -> Market:
    """5m bars of one symbol whose next return follows the feature ``sig`` by ``beta`` (the
    planted effect; on the first ``effect_until`` days only, when given); ``tails``: the
    noise is Student-t with 3 degrees of freedom, its volatility clustered (GARCH-like)
    unless ``clustered`` is False."""
    rng = np.random.default_rng(seed)
    n = days * 288
    sig = rng.standard_normal(n)
    if tails:
        vol = 0.002 * (np.exp(np.convolve(rng.standard_normal(n), np.ones(50) / 7, "same"))
                       if clustered else 1.0)
        step = vol * rng.standard_t(3, n) / math.sqrt(3)
    else:
        step = 0.002 * rng.standard_normal(n)
    b = np.full(n, beta) if effect_until is None else \
        np.where(np.arange(n) < effect_until * 288, beta, 0.0)
    step[1:] += b[1:] * sig[:-1]
    close = 100 * np.exp(np.cumsum(step))
    open_ = np.concatenate(([100.0], close[:-1]))
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(n) * np.timedelta64(5, "m")
    panel = Panel(ts, ("BTCUSDT",), open_[:, None], np.maximum(open_, close)[:, None] * 1.001,
                  np.minimum(open_, close)[:, None] * 0.999, close[:, None],
                  interval_minutes=5)
    return Market(panel, {"sig": sig[:, None]}, None, None, VENUE, 100_000.0)


def _rule(grid=None) -> StrategySpec:
    return StrategySpec(name="sig", symbols=("BTCUSDT",),
                        entry=Entry(condition=Condition(feature="sig", op="abs_gt",
                                                        threshold=1.0)),
                        direction="continuation", target_weight=0.8, leverage=2.0,
                        exits=Exits(time_stop_bars=2, stop_loss=0.004), grid=grid)


def _code(grid=None, **params) -> StrategySpec:
    code = CodeEntry(strategy=f"{__name__}:SigFollower", features=("sig",),
                     params={"threshold": 1.0, "hold": 2.0, **params})
    return StrategySpec(name="sig", symbols=("BTCUSDT",), entry=Entry(code=code),
                        direction="continuation", target_weight=0.8, leverage=2.0,
                        exits=Exits(time_stop_bars=2, stop_loss=0.004), grid=grid)


def _same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns and a.height == b.height
    for c in a.columns:
        x, y = a[c], b[c]
        if x.dtype.is_float():
            assert np.allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-9,
                               equal_nan=True), c
        else:
            assert x.to_list() == y.to_list(), c


@pytest.mark.parametrize("seed,tails", [(0, False), (1, True), (2, True)])
def test_a_code_blueprint_backtests_as_the_rule_it_restates(seed, tails):
    m = _market(seed, tails=tails)
    rule = run_blueprint(_rule(), m.panel, features=m.features, events=None, funding=None,
                         venue=VENUE, init_cash=m.init_cash)
    code = run_blueprint(_code(), m.panel, features=m.features, events=None, funding=None,
                         venue=VENUE, init_cash=m.init_cash)
    assert rule.trades.height > 50  # stops, time stops and signals all happen
    assert set(rule.trades["exit_reason"]) >= {"stop_loss", "time_stop"}
    _same(rule.trades, code.trades)
    _same(rule.equity, code.equity)
    _same(rule.metrics.drop("engine_path"), code.metrics.drop("engine_path"))
    # SigFollower never reads its account: its targets are collected and the engine runs them
    assert code.metrics["engine_path"][0] == "compiled"


def test_a_code_blueprint_walks_forward_as_the_rule_it_restates():
    """The same grid (stop-loss x weight) through evaluate: every train sweep, test run,
    CPCV split, PBO and deflated Sharpe equal; the code grid also varies its own params."""
    grid = {"exits.stop_loss": (0.004, 0.01), "target_weight": (0.4, 0.8)}
    m = _market(3, tails=True)
    rule = evaluate(_rule(grid), m, SPEC, stress=CostStress(multiplier=2.0))
    code = evaluate(_code(grid), m, SPEC, stress=CostStress(multiplier=2.0))
    _same(rule.results, code.results)
    _same(rule.equity, code.equity)
    _same(rule.summary, code.summary)
    assert rule.summary["folds_traded"][0] == 4 and math.isfinite(rule.summary["pbo"][0])
    # its own parameters in the grid: the threshold's combinations differ from each other
    both = _code({"entry.code.params.threshold": (0.5, 2.0)})
    assert [p for p, _ in variants(both)] == [{"entry.code.params.threshold": 0.5},
                                              {"entry.code.params.threshold": 2.0}]
    wf = evaluate(both, m, SPEC, stress=CostStress())
    train = wf.results.filter(pl.col("sample") == "train")
    assert train.group_by("combo").agg(pl.col("trades").sum()).sort("combo")["trades"] \
        .to_list()[0] > 3 * train.filter(pl.col("combo") == 1)["trades"].sum()


def test_a_window_reads_the_bars_before_it_as_history():
    """run_strategy(history=a): the strategy is first called at bar a with the a bars before
    it readable, nothing trades before a, and a bar after the current one raises."""
    m = _market(4, days=2)
    p = m.panel
    seen = []

    class Probe(Strategy):
        def on_bar(self, bar, account):
            seen.append((bar.index, len(bar.close), float(bar.close[-1])))
            if bar.index == 300:
                return Target("BTCUSDT", 0.5)

    run = run_strategy(Probe(), p.open, p.high, p.low, p.close,
                       instruments_for(_rule(), VENUE), history=200)
    assert seen[0] == (200, 201, p.close[200, 0]) and seen[-1][0] == len(p.ts) - 1
    assert len(run.result.equity) == len(p.ts) - 200
    assert run.result.trades["entry_bar"].to_list() == [101]  # bar 301 of the panel
    with pytest.raises(ValueError, match="history"):
        run_strategy(Probe(), p.open, p.high, p.low, p.close,
                     instruments_for(_rule(), VENUE), history=len(p.ts))


def test_sma_cross_example_equals_its_vectorized_target():
    """The shipped SmaCross, as a code blueprint on costs, equals the engine on the target
    its rule makes (long above, short below: continuation)."""
    m = _market(5, days=6, tails=True)
    p = m.panel
    bp = StrategySpec(name="sma", symbols=("BTCUSDT",), entry=Entry(code=CodeEntry(
        strategy="backtest_assets.sim.examples:SmaCross", params={"fast": 6.0, "slow": 30.0})),
        direction="continuation", target_weight=0.5, leverage=1.0)
    run = run_blueprint(bp, p, features={}, events=None, funding=None, venue=VENUE,
                        init_cash=1e5)
    c = p.close[:, 0]
    fast = np.convolve(c, np.ones(6) / 6)[:len(c)]
    slow = np.convolve(c, np.ones(30) / 30)[:len(c)]
    target = np.where(fast > slow, 0.5, -0.5)
    target[:29] = np.nan
    target[0] = 0.0
    res = backtest(p.open, p.high, p.low, p.close, target[:, None],
                   instruments_for(bp, VENUE), init_cash=1e5)
    assert res.trades.height > 20
    assert np.allclose(run.equity["equity"].to_numpy(), res.equity, rtol=1e-9)


def test_trailing_breakout_moves_its_stop_with_the_price():
    """Path dependence a target cannot say: every stop exit is at the trail below the
    highest close since its entry (never below the entry's own stop), and a stop is only
    ever moved up."""
    m = _market(6, days=8, tails=True)
    p = m.panel
    strat = TrailingBreakout(lookback=24, trail=0.01, weight=0.5)
    run = run_strategy(strat, p.open, p.high, p.low, p.close,
                       instruments_for(_rule(), VENUE))
    tr = run.result.trades
    stops = tr.filter(pl.col("exit_reason") == "stop_loss")  # the strategy's stops
    assert stops.height > 5 and (tr["exit_reason"] != "open").sum() == stops.height
    moved = [f for f in run.fills if f.reason == "stop"]
    assert len(moved) == stops.height
    for row in stops.iter_rows(named=True):
        entry, exit_ = row["entry_bar"], row["exit_bar"]
        peak = p.close[entry:exit_, 0].max(initial=row["entry_price"])
        level = peak * 0.99
        # filled at its trigger, or at the open when the bar opened below it, less the
        # venue's 1 bp of slippage
        assert row["exit_price"] <= level * (1 + 1e-9)
        assert row["exit_price"] >= min(level, p.open[exit_, 0]) * (1 - 1e-4) * (1 - 1e-9)


def test_code_spec_rules_are_enforced_with_the_field_named():
    base = {"name": "c", "symbols": ["BTCUSDT"], "direction": "long", "target_weight": 0.5,
            "entry": {"code": {"strategy": "backtest_assets.sim.examples:SmaCross",
                               "params": {"fast": 5, "slow": 20}}}}
    bp = build(StrategySpec, base, file="c.yaml")
    assert isinstance(build_strategy(bp), SmaCross) and build_strategy(bp).fast == 5
    assert isinstance(build_strategy(bp).fast, int)
    bad = [({"entry": {"code": {"strategy": "no colon"}}}, "entry.code.strategy"),
           ({"grid": {"entry.code.params.slowest": [1, 2]}}, "grid.entry.code.params.slowest"),
           ({"entry": {"code": {"strategy": "a:B", "params": {"weight": 1}}}},
            "entry.code.params")]
    for change, field in bad:
        with pytest.raises(SpecError, match=field.replace(".", r"\.")):
            build(StrategySpec, {**base, **change}, file="c.yaml")
    with pytest.raises(ValueError, match=r"declared int, got 5\.5"):
        SmaCross(fast=5.5, slow=20)
    with pytest.raises(ValueError, match=r"no 'Nope'"):
        strategy_class("backtest_assets.sim.examples:Nope")
    with pytest.raises(ValueError, match=r"not a backtest_assets\.sim\.Strategy"):
        strategy_class("backtest_assets.sim.examples:Target")
    odd = build(StrategySpec, {**base, "entry": {"code": {
        "strategy": "backtest_assets.nowhere:X", "features": ["nope"], "events": ["nah"]}}},
        file="c.yaml")
    found = dict(blueprint_problems(odd, ["BTCUSDT"], ["shock"], ["ret_1"], None))
    assert set(found) == {"entry.code.strategy", "entry.code.features[0]",
                          "entry.code.events[0]"}


def test_held_target_is_the_runs_decisions_not_its_stops():
    m = _market(7, days=3, tails=True)
    p = m.panel
    bp = _code()
    res = run_strategy(build_strategy(bp), p.open, p.high, p.low, p.close,
                       instruments_for(bp, VENUE), features=m.features,
                       exits=exit_rules(bp)).result
    tgt = held_target(res, p.close, p.symbols)
    assert tgt[0, 0] == 0.0
    sides = np.sign(tgt[~np.isnan(tgt)])
    entries = res.trades.filter(pl.col("entry_bar") > 0)
    # each entry was decided at the close before its fill, on its side
    for row in entries.iter_rows(named=True):
        want = 1.0 if row["side"] == "long" else -1.0
        assert np.sign(tgt[row["entry_bar"] - 1, 0]) == want
    # a stop-loss exit is not a decision: no 0 is decided for it
    for row in res.trades.filter(pl.col("exit_reason") == "stop_loss").iter_rows(named=True):
        assert np.isnan(tgt[row["exit_bar"] - 1, 0]) or tgt[row["exit_bar"] - 1, 0] != 0
    assert set(sides) <= {-1.0, 0.0, 1.0}
