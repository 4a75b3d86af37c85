"""Tests of the mean signed forward return of a hypothesis's events (pure numpy + numba; no
Dagster).

Array contract
--------------
values : (n,) float64, finite
    The signed forward returns of one hypothesis's events, one per event.
times : (n,) integer (int64)
    The event times in base bars, e.g. ``minutes since epoch // bar minutes``. Several events
    may share a time (a pooled hypothesis has BTC and ETH events at the same bar), and the
    times need not be sorted: every result is bit-for-bit the same under any permutation of
    the events (they are put in a canonical order first).
lag : int >= 1, in bars
    Phase 2 uses ``hac_lag_multiple`` x the horizon in bars (``FamiliesSpec``), so that
    events whose horizons overlap are within the lag.

Clusters
--------
Events chained by gaps of at most ``lag`` bars form one cluster (:func:`event_clusters`);
clusters are the independent units. Under the null the signed forward return of an event is
a martingale difference (its direction is known at the event, its return comes after), so
the sums of two clusters more than a horizon apart are uncorrelated, while events inside a
cluster share bars (overlap), volatility and, for a pooled hypothesis, the market.

The tests
---------
- :func:`cluster_mean_test` (what Phase 2 uses by default, ``inference: signflip+cr2``): the
  larger p-value of the next two, so a hypothesis is rejected only when both reject.
- :func:`cluster_signflip_test` (``inference: signflip``): a wild cluster
  bootstrap with the null imposed, i.e. a randomization test that flips the sign of whole
  cluster sums (Rademacher weights). Its p-value is the share of the 2^G sign patterns whose
  |sum| reaches the observed one: enumerated exactly for ``G <= EXACT_MAX_CLUSTERS``, else
  drawn (at most ``draws``) with Besag-Clifford sequential stopping (a draw sequence ends
  after ``stop_after`` exceedances, p = h / L), or Hoeffding's bound where the draws could
  not resolve it; valid p-values when the cluster sums are independent and symmetric about
  0. The p-value can never be below ``1 / 2^(G-1)``: a sample of 5 clusters cannot reach
  0.05 -- few clusters are little evidence, however many events they hold.
- :func:`cr2_mean_test` (``inference: cr2``): the CR2 (Bell-McCaffrey) cluster-robust
  variance with the Bell-McCaffrey / Imbens-Kolesar degrees of freedom (G - 1 for equal
  clusters, fewer when a few clusters hold most events), p from Student's t.
- :func:`hac_mean_test`: the Newey-West (Bartlett) variance on the time distance between
  events with G - 1 degrees of freedom. Kept to show what the calibration found: its kernel
  weights (< 1 inside the lag) shrink the within-cluster covariance, so on volatility-
  clustered, self-triggered events its standard error is too small.
- :func:`naive_mean_test`: the iid t-test, which ignores overlap and clustering.

Which one and why is measured in tests/unit/test_calibration.py (adversarial null markets:
GARCH with Student-t innovations, self-triggered threshold events, Hawkes-clustered events,
simultaneous cross-symbol events, regime switches) and written in its docstring.

Degenerate samples
------------------
With ``n < 2`` or a single cluster (``G = 1``) there is no test: ``p`` is NaN (so is ``t``
for ``n < 2``) and the caller records the hypothesis as untestable. A standard error at the
level of floating-point rounding (``se <= n * eps * max|x|``) is reported as exactly 0, with
``t`` and ``p`` NaN: that is what a sample with no variation left looks like after rounding,
e.g. two events of a pooled hypothesis at the same bar whose deviations cancel -- a t
statistic of 1e15 there would be a false discovery.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from scipy import special

_EPS = float(np.finfo(np.float64).eps)
EXACT_MAX_CLUSTERS = 14  # up to 2^13 sign patterns enumerated; more clusters are sampled
DRAWS = 9_999  # most sign patterns drawn for one p-value (p >= 1 / 10,000)
STOP_AFTER = 40  # Besag-Clifford: stop drawing after this many patterns reach the statistic


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
        Two-sided p-value; NaN with ``t``, or when there is a single cluster.
    lag : int
        The clustering (or HAC) lag in bars; 0 for the naive iid test.
    df : float
        Degrees of freedom of the reference t distribution: ``n - 1`` (iid), clusters - 1
        (HAC, sign-flip), Bell-McCaffrey (CR2, fractional).
    clusters : int
        Independent clusters G (events chained by gaps <= lag); ``n`` for the iid test.
    method : str
        "signflip+cr2", "signflip", "cr2", "hac" or "naive".
    """

    n: int
    mean: float
    se: float
    t: float
    p: float
    lag: int
    df: float
    clusters: int = 0
    method: str = ""


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
    x, t, lag = _canonical(values, times, lag)
    n = x.size
    if n < 2:
        return _undefined(x, lag, "hac")
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
    return _result(n, mean, se, x, lag, df=clusters - 1, clusters=clusters, method="hac")


