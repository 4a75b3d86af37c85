"""Selection-bias statistics of a parameter sweep: PSR, DSR and PBO (pure numpy/scipy; no Dagster).

Array contract
--------------
returns : (T,) or (T, N) float64
    Per-bar returns; in a matrix, one column per trial (strategy configuration) and one row
    per bar, the bars aligned across trials. NaN means "no observation at this bar" (the
    trial was not in the market yet, or the bar is missing) and is dropped, not read as a
    zero return. +-inf is refused with a ValueError: it is a bug upstream, not a return.
stats : (K, B, 3) float64, finite
    Sufficient statistics of K trials over B contiguous blocks of bars: the columns are
    ``[n, sum of returns, sum of squared returns]`` of each trial's non-NaN returns in each
    block (``n`` is a count stored as float). The Sharpe ratio of any union of blocks is a
    function of the pooled sums alone, because the mean and variance of a concatenation do
    not depend on the order of its pieces.
Sharpe ratios
    Everywhere per observation (per bar), not annualized: ``mean / std`` with ``ddof=1`` and
    no risk-free rate. NaN means undefined: fewer than 2 observations or zero dispersion. An
    annualized ratio is the per-bar one times ``sqrt(bars per year)``; the formulas below
    need the per-bar one.

Zero dispersion
---------------
From raw returns (``sharpe_stats``) the dispersion is zero iff all values are equal, which
is tested exactly (the two-pass std of ``[0.1] * 3`` is 1e-17, not 0). From pooled sums
(``block_sharpe``) the centred sum of squares ``sumsq - sum**2 / n`` cancels: it is taken as
0 when it is within its rounding bound ``4 * n * eps * sumsq``, so that a constant series
gets a NaN Sharpe rather than one of 1e8 (which CSCV would select as the best trial).

Definitions
-----------
Probabilistic Sharpe ratio (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient
Frontier", Journal of Risk 15(2)): the probability that the true Sharpe ratio exceeds a
benchmark ``SR*``, given the estimate ``SR`` from ``n`` observations with skewness ``g3`` and
non-excess kurtosis ``g4`` (normal: 3)::

    PSR(SR*) = Phi( (SR - SR*) * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR**2) )

Deflated Sharpe ratio (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio: Correcting
for Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management
40(5)): the PSR against the expected maximum of ``N`` independent Sharpe estimates whose
variance across trials is ``V``, with ``g`` the Euler-Mascheroni constant::

    SR0 = sqrt(V) * ((1 - g) * PhiInv(1 - 1/N) + g * PhiInv(1 - 1/(N e)))
    DSR = PSR(SR0)

Probability of backtest overfitting (Bailey, Borwein, López de Prado & Zhu 2017, "The
probability of backtest overfitting", Journal of Computational Finance 20(4); working paper
2015), estimated by combinatorially symmetric cross-validation (CSCV): the T bars are cut
into S contiguous groups, S even. For each of the ``C(S, S/2)`` choices of S/2 groups as the
in-sample set J (the other S/2 groups are out of sample), ``n*`` is the trial with the best
in-sample Sharpe, ``omega = rank of n*'s OOS Sharpe among the N OOS Sharpes / (N + 1)``
(rank 1 = worst), ``lambda = log(omega / (1 - omega))``, and ``PBO`` is the mass of the
distribution of lambda over ``(-inf, 0]``. Splits are enumerated in the lexicographic order
of J (``itertools.combinations(range(S), S // 2)``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import scipy  # its submodules load on first use: not when the code location is imported

_EPS = float(np.finfo(np.float64).eps)
# Elements of the (N, splits, S/2, 3) gather of one chunk of CSCV splits: bounds memory at
# ~32 MB however large N and C(S, S/2) are.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SharpeStats:
    """Sharpe ratio and the higher moments the PSR needs, of one return series.

    Attributes
    ----------
    sr : float
        Per-observation Sharpe ratio ``mean / std`` (``ddof=1``); NaN if fewer than 2
        observations or zero dispersion.
    n : int
        Number of (non-NaN) observations.
    skew : float
        Sample skewness from population moments, ``m3 / m2**1.5``; 0.0 without dispersion.
    kurtosis : float
        Non-excess kurtosis (normal = 3), ``m4 / m2**2``; 3.0 without dispersion.
    """

    sr: float
    n: int
    skew: float
    kurtosis: float


# eq=False: the default field-wise __eq__ / __hash__ would compare and hash numpy arrays,
# which raises; identity semantics are the honest ones for a result object.
@dataclass(frozen=True, eq=False)
class PBOResult:
    """The outcome of CSCV over a sweep of N trials and S groups (C = C(S, S/2) splits).

    Attributes
    ----------
    pbo : float
        Probability of backtest overfitting: the share of splits with ``lambda <= 0``.
    logits : np.ndarray
        (C,) float64, ``lambda`` of each split.
    is_best : np.ndarray
        (C,) int64, index of the in-sample best trial of each split.
    is_sharpe : np.ndarray
        (C,) float64, its in-sample Sharpe ratio.
    oos_sharpe : np.ndarray
        (C,) float64, its out-of-sample Sharpe ratio.
    degradation_slope : float
        OLS slope of ``oos_sharpe`` on ``is_sharpe`` over the splits where both are finite;
        NaN with fewer than 2 such splits or no spread in ``is_sharpe``.
    prob_oos_loss : float
        Share of all splits whose selected trial has ``oos_sharpe < 0``.
    n_splits : int
        C, the number of splits.
    """

    pbo: float
    logits: np.ndarray
    is_best: np.ndarray
    is_sharpe: np.ndarray
    oos_sharpe: np.ndarray
    degradation_slope: float
    prob_oos_loss: float
    n_splits: int


def sharpe_stats(returns: np.ndarray) -> SharpeStats:
    """Per-observation Sharpe ratio, skewness and kurtosis of a return series.

    Parameters
    ----------
    returns : np.ndarray
        (T,) returns; NaN entries are dropped.

    Returns
    -------
    SharpeStats
        ``sr`` (``ddof=1``), ``n``, ``skew`` and non-excess ``kurtosis`` (population
        moments, as ``scipy.stats.skew`` / ``kurtosis(fisher=False)`` with ``bias=True``).

    Raises
    ------
    ValueError
        If ``returns`` is not 1-D or holds +-inf.
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"returns must be 1-D, got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError("returns holds +-inf")
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n < 2 or bool(np.all(x == x[0])):
        return SharpeStats(sr=math.nan, n=n, skew=0.0, kurtosis=3.0)
    d = x - x.mean()
    m2 = float(np.mean(d**2))
    m3 = float(np.mean(d**3))
    m4 = float(np.mean(d**4))
    sd = math.sqrt(m2 * n / (n - 1))
    return SharpeStats(sr=float(x.mean()) / sd, n=n, skew=m3 / m2**1.5, kurtosis=m4 / m2**2)


