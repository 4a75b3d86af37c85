"""Alpha signals: each one by hand on literal bars, the cross-sectional transforms against
their definitions, the registry, and no look-ahead for every signal (cross-sectional ones
included, on the point-in-time universe) on a random heavy-tailed panel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from backtest_assets.alpha.panel import UniversePanel
from backtest_assets.alpha.signals import (
    SIGNALS,
    compute,
    cs_rank,
    cs_zscore,
    funding_carry_adjusted,
    mean_reversion_state,
    orderflow_imbalance,
    ts_momentum_multi,
    xs_momentum,
)
from backtest_assets.alpha.universe import snapshots
from tests.unit.test_alpha_universe import RANDOM_RULE, assert_point_in_time, random_panel

NAN = np.nan
T0 = np.datetime64("2024-03-01T00:00", "us")


def panel_of(close, *, qv=None, taker=None, funding=None) -> UniversePanel:
    """A 5-minute panel from literal (T, S) columns; missing ones are NaN."""
    close = np.array(close, float)
    if close.ndim == 1:
        close = close[:, None]

    def field(x):
        return np.full(close.shape, NAN) if x is None else np.array(x, float).reshape(
            close.shape)

    ts = T0 + np.arange(close.shape[0]) * np.timedelta64(5, "m")
    symbols = tuple(f"S{j}" for j in range(close.shape[1]))
    return UniversePanel(ts, symbols, 5, close, close, close, close, field(qv), field(taker),
                         field(funding))


# --- each signal by hand -------------------------------------------------------------------

def test_ts_momentum_on_a_constant_drift_is_the_mean_root_horizon():
    bars = np.arange(300)
    up, down = 100 * np.exp(0.001 * bars), 50 * np.exp(-0.002 * bars)
    out = ts_momentum_multi(panel_of(np.column_stack([up, down])))  # (12, 48, 288), 288
    # r = mu every bar: ln(c_t / c_{t-h}) / (|mu| sqrt(h)) = sign(mu) sqrt(h)
    expected = (np.sqrt(12) + np.sqrt(48) + np.sqrt(288)) / 3
    np.testing.assert_array_equal(out[:288], NAN)  # the 288-bar horizon needs bar 0
    np.testing.assert_allclose(out[288:, 0], expected, rtol=1e-9)
    np.testing.assert_allclose(out[288:, 1], -expected, rtol=1e-9)


def test_ts_momentum_by_hand_and_nan_while_a_gap_is_in_a_window():
    # r_1 = 0.1, r_2 = -0.3: sigma_2 = sqrt((0.1^2 + 0.3^2) / 2) = sqrt(0.05)
    out = ts_momentum_multi(panel_of(np.exp([0.0, 0.1, -0.2])), horizons=(1, 2),
                            vol_window=2)
    h1, h2 = -0.3 / np.sqrt(0.05), -0.2 / (np.sqrt(0.05) * np.sqrt(2))
    np.testing.assert_array_equal(out[:2, 0], NAN)
    np.testing.assert_allclose(out[2, 0], (h1 + h2) / 2, rtol=1e-12)
    close = np.exp(0.01 * np.arange(15.0) + 0.02 * np.sin(np.arange(15.0)))
    close[5] = NAN  # r_5 and r_6 unknown: the 3-return window holds one through bar 8
    out = ts_momentum_multi(panel_of(close), horizons=(1, 2), vol_window=3)
    np.testing.assert_array_equal(np.isnan(out[:, 0]), [1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0,
                                                        0, 0, 0])


def test_ts_momentum_of_a_flat_price_is_unknown():
    out = ts_momentum_multi(panel_of(np.full(20, 7.0)), horizons=(2,), vol_window=4)
    np.testing.assert_array_equal(out, NAN)


def test_mean_reversion_is_minus_the_z_score_of_the_close():
    out = mean_reversion_state(panel_of([10, 12, 11, 9]), window=4)
    # mean 10.5, sample std sqrt((0.25 + 2.25 + 0.25 + 2.25) / 3) = sqrt(5 / 3); 9 is below
    np.testing.assert_array_equal(out[:3, 0], NAN)
    np.testing.assert_allclose(out[3, 0], 1.5 / np.sqrt(5 / 3), rtol=1e-12)
    out = mean_reversion_state(panel_of([10, 12, 11, 9]), window=3)
    # (10, 12, 11): 11 is the mean -> 0; (12, 11, 9): mean 32/3, std sqrt(7/3)
    np.testing.assert_allclose(out[2:, 0], [0.0, (5 / 3) / np.sqrt(7 / 3)], rtol=1e-12)
    up = mean_reversion_state(panel_of([1.0, 2.0, 3.0]), window=3)
    assert up[2, 0] == -1.0  # above its mean: expects a reversion down
    flat = mean_reversion_state(panel_of([0.1, 0.1, 0.1, 0.1, 0.2]), window=3)
    np.testing.assert_array_equal(flat[2:4, 0], NAN)  # a constant window has no z-score
    assert flat[4, 0] < 0


# funding print   carry (-f)   net of 0.0012 / 3 = 0.0004 per print
FUNDING = [
    (NAN, NAN),          # before the first print
    (0.001, -0.0006),    # shorts earn 10 bps a print: short, 6 bps net
    (-0.0005, 0.0001),   # longs earn 5 bps: long, 1 bp net
    (0.0001, 0.0),       # 1 bp does not pay the cost: 0, not a long
    (-0.0003, 0.0),
    (0.0, 0.0),
    (-0.0004, 0.0),      # exactly the cost
]


def test_funding_carry_is_net_of_the_amortized_round_trip_cost():
    f, expected = (np.array(c) for c in zip(*FUNDING, strict=True))
    out = funding_carry_adjusted(panel_of(np.ones(len(f)), funding=f))
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-12, atol=1e-18)
    assert not np.signbit(out[out == 0]).any()  # no -0.0
    loose = funding_carry_adjusted(panel_of(np.ones(len(f)), funding=f), expected_cost=0.0003,
                                   hold_prints=1)
    np.testing.assert_allclose(loose[1:3, 0], [-0.0007, 0.0002], rtol=1e-12)
    gone = funding_carry_adjusted(panel_of([1.0, NAN], funding=[0.001, 0.001]))
    assert np.isnan(gone[1, 0])  # no bar, no signal


# bar  quote  taker buy   window 2: (2 buys - quote) / quote
FLOW = [
    (100, 100, NAN),                    # the window needs 2 bars
    (300, 0, (2 * 100 - 400) / 400),    # -0.5
    (100, 100, (2 * 100 - 400) / 400),  # -0.5
    (0, 0, 1.0),                        # bars 2-3: every trade a taker buy
    (0, 0, NAN),                        # nothing traded
    (40, 40, 1.0),
    (NAN, NAN, NAN),                    # no bar
    (40, 0, NAN),                       # its window still holds the missing bar
    (40, 10, (2 * 10 - 80) / 80),       # -0.75
]


def test_orderflow_imbalance_by_hand():
    qv, taker, expected = (np.array(c, float) for c in zip(*FLOW, strict=True))
    out = orderflow_imbalance(panel_of(np.ones(len(qv)), qv=qv, taker=taker), window=2)
    np.testing.assert_array_equal(out[:, 0], expected)
    n = 20
    qv = np.full((n, 3), 250.0)
    out = orderflow_imbalance(panel_of(np.ones((n, 3)), qv=qv,
                                       taker=qv * np.array([1.0, 0.0, 0.5])))
    np.testing.assert_array_equal(out[11:], np.tile([1.0, -1.0, 0.0], (n - 11, 1)))
    np.testing.assert_array_equal(out[:11], NAN)


def test_cs_rank_average_ties_only_members_with_a_value():
    x = np.array([[3, 1, 3, NAN, 5],
                  [2, 1, 4, 3, 9],
                  [1, NAN, 2, 2, 2],
                  [4, 4, NAN, NAN, 4]])
    member = np.array([[1, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1],
                       [1, 1, 0, 0, 0],  # one valid member
                       [1, 1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(cs_rank(x, member), [
        [0.5, -1, 0.5, NAN, NAN],      # ranks 2.5, 1, 2.5 of 3
        [-0.5, -1, 0.5, 0, 1],
        [NAN, NAN, NAN, NAN, NAN],     # fewer than 2 valid members
        [0, 0, NAN, NAN, NAN],         # a tie of 2: both in the middle
    ])


def test_cs_rank_matches_scipy_average_ranks():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, (400, 9)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.2] = NAN
    member = rng.random(x.shape) < 0.7
    valid = np.where(member, x, NAN)
    n = np.isfinite(valid).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = 2 * (rankdata(valid, axis=1, nan_policy="omit") - 1) / (n - 1) - 1
    np.testing.assert_allclose(cs_rank(x, member), np.where(n >= 2, expected, NAN),
                               rtol=0, atol=1e-15)


def test_cs_zscore_has_mean_0_and_std_1_over_members():
    rng = np.random.default_rng(4)
    x = rng.standard_t(3, (200, 7))
    x[rng.random(x.shape) < 0.1] = NAN
    member = rng.random(x.shape) < 0.6
    z = cs_zscore(x, member)
    valid = member & np.isfinite(x)
    rows = valid.sum(axis=1) >= 2
    np.testing.assert_array_equal(np.isfinite(z), valid & rows[:, None])
    np.testing.assert_allclose(np.nanmean(z[rows], axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(z[rows], axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(cs_zscore(np.array([[1.0, 2, 3, 100]]),
                                         np.array([[1, 1, 1, 0]], bool)),
                               [[-np.sqrt(1.5), 0, np.sqrt(1.5), NAN]], rtol=1e-12)
    flat = cs_zscore(np.array([[0.3, 0.3, 0.3]]), np.ones((1, 3), bool))
    np.testing.assert_array_equal(flat, NAN)


def test_xs_momentum_ranks_the_horizon_return_among_members():
    close = np.array([[100, 100, 100, 100],
                      [130, 90, 101, 500],
                      [120, 80, 102, 900]], float)
    member = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]], bool)
    out = xs_momentum(panel_of(close), member, horizon=2)
    # bar 2: +18 %, -22 %, +2 %; S3 (+160 %) is not a member
    np.testing.assert_array_equal(out, [[NAN] * 4, [NAN] * 4, [1, -1, 0, NAN]])
    # bar 1 over one bar: +30 %, -10 %, +1 %, +400 %: ranks 3, 1, 2, 4 of 4
    np.testing.assert_allclose(xs_momentum(panel_of(close), member, horizon=1)[1],
                               [1 / 3, -1, -1 / 3, 1], rtol=0, atol=1e-15)


def test_compute_runs_the_registry_by_name():
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((320, 3)), axis=0))
    qv = rng.uniform(1, 2, close.shape)
    panel = panel_of(close, qv=qv, taker=qv / 3, funding=np.full(close.shape, 2e-4))
    member = np.ones(close.shape, bool)
    out = compute(panel, member, ["xs_momentum", "orderflow_imbalance"])
    assert list(out) == ["xs_momentum", "orderflow_imbalance"]
    np.testing.assert_array_equal(out["xs_momentum"], xs_momentum(panel, member))
    np.testing.assert_array_equal(out["orderflow_imbalance"], orderflow_imbalance(panel))
    everything = compute(panel, member)
    assert list(everything) == list(SIGNALS)
    for name, values in everything.items():
        assert values.shape == close.shape and values.dtype == np.float64, name
        assert np.isfinite(values[-1]).all(), name
    with pytest.raises(ValueError, match=r"unknown signal\(s\) \['momentum'\]; known: "):
        compute(panel, member, ["momentum"])
    with pytest.raises(ValueError, match=r"member must be a bool array of the panel's shape"):
        compute(panel, member[1:])
    with pytest.raises(ValueError, match=r"cs_rank: needs x \(T, S\) and a bool member"):
        cs_rank(close, member.astype(float))


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: ts_momentum_multi(p, horizons=()), "horizons must be a non-empty"),
    (lambda p: ts_momentum_multi(p, horizons=(12, 0)), "horizons must be an integer >= 1"),
    (lambda p: ts_momentum_multi(p, vol_window=0), "vol_window must be an integer >= 1"),
    (lambda p: mean_reversion_state(p, window=1), "window must be an integer >= 2"),
    (lambda p: funding_carry_adjusted(p, expected_cost=-1e-4), "expected_cost must be"),
    (lambda p: funding_carry_adjusted(p, hold_prints=0), "hold_prints must be"),
    (lambda p: orderflow_imbalance(p, window=2.0), "window must be an integer >= 1"),
    (lambda p: xs_momentum(p, np.ones((3, 1), bool), horizon=0), "horizon must be"),
])
def test_bad_parameters_are_refused_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call(panel_of([1.0, 2.0, 3.0]))


# --- point in time -------------------------------------------------------------------------

def _member(panel: UniversePanel) -> np.ndarray:
    return snapshots(panel, RANDOM_RULE)[1]


CASES = {
    **{name: (lambda p, name=name: SIGNALS[name](p, _member(p))) for name in SIGNALS},
    "cs_rank(ts_momentum_multi)": lambda p: cs_rank(ts_momentum_multi(p), _member(p)),
    "cs_zscore(mean_reversion_state)": lambda p: cs_zscore(mean_reversion_state(p),
                                                           _member(p)),
    "cs_zscore(orderflow_imbalance)": lambda p: cs_zscore(orderflow_imbalance(p), _member(p)),
    "universe.adv": lambda p: snapshots(p, RANDOM_RULE)[0],
    "universe.member": _member,
}


@pytest.fixture(scope="module")
def panels() -> tuple[UniversePanel, UniversePanel]:
    return random_panel(11), random_panel(12)


@pytest.mark.parametrize("name", list(CASES))
def test_every_signal_is_point_in_time(panels, name):
    assert_point_in_time(CASES[name], *panels)


def test_the_cross_sectional_values_are_not_vacuous(panels):
    member = _member(panels[0])
    for name in ("xs_momentum", "cs_rank(ts_momentum_multi)", "cs_zscore(orderflow_imbalance)"):
        values = CASES[name](panels[0])
        assert np.isfinite(values).sum() > 200, name
        assert not np.isfinite(values[~member]).any(), name