def event_clusters(times: np.ndarray, lag: int) -> np.ndarray:
    """Cluster number (0, 1, ...) of each event of sorted ``times``: a new cluster starts
    after a gap of more than ``lag`` bars.

    Parameters
    ----------
    times : np.ndarray
        (n,) integer event times in bars, sorted ascending (ties allowed).
    lag : int
        Largest gap in bars that chains two events into one cluster.

    Returns
    -------
    np.ndarray
        (n,) int64, non-decreasing, starting at 0.
    """
    t = np.asarray(times, dtype=np.int64)
    if t.size == 0:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(([0], np.cumsum(np.diff(t) > lag)))


def non_overlapping(times: np.ndarray, horizon: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Which events a test of forward returns may use: an event is kept unless it falls
    inside the horizon of an earlier kept event of its group (events at the bar of a kept
    event are kept with it).

    Why: a later event's direction is decided by returns inside an earlier event's forward
    window (a self-triggered event is that window's big return), so the two signed returns
    are not two draws of the null: their sum is skewed and the t statistic off-centre.
    Kept events start where every earlier kept horizon has ended, so flipping the returns of
    one kept window changes that event's signed return alone -- what the sign-flip test
    needs. Which events are kept depends only on event times, never on returns.

    Parameters
    ----------
    times : np.ndarray
        (n,) integer event times in bars, sorted ascending within each group.
    horizon : np.ndarray
        (n,) integer horizon in bars of each event's forward return.
    groups : np.ndarray
        (n,) integer group of each event (a hypothesis), non-decreasing.

    Returns
    -------
    np.ndarray
        (n,) bool, True for the events to test.
    """
    t = np.asarray(times, dtype=np.int64)
    g = np.asarray(groups, dtype=np.int64)
    h = np.broadcast_to(np.asarray(horizon, dtype=np.int64), t.shape)
    if t.size and (np.any(np.diff(g) < 0) or np.any((np.diff(t) < 0) & (np.diff(g) == 0))):
        raise ValueError("non_overlapping: times must be sorted within non-decreasing groups")
    return _non_overlapping(t, np.ascontiguousarray(h), g)


@numba.njit(cache=True)
def _non_overlapping(t, h, g):
    keep = np.zeros(t.size, dtype=np.bool_)
    last, end = 0, -1
    for i in range(t.size):
        if i == 0 or g[i] != g[i - 1]:
            last, end = t[i], t[i] + h[i]
            keep[i] = True
        elif t[i] == last:
            keep[i] = True
        elif t[i] > end:
            last, end = t[i], t[i] + h[i]
            keep[i] = True
    return keep


class _Clusters(NamedTuple):
    """A sample in canonical order with its cluster sums: what every cluster test reads."""

    x: np.ndarray
    lag: int
    mean: float
    sums: np.ndarray  # (G,) sum of the values of each cluster
    sizes: np.ndarray  # (G,) float64 event count of each cluster


def _clusters(values: np.ndarray, times: np.ndarray, lag: int) -> _Clusters:
    x, t, lag = _canonical(values, times, lag)
    if x.size < 2:
        return _Clusters(x, lag, float(x[0]) if x.size else math.nan, x[:0], x[:0])
    starts = np.concatenate(([0], np.flatnonzero(np.diff(event_clusters(t, lag))) + 1))
    sizes = np.diff(np.concatenate((starts, [x.size]))).astype(np.float64)
    return _Clusters(x, lag, float(x.mean()), np.add.reduceat(x, starts), sizes)


def cr2_mean_test(values: np.ndarray, times: np.ndarray, *, lag: int) -> MeanTest:
    """Cluster-robust test of a zero mean with the CR2 variance and Bell-McCaffrey df.

    For the mean alone the regressor is a column of ones, the hat matrix of cluster g is
    ``(n_g / n) * J`` with one non-zero eigenvalue ``p_g = n_g / n``, and CR2's adjustment
    ``(I - H_gg)^(-1/2)`` divides the cluster's residual sum by ``sqrt(1 - p_g)``:

        Var(mean) = (1 / n^2) * sum_g e_g^2 / (1 - p_g),   e_g = S_g - n_g * mean.

    The Bell-McCaffrey degrees of freedom (Imbens and Kolesar 2016, working model Omega = I)
    reduce to ``1 / (sum_g p_g^2 + ((sum u)^2 - sum u^2) / n^4)`` with
    ``u_g = n_g^2 / (1 - p_g)``: G - 1 for equal clusters, fewer when a few clusters hold most
    events. Parameters, returns and errors as :func:`hac_mean_test`.
    """
    return _cr2(_clusters(values, times, lag))


def _cr2(c: _Clusters) -> MeanTest:
    n, g = c.x.size, c.sums.size
    if n < 2:
        return _undefined(c.x, c.lag, "cr2")
    if g < 2:
        return _single_cluster(c.x, c.mean, c.lag, "cr2")
    share = c.sizes / n
    resid = c.sums - c.sizes * c.mean
    se = np.sqrt(float((resid * resid / (1.0 - share)).sum())) / n
    u = c.sizes * c.sizes / (1.0 - share)
    df = 1.0 / (float((share * share).sum()) + (u.sum() ** 2 - (u * u).sum()) / n**4)
    return _result(n, c.mean, se, c.x, c.lag, df=df, clusters=g, method="cr2")


SEED_SIG_FIGS = 12


def cluster_signflip_test(values: np.ndarray, times: np.ndarray, *, lag: int,
                          draws: int = DRAWS, stop_after: int = STOP_AFTER) -> MeanTest:
    """Randomization test of a zero mean that flips the signs of whole clusters.

    Under the null each cluster sum ``S_g`` is as likely to be ``-S_g`` (cluster sums of
    non-overlapping events are symmetric when returns are conditionally symmetric), so the
    p-value is the share of sign patterns ``eps`` (the observed one included) with
    ``|sum eps_g S_g| >= |sum S_g|``: the wild cluster bootstrap of the sum with the null
    imposed (Rademacher weights), i.e. of the score statistic ``sum S_g / sqrt(sum S_g^2)``,
    whose denominator no sign pattern changes. With at most ``EXACT_MAX_CLUSTERS`` clusters
    every pattern is enumerated (a Gray code flips one sign per step). With more, Hoeffding's
    bound ``2 exp(-S^2 / (2 sum S_g^2))`` is taken when it is below ``1 / (draws + 1)`` (it
    bounds the exact p-value from above, and the draws could not resolve less); else patterns
    are drawn from a generator seeded by the sample itself (the same sample gives the same p
    in every run and order), stopping after ``stop_after`` exceedances (Besag-Clifford:
    p = stop_after / draws made) or ``draws`` draws (p = (k + 1) / (draws + 1)).

    Parameters
    ----------
    values, times, lag
        As :func:`hac_mean_test`.
    draws : int
        Most sign patterns drawn when the clusters are too many to enumerate.
    stop_after : int
        Exceedances after which drawing stops (sequential Monte Carlo p-value).

    Returns
    -------
    MeanTest
        ``se`` the CR1 standard error and ``t = mean / se`` (for reading; the p-value is the
        randomization's), ``df`` = G - 1, ``method`` "signflip"; see the module docstring
        for degenerate samples.
    """
    if draws < 1 or stop_after < 1:
        raise ValueError(f"draws ({draws}) and stop_after ({stop_after}) must be >= 1")
    return _signflip(_clusters(values, times, lag), draws, stop_after)


def _signflip(c: _Clusters, draws: int, stop_after: int) -> MeanTest:
    n, g = c.x.size, c.sums.size
    if n < 2:
        return _undefined(c.x, c.lag, "signflip")
    if g < 2:
        return _single_cluster(c.x, c.mean, c.lag, "signflip")
    resid = c.sums - c.sizes * c.mean
    se = np.sqrt(g / (g - 1) * float((resid * resid).sum())) / n
    # Seeded by |sum| (not its sign): a sample and its mirror (the two templates of one
    # hypothesis) draw the same patterns and get the same p-value. The sum is taken to
    # SEED_SIG_FIGS significant digits: its last bits depend on how the CPU's SIMD kernels
    # add (numpy dispatches by CPU), and the same sample must draw the same patterns on every
    # machine.
    seed = np.array([float(f"{abs(c.sums.sum()):.{SEED_SIG_FIGS}g}"), float(n), float(g)]
                    ).view(np.uint64)
    p = _signflip_p(c.sums, int(draws), int(stop_after),
                    np.uint64(seed[0] ^ (seed[1] << np.uint64(1)) ^ seed[2]))
    return _result(n, c.mean, se, c.x, c.lag, df=g - 1, clusters=g, method="signflip", p=p)


def cluster_mean_test(values: np.ndarray, times: np.ndarray, *, lag: int) -> MeanTest:
    """Phase 2's default: both :func:`cluster_signflip_test` and :func:`cr2_mean_test` must
    reject, i.e. ``p = max(p_signflip, p_cr2)``.

    Each is valid under a different condition: the sign flip is exact when the cluster sums
    are symmetric about 0 (whatever their variances and however few the clusters); CR2 with
    Bell-McCaffrey degrees of freedom does not need symmetry but leans on a t approximation.
    The larger p-value is valid when either holds, and it costs little power (the
    calibration table in tests/unit/test_calibration.py). ``se``, ``t`` and ``df`` are
    CR2's; parameters and errors as :func:`hac_mean_test`.
    """
    clusters = _clusters(values, times, lag)
    flip, cr2 = _signflip(clusters, DRAWS, STOP_AFTER), _cr2(clusters)
    p = max(flip.p, cr2.p) if not (math.isnan(flip.p) or math.isnan(cr2.p)) else math.nan
    return dataclasses.replace(cr2, p=p, method="signflip+cr2")


def _single_cluster(x: np.ndarray, mean: float, lag: int, method: str) -> MeanTest:
    """Every event in one cluster: no independent replication, so no test."""
    nan = float("nan")
    return MeanTest(n=int(x.size), mean=mean, se=nan, t=nan, p=nan, lag=lag, df=0,
                    clusters=1, method=method)


@numba.njit(cache=True)
def _signflip_p(a, draws, stop_after, seed):
    """Share of sign patterns eps with |sum eps * a| >= |sum a| (see cluster_signflip_test)."""
    g = a.size
    a2 = (a * a).sum()
    s_obs = abs(a.sum())
    # Patterns whose sum equals the observed one up to rounding count as reaching it.
    obs = s_obs - 1e-9 * np.sqrt(a2)
    if g <= EXACT_MAX_CLUSTERS:
        # Half the patterns suffice: flipping every sign leaves |sum| unchanged.
        sign = np.ones(g)
        s = a.sum()
        count = 1
        total = 1 << (g - 1)
        for k in range(1, total):
            j = 1
            kk = k
            while kk & 1 == 0:
                kk >>= 1
                j += 1
            s -= 2.0 * sign[j] * a[j]
            sign[j] = -sign[j]
            if abs(s) >= obs:
                count += 1
        return count / total
    # Hoeffding: P(|sum eps * a| >= s) <= 2 exp(-s^2 / (2 sum a^2)), an upper bound of the
    # exact p-value; when it is below what the draws could resolve, it is the p-value.
    bound = 2.0 * np.exp(-s_obs * s_obs / (2.0 * a2)) if a2 > 0.0 else 1.0
    if bound <= 1.0 / (draws + 1):
        return bound
    state = seed
    hits = 0
    for d in range(1, draws + 1):
        s = 0.0
        bits = np.uint64(0)
        for j in range(g):
            if j % 64 == 0:  # splitmix64: 64 signs per draw of the generator
                state += np.uint64(0x9E3779B97F4A7C15)
                z = state
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                bits = z ^ (z >> np.uint64(31))
            s += a[j] if bits & np.uint64(1) else -a[j]
            bits >>= np.uint64(1)
        if abs(s) >= obs:
            hits += 1
            if hits == stop_after:
                return stop_after / d
    return (hits + 1) / (draws + 1)


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
        return _undefined(x, 0, "naive")
    x = np.sort(x)  # canonical order, as in hac_mean_test
    mean = float(x.mean())
    dev = x - mean
    se = np.sqrt(float((dev * dev).sum()) / (n - 1) / n)
    return _result(n, mean, se, x, 0, df=n - 1, clusters=n, method="naive")


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


def _canonical(values: np.ndarray, times: np.ndarray, lag: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked arrays in canonical order (time, then value) and the checked lag: sorting by
    time is what the clusters and windowed sums need, and the value tie-break makes every
    float sum independent of the input order."""
    x, t = _checked(values, times)
    if isinstance(lag, bool) or not isinstance(lag, int | np.integer):
        raise TypeError(f"lag must be an int number of bars, got {lag!r}")
    if lag < 1:
        raise ValueError(f"lag must be >= 1 bar, got {lag}")
    order = np.lexsort((x, t))
    return x[order], t[order], int(lag)


def _undefined(x: np.ndarray, lag: int, method: str) -> MeanTest:
    mean = float(x[0]) if x.size else float("nan")
    nan = float("nan")
    return MeanTest(n=int(x.size), mean=mean, se=nan, t=nan, p=nan, lag=lag, df=0,
                    clusters=int(x.size), method=method)


def _result(n: int, mean: float, se: float, x: np.ndarray, lag: int, *, df: float,
            clusters: int, method: str, p: float | None = None) -> MeanTest:
    """The test from its standard error: t, and p from Student's t with ``df`` unless given."""
    nan = float("nan")
    if se <= n * _EPS * float(np.abs(x).max()):
        return MeanTest(n=n, mean=mean, se=0.0, t=nan, p=nan, lag=lag, df=df,
                        clusters=clusters, method=method)
    t = mean / se
    if p is None:
        # stdtr(df, -|t|) is the Student-t lower tail, i.e. scipy.stats.t.sf(|t|, df) without
        # the distribution object's ~30 us per call (Phase 2 tests thousands of hypotheses).
        p = float(2.0 * special.stdtr(df, -abs(t))) if df > 0 else nan
    return MeanTest(n=n, mean=mean, se=float(se), t=float(t), p=p, lag=lag, df=df,
                    clusters=clusters, method=method)
