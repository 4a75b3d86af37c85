"""The market volatility regime: a calm stretch then a storm by hand (the regime flips at the
storm's first bar after the warm-up), a missing close, the frame, no look-ahead on a random
heavy-tailed panel, the gate, and the rule's validation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backtest_assets.alpha.panel import UniversePanel
from backtest_assets.alpha.regime import (
    CALM,
    NORMAL,
    STORMY,
    UNKNOWN,
    RegimeRule,
    gate,
    regime_frame,
    regime_series,
)
from tests.unit.test_alpha_universe import assert_point_in_time, random_panel

NAN = np.nan
T0 = np.datetime64("2024-03-01T00:00", "us")
# vol = |r| (one return), z against the last 10 values of vol.
HAND = RegimeRule(name="hand", vol_window=1, z_window=10)


def market_panel(close: np.ndarray) -> UniversePanel:
    """A 5-minute panel of BTCUSDT (``close``) and a flat second symbol."""
    close = np.asarray(close, float)
    other = np.full(close.shape, 10.0)
    c = np.column_stack([close, other])
    ts = T0 + np.arange(close.size) * np.timedelta64(5, "m")
    nan = np.full(c.shape, NAN)
    return UniversePanel(ts, ("BTCUSDT", "ETHUSDT"), 5, c, c, c, c, nan, nan, nan)


def calm_then_storm() -> np.ndarray:
    """Closes whose bar returns alternate in sign with |r_t| = 0.010 - 0.0002 t on bars
    1-30 (volatility falling steadily: calm) and |r_t| = 0.05 on bars 31-34 (a storm)."""
    t = np.arange(1, 35)
    mag = np.where(t <= 30, 0.010 - 0.0002 * t, 0.05)
    r = mag * np.where(t % 2, 1.0, -1.0)
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))


# bar        z = (vol_t - mean) / std over the 10 vols ending at t     regime
# 0 .. 9     window not full (r_0 needs bar -1; first z at 1 + 10 - 1)  unknown
# 10 .. 30   a falling arithmetic sequence: z = -4.5 / sd(0..9) = -1.486  calm
# 31         one storm value among 9 calm ones: z = 2.844 > 1.5          stormy
# 32         two of them: z = 1.897 > 1.5                                stormy
# 33         three: z = 1.449, in [-0.5, 1.5]                            normal
# 34         four: z = 1.162                                             normal
EXPECTED = np.array([UNKNOWN] * 10 + [CALM] * 21 + [STORMY, STORMY, NORMAL, NORMAL], np.int8)


def test_calm_then_a_storm_flips_at_the_storms_first_bar():
    out = regime_series(market_panel(calm_then_storm()), HAND)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, EXPECTED)
    assert HAND.warm_up_bars == 10


def test_the_hand_z_scores_and_the_frame():
    frame = regime_frame(market_panel(calm_then_storm()), HAND)
    assert frame.schema == pl.Schema({"ts": pl.Datetime("us"), "regime": pl.String,
                                      "vol": pl.Float64, "vol_z": pl.Float64})
    names = {UNKNOWN: "unknown", CALM: "calm", NORMAL: "normal", STORMY: "stormy"}
    assert frame["regime"].to_list() == [names[c] for c in EXPECTED.tolist()]
    assert frame["ts"][31] == T0.astype(object) + 31 * np.timedelta64(5, "m").astype(object)
    assert frame["vol"][0] is None and frame["vol_z"][9] is None
    assert frame["vol"][31] == pytest.approx(0.05, rel=1e-12)
    assert frame["vol"][12] == pytest.approx(0.010 - 0.0002 * 12, rel=1e-9)
    z = frame["vol_z"].to_numpy()
    np.testing.assert_allclose(z[10:31], -4.5 / np.std(np.arange(10.0), ddof=1), rtol=1e-6)
    np.testing.assert_allclose(z[31:], [2.8441943, 1.8968814, 1.4489502, 1.1618132],
                               rtol=1e-6)


def test_a_missing_close_makes_every_window_holding_it_unknown():
    close = calm_then_storm()
    close[20] = NAN  # r_20 and r_21 unknown: vol unknown at 20, 21; z until 21 + 9 = 30
    out = regime_series(market_panel(close), HAND)
    np.testing.assert_array_equal(out[:10], UNKNOWN)
    np.testing.assert_array_equal(out[10:20], CALM)
    np.testing.assert_array_equal(out[20:31], UNKNOWN)
    np.testing.assert_array_equal(out[31:], EXPECTED[31:])


def test_a_flat_volatility_window_is_unknown_not_a_rounding_z():
    # Closes 100, 300, 100, ...: |r| = ln 3 on every bar, exactly. The window mean of ten
    # such values is off by one rounding (std 2.3e-16 instead of 0, which would give z =
    # 0.949 on every bar): no dispersion, no regime.
    close = np.tile([100.0, 300.0], 20)
    vol = regime_frame(market_panel(close), HAND)["vol"].drop_nulls()
    assert vol.n_unique() == 1
    np.testing.assert_array_equal(regime_series(market_panel(close), HAND), UNKNOWN)


def test_defaults_read_btc_over_one_day_against_a_week():
    rule = RegimeRule(name="seed")
    assert (rule.symbol, rule.vol_window, rule.z_window, rule.calm_below,
            rule.stormy_above) == ("BTCUSDT", 288, 2016, -0.5, 1.5)
    assert rule.warm_up_bars == 288 + 2016 - 1


def test_regime_is_point_in_time():
    rule = RegimeRule(name="pit", symbol="S00USDT", vol_window=12, z_window=48)
    panel, other = random_panel(7), random_panel(8)
    assert_point_in_time(lambda p: regime_series(p, rule).astype(float), panel, other)
    assert_point_in_time(lambda p: regime_frame(p, rule)["vol_z"].to_numpy(), panel, other)
    codes = regime_series(panel, rule)
    assert {CALM, NORMAL, STORMY, UNKNOWN} <= set(codes.tolist())


# --- the gate -------------------------------------------------------------------------------

def test_gate_masks_exactly_the_bars_not_allowed():
    rng = np.random.default_rng(3)
    regime = np.array([UNKNOWN, CALM, NORMAL, STORMY, CALM, UNKNOWN, STORMY, NORMAL], np.int8)
    scores = rng.standard_normal((8, 3))
    scores[4, 1] = NAN
    before = scores.copy()
    out = gate(scores, regime, {"calm", "stormy"})
    keep = np.isin(regime, [CALM, STORMY])
    np.testing.assert_array_equal(out[keep], scores[keep])
    assert np.isnan(out[~keep]).all()
    np.testing.assert_array_equal(scores, before)  # a new array
    every = gate(scores, regime, ["calm", "normal", "stormy"])
    np.testing.assert_array_equal(np.isnan(every).all(axis=1), regime == UNKNOWN)
    np.testing.assert_array_equal(gate(scores, regime, "normal")[regime == NORMAL],
                                  scores[regime == NORMAL])
    assert np.isnan(gate(scores, regime, set())).all()


@pytest.mark.parametrize(("allowed", "regime", "scores", "match"), [
    ({"unknown"}, np.zeros(2, np.int8), np.zeros((2, 2)), "never allowed"),
    ({"calm", "wild"}, np.zeros(2, np.int8), np.zeros((2, 2)), "wild"),
    ({"calm"}, np.zeros(3, np.int8), np.zeros((2, 2)), "regime"),
    ({"calm"}, np.array([0, 7], np.int8), np.zeros((2, 2)), r"\[7\]"),
])
def test_gate_refuses(allowed, regime, scores, match):
    with pytest.raises(ValueError, match=match):
        gate(scores, regime, allowed)


# --- the rule -------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "field"), [
    ({"name": ""}, "name"),
    ({"symbol": ""}, "symbol"),
    ({"vol_window": 0}, "vol_window"),
    ({"vol_window": 2.0}, "vol_window"),
    ({"vol_window": True}, "vol_window"),
    ({"z_window": 1}, "z_window"),
    ({"calm_below": NAN}, "calm_below"),
    ({"stormy_above": np.inf}, "stormy_above"),
    ({"stormy_above": "1.5"}, "stormy_above"),
    ({"calm_below": 2.0, "stormy_above": 1.0}, "calm_below"),
])
def test_rule_validation_names_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        RegimeRule(**{"name": "r", **params})


def test_rule_is_frozen_and_keyword_only():
    rule = RegimeRule(name="r")
    with pytest.raises(AttributeError):
        rule.vol_window = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        RegimeRule("r")  # type: ignore[misc]


def test_a_symbol_missing_from_the_panel_is_named():
    with pytest.raises(ValueError, match="SOLUSDT"):
        regime_series(market_panel(calm_then_storm()), RegimeRule(name="r", symbol="SOLUSDT"))