def probabilistic_sharpe(
    sr: float, sr_benchmark: float, n: int, skew: float, kurtosis: float
) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012).

    ``Phi((sr - sr_benchmark) * sqrt(n - 1) / sqrt(1 - skew * sr + (kurtosis - 1) / 4 * sr**2))``

    Parameters
    ----------
    sr : float
        Observed per-observation Sharpe ratio.
    sr_benchmark : float
        Benchmark per-observation Sharpe ratio.
    n : int
        Number of observations behind ``sr``.
    skew : float
        Skewness of the returns.
    kurtosis : float
        Non-excess kurtosis of the returns (normal = 3).

    Returns
    -------
    float
        Probability in [0, 1] that the true Sharpe ratio exceeds ``sr_benchmark``; NaN when
        ``n < 2``, any input is NaN, or the variance term is not positive (possible only for
        inputs no sample can produce, e.g. ``kurtosis < 1 + skew**2``).
    """
    values = (sr, sr_benchmark, skew, kurtosis)
    if n < 2 or any(math.isnan(v) for v in values):
        return math.nan
    var_term = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2
    if not var_term > 0.0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var_term)
    return float(scipy.stats.norm.cdf(z))


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates under a zero true Sharpe.

    ``sqrt(var_sr) * ((1 - g) * PhiInv(1 - 1/N) + g * PhiInv(1 - 1/(N e)))``, ``g`` the
    Euler-Mascheroni constant: the DSR benchmark ``SR0`` of Bailey & López de Prado (2014).

    Parameters
    ----------
    n_trials : int
        N, the number of independent trials, >= 1.
    var_sr : float
        Variance of the Sharpe ratios across the trials, in the units of the Sharpe ratios
        (per observation for a per-observation SR0), >= 0.

    Returns
    -------
    float
        SR0; 0.0 for a single trial (no selection), NaN for a NaN ``var_sr``.

    Raises
    ------
    ValueError
        If ``n_trials < 1`` or ``var_sr < 0``.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if math.isnan(var_sr):
        return math.nan
    if var_sr < 0.0:
        raise ValueError(f"var_sr must be >= 0, got {var_sr}")
    # PhiInv(1 - 1/1) = PhiInv(0) = -inf: the formula is for a maximum over several trials;
    # the "maximum" of one trial is the trial itself, whose expectation is 0.
    if n_trials == 1:
        return 0.0
    g = float(np.euler_gamma)
    quantiles = (1.0 - g) * scipy.stats.norm.ppf(1.0 - 1.0 / n_trials) + g * scipy.stats.norm.ppf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return math.sqrt(var_sr) * float(quantiles)


def deflated_sharpe(
    sr: float, n: int, skew: float, kurtosis: float, n_trials: int, var_sr: float
) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014): PSR against ``SR0``.

    Parameters
    ----------
    sr : float
        Per-observation Sharpe ratio of the selected trial.
    n : int
        Number of observations behind ``sr``.
    skew : float
        Skewness of the selected trial's returns.
    kurtosis : float
        Non-excess kurtosis of the selected trial's returns (normal = 3).
    n_trials : int
        Number of independent trials the selection was made from, >= 1.
    var_sr : float
        Variance of the per-observation Sharpe ratios across the trials, >= 0.

    Returns
    -------
    float
        ``probabilistic_sharpe(sr, expected_max_sharpe(n_trials, var_sr), n, skew,
        kurtosis)``; NaN under the same conditions as those two.

    Raises
    ------
    ValueError
        If ``n_trials < 1`` or ``var_sr < 0``.
    """
    sr0 = expected_max_sharpe(n_trials, var_sr)
    return probabilistic_sharpe(sr, sr0, n, skew, kurtosis)


