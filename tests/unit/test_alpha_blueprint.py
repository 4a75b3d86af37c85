"""A blueprint that trades an alpha model's scores: sides by hand, the book's gross within
its bound, flat without a score, the engine and the walk-forward on the synthetic universe."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from backtest_assets.core.funding import DEFAULT_POLICY
from backtest_assets.specs.models import AlphaEntry, Entry
from backtest_assets.specs.registry import blueprint_problems, load_registry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.blueprints import alpha_feature, alpha_sides, targets
from backtest_assets.strategies.catalog import catalog, from_alpha_model
from backtest_assets.strategies.run import instruments_for, run_blueprint

NAN = np.nan
REG = load_registry()
VENUE = REG.fees.venues[REG.fees.default_venue]


def flat_panel(t: int, symbols: tuple[str, ...]) -> Panel:
    price = np.full((t, len(symbols)), 100.0)
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(t) * np.timedelta64(5, "m")
    return Panel(ts, symbols, price, price * 1.001, price * 0.999, price, interval_minutes=5)


SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")


def test_quantile_sides_by_hand():
    bp = dataclasses.replace(from_alpha_model("combined_model_v1", SYMS),
                             entry=Entry(alpha=AlphaEntry(model="combined_model_v1")))
    scores = np.array([
        [0.3, -0.1, 0.9, 0.0, -0.5],   # 5 scored, q 0.2: one long (0.9), one short (-0.5)
        [NAN, 0.2, 0.1, NAN, NAN],     # 2 scored: the larger long, the smaller short
        [NAN, 0.2, NAN, NAN, NAN],     # 1 scored: no cross-section, no side
        [0.5, 0.5, 0.5, 0.5, 0.5],     # ties: by column order (stable)
    ])
    sides = alpha_sides(bp, flat_panel(4, SYMS), {alpha_feature("combined_model_v1"): scores})
    np.testing.assert_array_equal(sides, [
        [0, 0, 1, 0, -1],
        [NAN, 1, -1, NAN, NAN],
        [NAN, NAN, NAN, NAN, NAN],
        [-1, 0, 0, 0, 1]])
    half = dataclasses.replace(bp, entry=Entry(alpha=AlphaEntry(model="combined_model_v1",
                                                                  quantile=0.5)))
    sides = alpha_sides(half, flat_panel(1, SYMS), {alpha_feature("combined_model_v1"):
                                                    scores[:1]})
    np.testing.assert_array_equal(sides, [[1, -1, 1, 0, -1]])  # two long, two short


def test_proportional_sides_and_a_dense_target_flat_without_a_score():
    bp = dataclasses.replace(from_alpha_model("combined_model_v1", SYMS[:3]),
                             entry=Entry(alpha=AlphaEntry(model="combined_model_v1",
                                                          mode="proportional")))
    scores = np.array([[1.0, 2.0, 6.0], [NAN, NAN, NAN]])
    feats = {alpha_feature("combined_model_v1"): scores}
    sides = alpha_sides(bp, flat_panel(2, SYMS[:3]), feats)
    np.testing.assert_allclose(sides[0], [-2 / 3, -1 / 3, 1.0])  # (x - 3) / 3
    target = targets(bp, flat_panel(2, SYMS[:3]), feats, None)
    np.testing.assert_allclose(target, [[-2 / 9, -1 / 9, 1 / 3], [0, 0, 0]])
    with pytest.raises(ValueError, match="materialize the study's alpha bundle first"):
        targets(bp, flat_panel(2, SYMS[:3]), {}, None)


def test_the_alpha_blueprint_validates_its_gross_and_the_catalog_adds_one_per_model():
    bp = from_alpha_model("combined_model_v1", SYMS)
    assert bp.target_weight * len(SYMS) <= bp.leverage
    table = catalog(REG, None, ("BTCUSDT", "ETHUSDT", "SOLUSDT"), ["combined_model_v1"])
    row = table.filter(table["source"] == "alpha").row(0, named=True)
    assert row["blueprint"] == "alpha_combined_model_v1"
    assert row["entry"] == "alpha combined_model_v1 quantile 0.2 every 12 bars"
    assert (catalog(REG, None, ("BTCUSDT", "ETHUSDT", "SOLUSDT"))["source"] != "alpha").all()

    bad = dataclasses.replace(bp, entry=Entry(alpha=AlphaEntry(model="nope_v1")))
    assert [f for f, _ in blueprint_problems(bad, SYMS, REG.events, REG.features, REG.fees,
                                             REG.alpha)] == ["entry.alpha.model"]


def test_the_engine_trades_the_scores_and_the_book_gross_stays_within_two_quantiles():
    """Scores that rank the next bar's return perfectly on a random market: the
    long-short book earns; its gross never exceeds 2 x quantile of equity plus drift."""
    rng = np.random.default_rng(5)
    t = 600
    r = rng.standard_t(3, (t, len(SYMS))) * 0.002
    close = 100 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([np.full((1, len(SYMS)), 100.0), close[:-1]])
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(t) * np.timedelta64(5, "m")
    panel = Panel(ts, SYMS, open_, np.maximum(open_, close) * 1.0005,
                  np.minimum(open_, close) * 0.9995, close, interval_minutes=5)
    scores = np.full((t, len(SYMS)), NAN)
    # bar t + 1's move (the bar the position decided at t's close holds), known "at t"
    scores[100:-1] = np.log(close[101:] / close[100:-1])
    bp = dataclasses.replace(from_alpha_model("combined_model_v1", SYMS),
                             entry=Entry(alpha=AlphaEntry(model="combined_model_v1")))
    funding = pl.DataFrame({"symbol": np.repeat(np.array(SYMS), 3),
                            "ts": np.tile(ts[[0, 96, 192]], len(SYMS)),
                            "funding_rate": 1e-4})
    run = run_blueprint(bp, panel, features={alpha_feature("combined_model_v1"): scores},
                        events=None, funding=funding.filter(pl.col("ts") < ts[-1]),
                        venue=VENUE, init_cash=100_000.0,
                        funding_policy=dataclasses.replace(DEFAULT_POLICY, allow_missing=True))
    m = run.metrics.row(0, named=True)
    assert m["total_return"] > 0.05 and m["trades"] > 50
    # gross / equity: one long and one short at 1/5 each, drifting within a bar
    assert 0.35 < run.equity["exposure"].max() <= 2 * 0.2 * 1.05
    assert instruments_for(bp, VENUE)[0].max_leverage == 2.0


def test_sides_are_decided_every_rebalance_and_held_between():
    bp = from_alpha_model("combined_model_v1", SYMS[:3])  # every 12 bars
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 3))
    scores[24:26] = NAN  # no score at the rebalance of bar 24: flat until bar 36
    feats = {alpha_feature("combined_model_v1"): scores}
    every_bar = dataclasses.replace(bp, entry=Entry(alpha=AlphaEntry(model="combined_model_v1")))
    raw = alpha_sides(every_bar, flat_panel(40, SYMS[:3]), feats)
    held = alpha_sides(bp, flat_panel(40, SYMS[:3]), feats)
    for t in range(40):
        np.testing.assert_array_equal(held[t], raw[t // 12 * 12], err_msg=str(t))
    target = targets(bp, flat_panel(40, SYMS[:3]), feats, None)
    assert (target[24:36] == 0).all() and (target[36] != 0).any()
    # changing a score between rebalances changes nothing
    moved = scores.copy()
    moved[5] = -moved[5]
    np.testing.assert_array_equal(
        alpha_sides(bp, flat_panel(40, SYMS[:3]), {alpha_feature("combined_model_v1"): moved}),
        held)
