"""Alpha signals on a universe panel, all point in time (pure numpy; no Dagster).

Array contract
--------------
Inputs are a :class:`~backtest_assets.alpha.panel.UniversePanel` (every field (T, S) float64,
NaN where a symbol has no bar) and, for the cross-sectional signals, ``member``: the (T, S)
bool membership of :func:`backtest_assets.alpha.universe.snapshots`. Every signal returns a
(T, S) float64 array on the panel's bars and symbols, NaN where it is unknown. A non-finite
input is a missing one. Windows and horizons count panel bars (288 bars = one day of a
5-minute panel).

Point in time
-------------
The value at bar t reads bars ``<= t`` only (it is known at t's close, and a position on it
is entered at the open of t + 1): it never changes when later bars are added or revised.
Every window needs all of its values: a window that reaches before the data or touches a
missing value gives NaN. Window sums, means and standard deviations are reduced from each
window's own values (one vectorized pass per lag, in a fixed order), so a value depends on
its window only, not on how much history precedes it.

Conventions
-----------
``c`` = ``close``, ``r_t = ln(c_t / c_{t-1})``; ``ln(a / b)`` is NaN unless ``a > 0`` and
``b > 0``; ``sum_w(x)_t = x_{t-w+1} + ... + x_t``.

====================== =========================================================================
signal                 value at t
====================== =========================================================================
ts_momentum_multi      mean over ``h`` in ``horizons`` of ``ln(c_t / c_{t-h}) / (sigma_t
                       sqrt(h))``; ``sigma_t = sqrt(sum_vw(r^2)_t / vw)`` the per-bar realized
                       volatility (root mean square, not demeaned) of the last ``vw =
                       vol_window`` one-bar returns; NaN if any piece is NaN or sigma is 0. A
                       constant drift ``r = mu`` gives ``sign(mu) * mean(sqrt(h))``.
mean_reversion_state   ``-(c_t - m_t) / s_t``, ``m`` and ``s`` the mean and sample std (ddof 1)
                       of the last ``window`` closes; NaN on a constant window. Positive when
                       the price is below its mean: it expects a reversion up.
funding_carry_adjusted ``sign(-f_t) * max(|f_t| - cost / hold_prints, 0)``, ``f_t`` the last
                       funding print known at t (a fraction per print, e.g. per 8 hours):
                       ``-f_t`` is what a long earns per print (a short when negative), the
                       round-trip ``cost`` (a fraction, default 12 bps) is amortized over the
                       ``hold_prints`` prints the position is expected to be held. Equal to
                       ``-f_t - sign(-f_t) * cost / hold_prints`` when the carry covers the
                       cost, 0 when it does not (the cost never turns the side around); NaN
                       before the first print and where the symbol has no close.
orderflow_imbalance    ``(2 sum_w(taker_buy_quote_volume) - sum_w(quote_volume)) /
                       sum_w(quote_volume)`` over the last ``window`` bars: +1 when every
                       trade was a taker buy, -1 when every one was a taker sell; NaN when the
                       window traded nothing.
xs_momentum            ``cs_rank(ln(c_t / c_{t-horizon}), member)``
====================== =========================================================================

Cross-sectional transforms act on each bar separately, over that bar's *valid* symbols:
members (``member[t]``) with a finite value. Non-members and invalid symbols are NaN, and
so is the whole bar when it has fewer than 2 valid symbols.

- ``cs_rank``: the average rank (ties share the mean of their ranks) ``r`` in ``1 .. n`` scaled
  to ``2 (r - 1) / (n - 1) - 1``: -1 for the smallest, +1 for the largest.
- ``cs_zscore``: ``(x - mean) / std`` with the population std (ddof 0), so the valid values
  of a bar have mean 0 and std 1; NaN on a bar whose valid values are all equal.

:data:`SIGNALS` maps each signal's name to a callable ``(panel, member) -> (T, S)`` with the
default parameters; the time-series signals ignore ``member`` (their values are not masked
to the universe: rank or z-score them with ``member`` to get cross-sectional scores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backtest_assets.alpha.panel import UniversePanel

Signal = Callable[[UniversePanel, np.ndarray], np.ndarray]


def ts_momentum_multi(panel: UniversePanel, horizons: Sequence[int] = (12, 48, 288),
                      vol_window: int = 288) -> np.ndarray:
    """Volatility-scaled time-series momentum averaged over horizons (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        Reads ``close``.
    horizons : sequence of int
        Return horizons in bars, each >= 1; at least one.
    vol_window : int
        Number of one-bar returns in the realized volatility, >= 1.

    Returns
    -------
    (T, S) float64
    """
    if isinstance(horizons, int) or not len(horizons):
        raise ValueError(f"ts_momentum_multi: horizons must be a non-empty sequence of bar "
                         f"counts, got {horizons!r}")
    for h in horizons:
        _check_int("ts_momentum_multi", "horizons", h, 1)
    _check_int("ts_momentum_multi", "vol_window", vol_window, 1)
    close = _finite(panel.close)
    r = _ln_ratio(close, _lag(close, 1))
    sigma = np.sqrt(window_sum(r * r, vol_window) / vol_window)
    sigma = np.where(sigma > 0, sigma, np.nan)
    total = np.zeros(close.shape)
    for h in horizons:
        total += _ln_ratio(close, _lag(close, h)) / (sigma * np.sqrt(h))
    return total / len(horizons)


def mean_reversion_state(panel: UniversePanel, window: int = 48) -> np.ndarray:
    """Minus the z-score of the close against its last ``window`` closes (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        Reads ``close``.
    window : int
        Closes in the mean and the standard deviation, >= 2.

    Returns
    -------
    (T, S) float64
    """
    _check_int("mean_reversion_state", "window", window, 2)
    close = _finite(panel.close)
    mean, std = _window_mean_std(close, window)
    ok = (std > 0) & ~_window_flat(close, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, -(close - mean) / std, np.nan)


def funding_carry_adjusted(panel: UniversePanel, expected_cost: float = 0.0012,
                           hold_prints: float = 3) -> np.ndarray:
    """Funding carry per print net of the amortized round-trip cost (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        Reads ``funding_rate`` (the last print known at each bar) and ``close`` (no close,
        no value).
    expected_cost : float
        Round-trip trading cost as a fraction of notional (0.0012 = 12 bps), >= 0.
    hold_prints : float
        Funding prints the position is expected to be held, > 0.

    Returns
    -------
    (T, S) float64
    """
    if not np.isfinite(expected_cost) or expected_cost < 0:
        raise ValueError(f"funding_carry_adjusted: expected_cost must be a finite fraction "
                         f">= 0, got {expected_cost!r}")
    if not np.isfinite(hold_prints) or hold_prints <= 0:
        raise ValueError(f"funding_carry_adjusted: hold_prints must be finite and > 0, got "
                         f"{hold_prints!r}")
    carry = -_finite(panel.funding_rate)
    net = np.sign(carry) * np.maximum(np.abs(carry) - expected_cost / hold_prints, 0.0)
    return np.where(np.isfinite(_finite(panel.close)), net + 0.0, np.nan)  # + 0.0: no -0.0


def orderflow_imbalance(panel: UniversePanel, window: int = 12) -> np.ndarray:
    """Taker-buy share of the quote volume over the last ``window`` bars, mapped to [-1, 1]
    (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        Reads ``quote_volume`` and ``taker_buy_quote_volume``.
    window : int
        Bars summed, >= 1.

    Returns
    -------
    (T, S) float64
    """
    _check_int("orderflow_imbalance", "window", window, 1)
    volume = window_sum(_finite(panel.quote_volume), window)
    buys = window_sum(_finite(panel.taker_buy_quote_volume), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(volume > 0, (2.0 * buys - volume) / volume, np.nan)


def xs_momentum(panel: UniversePanel, member: np.ndarray, horizon: int = 288) -> np.ndarray:
    """Cross-sectional rank of the ``horizon``-bar log return among each bar's members.

    Parameters
    ----------
    panel : UniversePanel
        Reads ``close``.
    member : (T, S) bool
        The universe at each bar.
    horizon : int
        Return horizon in bars, >= 1.

    Returns
    -------
    (T, S) float64
        In [-1, 1] on members with a known return, NaN elsewhere.
    """
    _check_int("xs_momentum", "horizon", horizon, 1)
    close = _finite(panel.close)
    return cs_rank(_ln_ratio(close, _lag(close, horizon)), member)


def cs_rank(x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Average rank of each valid value among its bar's valid values, scaled to [-1, 1].

    Parameters
    ----------
    x : (T, S) float
        Values; non-finite ones are invalid.
    member : (T, S) bool
        Membership; non-members are invalid.

    Returns
    -------
    (T, S) float64
        ``2 (r - 1) / (n - 1) - 1`` for the average rank ``r`` among the bar's ``n`` valid
        values; NaN where invalid and on bars with ``n < 2``.
    """
    x, valid = _valid(x, member, "cs_rank")
    n = valid.sum(axis=1, keepdims=True)
    # Valid values first in ascending order (invalid ones sort last as +inf).
    keyed = np.where(valid, x, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")
    ordered = np.take_along_axis(keyed, order, axis=1)
    pos = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    starts = np.ones(x.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(x.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, x.shape[1] - 1)[:, ::-1], axis=1)[:, ::-1]
    avg = np.empty(x.shape)
    np.put_along_axis(avg, order, (first + last) / 2.0 + 1.0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = 2.0 * (avg - 1.0) / (n - 1) - 1.0
    return np.where(valid & (n >= 2), scaled, np.nan)


def cs_zscore(x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` over each bar's valid values (population std, ddof 0).

    Parameters
    ----------
    x : (T, S) float
        Values; non-finite ones are invalid.
    member : (T, S) bool
        Membership; non-members are invalid.

    Returns
    -------
    (T, S) float64
        NaN where invalid, on bars with fewer than 2 valid values and on bars whose valid
        values are all equal.
    """
    x, valid = _valid(x, member, "cs_zscore")
    n = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0.0).sum(axis=1, keepdims=True) / n
        dev = np.where(valid, x - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / n)
        z = dev / std
    flat = (np.where(valid, x, -np.inf).max(axis=1, keepdims=True)
            == np.where(valid, x, np.inf).min(axis=1, keepdims=True))
    return np.where(valid & (n >= 2) & ~flat & (std > 0), z, np.nan)


SIGNALS: dict[str, Signal] = {
    "ts_momentum_multi": lambda panel, member: ts_momentum_multi(panel),
    "mean_reversion_state": lambda panel, member: mean_reversion_state(panel),
    "funding_carry_adjusted": lambda panel, member: funding_carry_adjusted(panel),
    "orderflow_imbalance": lambda panel, member: orderflow_imbalance(panel),
    "xs_momentum": xs_momentum,
}
"""Every signal by name, as ``(panel, member) -> (T, S)`` with its default parameters."""


def compute(panel: UniversePanel, member: np.ndarray,
            names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The signals ``names`` (every one in :data:`SIGNALS` when None), in that order.

    Raises
    ------
    ValueError
        On an unknown name (the known ones are listed) or a ``member`` that is not (T, S) bool
        on the panel's bars and symbols.
    """
    names = list(SIGNALS) if names is None else list(names)
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise ValueError(f"alpha signals: unknown signal(s) {unknown}; known: {sorted(SIGNALS)}")
    member = np.asarray(member)
    shape = panel.close.shape
    if member.shape != shape or member.dtype != bool:
        raise ValueError(f"alpha signals: member must be a bool array of the panel's shape "
                         f"{shape}, got {member.dtype} {member.shape}")
    return {n: SIGNALS[n](panel, member) for n in names}


def _check_int(signal: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{signal}: {name} must be an integer >= {minimum}, got {value!r}")


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return np.where(np.isfinite(x), x, np.nan)


def _valid(x: np.ndarray, member: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    member = np.asarray(member)
    if x.ndim != 2 or member.shape != x.shape or member.dtype != bool:
        raise ValueError(f"{what}: needs x (T, S) and a bool member of the same shape, got x "
                         f"{x.shape} and member {member.dtype} {member.shape}")
    return x, member & np.isfinite(x)


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    """``out[t] = x[t - k]``, NaN for ``t < k``."""
    out = np.full(x.shape, np.nan)
    if k < x.shape[0]:
        out[k:] = x[:x.shape[0] - k]
    return out


def _ln_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ok = (a > 0) & (b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, np.log(np.where(ok, a, 1.0) / np.where(ok, b, 1.0)), np.nan)


def window_sum(x: np.ndarray, w: int) -> np.ndarray:
    """``sum_w(x)_t`` added in the order ``x_t, x_{t-1}, ..., x_{t-w+1}``; NaN for
    ``t < w - 1`` and for windows holding a NaN."""
    t = x.shape[0]
    out = np.full(x.shape, np.nan)
    if t >= w:
        acc = x[w - 1:].copy()
        for k in range(1, w):
            acc += x[w - 1 - k:t - k]
        out[w - 1:] = acc
    return out


def _window_mean_std(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof 1) of each window of ``w`` values, the std in two passes."""
    t = x.shape[0]
    mean = window_sum(x, w) / w
    std = np.full(x.shape, np.nan)
    if t >= w:
        m = mean[w - 1:]
        acc = (x[w - 1:] - m) ** 2
        for k in range(1, w):
            acc += (x[w - 1 - k:t - k] - m) ** 2
        std[w - 1:] = np.sqrt(acc / (w - 1))
    return mean, std


def _window_flat(x: np.ndarray, w: int) -> np.ndarray:
    """Whether every value of the window ending at t equals ``x_t`` (rounding can leave a
    tiny std on a constant window; equality is the exact test)."""
    t = x.shape[0]
    flat = np.zeros(x.shape, dtype=bool)
    if t >= w:
        same = np.ones((t - w + 1, x.shape[1]), dtype=bool)
        for k in range(1, w):
            same &= x[w - 1 - k:t - k] == x[w - 1:]
        flat[w - 1:] = same
    return flat