def block_sharpe(stats: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Per-observation Sharpe ratio of each trial over a union of blocks.

    Parameters
    ----------
    stats : np.ndarray
        (K, B, 3) ``[n, sum, sumsq]`` per trial and block (module docstring).
    blocks : np.ndarray
        The blocks to pool: a boolean (B,) mask, or an integer array of distinct block
        indices.

    Returns
    -------
    np.ndarray
        (K,) float64 ``mean / std(ddof=1)`` of the pooled returns, with
        ``var = (sumsq - n * mean**2) / (n - 1)`` clipped at 0; NaN where ``n < 2`` or the
        variance is 0 (within rounding, module docstring).

    Raises
    ------
    ValueError
        If ``stats`` is not (K, B, 3) and finite, or ``blocks`` is not a (B,) boolean mask
        or an array of distinct indices in ``[0, B)``.
    """
    s = _checked_stats(stats)
    idx = _block_indices(blocks, s.shape[1])
    return _pooled_sharpe(s, idx[None, :])[:, 0]


def block_stats_from_returns(returns: np.ndarray, n_groups: int) -> np.ndarray:
    """Cut a (T, N) return matrix into contiguous row groups and sum each trial per group.

    Parameters
    ----------
    returns : np.ndarray
        (T, N) returns, one column per trial; NaN entries are ignored.
    n_groups : int
        Number of groups, ``1 <= n_groups <= T``. The rows are split as
        ``np.array_split`` does: the first ``T % n_groups`` groups get one row more.

    Returns
    -------
    np.ndarray
        (N, n_groups, 3) float64 ``[n, sum, sumsq]`` of each trial's returns in each group.

    Raises
    ------
    ValueError
        If ``returns`` is not 2-D or holds +-inf, or ``n_groups`` is outside ``[1, T]``.
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"returns must be 2-D (T, N), got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError("returns holds +-inf")
    n_rows = x.shape[0]
    if not 1 <= n_groups <= n_rows:
        raise ValueError(f"n_groups must be in [1, T = {n_rows}], got {n_groups}")
    present = ~np.isnan(x)
    x0 = np.where(present, x, 0.0)
    # array_split's group starts; n_groups <= T keeps every group non-empty, which
    # np.add.reduceat needs (it would return the start row for an empty group).
    sizes = np.full(n_groups, n_rows // n_groups)
    sizes[: n_rows % n_groups] += 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.stack(
        [
            np.add.reduceat(present.astype(np.float64), starts, axis=0),
            np.add.reduceat(x0, starts, axis=0),
            np.add.reduceat(x0 * x0, starts, axis=0),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(out.transpose(1, 0, 2))


def pbo_from_blocks(stats: np.ndarray) -> PBOResult:
    """Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu).

    For each of the ``C(S, S/2)`` splits, in the lexicographic order of the in-sample set J:

    - ``n*`` = argmax over the trials of ``block_sharpe(stats, J)``; a NaN Sharpe counts as
      ``-inf`` and ties go to the lowest index (so with all in-sample Sharpes NaN, trial 0);
    - ``omega = r / (N + 1)``, r the rank of ``n*``'s out-of-sample Sharpe among the N
      out-of-sample Sharpes (1 = worst, N = best, ties get their average rank, NaN ranks
      below every number);
    - ``lambda = log(omega / (1 - omega))``, computed as ``log(r / (N + 1 - r))``.

    ``PBO`` is the share of splits with ``lambda <= 0``. The paper defines PBO as the integral
    of the density of lambda over ``(-inf, 0]``, with that density estimated by the relative
    frequencies of the splits' lambdas; a relative-frequency density puts the mass of the
    splits with ``lambda == 0`` inside that closed interval, hence ``<=``. ``lambda == 0``
    means the selected trial landed exactly on the OOS median (``r = (N + 1) / 2``, odd N or
    ties): selecting in sample then bought nothing over a random pick, which is the outcome
    PBO counts, not the one it credits.

    Parameters
    ----------
    stats : np.ndarray
        (N, S, 3) ``[n, sum, sumsq]`` of N trials over S contiguous groups (module
        docstring); N >= 2, S even and >= 2. The cost grows as ``C(S, S/2) * N * S``.

    Returns
    -------
    PBOResult
        PBO and the per-split diagnostics.

    Raises
    ------
    ValueError
        If ``stats`` is not (N, S, 3) and finite, ``N < 2``, or S is odd or < 2.
    """
    s = _checked_stats(stats)
    n_trials, n_groups, _ = s.shape
    if n_trials < 2:
        raise ValueError(
            f"stats must hold at least 2 trials (N = stats.shape[0]), got N = {n_trials}"
        )
    if n_groups < 2 or n_groups % 2:
        raise ValueError(f"n_groups (S = stats.shape[1]) must be even and >= 2, got S = {n_groups}")
    half = n_groups // 2
    is_sets = np.array(list(itertools.combinations(range(n_groups), half)), dtype=np.intp)
    oos_mask = np.ones((len(is_sets), n_groups), dtype=bool)
    np.put_along_axis(oos_mask, is_sets, False, axis=1)
    oos_sets = np.nonzero(oos_mask)[1].reshape(len(is_sets), half)

    n_splits = len(is_sets)
    chunk = max(1, _CHUNK_ELEMENTS // (n_trials * half * 3))
    is_best = np.empty(n_splits, dtype=np.int64)
    is_sr = np.empty(n_splits)
    oos_sr = np.empty(n_splits)
    rank = np.empty(n_splits)
    for lo in range(0, n_splits, chunk):
        hi = min(lo + chunk, n_splits)
        sr_in = _pooled_sharpe(s, is_sets[lo:hi]).T  # (c, N)
        sr_out = _pooled_sharpe(s, oos_sets[lo:hi]).T
        best = np.where(np.isnan(sr_in), -np.inf, sr_in).argmax(axis=1)
        rows = np.arange(hi - lo)
        is_best[lo:hi] = best
        is_sr[lo:hi] = sr_in[rows, best]
        oos_sr[lo:hi] = sr_out[rows, best]
        rank[lo:hi] = _average_rank(sr_out, best)
    logits = np.log(rank / (n_trials + 1 - rank))
    for arr in (logits, is_best, is_sr, oos_sr):
        arr.setflags(write=False)
    return PBOResult(
        pbo=float(np.count_nonzero(logits <= 0.0)) / n_splits,
        logits=logits,
        is_best=is_best,
        is_sharpe=is_sr,
        oos_sharpe=oos_sr,
        degradation_slope=_ols_slope(is_sr, oos_sr),
        prob_oos_loss=float(np.count_nonzero(oos_sr < 0.0)) / n_splits,
        n_splits=n_splits,
    )


def pbo_cscv(returns: np.ndarray, n_groups: int) -> PBOResult:
    """PBO by CSCV from a (T, N) return matrix, as in the paper.

    Parameters
    ----------
    returns : np.ndarray
        (T, N) per-bar returns, one column per trial; NaN entries are ignored.
    n_groups : int
        S, the number of contiguous row groups, even and in ``[2, T]``. When S does not
        divide T, the first ``T % S`` groups get one row more (``np.array_split``).

    Returns
    -------
    PBOResult
        ``pbo_from_blocks(block_stats_from_returns(returns, n_groups))``.

    Raises
    ------
    ValueError
        As ``block_stats_from_returns`` and ``pbo_from_blocks``.
    """
    if n_groups < 2 or n_groups % 2:
        raise ValueError(f"n_groups must be even and >= 2, got {n_groups}")
    return pbo_from_blocks(block_stats_from_returns(returns, n_groups))


def sharpe_decay(is_sharpe: np.ndarray, oos_sharpe: np.ndarray) -> float:
    """Out-of-sample over in-sample Sharpe ratio of the selected trials.

    Parameters
    ----------
    is_sharpe : np.ndarray
        (C,) in-sample Sharpe ratios.
    oos_sharpe : np.ndarray
        (C,) out-of-sample Sharpe ratios of the same selections.

    Returns
    -------
    float
        ``mean(oos) / mean(is)`` over the pairs where both are finite; NaN if there is no
        such pair or ``mean(is) == 0``.

    Raises
    ------
    ValueError
        If the two arrays are not 1-D of the same length.
    """
    x = np.asarray(is_sharpe, dtype=np.float64)
    y = np.asarray(oos_sharpe, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"is_sharpe and oos_sharpe must be 1-D of one length, got {x.shape} and {y.shape}"
        )
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return math.nan
    mean_is = float(x[ok].mean())
    if mean_is == 0.0:
        return math.nan
    return float(y[ok].mean()) / mean_is


def _checked_stats(stats: np.ndarray) -> np.ndarray:
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim != 3 or s.shape[2] != 3:
        raise ValueError(f"stats must be (K, B, 3) [n, sum, sumsq], got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("stats holds NaN or +-inf")
    return s


def _block_indices(blocks: np.ndarray, n_blocks: int) -> np.ndarray:
    b = np.asarray(blocks)
    if b.dtype == np.bool_:
        if b.shape != (n_blocks,):
            raise ValueError(f"blocks mask must have shape ({n_blocks},), got {b.shape}")
        return np.flatnonzero(b)
    if b.ndim != 1 or (b.size and not np.issubdtype(b.dtype, np.integer)):
        raise ValueError(f"blocks must be a boolean mask or 1-D integer indices, got {b.dtype}")
    idx = b.astype(np.intp)
    if idx.size and (idx.min() < 0 or idx.max() >= n_blocks):
        raise ValueError(f"blocks indices must be in [0, {n_blocks}), got {idx.tolist()}")
    # A repeated block would count its bars twice.
    if np.unique(idx).size != idx.size:
        raise ValueError(f"blocks indices must be distinct, got {idx.tolist()}")
    return idx


def _pooled_sharpe(stats: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """(K, c) Sharpe of each trial over each of c block sets, ``sets`` (c, m) indices."""
    # Summing over the gathered axis adds the blocks in the same order for every trial, so
    # trials with equal block statistics get bit-for-bit equal Sharpes (CSCV's ties).
    pooled = stats[:, sets, :].sum(axis=2)  # (K, c, 3)
    n, total, sumsq = pooled[..., 0], pooled[..., 1], pooled[..., 2]
    has_mean = n > 0
    mean = np.divide(total, n, out=np.zeros_like(total), where=has_mean)
    css = np.maximum(sumsq - total * mean, 0.0)
    dispersed = (n >= 2) & (css > 4.0 * n * _EPS * sumsq)
    var = np.divide(css, n - 1.0, out=np.zeros_like(css), where=dispersed)
    sd = np.sqrt(var)
    return np.divide(mean, sd, out=np.full_like(mean, np.nan), where=dispersed)


def _average_rank(values: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Average rank (1 = lowest, NaN lowest of all) of ``values[i, pick[i]]`` in row i."""
    v = np.where(np.isnan(values), -np.inf, values)
    x = v[np.arange(len(pick)), pick][:, None]
    below = np.count_nonzero(v < x, axis=1)
    tied = np.count_nonzero(v == x, axis=1)  # includes the picked trial itself
    return below + (tied + 1) / 2.0


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    xs, ys = x[ok], y[ok]
    # Equal x values have no spread in exact arithmetic; their float mean need not equal
    # them, so test equality rather than a rounding-noise sum of squares.
    if xs.size < 2 or bool(np.all(xs == xs[0])):
        return math.nan
    dx = xs - xs.mean()
    return float(np.dot(dx, ys - ys.mean()) / np.dot(dx, dx))
