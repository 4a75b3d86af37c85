"""Blueprints to engine inputs (pure numpy/polars; no Dagster).

Array contract
--------------
A :class:`Panel` holds bars on a regular grid: ``ts`` (T,) ``datetime64[us]`` bar open times
(naive UTC), ``symbols`` (S names, the column order) and open/high/low/close (T, S) float64,
all NaN where a symbol has no bar. ``targets`` returns the engine's (T, S) target: the
position as a fraction of equity decided at the close of bar t, filled at the open of t+1;
NaN keeps the previous target and only a change of target makes an order
(:mod:`backtest_assets.engine.core`).

Signals
-------
An event entry signals at the bars where an event of ``entry.event`` fires for the symbol,
with the event's direction d. A condition entry compares the feature as of ``lag`` bars ago
(v = feature[t - lag]) with the threshold (``gt`` v > thr, ``lt`` v < thr, ``abs_gt``
|v| > thr, ``abs_lt`` |v| < thr) and d = sign(v). NaN never signals, nor does d = 0.

Direction rule: ``continuation`` takes side +d, ``mean_reversion`` -d, ``long`` +1 and
``short`` -1; the target is ``target_weight * side``.

Hold rule (with ``time_stop_bars`` H): a signal at t sets target[t] = weight and
target[t+H] = 0 (when t+H < T); the symbol's signals at t+1 .. t+H are ignored, so the first
signal at or after t+H+1 starts the next position. Every other target is NaN. This is the
label convention: an event at t is entered at the open of t+1 and the engine's time stop
closes it at the open of t+1+H, where the target 0 would also fill. Without a time stop every
signal bar gets its weight and the position is held until a stop / take-profit or a signal
of the other side; as the engine keeps a symbol flat after an exit until its target
changes, a repeated same-side signal does not re-enter after a stop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.discovery.phase2 import POOLED
from backtest_assets.engine import ExitRules
from backtest_assets.specs.models import Entry, Exits, StrategySpec

PRICES = ("open", "high", "low", "close")
EXTRAS = ("mark_open", "mark_high", "mark_low", "volume")  # optional bar columns
NAME_MAX = 48  # models._NAME: [a-z][a-z0-9_]{0,47}
_FOLLOW = {"continuation": 1.0, "mean_reversion": -1.0}
_FIXED = {"long": 1.0, "short": -1.0}
# Stop-losses a Phase-2 survivor's walk-forward grid tries (from_survivor).
SURVIVOR_STOPS = (0.01, 0.02, 0.04)
# A survivor's leverage setting over its gross weight (from_survivor): its isolated positions
# post notional / leverage, and a setting equal to the gross weight would ask for the whole
# equity plus the slippage as margin, which the engine refuses (insufficient_margin).
SURVIVOR_LEVERAGE_HEADROOM = 2.0


def _naive_utc(d: dt.datetime) -> dt.datetime:
    return d if d.tzinfo is None else d.astimezone(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Panel:
    """Bars of S symbols on a regular grid of T bar open times (module docstring).

    ``interval_minutes`` is the grid step; every other frame is placed on this grid.
    """

    ts: np.ndarray
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    interval_minutes: int
    # Mark open/high/low and base volume, where the bars carry them (NaN where a bar has
    # none); None when the bars have no such column.
    mark_open: np.ndarray | None = None
    mark_high: np.ndarray | None = None
    mark_low: np.ndarray | None = None
    volume: np.ndarray | None = None
    # Bars with a price but no mark that run on the last price instead (with_mark_policy)
    mark_fallback: int = 0

    def __post_init__(self) -> None:
        shape = (len(self.ts), len(self.symbols))
        if not shape[0] or not shape[1]:
            raise ValueError(f"panel: needs at least one bar and one symbol, got {shape}")
        for name in PRICES + EXTRAS:
            a = getattr(self, name)
            if a is not None and a.shape != shape:
                raise ValueError(f"panel: {name} has shape {a.shape}, expected {shape}")

    @classmethod
    def from_bars(cls, bars: pl.DataFrame, symbols: Sequence[str], start: dt.datetime,
                  end: dt.datetime, interval_minutes: int) -> Panel:
        """Place long-format bars on the grid ``start, start + interval, ...`` before ``end``.

        Parameters
        ----------
        bars : pl.DataFrame
            ``symbol``, ``ts_open`` (naive UTC Datetime), ``open``, ``high``, ``low``,
            ``close``. Rows outside ``[start, end)`` or of other symbols are dropped.
        symbols : sequence of str
            The panel's columns, in order.
        start, end : datetime
            The window, ``start`` inclusive, ``end`` exclusive (naive UTC).
        interval_minutes : int
            Grid step.

        Returns
        -------
        Panel
            NaN prices where a symbol has no bar.

        Raises
        ------
        ValueError
            Naming the frame, symbol and timestamp: a duplicated ``(symbol, ts_open)``, a
            ``ts_open`` off the grid, a symbol's rows not sorted by ``ts_open`` (as given),
            or a symbol without any bar in the window.
        """
        start, end = _naive_utc(start), _naive_utc(end)
        if interval_minutes < 1 or end <= start:
            raise ValueError(f"bars: empty grid [{start}, {end}) every {interval_minutes} min")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"bars: duplicated symbol in {list(symbols)}")
        n = -(-(end - start) // dt.timedelta(minutes=interval_minutes))
        ts = np.datetime64(start, "us") + np.arange(n) * np.timedelta64(interval_minutes, "m")
        nan = [np.full((n, len(symbols)), np.nan) for _ in PRICES]
        panel = cls(ts, tuple(symbols), *nan, interval_minutes=interval_minutes)
        frame, rows, cols = panel._cells(bars, "bars", "ts_open", check_order=True)
        absent = [s for s in symbols if s not in set(frame["symbol"])]
        if absent:
            raise ValueError(f"bars: {absent[0]} has no bar in [{start}, {end})")
        for name in PRICES:
            getattr(panel, name)[rows, cols] = frame[name].cast(pl.Float64).to_numpy()
        extra = {}
        for name in EXTRAS:
            if name in frame.columns:
                extra[name] = np.full((n, len(symbols)), np.nan)
                extra[name][rows, cols] = frame[name].cast(pl.Float64).fill_null(
                    np.nan).to_numpy()
        return dataclasses.replace(panel, **extra) if extra else panel

    def with_mark_policy(self, policy: str) -> Panel:
        """This panel with every bar that has a price also having a mark: unchanged when it
        does (or when the bars carry no mark column), else by the study's ``policy``:
        ``"refuse"`` raises, ``"last"`` marks those bars with their own open/high/low and
        counts them in ``mark_fallback``.

        Raises
        ------
        ValueError
            ``policy`` "refuse" and a bar without its mark, naming the symbol, the first
            such bar's time and how many there are.
        """
        if self.mark_open is None:
            return self
        missing = ~np.isnan(self.open) & (np.isnan(self.mark_open) | np.isnan(self.mark_high)
                                          | np.isnan(self.mark_low))
        n = int(missing.sum())
        if not n:
            return self
        if policy != "last":
            t, s = np.argwhere(missing)[0]
            per = int(missing[:, s].sum())
            raise ValueError(
                f"{self.symbols[s]}: {per} bar(s) with a price but no mark price, the first "
                f"at {self.ts[t].astype('datetime64[us]').item()} (the study's missing_marks "
                "is 'refuse': ingest the mark price klines, or set missing_marks: last to run "
                "those bars on the last price, counted in mark_fallback_bars)")
        fill = {m: np.where(missing, getattr(self, p), getattr(self, m))
                for m, p in (("mark_open", "open"), ("mark_high", "high"), ("mark_low", "low"))}
        return dataclasses.replace(self, **fill, mark_fallback=n)

    def rows(self, start: int, end: int) -> Panel:
        """The bars ``start .. end - 1`` as a panel of their own (a fold's window)."""
        if not 0 <= start < end <= len(self.ts):
            raise ValueError(f"panel: rows [{start}, {end}) outside [0, {len(self.ts)})")
        extra = {n: getattr(self, n)[start:end] for n in EXTRAS
                 if getattr(self, n) is not None}
        return Panel(self.ts[start:end], self.symbols,
                     *(getattr(self, p)[start:end] for p in PRICES),
                     interval_minutes=self.interval_minutes, **extra,
                     mark_fallback=self.mark_fallback)

    def _window(self) -> tuple[dt.datetime, dt.datetime, int]:
        """Start, end (exclusive) and step in microseconds."""
        step_us = self.interval_minutes * 60_000_000
        start = self.ts[0].astype("datetime64[us]").item()
        return start, start + dt.timedelta(microseconds=step_us * len(self.ts)), step_us

    def _cells(self, frame: pl.DataFrame, name: str, ts_col: str, *,
               check_order: bool = False) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """The rows of ``frame`` on the panel's symbols and window, their bar and column."""
        start, end, step_us = self._window()
        ts = pl.col(ts_col)
        f = (frame.with_columns(pl.col("symbol").cast(pl.String), ts.cast(pl.Datetime("us")))
             .filter(pl.col("symbol").is_in(self.symbols) & (ts >= start) & (ts < end)))
        offset = (ts - start).dt.total_microseconds()
        checks = [(pl.struct("symbol", ts_col).is_duplicated(), "duplicated (symbol, {c}) "
                   "{s} {t}"),
                  (offset % step_us != 0, "{s} {c} {t} is not on the grid of "
                   f"{self.interval_minutes} minutes from {start}")]
        if check_order:
            checks.append((ts < ts.shift(1).over("symbol"),
                           "{s} rows are not sorted by {c}: {t} follows a later bar"))
        for bad, message in checks:
            hit = f.filter(bad)
            if hit.height:
                r = hit.row(0, named=True)
                raise ValueError(f"{name}: " + message.format(s=r["symbol"], c=ts_col,
                                                              t=r[ts_col]))
        rows = f.select(offset // step_us).to_series().to_numpy()
        return f, rows, self._columns(f["symbol"])

    def _columns(self, symbol: pl.Series) -> np.ndarray:
        return symbol.replace_strict(list(self.symbols), list(range(len(self.symbols))),
                                     return_dtype=pl.Int64).to_numpy()

    def column(self, frame: pl.DataFrame, value: str, *, ts_col: str = "ts_open") -> np.ndarray:
        """Pivot a long frame (``symbol``, ``ts_col``, ``value``) onto the grid.

        Parameters
        ----------
        frame : pl.DataFrame
            One row per (symbol, bar); symbols outside the panel and rows outside the window
            are ignored.
        value : str
            The column to pivot (it names the frame in errors).
        ts_col : str
            The bar's open time column.

        Returns
        -------
        np.ndarray
            (T, S) float64, NaN where the frame has no row.

        Raises
        ------
        ValueError
            A duplicated (symbol, ts) or a ts off the grid, naming symbol and ts.
        """
        return self._pivot(frame, value, value, ts_col)

    def _pivot(self, frame: pl.DataFrame, value: str, name: str, ts_col: str) -> np.ndarray:
        f, rows, cols = self._cells(frame, name, ts_col)
        out = np.full(self.open.shape, np.nan)
        out[rows, cols] = f[value].cast(pl.Float64).to_numpy()
        return out

    def priced_spans(self) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """(symbol, open of its first bar with a price, close of its last) per symbol: where
        a position can be held, so where its funding prints are expected."""
        step = np.timedelta64(self.interval_minutes, "m")
        spans = []
        for s, symbol in enumerate(self.symbols):
            priced = np.flatnonzero(~np.isnan(self.open[:, s]))
            if priced.size:
                spans.append((symbol, self.ts[priced[0]].astype("datetime64[us]").item(),
                              (self.ts[priced[-1]] + step).astype("datetime64[us]").item()))
        return spans

    def funding(self, frame: pl.DataFrame) -> np.ndarray:
        """Funding rates on the bar at whose open each payment is exchanged.

        A payment at time τ goes to the first bar of its symbol with ``ts_open >= τ`` and a
        price (the engine cannot exchange funding on a bar without one). Rows with τ outside
        the window, or after the symbol's last bar, are dropped.

        Parameters
        ----------
        frame : pl.DataFrame
            ``symbol``, ``ts`` (naive UTC Datetime), ``funding_rate``.

        Returns
        -------
        np.ndarray
            (T, S) float64, NaN where no funding is exchanged.

        Raises
        ------
        ValueError
            A row for a symbol the panel does not trade, or two rates landing on one bar of
            a symbol (naming symbol and bar).
        """
        f = frame.with_columns(pl.col("symbol").cast(pl.String),
                               pl.col("ts").cast(pl.Datetime("us")))
        stray = f.filter(~pl.col("symbol").is_in(self.symbols))
        if stray.height:
            raise ValueError(f"funding: {stray['symbol'][0]} is not traded by this backtest "
                             f"(symbols: {', '.join(self.symbols)})")
        start, end, _ = self._window()
        f = f.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        tau, cols = f["ts"].to_numpy(), self._columns(f["symbol"])
        rows = np.empty(len(f), dtype=np.int64)
        for s in range(len(self.symbols)):  # per symbol, not per row
            priced = np.flatnonzero(~np.isnan(self.open[:, s]))
            mine = cols == s
            rows[mine] = np.append(priced, -1)[np.searchsorted(self.ts[priced], tau[mine])]
        keep = rows >= 0
        rows, cols, tau = rows[keep], cols[keep], tau[keep]
        _, first, counts = np.unique(rows * len(self.symbols) + cols, return_index=True,
                                     return_counts=True)
        if (counts > 1).any():
            k = first[np.argmax(counts > 1)]
            raise ValueError(f"funding: {self.symbols[cols[k]]} has two rates on the bar "
                             f"{self.ts[rows[k]].item()} (the first at {tau[k].item()})")
        out = np.full(self.open.shape, np.nan)
        out[rows, cols] = f["funding_rate"].cast(pl.Float64).to_numpy()[keep]
        return out


def targets(bp: StrategySpec, panel: Panel, features: Mapping[str, np.ndarray] | None,
            events: pl.DataFrame | None) -> np.ndarray:
    """The engine target of a blueprint on a panel (signal, direction and hold rules: module
    docstring).

    Parameters
    ----------
    bp : StrategySpec
        The blueprint; its symbols must be the panel's.
    panel : Panel
        Bars; its symbol order is the column order.
    features : mapping of str to np.ndarray or None
        Feature name -> (T, S) values aligned with the panel (NaN = unknown); read by a
        condition entry.
    events : pl.DataFrame or None
        ``event_type``, ``symbol``, ``ts`` (the event bar's ts_open), ``direction`` (+1/-1);
        read by an event entry (other event types are ignored).

    Returns
    -------
    np.ndarray
        (T, S) float64 targets; NaN = keep the previous target.

    Raises
    ------
    ValueError
        Symbols that differ from the panel's, a condition feature not among ``features``
        (or not (T, S)), an event entry without ``events``, an event off the grid.
    """
    missing = sorted(set(bp.symbols) - set(panel.symbols))
    extra = sorted(set(panel.symbols) - set(bp.symbols))
    if missing or extra:
        raise ValueError(f"{bp.name}: symbols differ from the panel's (missing from the "
                         f"panel: {missing}, not in the blueprint: {extra})")
    return shape_targets(bp, signals(bp, panel, features, events))


def shape_targets(bp: StrategySpec, d: np.ndarray) -> np.ndarray:
    """The target of ``bp`` from its (T, S) entry signal ``d`` (:func:`signals`): the
    direction and hold rules of the module docstring. A parameter sweep computes the signal
    once per entry and shapes it for every hold, weight and direction. An alpha entry is a
    book rebalanced at every bar: ``target_weight * side`` wherever it has a score, 0 (flat)
    where it has none (its signal is NaN there)."""
    if bp.entry.alpha is not None:
        side = d * _FOLLOW[bp.direction] if bp.direction in _FOLLOW else \
            np.abs(d) * _FIXED[bp.direction]
        return np.where(np.isnan(d), 0.0, bp.target_weight * side)
    side = (d * _FOLLOW[bp.direction] if bp.direction in _FOLLOW
            else np.abs(d) * _FIXED[bp.direction])
    weight = bp.target_weight * side
    out = np.full(d.shape, np.nan)
    hold = bp.exits.time_stop_bars
    if hold is None:
        out[side != 0] = weight[side != 0]
        return out
    for s in range(d.shape[1]):
        start = _hold_starts(np.flatnonzero(side[:, s]), hold)
        out[start, s] = weight[start, s]
        end = start + hold
        out[end[end < len(out)], s] = 0.0
    return out


def flat_start(target: np.ndarray) -> np.ndarray:
    """``target`` (in place) with every symbol flat at the first bar unless it enters there:
    a symbol without a signal in the window is deliberately flat (and pays no funding), not
    a misaligned column the engine refuses."""
    target[0, np.isnan(target[0])] = 0.0
    return target


def _hold_starts(signals: np.ndarray, hold: int) -> np.ndarray:
    """Signal bars that open a position: each skips the signals of the next ``hold`` bars."""
    starts, i = [], 0
    while i < len(signals):
        starts.append(signals[i])
        i = int(np.searchsorted(signals, signals[i] + hold + 1))
    return np.array(starts, dtype=np.int64)


def signals(bp: StrategySpec, panel: Panel, features: Mapping[str, np.ndarray] | None,
            events: pl.DataFrame | None) -> np.ndarray:
    """(T, S) direction d of the entry signal at each bar: +1, -1, or 0 for none (an alpha
    entry: a side in [-1, 1], NaN where the model has no score)."""
    if bp.entry.alpha is not None:
        return alpha_sides(bp, panel, features)
    if bp.entry.event is not None:
        if events is None:
            raise ValueError(f"{bp.name}: entry.event {bp.entry.event!r} needs the events "
                             "table, got None")
        mine = events.filter(pl.col("event_type") == bp.entry.event)
        d = panel._pivot(mine, "direction", f"{bp.name}: events", "ts")
        return np.sign(np.nan_to_num(d, nan=0.0))
    c = bp.entry.condition
    assert c is not None  # Entry.validate: exactly one of event and condition
    if features is None or c.feature not in features:
        raise ValueError(f"{bp.name}: entry.condition.feature {c.feature!r} is not among the "
                         f"features read ({sorted(features or {})})")
    f = np.asarray(features[c.feature], dtype=np.float64)
    if f.shape != panel.open.shape:
        raise ValueError(f"{bp.name}: feature {c.feature!r} has shape {f.shape}, expected "
                         f"{panel.open.shape}")
    v = np.full(f.shape, np.nan)
    if c.lag < len(f):
        v[c.lag:] = f[:len(f) - c.lag]
    x = np.abs(v) if c.op.startswith("abs") else v
    hit = x > c.threshold if c.op.endswith("gt") else x < c.threshold
    return np.where(hit, np.sign(v), 0.0)


def alpha_feature(model: str) -> str:
    """The features key under which an alpha model's gated scores reach a blueprint."""
    return f"alpha:{model}"


def alpha_sides(bp: StrategySpec, panel: Panel, features: Mapping[str, np.ndarray] | None
                ) -> np.ndarray:
    """(T, S) side of an alpha entry at each bar from the model's scores (known at the bar's
    close, out of sample): ``quantile`` +1 for the top ``quantile`` of the scored symbols
    (at least one), -1 for the bottom, 0 between; ``proportional`` the score's distance from
    the bar's mean over the largest distance; NaN where the symbol has no score, and the
    whole bar when fewer than 2 symbols have one. Sides are decided every
    ``rebalance_bars`` bars from the panel's first and held until the next decision."""
    a = bp.entry.alpha
    key = alpha_feature(a.model)
    if features is None or key not in features:
        raise ValueError(f"{bp.name}: entry.alpha reads the scores of {a.model!r}, which are "
                         f"not among the inputs ({sorted(features or {})}): materialize the "
                         "study's alpha bundle first")
    s = np.asarray(features[key], dtype=np.float64)
    if s.shape != panel.open.shape:
        raise ValueError(f"{bp.name}: scores of {a.model!r} have shape {s.shape}, expected "
                         f"{panel.open.shape}")
    ok = np.isfinite(s)
    n = ok.sum(axis=1)
    out = np.full(s.shape, np.nan)
    rows = np.flatnonzero(n >= 2)
    if a.mode == "proportional":
        mean = np.nanmean(np.where(ok, s, np.nan)[rows], axis=1, keepdims=True)
        dev = np.where(ok[rows], s[rows] - mean, np.nan)
        top = np.nanmax(np.abs(dev), axis=1, keepdims=True)
        out[rows] = np.where(top > 0, dev / np.where(top > 0, top, 1.0), 0.0)
        out[~ok] = np.nan
        return _held(out, a.rebalance_bars)
    # rank within the bar (ties: by column order, stable), NaN last
    order = np.argsort(np.where(ok, s, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :], axis=1)
    k = np.maximum(1, np.floor(a.quantile * n + 1e-9)).astype(int)[:, None]
    side = np.where(rank < k, -1.0, np.where(rank >= n[:, None] - k, 1.0, 0.0))
    out[rows] = side[rows]
    out[~ok] = np.nan
    return _held(out, a.rebalance_bars)


def _held(sides: np.ndarray, every: int) -> np.ndarray:
    """Each bar takes the sides of the last rebalance bar (0, every, 2 every, ...) at or
    before it: decided at that bar's close, so nothing later is read."""
    if every == 1:
        return sides
    return sides[np.arange(len(sides)) // every * every]


def exit_rules(bp: StrategySpec) -> ExitRules:
    """The engine's exit rules of a blueprint (time stop = ``exits.time_stop_bars``)."""
    e = bp.exits
    return ExitRules(stop_loss=e.stop_loss, take_profit=e.take_profit,
                     time_stop=e.time_stop_bars)


def spec_name(full: str) -> str:
    """``full`` if it fits the spec name length (48), else its first 41 characters (trailing
    ``_`` stripped), ``_`` and the first 6 hex characters of its sha256 (deterministic)."""
    if len(full) <= NAME_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:6]
    return f"{full[:NAME_MAX - 7].rstrip('_')}_{digest}"


def from_survivor(row: Mapping, *, universe_symbols: Sequence[str],
                  horizon_bars: Mapping[str, int], weight_budget: float = 1.0) -> StrategySpec:
    """The blueprint that trades a Phase-2 survivor.

    Parameters
    ----------
    row : mapping
        A survivor: ``hypothesis_id``, ``event_type``, ``rule_template``
        (continuation / mean_reversion), ``horizon`` (e.g. "15m"), ``symbol`` (or "ALL",
        pooled), ``n``, ``mean`` (a return; shown in bps), ``q``.
    universe_symbols : sequence of str
        The symbols a pooled survivor trades.
    horizon_bars : mapping of str to int
        Horizon -> bars, keyed ``"15m"`` or ``"fwd_ret_15m"`` (``SpecRegistry.label_bars``).
    weight_budget : float
        Gross weight shared equally by the symbols. The leverage setting is
        ``SURVIVOR_LEVERAGE_HEADROOM x max(1, budget)`` (2x for the default budget of 1): a
        venue-true isolated setting whose margin (notional / leverage) leaves room for the
        slippage, fees and price moves that a setting equal to the gross weight would not.

    Returns
    -------
    StrategySpec
        Named ``p2_<event_type>_<rule_template>_<horizon>_<symbol or all>`` (lower case,
        shortened by :func:`spec_name`), entering on the event, exiting after the horizon,
        validated. Its walk-forward grid (``SURVIVOR_GRID``) holds half, once and twice the
        horizon with three stop-losses: 9 combinations, the horizon Phase 2 tested among
        them.
    """
    event_type, template, horizon, symbol = (str(row[k]) for k in (
        "event_type", "rule_template", "horizon", "symbol"))
    bars = horizon_bars.get(horizon, horizon_bars.get(f"fwd_ret_{horizon}"))
    if bars is None:
        raise ValueError(f"horizon: {horizon!r} is not in horizon_bars {sorted(horizon_bars)}")
    pooled = symbol == POOLED
    symbols = tuple(universe_symbols) if pooled else (symbol,)
    bp = StrategySpec(
        name=spec_name(f"p2_{event_type}_{template}_{horizon}_"
                       f"{'all' if pooled else symbol.lower()}"),
        description=(f"Phase-2 survivor {row['hypothesis_id']}: {template} after "
                     f"{event_type} over {horizon} on {symbol} (n={row['n']}, "
                     f"mean={float(row['mean']) * 1e4:.1f} bps, q={float(row['q']):.3g})"),
        symbols=symbols,
        entry=Entry(event=event_type),
        direction=template,  # type: ignore[arg-type]
        target_weight=weight_budget / len(symbols),
        exits=Exits(time_stop_bars=int(bars)),
        venue=None,
        grid={"exits.time_stop_bars": tuple(float(b) for b in sorted(
                  {max(1, int(bars) // 2), int(bars), 2 * int(bars)})),
              "exits.stop_loss": SURVIVOR_STOPS},
        leverage=SURVIVOR_LEVERAGE_HEADROOM * max(1.0, weight_budget))
    bp.validate()
    bp.entry.validate()
    bp.exits.validate()
    if bp.direction not in _FOLLOW:
        raise ValueError(f"rule_template: {template!r} is not continuation or mean_reversion")
    return bp
