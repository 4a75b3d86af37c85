"""Walk-forward: folds never leak, grids become blueprints, and the evaluation tells a planted
effect from luck (pure; no Dagster)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine.sweep import sweep
from backtest_assets.specs.models import (
    Condition,
    CostStress,
    Entry,
    Exits,
    StrategySpec,
    VenueSpec,
    WalkForwardSpec,
)
from backtest_assets.strategies import Panel
from backtest_assets.strategies.blueprints import exit_rules, targets
from backtest_assets.strategies.run import instruments_for
from backtest_assets.walkforward import folds as F
from backtest_assets.walkforward.evaluate import Market, choose, evaluate, purge_bars
from backtest_assets.walkforward.grid import combinations, params_json, variant, variants

# ---- folds --------------------------------------------------------------------------------


def _all_splits(n, scheme, folds, train, test, purge, embargo, groups, k):
    return [*F.walk_forward(n, scheme=scheme, folds=folds, train_bars=train, test_bars=test,
                            purge=purge),
            *F.cpcv(n, groups=groups, test_groups=k, purge=purge, embargo=embargo)]


def test_folds_never_leak_over_many_random_specs():
    """No test bar in train, none within purge before or embargo after a test range."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(200, 3000))
        purge, embargo = int(rng.integers(0, 40)), int(rng.integers(0, 40))
        folds = int(rng.integers(1, 8))
        train = int(rng.integers(20, n // 3))
        room = (n - train - purge) // folds
        test = None if rng.random() < 0.5 else int(rng.integers(1, room + 1))
        groups = int(rng.integers(3, 9))
        k = int(rng.integers(1, groups))
        for scheme in ("rolling", "anchored"):
            for s in _all_splits(n, scheme, folds, train, test, purge, embargo, groups, k):
                assert F.leaks(s, purge=purge, embargo=embargo) == [], s
                train_idx = np.concatenate([np.arange(a, b) for a, b in s.train] or [[]])
                test_idx = np.concatenate([np.arange(a, b) for a, b in s.test])
                assert not np.isin(test_idx, train_idx).any()
                # distance from each train bar to the nearest test range, by side
                for c, d in s.test:
                    before = train_idx[train_idx < c]
                    after = train_idx[train_idx >= d]
                    assert before.size == 0 or c - before.max() > purge
                    assert after.size == 0 or after.min() - d >= embargo
                checked += 1
    assert checked > 3000


def test_walk_forward_windows_by_hand():
    # 100 bars, first train 40, purge 5, 3 folds: tests [45, 63), [63, 81), [81, 100)
    rolling = F.walk_forward(100, scheme="rolling", folds=3, train_bars=40, purge=5)
    assert [(s.train, s.test) for s in rolling] == [
        (((0, 40),), ((45, 63),)), (((18, 58),), ((63, 81),)), (((36, 76),), ((81, 100),))]
    anchored = F.walk_forward(100, scheme="anchored", folds=3, train_bars=40, purge=5)
    assert [s.train for s in anchored] == [((0, 40),), ((0, 58),), ((0, 76),)]


def test_cpcv_splits_by_hand():
    # 60 bars, 6 groups of 10, 2 test groups: 15 splits; groups 1 and 3 tested, purge 2,
    # embargo 3: train = [0, 8) [13, 28) [33, 40)... i.e. all but [8, 23) and [28, 43).
    splits = F.cpcv(60, groups=6, test_groups=2, purge=2, embargo=3)
    assert len(splits) == math.comb(6, 2)
    s = next(x for x in splits if x.test == ((10, 20), (30, 40)))
    assert s.train == ((0, 8), (23, 28), (43, 60))
    adjacent = next(x for x in splits if x.test == ((10, 30),))  # groups 1 and 2 merge
    assert adjacent.train == ((0, 8), (33, 60))


def test_folds_refuse_a_grid_too_short():
    with pytest.raises(ValueError, match="100 bars cannot hold a train window of 98 bars"):
        F.walk_forward(100, scheme="rolling", folds=3, train_bars=98, purge=5)
    with pytest.raises(ValueError, match="scheme"):
        F.walk_forward(100, scheme="expanding", folds=3, train_bars=10)


def test_block_mask_and_boundaries():
    splits = F.cpcv(60, groups=6, test_groups=2, purge=2, embargo=3)
    bounds = F.boundaries(splits, 60, F.group_bounds(60, 4))
    for s in splits:  # blocks reproduce each split's train and test sets exactly
        for ranges in (s.train, s.test):
            mask = F.block_mask(ranges, bounds)
            got = np.concatenate([np.arange(bounds[b], bounds[b + 1])
                                  for b in np.flatnonzero(mask)])
            want = np.concatenate([np.arange(a, b) for a, b in ranges])
            assert np.array_equal(got, want)


# ---- grid ---------------------------------------------------------------------------------

def _bp(**grid) -> StrategySpec:
    return StrategySpec(name="sig", symbols=("BTCUSDT",),
                        entry=Entry(condition=Condition(feature="sig", op="abs_gt",
                                                        threshold=1.0)),
                        direction="continuation", target_weight=1.0,
                        exits=Exits(time_stop_bars=1), grid=grid or None)


def test_grid_combinations_are_the_product_in_sorted_path_order():
    bp = _bp(**{"exits.time_stop_bars": (1.0, 2.0), "entry.condition.threshold": (0.5, 1.5)})
    assert combinations(bp) == [
        {"entry.condition.threshold": 0.5, "exits.time_stop_bars": 1},
        {"entry.condition.threshold": 0.5, "exits.time_stop_bars": 2},
        {"entry.condition.threshold": 1.5, "exits.time_stop_bars": 1},
        {"entry.condition.threshold": 1.5, "exits.time_stop_bars": 2}]
    params, v = variants(bp)[3]
    assert v.entry.condition.threshold == 1.5 and v.exits.time_stop_bars == 2 and v.grid is None
    assert json.loads(params_json(params)) == params
    assert combinations(_bp()) == [{}]


def test_grid_refuses_an_invalid_combination_naming_it():
    with pytest.raises(ValueError, match=r'sig: combination \{"exits.stop_loss":1.5\} is not a '
                                         r"valid blueprint: stop_loss: 1.5 is out of range"):
        variant(_bp(), {"exits.stop_loss": 1.5})
    with pytest.raises(ValueError, match=r"grid\.exits\.trailing: not a tunable parameter"):
        _bp(**{"exits.trailing": (1.0,)}).validate()


# ---- evaluation: a planted effect against luck ----------------------------------------------

GRID = {"entry.condition.threshold": (0.5, 1.0, 1.5, 2.0, 2.5),
        "exits.time_stop_bars": (1.0, 2.0, 3.0, 4.0),
        "exits.stop_loss": (0.005, 0.01, 0.02, 0.05)}
FREE = VenueSpec(maker_bps=0.0, taker_bps=0.0, slippage_bps=0.0)
SPEC = WalkForwardSpec(scheme="rolling", folds=6, train_days=8, purge_bars=12,
                       embargo_bars=12, min_trades=5)


def _market(seed: int, beta: float, days: int = 20, venue: VenueSpec = FREE) -> Market:
    """5m bars of one symbol whose next-bar log return is beta x the feature ``sig`` (an iid
    standard normal known at the bar's close) plus noise of 0.2 % a bar."""
    rng = np.random.default_rng(seed)
    n = days * 288
    sig = rng.standard_normal(n)
    step = 0.002 * rng.standard_normal(n)
    step[1:] += beta * sig[:-1]
    close = 100 * np.exp(np.cumsum(step))
    open_ = np.concatenate(([100.0], close[:-1]))
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(n) * np.timedelta64(5, "m")
    panel = Panel(ts, ("BTCUSDT",), open_[:, None], np.maximum(open_, close)[:, None] * 1.0005,
                  np.minimum(open_, close)[:, None] * 0.9995, close[:, None],
                  interval_minutes=5)
    return Market(panel, {"sig": sig[:, None]}, None, None, venue, 100_000.0)


@pytest.fixture(scope="module")
def verdicts():
    out = {}
    for beta in (0.0, 0.0005):
        out[beta] = [evaluate(_bp(**GRID), _market(seed, beta), SPEC, stress=CostStress())
                     for seed in range(6)]
    return out


def test_no_effect_best_in_sample_sharpe_is_high_but_not_significant(verdicts):
    s = pl.concat([wf.summary for wf in verdicts[0.0]])
    assert (s["trials"] == 80).all()
    # Choosing the best of 80 on pure noise: an annualized Sharpe of several units ...
    assert s["is_sharpe"].min() > 3.0, s["is_sharpe"]
    # ... that the deflated Sharpe does not believe (SR0, the best of 80 null trials, is
    # about as high), and a probability of overfitting far from 0.
    assert (s["deflated_sharpe"] < 0.95).all(), s["deflated_sharpe"]
    assert (s["sr0"] > 0.5 * s["is_sharpe"]).all()
    assert (s["pbo"] > 0.05).all() and s["pbo"].mean() > 0.2, s["pbo"]


def test_planted_effect_is_significant_and_not_overfit(verdicts):
    s = pl.concat([wf.summary for wf in verdicts[0.0005]])
    assert (s["deflated_sharpe"] > 0.99).all(), s["deflated_sharpe"]
    assert (s["pbo"] < 0.05).all(), s["pbo"]
    assert (s["oos_sharpe"] > 10).all() and (s["is_oos_decay"] > 0.5).all()
    # the effect is strongest for the lowest thresholds: the sweep finds them
    best = [json.loads(p)["entry.condition.threshold"] for p in s["full_best_params"]]
    assert max(best) <= 1.5, best


def test_results_hold_every_combination_in_sample_and_every_fold_out_of_sample(verdicts):
    wf = verdicts[0.0005][0]
    r = wf.results
    train = r.filter(pl.col("sample") == "train")
    assert train.group_by("fold").len().sort("fold")["len"].to_list() == [80] * 6
    test = r.filter(pl.col("sample") == "test").sort("fold")
    assert test["fold"].to_list() == list(range(6))
    # the test window traded the combination selected on its train window
    chosen = train.filter(pl.col("selected")).sort("fold")
    assert chosen["combo"].to_list() == test["combo"].to_list()
    for row in test.iter_rows(named=True):
        fold = train.filter(pl.col("fold") == row["fold"])
        assert row["combo"] == choose(fold, "sharpe", SPEC.min_trades)
        assert row["start"] > fold["end"][0]  # the purge gap
    assert r.filter(pl.col("sample") == "cpcv").height == math.comb(6, 2)
    # the chained out-of-sample equity covers exactly the test windows, in order
    assert wf.equity.height == test["bars"].sum()
    assert wf.equity["ts"].is_sorted()
    assert wf.summary["oos_total_return"][0] == pytest.approx(
        wf.equity["equity"][-1] / 100_000 - 1, rel=1e-12)
    assert wf.folds.filter(pl.col("role") == "test").height == 6 + 2 * 15 - 5  # merged


def test_test_window_results_equal_a_direct_backtest_of_the_chosen_blueprint(verdicts):
    """The test row is the chosen combination run alone on that window (no state leaks in)."""
    wf = verdicts[0.0005][1]
    market = _market(1, 0.0005)
    row = wf.results.filter((pl.col("sample") == "test") & (pl.col("fold") == 2)).row(
        0, named=True)
    v = variant(_bp(**GRID), json.loads(row["params"]))
    p = market.panel
    a = int(np.searchsorted(p.ts, np.datetime64(row["start"], "us")))
    b = a + row["bars"]
    sig = market.features["sig"][a:b]  # a lag-0 feature: the window's own signals
    sub = p.rows(a, b)
    table = sweep(sub.open, sub.high, sub.low, sub.close, [targets(v, sub, {"sig": sig}, None)],
                  instruments_for(v, FREE), exits=exit_rules(v), init_cash=100_000.0,
                  bars_per_year=105_120)
    assert table["sharpe"][0] == pytest.approx(row["sharpe"], rel=1e-9)
    assert table["total_return"][0] == pytest.approx(row["total_return"], rel=1e-9)


def test_costs_stress_lowers_out_of_sample_results():
    venue = VenueSpec(maker_bps=2.0, taker_bps=4.0, slippage_bps=1.0)
    wf = evaluate(_bp(**GRID), _market(0, 0.0005, venue=venue), SPEC,
                  stress=CostStress(multiplier=3.0))
    test = wf.results.filter(pl.col("sample") == "test")
    assert (test["stress_total_return"] < test["total_return"]).all()
    s = wf.summary.row(0, named=True)
    assert s["stress_total_return"] < s["oos_total_return"]


def test_purge_covers_the_longest_hold_and_phase2_trials_count():
    bp = _bp(**{"exits.time_stop_bars": (3.0, 30.0)})
    assert purge_bars(bp, SPEC) == 31
    wf = evaluate(bp, _market(0, 0.0005, days=20), SPEC, stress=CostStress(),
                  trials_phase2=120)
    s = wf.summary.row(0, named=True)
    assert (s["combinations"], s["trials_phase2"], s["trials"], s["purge_bars"]) == \
        (2, 120, 122, 31)
    for split in itertools.chain.from_iterable(
            [F.walk_forward(20 * 288, scheme="rolling", folds=6, train_bars=8 * 288,
                            purge=31)]):
        assert F.leaks(split, purge=31, embargo=0) == []
