"""The point-in-time liquid universe of a panel (pure numpy/polars; no Dagster).

Array contract
--------------
Input is a :class:`~backtest_assets.alpha.panel.UniversePanel`: every field (T, S) float64,
NaN where a symbol has no bar; bar t is known at its close ``ts[t] + interval``. Only
``quote_volume`` (USDT, never negative) is read. Outputs are (T, S) arrays on the panel's
bars and symbols: the ADV proxy (float64, NaN where unknown) and membership (bool).

Point in time
-------------
The snapshot at bar t reads bars ``<= t`` only: a symbol's ADV, eligibility and rank at t
are known at t's close and never change when later bars are added or revised. A symbol that
delists later is a member of the snapshots before it delisted (no survivorship); one that
lists later is simply absent before it lists.

Rule (:class:`UniverseRule`)
----------------------------
- **Window.** ``adv_bars`` bars of ``adv_interval_minutes`` each, ending at t's close, i.e.
  ``w = adv_bars * adv_interval_minutes / panel.interval_minutes`` panel bars ``t - w + 1 ..
  t`` (the seed: 96 bars of 15 minutes = one day = 288 bars of a 5-minute panel). The rule's
  span must be a whole number of panel bars.
- **ADV proxy.** The quote volume traded in the window expressed per day: ``sum * 1440 /
  (adv_bars * adv_interval_minutes)`` (the plain sum when the window is one day).
- **Full window.** The ADV of (t, s) is known only when every bar of its window has a finite
  ``quote_volume``; otherwise it is NaN and s is not eligible at t. So a symbol that lists
  at bar l is first eligible at ``l + w - 1`` (its window is full there, not before), and a
  missing bar (delisting, gap, NaN volume) at g makes it ineligible at ``g .. g + w - 1``:
  it comes back at ``g + w``, the first bar whose window no longer contains the gap.
- **Eligible.** Full window and ``ADV >= min_adv_usd``.
- **Rank and members.** Eligible symbols are ranked at each bar by ADV, largest first (rank
  1); equal ADVs are ordered by symbol name (``"AAA"`` before ``"BBB"``). The members are the
  eligible symbols of rank ``<= top_n`` (every eligible one when ``top_n`` is None).

Quote volumes are summed as integer cents (rounded to the cent) with cumulative sums over
the bars, a missing bar counting 0 and a running count of finite bars deciding whether a
window is full: the window sums are exact, so an ADV depends on its window's bars only (not
on the history before it, nor on the panel's length) and equal windows tie exactly.
``market`` names the rule's reference market for its consumers (e.g. a beta or a regime);
it takes no part in membership.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.alpha.panel import UniversePanel

_MINUTES_PER_DAY = 24 * 60
_CENTS = 100
# A column's total volume in cents must stay an exact int64 (and its windows exact doubles).
_MAX_TOTAL_CENTS = 2 ** 53


@dataclass(frozen=True, kw_only=True)
class UniverseRule:
    """How a universe is drawn from a panel (module docstring)."""

    name: str
    adv_bars: int = 96
    adv_interval_minutes: int = 15
    min_adv_usd: float = 1e6
    top_n: int | None = None
    market: str = "BTCUSDT"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("universe rule: name is empty")
        for field in ("adv_bars", "adv_interval_minutes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"universe rule {self.name!r}: {field} must be an integer "
                                 f">= 1, got {value!r}")
        if not np.isfinite(self.min_adv_usd) or self.min_adv_usd < 0:
            raise ValueError(f"universe rule {self.name!r}: min_adv_usd must be finite and "
                             f">= 0, got {self.min_adv_usd!r}")
        if self.top_n is not None and (isinstance(self.top_n, bool)
                                       or not isinstance(self.top_n, int) or self.top_n < 1):
            raise ValueError(f"universe rule {self.name!r}: top_n must be None or an integer "
                             f">= 1, got {self.top_n!r}")

    @property
    def span_minutes(self) -> int:
        """Length of the ADV window in minutes."""
        return self.adv_bars * self.adv_interval_minutes

    def window_bars(self, interval_minutes: int) -> int:
        """The ADV window in bars of a panel of ``interval_minutes``.

        Raises
        ------
        ValueError
            When the window is not a whole number of the panel's bars.
        """
        if interval_minutes < 1 or self.span_minutes % interval_minutes:
            raise ValueError(
                f"universe rule {self.name!r}: its ADV window of {self.adv_bars} x "
                f"{self.adv_interval_minutes} min = {self.span_minutes} min is not a whole "
                f"number of the panel's {interval_minutes}-minute bars")
        return self.span_minutes // interval_minutes


def resolve_rule(rule: UniverseRule | None = None, **params) -> UniverseRule:
    """``rule`` with ``params`` replacing its fields, or a rule named ``"adhoc"`` built from
    ``params`` alone (a TypeError names an unknown parameter)."""
    if rule is None:
        return UniverseRule(**{"name": "adhoc", **params})
    return dataclasses.replace(rule, **params) if params else rule


def snapshots(panel: UniversePanel, rule: UniverseRule | None = None,
              **params) -> tuple[np.ndarray, np.ndarray]:
    """ADV proxy and membership of every symbol at every bar (module docstring).

    Parameters
    ----------
    panel : UniversePanel
        The bars; only ``quote_volume`` is read.
    rule : UniverseRule, optional
        The rule; ``params`` (``adv_bars``, ``min_adv_usd``, ...) replace its fields, or
        build one when it is None.

    Returns
    -------
    adv : (T, S) float64
        USD per day over the full window ending at each bar, NaN where the window is not full.
    member : (T, S) bool
        Whether the symbol is in the universe at that bar's close.

    Raises
    ------
    ValueError
        On a negative quote volume, volumes too large to sum exactly, or a rule whose window
        is not a whole number of the panel's bars.
    """
    adv, _, rank, top_n = _snapshot(panel, resolve_rule(rule, **params))
    return adv, _members(rank, top_n)


def snapshot_frame(panel: UniversePanel, rule: UniverseRule | None = None,
                   **params) -> pl.DataFrame:
    """The snapshots in long format: one row per (bar, symbol) whose ADV is known.

    Returns
    -------
    pl.DataFrame
        ``ts`` (the bar's open time, ``Datetime("us")``; the snapshot is known at
        ``ts + interval``), ``symbol``, ``adv_usd``, ``eligible``, ``member``, ``rank``
        (1 = largest ADV among the bar's eligible symbols, null when not eligible); sorted by
        ``(ts, symbol)``. Symbols whose window is not full at a bar have no row there.
    """
    return snapshots_with_frame(panel, resolve_rule(rule, **params))[1]


def snapshots_with_frame(panel: UniversePanel, rule: UniverseRule
                         ) -> tuple[np.ndarray, pl.DataFrame]:
    """The membership of :func:`snapshots` and the long frame of :func:`snapshot_frame`
    from one computation of the ADV and ranks (what the bundle needs of both)."""
    adv, eligible, rank, top_n = _snapshot(panel, rule)
    member = _members(rank, top_n)
    order = np.argsort(np.asarray(panel.symbols), kind="stable")
    known = np.isfinite(adv[:, order])
    rows, cols = np.nonzero(known)
    cols = order[cols]
    return member, pl.DataFrame({
        "ts": pl.Series(panel.ts[rows]).cast(pl.Datetime("us")),
        "symbol": pl.Series(np.asarray(panel.symbols, dtype=object)[cols], dtype=pl.String),
        "adv_usd": pl.Series(adv[rows, cols], dtype=pl.Float64),
        "eligible": pl.Series(eligible[rows, cols], dtype=pl.Boolean),
        "member": pl.Series(member[rows, cols], dtype=pl.Boolean),
        "rank": pl.Series(rank[rows, cols], dtype=pl.Int64),
    }).with_columns(pl.when(pl.col("eligible")).then(pl.col("rank")).alias("rank"))


def _snapshot(panel: UniversePanel, rule: UniverseRule
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """ADV, eligibility, rank (0 where not eligible) and the rule's top_n."""
    w = rule.window_bars(panel.interval_minutes)
    qv = np.asarray(panel.quote_volume, dtype=float)
    finite = np.isfinite(qv)
    if np.any(qv[finite] < 0):
        t, s = np.argwhere(finite & (qv < 0))[0]
        raise ValueError(f"universe {rule.name!r}: quote_volume is negative "
                         f"({float(qv[t, s])!r}) for {panel.symbols[s]} at {panel.ts[t]}")
    cents = np.rint(np.where(finite, qv, 0.0) * _CENTS)
    if cents.sum(axis=0).max() >= _MAX_TOTAL_CENTS:
        s = int(cents.sum(axis=0).argmax())
        raise ValueError(f"universe {rule.name!r}: the quote volume of {panel.symbols[s]} "
                         "is too large to sum exactly in cents")
    t_count, s_count = qv.shape
    adv = np.full((t_count, s_count), np.nan)
    if t_count >= w:
        csum = np.zeros((t_count + 1, s_count), dtype=np.int64)
        np.cumsum(cents.astype(np.int64), axis=0, out=csum[1:])
        count = np.zeros((t_count + 1, s_count), dtype=np.int64)
        np.cumsum(finite, axis=0, out=count[1:])
        window = (csum[w:] - csum[:-w]).astype(float) / _CENTS
        full = (count[w:] - count[:-w]) == w
        adv[w - 1:] = np.where(full, window * (_MINUTES_PER_DAY / rule.span_minutes), np.nan)
    eligible = np.isfinite(adv) & (adv >= rule.min_adv_usd)
    return adv, eligible, _rank(adv, eligible, panel.symbols), rule.top_n


def _rank(adv: np.ndarray, eligible: np.ndarray, symbols: tuple[str, ...]) -> np.ndarray:
    """(T, S) int: 1 for the largest ADV among each bar's eligible symbols, ties by name; 0
    where not eligible."""
    by_name = np.argsort(np.asarray(symbols), kind="stable")
    key = np.where(eligible, -adv, np.inf)[:, by_name]
    # A stable sort of columns already in name order breaks equal ADVs by name.
    order = np.argsort(key, axis=1, kind="stable")
    rank = np.empty(key.shape, dtype=np.int64)
    np.put_along_axis(rank, order, np.arange(1, key.shape[1] + 1)[None, :], axis=1)
    out = np.empty_like(rank)
    out[:, by_name] = rank
    return np.where(eligible, out, 0)


def _members(rank: np.ndarray, top_n: int | None) -> np.ndarray:
    return (rank >= 1) if top_n is None else (rank >= 1) & (rank <= top_n)
