"""The tear sheets' numbers (reporting/performance.py) on adversarial inputs: gaps, flat and
blown equity, a single bar, no trades, heavy tails; each against a hand count or the engine."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine.metrics import _drawdown, bar_returns
from backtest_assets.reporting import performance as P

T0 = np.datetime64("2024-01-01T00:05", "us")
STEP = np.timedelta64(5, "m")


def grid(n: int, start=T0, step=STEP) -> np.ndarray:
    return (start + np.arange(n) * step).astype("datetime64[us]")


# ---- underwater -----------------------------------------------------------------------------

def test_underwater_counts_the_time_since_the_peak():
    ts = grid(6)
    eq = np.array([100.0, 110.0, 99.0, 104.5, 110.0, 120.0])
    u = P.underwater(ts, eq, 100.0)
    np.testing.assert_allclose(u.drawdown, [0, 0, -0.1, -0.05, 0, 0])
    assert u.duration.astype(np.int64).tolist() == [0, 0, 300e6, 600e6, 0, 0]
    assert (u.max_drawdown, u.longest_bars) == (pytest.approx(-0.1), 2)
    assert u.longest == dt.timedelta(minutes=10)


def test_underwater_from_the_start_and_across_a_gap():
    # below the starting cash from the first bar; a 2-day gap while under water
    ts = np.concatenate([grid(2), grid(2, start=T0 + np.timedelta64(2, "D"))])
    eq = np.array([90.0, 95.0, 99.0, 101.0])
    u = P.underwater(ts, eq, 100.0)
    # the starting cash is the peak one bar spacing (the median, 5 min) before the first bar
    assert u.duration.astype("timedelta64[m]").astype(int).tolist()[:3] == [5, 10, 2885]
    assert u.longest_bars == 3 and u.longest == dt.timedelta(minutes=2885)


@pytest.mark.parametrize("case", ["flat", "empty", "one bar", "blown", "random"])
def test_longest_underwater_run_is_the_engines(case):
    rng = np.random.default_rng(3)
    eq = {"flat": np.full(50, 100.0), "empty": np.empty(0), "one bar": np.array([97.0]),
          "blown": np.array([100.0, 50.0, 0.0, 0.0, 0.0]),
          "random": 100 * np.exp(np.cumsum(rng.standard_t(3, 2_000) * 0.01))}[case]
    u = P.underwater(grid(eq.size), eq, 100.0)
    if eq.size:
        mdd, bars = _drawdown(eq, 100.0)
        assert (u.max_drawdown, u.longest_bars) == (mdd, bars)
    else:
        assert (u.max_drawdown, u.longest_bars, u.longest) == (0.0, 0, dt.timedelta(0))
    assert (u.duration >= np.timedelta64(0)).all()


def test_drawdown_episodes_deepest_first_with_recovery():
    ts = grid(8)
    eq = np.array([100, 90, 100, 100, 80, 85, 99, 95.0])
    ep = P.drawdown_episodes(ts, eq, 100.0)
    assert ep["depth"].to_list() == pytest.approx([-0.2, -0.1])
    first = ep.row(0, named=True)
    assert (first["peak"], first["trough"], first["recovered"], first["bars"]) == (
        ts[3].item(), ts[4].item(), None, 4)
    second = ep.row(1, named=True)
    assert second["peak"] == ts[0].item() and second["recovered"] == ts[2].item()
    assert P.drawdown_episodes(ts, np.full(8, 100.0), 100.0).is_empty()


# ---- period returns ---------------------------------------------------------------------------

def test_period_returns_compound_and_skip_empty_periods():
    # closes on Jan 31 23:55, Feb 1 00:00 (a bar closing at midnight is January's), Mar 5
    ts = np.array(["2024-01-31T23:55", "2024-02-01T00:00", "2024-02-01T00:05",
                   "2024-03-05T12:00"], dtype="datetime64[us]")
    eq = np.array([110.0, 121.0, 100.0, 150.0])
    months = P.period_returns(ts, eq, 100.0, "1mo")
    assert months["period"].to_list() == [dt.date(2024, 1, 1), dt.date(2024, 2, 1),
                                          dt.date(2024, 3, 1)]
    assert months["ret"].to_list() == pytest.approx([0.21, 100 / 121 - 1, 0.5])
    # the months compound to the whole run
    assert (months["ret"] + 1).product() == pytest.approx(1.5)
    days = P.period_returns(ts, eq, 100.0, "1d")
    assert len(days) == 3  # no row for the days without a bar
    weeks = P.period_returns(ts, eq, 100.0, "1w")
    # Mondays; Jan 31 and Feb 1 are one week
    assert weeks["period"].to_list() == [dt.date(2024, 1, 29), dt.date(2024, 3, 4)]


def test_period_returns_after_a_blown_account_and_on_no_bars():
    ts = grid(3, step=np.timedelta64(1, "D"))
    out = P.period_returns(ts, np.array([50.0, 0.0, 0.0]), 100.0, "1d")
    assert out["ret"].to_list()[:2] == [-0.5, -1.0] and out["ret"][2] is None
    assert P.period_returns(np.empty(0, "datetime64[us]"), np.empty(0), 1.0, "1d").is_empty()
    with pytest.raises(ValueError, match="every"):
        P.period_returns(ts, np.ones(3), 1.0, "1h")


def test_heatmap_period_is_weekly_for_short_studies():
    assert P.heatmap_period(dt.date(2024, 1, 1), dt.date(2024, 1, 31)) == "1w"
    assert P.heatmap_period(dt.date(2024, 1, 1), dt.date(2024, 3, 30)) == "1mo"


# ---- rolling, VaR, histogram ------------------------------------------------------------------

def test_rolling_sharpe_matches_a_direct_computation_and_is_nan_when_flat():
    rng = np.random.default_rng(0)
    r = np.concatenate([rng.normal(0.001, 0.01, 300), np.zeros(150)])
    sharpe, vol = P.rolling_sharpe_vol(r, 100, 1000.0)
    i = 250
    w = r[i - 99:i + 1]
    assert sharpe[i] == pytest.approx(w.mean() / w.std(ddof=1) * math.sqrt(1000), rel=1e-9)
    assert vol[i] == pytest.approx(w.std(ddof=1) * math.sqrt(1000), rel=1e-9)
    assert np.isnan(sharpe[:99]).all() and np.isnan(vol[:99]).all()
    # the last 150 bars are flat: a window holding only them has no Sharpe and no volatility
    assert np.isnan(sharpe[-1]) and vol[-1] == 0.0 and np.isfinite(sharpe[-120])
    assert not np.isinf(sharpe).any()
    short = P.rolling_sharpe_vol(r[:10], 100, 1000.0)
    assert np.isnan(short[0]).all() and short[0].size == 10


def test_var_cvar_historical_and_heavy_tails():
    r = np.array([-0.10, -0.05, 0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07] * 2)
    var, cvar = P.var_cvar(r, 0.9)
    assert var == pytest.approx(0.10) and cvar == pytest.approx(0.10)
    var, cvar = P.var_cvar(r, 0.8)  # 4 of 20 at or below -0.05
    assert var == pytest.approx(0.05) and cvar == pytest.approx(0.075)
    # a heavy tail moves CVaR far beyond VaR; CVaR is never below VaR
    rng = np.random.default_rng(1)
    tail = rng.standard_t(1.5, 5_000) * 0.01
    var, cvar = P.var_cvar(tail, 0.99)
    assert cvar > 1.5 * var > 0
    assert all(math.isnan(v) for v in P.var_cvar(np.array([np.nan]), 0.95))
    assert P.var_cvar(np.array([0.01]), 0.95) == (-0.01, -0.01)
    with pytest.raises(ValueError):
        P.var_cvar(r, 1.0)


@pytest.mark.parametrize("values, bins, total", [
    (np.array([1.0, 2.0, 3.0, np.nan, np.inf]), 4, 3),
    (np.full(7, 0.25), 10, 7),  # constant: one bin around it
    (np.empty(0), 10, 0),
])
def test_histogram_counts_every_finite_value(values, bins, total):
    edges, counts = P.histogram(values, bins)
    assert counts.sum() == total
    assert edges.size == (counts.size + 1 if counts.size else 0)


# ---- downsampling, buy and hold, exposure, costs -------------------------------------------------

def test_downsample_keeps_every_extreme_and_the_ends():
    rng = np.random.default_rng(2)
    y = np.cumsum(rng.normal(size=100_000))
    y[12_345] = 1e6  # a one-bar spike
    y[54_321] = np.nan
    keep = P.downsample(np.arange(y.size), y, 500)
    assert keep[0] == 0 and keep[-1] == y.size - 1 and (np.diff(keep) > 0).all()
    assert keep.size <= 3 * 500 + 2
    assert 12_345 in keep and np.nanmin(y) in y[keep]
    short = P.downsample(np.arange(10), np.arange(10.0), 500)
    assert short.tolist() == list(range(10))


def test_buy_and_hold_with_a_late_listing_and_gaps():
    close = np.array([[100.0, np.nan], [110.0, np.nan], [np.nan, 10.0], [121.0, 20.0]])
    bh = P.buy_and_hold(close, 1_000.0)
    # half in each; the second symbol's half sits in cash until its first price
    np.testing.assert_allclose(bh, [1000.0, 1050.0, 1050.0, 1105.0 + 500.0])
    assert P.buy_and_hold(np.empty((0, 2)), 1.0).size == 0


def test_net_exposure_rebuilt_from_the_trades():
    trades = pl.DataFrame({"symbol": ["A", "B", "A"], "side": ["long", "short", "long"],
                           "qty": [2.0, 1.0, 1.0], "entry_bar": [1, 2, 4],
                           "exit_bar": [3, None, 5]})
    close = np.array([[10.0, 100.0]] * 6)
    gross, net = P.net_exposure(trades, close, ["A", "B"], np.full(6, 100.0))
    np.testing.assert_allclose(net, [0, 0.2, -0.8, -1.0, -0.9, -1.0])
    np.testing.assert_allclose(gross, [0, 0.2, 1.2, 1.0, 1.1, 1.0])
    none_gross, none_net = P.net_exposure(trades.clear(), close, ["A", "B"], np.ones(6))
    assert not none_gross.any() and not none_net.any()


def test_cost_attribution_and_trade_summary():
    eq = pl.DataFrame({"ts": grid(3), "fees": [1.0, 2.0, 0.0], "slippage": [0.5, 0.0, 0.5],
                       "funding": [0.0, -0.25, 0.5]})
    costs = P.cost_attribution(eq, {"insurance_drag": 0.01, "liquidation_fee_drag": 0.002},
                               1_000.0)
    assert dict(zip(costs["cost"], costs["cash"], strict=True)) == pytest.approx({
        "fees": 3.0, "of which liquidation fees": 2.0, "slippage": 1.0, "funding": 0.25,
        "liquidation forfeits": 10.0})
    assert P.cumulative_costs(eq)["fees"].to_list() == [1.0, 3.0, 3.0]
    trades = pl.DataFrame({"entry_bar": [0, 5], "exit_bar": [12, None],
                           "exit_reason": ["time_stop", "open"], "pnl": [1.0, 2.0]})
    closed = P.trade_summary(trades, 5)
    assert closed["holding_hours"].to_list() == [1.0]
    assert P.trade_summary(trades.clear(), 5).is_empty()


def test_returns_and_sharpe_are_the_engines():
    eq = np.array([100.0, 101.0, 99.0, 103.0])
    np.testing.assert_array_equal(P.returns(eq, 100.0), bar_returns(eq, 100.0))
    r = P.returns(eq, 100.0)
    assert P.sharpe(r, 4.0) == pytest.approx(r.mean() / r.std(ddof=1) * 2)
    assert math.isnan(P.sharpe(np.zeros(5), 4.0)) and math.isnan(P.sharpe(r[:1], 4.0))


def test_coarsen_bars_by_row_buckets():
    bars = pl.DataFrame({"ts_open": grid(5), "open": [1.0, 2, 3, 4, 5],
                         "high": [2.0, 9, 4, 5, 6], "low": [0.5, 1, 0.1, 3, 4],
                         "close": [2.0, 3, 4, 5, 6]})
    out = P.coarsen_bars(bars, 2)
    assert out.to_dict(as_series=False) == {
        "ts_open": [grid(5)[i].item() for i in (0, 2, 4)], "open": [1.0, 3, 5],
        "high": [9.0, 5, 6], "low": [0.5, 0.1, 4], "close": [3.0, 5, 6]}
    assert P.coarsen_bars(bars, 1) is bars and P.coarsen_bars(bars.clear(), 3).is_empty()
