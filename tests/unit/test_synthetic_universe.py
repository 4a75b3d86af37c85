"""The synthetic universe: the panel contract, the stylized facts its docstring promises, and
the planted one-day reversal measured the way research will (cross-sectional Spearman IC)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.stats import kurtosis, rankdata

from backtest_assets.alpha.panel import FIELDS, UniversePanel, forward_log_returns
from backtest_assets.core.keys import validate_symbol
from backtest_assets.sources.synthetic_universe import (
    DEFAULT_XS_EFFECT,
    MARKET_SYMBOL,
    SyntheticUniverse,
    generate_universe,
)

HORIZON = 12  # bars of the IC label


@pytest.fixture(scope="module")
def universe() -> SyntheticUniverse:
    """The default universe: 24 symbols x 120 days of 5m bars, seed 0."""
    return generate_universe(0)


def _present(u: SyntheticUniverse) -> np.ndarray:
    """(T, S) True where the truth says a bar exists."""
    tr, n_bars = u.truth, len(u.panel.ts)
    t = np.arange(n_bars)[:, None]
    first = np.array([b or 0 for b in tr.listing_bar])
    end = np.array([n_bars if b is None else b for b in tr.delisting_bar])
    present = (t >= first) & (t < end)
    for s, a, b in tr.gaps:
        present[a:b, s] = False
    return present


def _returns(u: SyntheticUniverse) -> np.ndarray:
    return np.log(u.panel.close / u.panel.open)


def _r1d(u: SyntheticUniverse) -> np.ndarray:
    lag, close = u.truth.xs_lag_bars, u.panel.close
    out = np.full(close.shape, np.nan)
    out[lag:] = np.log(close[lag:] / close[:-lag])
    return out


def _cs_rank(x: np.ndarray) -> np.ndarray:
    """Row-wise rank over the finite entries scaled to [-1, 1] (average ties); NaN elsewhere
    and on rows with fewer than two values."""
    n = np.isfinite(x).sum(axis=1, keepdims=True)
    ranks = rankdata(x, axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, 2 * (ranks - 1) / (n - 1) - 1, np.nan)


def _ic(signal: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-bar Spearman correlation over the symbols having both (NaN below 5 symbols)."""
    both = np.isfinite(signal) & np.isfinite(label)
    ra = rankdata(np.where(both, signal, np.nan), axis=1, nan_policy="omit")
    rb = rankdata(np.where(both, label, np.nan), axis=1, nan_policy="omit")
    rows = both.sum(axis=1) >= 5
    ra, rb = ra[rows], rb[rows]
    ra = ra - np.nanmean(ra, axis=1, keepdims=True)
    rb = rb - np.nanmean(rb, axis=1, keepdims=True)
    out = np.full(len(signal), np.nan)
    out[rows] = np.nansum(ra * rb, 1) / np.sqrt(np.nansum(ra**2, 1) * np.nansum(rb**2, 1))
    return out


def _reversal_ic(u: SyntheticUniverse) -> tuple[float, float]:
    """(mean per-bar IC, t-stat over every HORIZON-th bar) of -cs_rank(r1d) on the label
    ln(open[t + 1 + h] / open[t + 1])."""
    ic = _ic(-_cs_rank(_r1d(u)), forward_log_returns(u.panel.open, HORIZON))
    sample = ic[::HORIZON]
    sample = sample[np.isfinite(sample)]
    return float(np.nanmean(ic)), float(sample.mean() / sample.std(ddof=1) * np.sqrt(sample.size))


