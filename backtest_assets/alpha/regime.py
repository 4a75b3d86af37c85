"""A point-in-time volatility regime of a market symbol (pure numpy/polars; no Dagster).

Array contract
--------------
Input is a :class:`~backtest_assets.alpha.panel.UniversePanel` (every field (T, S) float64,
NaN where a symbol has no bar); only the ``close`` of the rule's ``symbol`` is read. Output
is one value per panel bar: :func:`regime_series` gives a (T,) int8 array of regime codes,
:func:`regime_frame` the same as a frame with the volatility and its z-score beside it.
Windows count panel bars (288 bars = one day of a 5-minute panel).

Point in time
-------------
The regime at bar t reads the market's closes at bars ``<= t`` only (it is known at t's
close): it never changes when later bars are added or revised. Every window needs all of its
values; a window reaching before the data or touching a missing close makes the value
unknown. Window sums are reduced from each window's own values (one vectorized pass per lag,
in a fixed order, as in :mod:`backtest_assets.alpha.signals`), so a value depends on its
window only, not on how much history precedes it.

Rule (:class:`RegimeRule`)
--------------------------
``c`` = the market symbol's close, ``r_t = ln(c_t / c_{t-1})``.

- **Volatility.** ``vol_t = sqrt(sum(r^2 over the last vol_window returns) / vol_window)``:
  the per-bar realized volatility (root mean square, not demeaned), as ``sigma`` of
  :func:`~backtest_assets.alpha.signals.ts_momentum_multi`. First known at ``t =
  vol_window`` (``r_0`` needs a bar before the data).
- **z-score.** ``vol_z_t = (vol_t - m_t) / s_t``, ``m`` and ``s`` the mean and sample std
  (ddof 1) of the last ``z_window`` values of ``vol`` *including* ``vol_t``. Unknown while
  that window is not full (so the first regime is at ``t = vol_window + z_window - 1``) and
  on a window whose values are all equal (no dispersion to scale by).
- **Thresholds.** ``calm`` when ``vol_z < calm_below``, ``stormy`` when ``vol_z >
  stormy_above``, ``normal`` otherwise (a z exactly on a threshold is normal).

Codes
-----
=========== ======== ==========================================================
code        name     meaning
=========== ======== ==========================================================
``-1``      calm     volatility well below its recent norm
``0``       normal   neither
``1``       stormy   volatility well above its recent norm
``-128``    unknown  warm-up, a missing market close in a window, or a flat window
=========== ======== ==========================================================

``UNKNOWN`` is a sentinel, not an ordered level: test ``regime == CALM``, never ``regime <
0`` (that would include unknown bars). :func:`gate` never lets an unknown bar through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.alpha.panel import UniversePanel
from backtest_assets.alpha.signals import window_sum

CALM, NORMAL, STORMY, UNKNOWN = -1, 0, 1, -128
REGIME_NAMES: dict[int, str] = {CALM: "calm", NORMAL: "normal", STORMY: "stormy",
                                UNKNOWN: "unknown"}
"""Name of each regime code."""
REGIME_CODES: dict[str, int] = {name: code for code, name in REGIME_NAMES.items()}
"""Code of each regime name."""
KNOWN_REGIMES = ("calm", "normal", "stormy")


@dataclass(frozen=True, kw_only=True)
class RegimeRule:
    """How the regime of a market symbol is drawn (module docstring)."""

    name: str
    symbol: str = "BTCUSDT"
    vol_window: int = 288
    z_window: int = 2016
    calm_below: float = -0.5
    stormy_above: float = 1.5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"regime rule: name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.symbol, str) or not self.symbol:
            raise ValueError(f"regime rule {self.name!r}: symbol must be a non-empty string, "
                             f"got {self.symbol!r}")
        for field, minimum in (("vol_window", 1), ("z_window", 2)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"regime rule {self.name!r}: {field} must be an integer >= "
                                 f"{minimum}, got {value!r}")
        for field in ("calm_below", "stormy_above"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not np.isfinite(value):
                raise ValueError(f"regime rule {self.name!r}: {field} must be a finite number, "
                                 f"got {value!r}")
        if self.calm_below > self.stormy_above:
            raise ValueError(f"regime rule {self.name!r}: calm_below ({self.calm_below}) must "
                             f"not exceed stormy_above ({self.stormy_above})")

    @property
    def warm_up_bars(self) -> int:
        """Bars before the first possible regime: ``vol_window + z_window - 1``."""
        return self.vol_window + self.z_window - 1


def regime_series(panel: UniversePanel, rule: RegimeRule) -> np.ndarray:
    """The regime code of every bar (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        Reads the ``close`` of ``rule.symbol``.
    rule : RegimeRule

    Returns
    -------
    (T,) int8
        ``CALM`` (-1), ``NORMAL`` (0), ``STORMY`` (1) or ``UNKNOWN`` (-128).

    Raises
    ------
    ValueError
        When the panel has no column ``rule.symbol``.
    """
    _, z = _vol_and_z(panel, rule)
    return _codes(z, rule)


def regime_frame(panel: UniversePanel, rule: RegimeRule) -> pl.DataFrame:
    """The regime of every bar as a frame.

    Returns
    -------
    pl.DataFrame
        ``ts`` (the bar's open time, ``Datetime("us")``; the regime is known at ``ts +
        interval``), ``regime`` (``calm``, ``normal``, ``stormy`` or ``unknown``), ``vol``
        (the per-bar realized volatility, a fraction) and ``vol_z`` (its z-score), both null
        where unknown; one row per panel bar, in time order.
    """
    vol, z = _vol_and_z(panel, rule)
    codes = _codes(z, rule)
    names = np.array([REGIME_NAMES[c] for c in (CALM, NORMAL, STORMY, UNKNOWN)], dtype=object)
    index = np.select([codes == CALM, codes == NORMAL, codes == STORMY], [0, 1, 2], 3)
    return pl.DataFrame({
        "ts": pl.Series(panel.ts).cast(pl.Datetime("us")),
        "regime": pl.Series(names[index], dtype=pl.String),
        "vol": pl.Series(vol, dtype=pl.Float64).fill_nan(None),
        "vol_z": pl.Series(z, dtype=pl.Float64).fill_nan(None),
    })


def gate(scores: np.ndarray, regime: np.ndarray, allowed: Iterable[str]) -> np.ndarray:
    """``scores`` with every bar whose regime is not ``allowed`` set to NaN.

    Parameters
    ----------
    scores : (T, S) float
        Scores on the panel's bars.
    regime : (T,) int
        Regime codes of :func:`regime_series`.
    allowed : iterable of str
        Regime names let through, among ``calm``, ``normal``, ``stormy`` (or one name as a
        str). ``unknown`` is never let through and may not be asked for.

    Returns
    -------
    (T, S) float64
        A new array: ``scores`` on allowed bars, NaN on the others.

    Raises
    ------
    ValueError
        On an unknown or ``unknown`` regime name, a code that is not a regime, or shapes
        that do not match.
    """
    allowed = set([allowed] if isinstance(allowed, str) else allowed)
    bad = sorted(allowed - set(KNOWN_REGIMES))
    if bad:
        raise ValueError(f"gate: allowed regimes must be among {list(KNOWN_REGIMES)} (unknown "
                         f"bars are never allowed), got {bad}")
    s = np.array(scores, dtype=np.float64)
    r = np.asarray(regime)
    if s.ndim != 2 or r.shape != (s.shape[0],):
        raise ValueError(f"gate: needs scores (T, S) and regime (T,), got scores {s.shape} and "
                         f"regime {r.shape}")
    codes = set(np.unique(r).tolist())
    if not codes <= set(REGIME_NAMES):
        raise ValueError(f"gate: regime holds codes {sorted(codes - set(REGIME_NAMES))} that "
                         f"are not regimes {sorted(REGIME_NAMES)}")
    keep = np.isin(r, [REGIME_CODES[name] for name in allowed])
    s[~keep] = np.nan
    return s


def _vol_and_z(panel: UniversePanel, rule: RegimeRule) -> tuple[np.ndarray, np.ndarray]:
    """(T,) realized volatility and its z-score, NaN where unknown."""
    if rule.symbol not in panel.symbols:
        raise ValueError(f"regime rule {rule.name!r}: symbol {rule.symbol!r} is not in the "
                         f"panel's symbols {list(panel.symbols)}")
    c = np.asarray(panel.close[:, panel.symbols.index(rule.symbol)], dtype=np.float64)
    c = np.where(np.isfinite(c) & (c > 0), c, np.nan)
    r = np.full(c.shape, np.nan)
    r[1:] = np.log(c[1:] / c[:-1])
    vol = np.sqrt(window_sum(r * r, rule.vol_window) / rule.vol_window)
    w = rule.z_window
    mean = window_sum(vol, w) / w
    z = np.full(vol.shape, np.nan)
    t = vol.size
    if t >= w:
        m = mean[w - 1:]
        ss = (vol[w - 1:] - m) ** 2
        flat = np.ones(t - w + 1, dtype=bool)
        for k in range(1, w):
            ss += (vol[w - 1 - k:t - k] - m) ** 2
            flat &= vol[w - 1 - k:t - k] == vol[w - 1:]
        std = np.sqrt(ss / (w - 1))
        ok = (std > 0) & ~flat
        with np.errstate(invalid="ignore", divide="ignore"):
            z[w - 1:] = np.where(ok, (vol[w - 1:] - m) / std, np.nan)
    return vol, z


def _codes(z: np.ndarray, rule: RegimeRule) -> np.ndarray:
    out = np.full(z.shape, UNKNOWN, dtype=np.int8)
    known = np.isfinite(z)
    out[known] = NORMAL
    out[known & (z < rule.calm_below)] = CALM
    out[known & (z > rule.stormy_above)] = STORMY
    return out

