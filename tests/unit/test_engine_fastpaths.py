"""The engine's fast paths against their plain spellings.

- ``core._scan_clean`` (the branch-free input scan) must give ``core._scan``'s weights,
  changes and gaps, and call an input clean exactly when ``_scan`` finds no problem, on
  random cases of every regime with one problem of each kind planted at a random place
  (and on the clean cases themselves, with and without NaN targets);
- a target without NaN is its own weights (no copy) and is never written;
- ``indicators.sma`` is bit-identical to the cumulative-sum difference the peers' numpy and
  vectorbt use, ``crossover_target`` to ``sign(fast - slow)`` with NaN as 0;
- ``metrics.headline`` agrees with ``metrics.metrics`` on heavy-tailed, flat and blown
  curves;
- ``memory.aligned`` starts large buffers on a 2 MiB boundary, zeroed when asked.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.engine import Instrument, backtest, core
from backtest_assets.engine.indicators import crossover_target, sma
from backtest_assets.engine.memory import HUGE_PAGE, aligned
from backtest_assets.engine.metrics import headline, metrics
from tests.unit.test_engine_parity import REGIMES, synthetic_case

PROBLEMS = ("none", "high_below_close", "nan_high", "low_not_positive", "inf_target",
            "order_into_gap", "over_leverage", "inf_rate", "rate_without_bar",
            "rate_untargeted", "nan_target")


def _planted(case: dict, problem: str, rng: np.random.Generator) -> tuple:
    """(o, h, lo, c, tgt, fund, cap) of ``case`` with ``problem`` planted once."""
    o, h, lo, c = (np.array(case[k], dtype=np.float64).reshape(len(case["open_"]), -1)
                   for k in ("open_", "high", "low", "close"))
    tgt = np.array(case["target"], dtype=np.float64).reshape(o.shape)
    fund = case.get("funding")
    fund = np.full(o.shape, np.nan) if fund is None else np.array(fund).reshape(o.shape)
    cap = np.array([i.max_leverage for i in case["instruments"]], dtype=np.float64)
    t_n = o.shape[0]
    priced = np.argwhere(~np.isnan(o))
    t, s = priced[rng.integers(len(priced))]
    if problem == "high_below_close":
        h[t, s] = c[t, s] * 0.99
        lo[t, s] = min(lo[t, s], h[t, s], o[t, s])
        o[t, s] = min(o[t, s], h[t, s])
    elif problem == "nan_high":
        h[t, s] = np.nan
    elif problem == "low_not_positive":
        lo[t, s] = 0.0
    elif problem == "inf_target":
        tgt[t, s] = -np.inf
    elif problem == "order_into_gap":
        t = int(rng.integers(0, t_n - 1))
        tgt[t, s] = 0.123  # a new weight decided at t ...
        o[t + 1, s] = h[t + 1, s] = lo[t + 1, s] = c[t + 1, s] = np.nan  # ... no price at t+1
    elif problem == "over_leverage":
        tgt[t, s] = cap[s] * 1.5
    elif problem == "inf_rate":
        fund[t, s] = np.inf
    elif problem == "rate_without_bar":
        o[t, s] = h[t, s] = lo[t, s] = c[t, s] = np.nan
        fund[t, s] = 1e-4
    elif problem == "rate_untargeted":
        tgt[:, s] = np.nan
        fund[t, s] = 1e-4
    elif problem == "nan_target":  # not a problem: NaN keeps the weight
        tgt[rng.random(tgt.shape) < 0.5] = np.nan
    return o, h, lo, c, tgt, fund, cap


@pytest.mark.parametrize("problem", PROBLEMS)
def test_the_clean_scan_agrees_with_the_full_scan(problem):
    rng = np.random.default_rng(PROBLEMS.index(problem))
    seen = {True: 0, False: 0}
    for seed in range(60):
        case = synthetic_case(seed, REGIMES[seed % len(REGIMES)])
        o, h, lo, c, tgt, fund, cap = _planted(case, problem, rng)
        if seed % 3 == 0:
            fund = np.empty((0, o.shape[1]))  # no funding at all
        for check_bars in (True, False):
            fill = bool(np.isnan(tgt).any()) or seed % 2 == 0
            w_fast = np.empty(o.shape) if fill else tgt
            w_full = np.empty(o.shape) if fill else tgt
            ch_fast, ch_full = np.empty(o.shape, bool), np.empty(o.shape, bool)
            first = np.full((7, 2), -1, dtype=np.int64)
            gaps_fast, clean = core._scan_clean(o, h, lo, c, tgt, fund, cap, check_bars,
                                                w_fast, fill, ch_fast)
            gaps_full = core._scan(o, h, lo, c, tgt, fund, cap, check_bars, w_full, fill,
                                   ch_full, first)
            assert gaps_fast == gaps_full
            np.testing.assert_array_equal(w_fast, w_full)
            np.testing.assert_array_equal(ch_fast, ch_full)
            assert clean == bool((first[:, 0] < 0).all()), (seed, check_bars, first)
            seen[clean] += 1
    if problem == "none":
        assert seen[False] == 0
    elif problem != "nan_target":  # found (funding problems only where there is funding);
        # NaN targets are no problem but can leave a funded symbol without any target
        assert seen[False] >= 40


def test_a_target_without_nan_is_its_own_weights_and_is_never_written():
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
    bars = (close, close * 1.01, close * 0.99, close)
    target = np.sign(rng.normal(size=500))
    kept = target.copy()
    inp = core.check_inputs(*bars, target, Instrument(symbol="X"))
    assert np.shares_memory(inp.weights, target)
    with_nan = np.where(rng.random(500) < 0.7, np.nan, target)
    kept_nan = with_nan.copy()
    inp = core.check_inputs(*bars, with_nan, Instrument(symbol="X"))
    assert not np.shares_memory(inp.weights, with_nan)
    np.testing.assert_array_equal(with_nan, kept_nan)  # the caller's NaN stay NaN
    res_copy = backtest(*bars, target.copy(), Instrument(symbol="X"))
    res = backtest(*bars, target, Instrument(symbol="X"))
    np.testing.assert_array_equal(target, kept)
    np.testing.assert_array_equal(res.equity, res_copy.equity)


def _numpy_sma(x: np.ndarray, w: int) -> np.ndarray:
    cs = np.cumsum(x)
    out = np.full(x.shape, np.nan)
    out[w - 1] = cs[w - 1] / w
    out[w:] = (cs[w:] - cs[:-w]) / w
    return out


@pytest.mark.parametrize("window", [1, 2, 3, 20, 100, 999, 1000])
def test_sma_is_bit_identical_to_the_cumsum_difference(window):
    rng = np.random.default_rng(window)
    x = 30_000 * np.exp(np.cumsum(rng.standard_t(3, 1000) * 0.01))  # heavy tails
    np.testing.assert_array_equal(sma(x, window), _numpy_sma(x, window))


def test_sma_edges():
    x = np.arange(1.0, 6.0)
    assert np.isnan(sma(x, 6)).all()  # longer than the series: nothing yet
    got = sma(np.array([1.0, np.nan, 3.0, 4.0]), 2)  # a NaN poisons the running sum
    assert np.isnan(got[1:]).all()
    with pytest.raises(ValueError, match="window 0"):
        sma(x, 0)
    with pytest.raises(ValueError, match="1-D"):
        sma(np.ones((3, 2)), 2)


def test_crossover_target_is_the_sign_of_the_spread_with_nan_as_flat():
    fast = np.array([np.nan, 1.0, 2.0, 3.0, 3.0, 2.0])
    slow = np.array([1.0, np.nan, 1.0, 3.0, 4.0, 1.0])
    np.testing.assert_array_equal(crossover_target(fast, slow, 0.5),
                                  [0.0, 0.0, 0.5, 0.0, -0.5, 0.5])
    with pytest.raises(ValueError, match="one length"):
        crossover_target(fast, slow[:-1])


@pytest.mark.parametrize("shape", ["heavy_tails", "flat", "blown", "one_bar", "ramp"])
def test_headline_agrees_with_metrics(shape):
    rng = np.random.default_rng(3)
    n = 20_000
    if shape == "heavy_tails":
        eq = 1e6 * np.exp(np.cumsum(rng.standard_t(2.5, n) * 1e-3))
    elif shape == "flat":
        eq = np.full(n, 1e6)
    elif shape == "blown":
        eq = 1e6 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        eq[n // 2:] = 0.0
    elif shape == "one_bar":
        eq = np.array([1.1e6])
    else:
        eq = np.linspace(1e6, 2e6, n)
    close = np.ones(eq.size)
    res = backtest(close, close, close, close, np.zeros(eq.size), Instrument(symbol="X"))
    full = metrics(res.__class__(**{**res.__dict__, "equity": eq}), close, init_cash=1e6)
    fast = headline(eq, 1e6)
    for key, value in fast.items():
        np.testing.assert_allclose(value, full[key], rtol=1e-9, atol=1e-15, err_msg=key)


def test_aligned_buffers_start_on_a_huge_page_and_zero_when_asked():
    big = aligned((HUGE_PAGE // 8 + 5, 3), zero=True)
    assert big.ctypes.data % HUGE_PAGE == 0 and big.flags.c_contiguous
    assert big.shape == (HUGE_PAGE // 8 + 5, 3) and not big.any()
    flags = aligned(3 * HUGE_PAGE, np.bool_)
    assert flags.dtype == np.bool_ and flags.ctypes.data % HUGE_PAGE == 0
    small = aligned(10, zero=True)
    assert small.shape == (10,) and not small.any()