def _daily_adv(u: SyntheticUniverse) -> np.ndarray:
    """(days, S) mean quote volume per bar times bars per day, NaN on days with fewer than
    half of their bars."""
    qv, bpd = u.panel.quote_volume, u.panel.bars_per_day
    days = qv.reshape(-1, bpd, qv.shape[1])
    n = np.isfinite(days).sum(axis=1)
    return np.where(n >= bpd // 2, np.nansum(days, axis=1) * bpd / np.maximum(n, 1), np.nan)


def _mean_over_days(adv: np.ndarray) -> np.ndarray:
    """Column means over the days with a value (NaN if none), without empty-slice warnings."""
    n = np.isfinite(adv).sum(axis=0)
    return np.where(n > 0, np.nansum(adv, axis=0) / np.maximum(n, 1), np.nan)


def test_deterministic_by_seed():
    a, b = (generate_universe(5, symbols=10, days=12) for _ in range(2))
    c = generate_universe(6, symbols=10, days=12)
    for name in FIELDS:
        assert np.array_equal(getattr(a.panel, name), getattr(b.panel, name), equal_nan=True)
    assert np.array_equal(a.panel.ts, b.panel.ts)
    assert np.array_equal(a.truth.drift, b.truth.drift)
    assert (a.truth.listing_bar, a.truth.gaps, a.truth.beta) == (
        b.truth.listing_bar, b.truth.gaps, b.truth.beta)
    assert not np.array_equal(a.panel.close, c.panel.close, equal_nan=True)
    assert a.truth.beta != c.truth.beta


def test_null_shares_every_shock_with_its_universe():
    """xs_effect changes the drift only: the returns differ by exactly truth.drift."""
    eff = generate_universe(2, symbols=10, days=6)
    null = generate_universe(2, symbols=10, days=6, xs_effect=0.0)
    assert not np.any(null.truth.drift)
    assert np.any(eff.truth.drift)
    diff = _returns(eff) - _returns(null)
    ok = np.isfinite(diff)
    np.testing.assert_allclose(diff[ok], eff.truth.drift[ok], atol=1e-12)
    np.testing.assert_array_equal(eff.panel.quote_volume[0], null.panel.quote_volume[0])


def test_panel_contract(universe):
    p = universe.panel
    bpd = 288
    assert p.interval_minutes == 5 and p.bars_per_day == bpd
    assert p.close.shape == (120 * bpd, 24)
    assert p.ts[0] == np.datetime64("2024-01-01T00:00", "us") and p.ts.dtype == "datetime64[us]"
    assert np.all(np.diff(p.ts) == np.timedelta64(5, "m"))
    assert all(getattr(p, f).dtype == np.float64 for f in FIELDS)
    assert p.symbols[0] == MARKET_SYMBOL == "BTCUSDT"
    assert p.symbols[1:3] == ("S01USDT", "S02USDT") and p.symbols[-1] == "S23USDT"
    assert all(validate_symbol(s) == s and s.endswith("USDT") for s in p.symbols)
    UniversePanel(p.ts, p.symbols, p.interval_minutes, *(getattr(p, f) for f in FIELDS))
    assert universe.truth.symbols == p.symbols and universe.truth.seed == 0
    assert universe.truth.xs_effect == DEFAULT_XS_EFFECT and universe.truth.xs_lag_bars == bpd


def test_nan_exactly_outside_spans_and_gaps(universe):
    tr = universe.truth
    present = _present(universe)
    for name in FIELDS[:-1]:
        np.testing.assert_array_equal(np.isfinite(getattr(universe.panel, name)), present)
    listed = [b for b in tr.listing_bar if b is not None]
    assert listed and all(b % 288 == 0 for b in listed)  # day boundaries
    assert any(b is not None for b in tr.delisting_bar)
    assert tr.listing_bar[0] is None and tr.delisting_bar[0] is None
    assert tr.gaps and all(1 <= b - a <= 6 and s > 0 for s, a, b in tr.gaps)


@pytest.mark.parametrize("seed", range(8))
def test_listing_and_delisting_guaranteed(seed):
    tr = generate_universe(seed, symbols=8, days=3).truth
    assert sum(b is not None for b in tr.listing_bar) == 2
    assert sum(b is not None for b in tr.delisting_bar) == 1


def test_ohlc_consistent(universe):
    p, tr = universe.panel, universe.truth
    ok = np.isfinite(p.close)
    assert np.all(p.low[ok] <= np.minimum(p.open, p.close)[ok])
    assert np.all(np.maximum(p.open, p.close)[ok] <= p.high[ok])
    assert np.all(p.low[ok] > 0)
    both = ok[1:] & ok[:-1]
    assert np.array_equal(p.open[1:][both], p.close[:-1][both])  # open = previous close
    for s, bar in enumerate(tr.listing_bar):
        np.testing.assert_allclose(p.open[bar or 0, s], tr.start_price[s], rtol=1e-12)


def test_returns_match_documented_parameters(universe):
    tr, r = universe.truth, _returns(universe)
    sigma = np.array(tr.bar_sigma)
    assert np.all((sigma > 0.0019) & (sigma < 0.0040))
    assert np.all((np.array(tr.beta) >= 0.6) & (np.array(tr.beta) <= 1.4))
    np.testing.assert_allclose(np.nanstd(r, axis=0) / sigma, 1.0, atol=0.1)
    btc = r[:, 0]
    shrink = tr.market_sigma**2 / (tr.market_sigma**2 + tr.idio_sigma[0] ** 2)
    for s in range(1, len(sigma)):
        ok = np.isfinite(r[:, s])
        slope = np.cov(r[ok, s], btc[ok])[0, 1] / np.var(btc[ok], ddof=1)
        assert slope == pytest.approx(tr.beta[s] * shrink, abs=0.1), tr.symbols[s]


def test_heavy_tails_and_volatility_clustering(universe):
    z = _returns(universe) / np.array(universe.truth.bar_sigma)
    assert kurtosis(z[np.isfinite(z)]) > 3  # excess kurtosis (Gaussian: 0)
    a = np.abs(z)
    acf = []
    for s in range(a.shape[1]):
        ok = np.isfinite(a[1:, s]) & np.isfinite(a[:-1, s])
        acf.append(np.corrcoef(a[1:, s][ok], a[:-1, s][ok])[0, 1])
    assert np.mean(acf) > 0.05 and min(acf) > 0.05


def test_volumes_and_taker_share(universe):
    p = universe.panel
    ok = np.isfinite(p.close)
    assert np.all(p.quote_volume[ok] > 0)
    share = (p.taker_buy_quote_volume / p.quote_volume)[ok]
    assert np.all((share > 0) & (share < 1))
    r = _returns(universe)[ok]
    assert share[r > 0].mean() > 0.55 and share[r < 0].mean() < 0.45
    z = np.abs(r) / np.broadcast_to(np.array(universe.truth.bar_sigma), ok.shape)[ok]
    big = z > 2
    assert p.quote_volume[ok][big].mean() > p.quote_volume[ok][~big].mean()  # volume follows moves


def test_liquidity_changes(universe):
    tr, adv = universe.truth, _daily_adv(universe)
    first, last = _mean_over_days(adv[:7]), _mean_over_days(adv[-7:])
    assert np.any((first < 1e6) & (last > 1e6))  # someone rises through 1M a day
    assert np.any((first > 1e6) & (last < 1e6))  # someone falls below
    assert np.nanmin(adv) < 1e6 and np.nanmax(adv) > 1e8  # ~0.2M .. 200M a day
    days = adv.shape[0]
    expected = np.array(tr.base_adv) * np.exp(
        np.array(tr.adv_log_trend) * ((np.arange(days) + 0.5) / days)[:, None])
    np.testing.assert_allclose(np.nanmedian(adv / expected, axis=0), 1.0, atol=0.15)


def test_funding(universe):
    p, tr = universe.panel, universe.truth
    per = 8 * 60 // 5
    f = p.funding_rate
    known = _present(universe)
    for s, bar in enumerate(tr.listing_bar):
        if bar is not None:
            assert np.all(np.isnan(f[bar:bar + per - 1, s]))
            assert np.isfinite(f[bar + per - 1, s])
            known[bar:bar + per - 1, s] = False
    np.testing.assert_array_equal(np.isfinite(f), known)
    # a new print only at the close of the bar ending on a print time
    steps = np.flatnonzero(np.nan_to_num(np.diff(f[:, 0])))
    assert steps.size and np.all((steps + 2) % per == 0)
    assert np.nanmedian(f) == pytest.approx(1e-4, abs=3e-5)
    assert np.nanmax(np.abs(f)) > 5e-4 and np.nanmax(np.abs(f)) <= 0.0075


def test_drift_is_the_documented_causal_reversal(universe):
    """truth.drift[t + 1] = -xs_effect * bar_sigma * cs_rank(r1d[t]), r1d from the panel."""
    tr = universe.truth
    expected = np.zeros_like(tr.drift)
    sigma = np.array(tr.bar_sigma)
    expected[1:] = np.nan_to_num(-tr.xs_effect * sigma * _cs_rank(_r1d(universe))[:-1])
    np.testing.assert_allclose(tr.drift, expected, rtol=1e-9, atol=1e-15)
    assert not np.any(tr.drift[: tr.xs_lag_bars + 1])
    assert np.count_nonzero(tr.drift) > 0.8 * tr.drift.size
    np.testing.assert_allclose((tr.drift / sigma).sum(axis=1), 0, atol=1e-12)  # ranks centred


def test_planted_reversal_is_detected(universe):
    ic, t = _reversal_ic(universe)
    assert 0.02 < ic < 0.05  # docstring: 0.033
    assert t > 3  # docstring: 7.2


def test_null_universe_has_no_reversal():
    stats = [_reversal_ic(generate_universe(seed, xs_effect=0.0)) for seed in range(5)]
    assert abs(stats[0][1]) < 3
    assert sum(abs(t) > 2.5 for _, t in stats) <= 1
    assert all(abs(ic) < 0.015 for ic, _ in stats)


def test_full_year_of_20_symbols():
    """20 symbols x 365 days of 5m bars (2.1M cells); fast, but time is bench/'s business."""
    u = generate_universe(1, symbols=20, days=365)
    assert u.panel.close.shape == (365 * 288, 20)
    assert u.panel.ts[-1] == np.datetime64("2024-12-30T23:55", "us")
    np.testing.assert_array_equal(np.isfinite(u.panel.close), _present(u))


def test_other_intervals_scale():
    u = generate_universe(3, symbols=8, days=10, interval_minutes=60,
                          start=dt.date(2023, 6, 1))
    assert u.panel.close.shape == (240, 8) and u.truth.xs_lag_bars == 24
    assert u.panel.ts[0] == np.datetime64("2023-06-01T00:00", "us")
    assert u.truth.bar_sigma[0] == pytest.approx(
        np.sqrt(12) * generate_universe(3, symbols=8, days=10).truth.bar_sigma[0])


@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"seed": 0, "symbols": 0}, {"seed": 0, "days": 1},
    {"seed": 0, "interval_minutes": 7}, {"seed": 0, "xs_effect": float("nan")},
])
def test_rejects_bad_arguments(kwargs):
    seed = kwargs.pop("seed")
    with pytest.raises(ValueError, match="synthetic universe"):
        generate_universe(seed, **kwargs)
