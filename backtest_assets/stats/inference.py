"""Tests of the mean signed forward return of a hypothesis's events (pure numpy; no Dagster).

Array contract
--------------
values : (n,) float64, finite
    The signed forward returns of one hypothesis's events, one per event.
times : (n,) integer (int64)
    The event times in base bars, e.g. ``minutes since epoch // bar minutes``. Several events
    may share a time (a pooled hypothesis has BTC and ETH events at the same bar), and the
    times need not be sorted: the result does not depend on the order of the events (they are
    put in a canonical order first, so it is bit-for-bit the same under any permutation).
lag : int >= 1, in bars
    The Newey-West truncation lag; Phase 2 uses ``hac_lag_multiple`` x the horizon in bars
    (``FamiliesSpec``), so that events whose horizons overlap are within the lag.

Degenerate samples
------------------
With ``n < 2`` the standard error is undefined: ``se``, ``t`` and ``p`` are NaN (``mean`` is
NaN for ``n == 0``). A standard error at the level of floating-point rounding
(``se <= n * eps * max|x|``) is reported as exactly 0, with ``t`` and ``p`` NaN: this is what a
sample with no variation left looks like after rounding, e.g. two events of a pooled
hypothesis at the same bar (their deviations from the mean cancel, so the HAC variance is 0
in exact arithmetic) -- a t statistic of 1e15 there would be a false discovery. The caller
decides what an untestable hypothesis counts as.

p-values are two-sided, from Student's t. The iid test uses ``n - 1`` degrees of freedom. The
HAC test uses ``G - 1``, ``G`` the number of independent clusters: runs of events chained by
gaps of at most ``lag`` bars (events further apart than the lag have zero kernel weight, so
the variance estimate rests on G blocks, not n events). With n - 1 instead, simulated null
p-values came out too small (5.7 % below 0.05 over 1,000 iid datasets; a family FDR of 0.058
at q = 0.05); with G - 1 the FDR is back at 0.05. With one cluster (G = 1) p is NaN: there is
no independent replication to test against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class MeanTest:
    """A test of "the mean is zero".

    Attributes
    ----------
    n : int
        Number of events.
    mean : float
        Sample mean of the values.
    se : float
        Standard error of the mean (HAC or iid, see the function that made it).
    t : float
        ``mean / se``; NaN when ``se`` is 0 or undefined.
    p : float
        Two-sided p-value from Student's t with ``df`` degrees of freedom; NaN with ``t``
        or when ``df`` is 0.
    lag : int
        The HAC lag in bars; 0 for the naive iid test.
    df : int
        Degrees of freedom: ``n - 1`` (iid) or independent clusters - 1 (HAC).
    """

    n: int
    mean: float
    se: float
    t: float
    p: float
    lag: int
    df: int


def hac_mean_test(values: np.ndarray, times: np.ndarray, *, lag: int) -> MeanTest:
    """Newey-West (Bartlett) test of a zero mean for irregularly spaced, clustered events.

    The variance of the mean is

        Var(mean) = (1 / n^2) * sum_i sum_j w(|t_i - t_j|) (x_i - m)(x_j - m),
        w(d) = 1 - d / (lag + 1) for d <= lag, else 0,

    with the kernel on the time distance between events, not on their rank: events closer
    than the horizon share bar returns (overlap) and events at the same bar (d = 0, weight 1)
    move together (cross-symbol clustering). The triangular kernel is positive definite on
    the line, so the variance is >= 0 in exact arithmetic; it is clipped at 0 against
    rounding. With every pair of events farther apart than ``lag`` it reduces to
    ``sum (x - m)^2 / n^2``, i.e. ``(n - 1) / n`` times the iid variance of
    :func:`naive_mean_test`.

    The pair sum is exact and costs O(n log n + P), P the number of pairs of distinct event
    bars within ``lag`` of each other; no n x n matrix is formed.

    Parameters
    ----------
    values : np.ndarray
        (n,) float64 signed forward returns, one per event.
    times : np.ndarray
        (n,) integer event times in base bars; ties allowed, any order.
    lag : int
        Truncation lag in bars, >= 1.

    Returns
    -------
    MeanTest
        With ``lag`` set; see the module docstring for degenerate samples.

    Raises
    ------
    ValueError
        If the arrays are not 1-D of the same length, ``values`` is not finite, or
        ``lag < 1``.
    TypeError
        If ``times`` is not an integer array or ``lag`` not an int.
    """
    x, t = _checked(values, times)
    if isinstance(lag, bool) or not isinstance(lag, int | np.integer):
        raise TypeError(f"lag must be an int number of bars, got {lag!r}")
    if lag < 1:
        raise ValueError(f"lag must be >= 1 bar, got {lag}")
    lag = int(lag)
    n = x.size
    if n < 2:
        return _undefined(x, lag)
    # Canonical order (time, then value): sorting by time is what the windowed sum needs,
    # and the value tie-break makes every float sum independent of the input order.
    order = np.lexsort((x, t))
    x, t = x[order], t[order]
    mean = float(x.mean())
    dev = x - mean
    # Events at one bar have weight 1 with each other and the same weight to any other
    # event, so each bar acts as the sum of its deviations.
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    bar_t = t[starts]
    bar_dev = np.add.reduceat(dev, starts)
    total = float((bar_dev * bar_dev).sum())
    # For each bar, how many later bars lie within lag: the pairs (u, u + k) for offsets
    # k = 1..n_within[u]. Bars are distinct integers, so k <= lag.
    n_within = np.searchsorted(bar_t, bar_t + lag, side="right") - np.arange(1, bar_t.size + 1)
    active = np.flatnonzero(n_within > 0)
    k = 1
    while active.size:
        weight = 1.0 - (bar_t[active + k] - bar_t[active]) / (lag + 1)
        total += 2.0 * float((weight * bar_dev[active] * bar_dev[active + k]).sum())
        k += 1
        active = active[n_within[active] >= k]
    se = np.sqrt(max(total, 0.0)) / n
    clusters = 1 + int(np.count_nonzero(np.diff(bar_t) > lag))
    return _result(n, mean, se, x, lag, df=clusters - 1)


def naive_mean_test(values: np.ndarray) -> MeanTest:
    """The iid one-sample t-test of a zero mean, ``se = std(ddof=1) / sqrt(n)``.

    It ignores overlapping horizons and clustering, so on event returns its standard error
    is too small and its p-values too small; it exists to show what
    :func:`hac_mean_test` fixes.

    Parameters
    ----------
    values : np.ndarray
        (n,) float64 values, finite.

    Returns
    -------
    MeanTest
        With ``lag = 0``; see the module docstring for degenerate samples.

    Raises
    ------
    ValueError
        If ``values`` is not 1-D or not finite.
    """
    x, _ = _checked(values, None)
    n = x.size
    if n < 2:
        return _undefined(x, 0)
    x = np.sort(x)  # canonical order, as in hac_mean_test
    mean = float(x.mean())
    dev = x - mean
    se = np.sqrt(float((dev * dev).sum()) / (n - 1) / n)
    return _result(n, mean, se, x, 0, df=n - 1)


def _checked(values: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"values[{bad[0]}] is {x[bad[0]]}: values must be finite")
    if times is None:
        return x, np.empty(0, dtype=np.int64)
    t = np.asarray(times)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"times must be integer bars, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"times has shape {t.shape}, values {x.shape}: one time per value")
    return x, t.astype(np.int64, copy=False)


def _undefined(x: np.ndarray, lag: int) -> MeanTest:
    mean = float(x[0]) if x.size else float("nan")
    nan = float("nan")
    return MeanTest(n=int(x.size), mean=mean, se=nan, t=nan, p=nan, lag=lag, df=0)


def _result(n: int, mean: float, se: float, x: np.ndarray, lag: int, *, df: int) -> MeanTest:
    nan = float("nan")
    if se <= n * _EPS * float(np.abs(x).max()):
        return MeanTest(n=n, mean=mean, se=0.0, t=nan, p=nan, lag=lag, df=df)
    t = mean / se
    # stdtr(df, -|t|) is the Student-t lower tail, i.e. scipy.stats.t.sf(|t|, df) without the
    # distribution object's ~30 us per call (Phase 2 tests thousands of hypotheses).
    p = float(2.0 * special.stdtr(df, -abs(t))) if df >= 1 else nan
    return MeanTest(n=n, mean=mean, se=float(se), t=float(t), p=p, lag=lag, df=df)
