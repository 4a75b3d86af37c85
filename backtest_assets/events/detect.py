"""Market events detected on point-in-time features (pure polars; no Dagster).

Input contract: ``features`` has ``symbol`` (String), ``ts_open`` and ``ts_close`` (naive UTC
``Datetime("us")``, ``ts_close = ts_open + interval``) and one Float64 column per feature, at
most one row per ``(symbol, ts_open)``; a missing bar has no row and a feature is null during
warm-up or when its window touches a missing bar. Every feature an :class:`EventSpec` reads
must be a column.

Output contract: :data:`EVENT_SCHEMA`, one row per event, sorted by ``(event_type, symbol,
ts)``. ``ts`` is the label (``ts_open``) of the bar t the event fires on and ``ts_known`` its
``ts_close``: the event uses only data known at the close of t and is acted on at the open of
t+1 (DESIGN.md, Labels and entries). ``severity`` is ``|severity_of|`` at t (null when that
feature is null) and ``direction`` the sign (-1/0/+1) of ``direction.sign_of`` at t, 0 when
that feature is 0 or null, or ``direction.fixed``.

Rules: a condition compares the feature of the bar ``lag`` intervals before t, found by time
(``ts_open - lag * interval``), so a missing bar makes it null; null (or NaN) never satisfies
a condition. ``all_of`` fires when every condition holds, ``any_of`` when one does. After an
event fires at t, the same event type cannot fire for the same symbol at bars with ``ts_open``
in ``(t, t + cooldown_bars * interval]``; a suppressed candidate does not restart that
cooldown, so the cooldown is a sequential pass over the (few) candidate bars.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import polars as pl

from backtest_assets.core.frames import TS
from backtest_assets.specs.models import Condition, EventSpec

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_type": pl.String(),
    "symbol": pl.String(),
    "ts": TS,
    "ts_known": TS,
    "severity": pl.Float64(),
    "direction": pl.Int8(),
}
SORT_KEYS = ["event_type", "symbol", "ts"]
_DAY = dt.timedelta(days=1)
_US = dt.timedelta(microseconds=1)


def detect_events(features: pl.DataFrame, specs: Sequence[EventSpec], *, interval_minutes: int,
                  start: dt.datetime | None = None, end: dt.datetime | None = None
                  ) -> pl.DataFrame:
    """Events of every spec in ``features`` (see the module docstring for the rules).

    Parameters
    ----------
    features
        Point-in-time features in the input contract of this module.
    specs
        The event types to detect.
    interval_minutes
        The base bar interval: the unit of ``lag`` and ``cooldown_bars``.
    start, end
        When given, only events with ``start <= ts < end`` are returned (naive UTC). The
        cooldown state still runs from the first row of ``features``, so an event before
        ``start`` can suppress one after it.

    Returns
    -------
    pl.DataFrame
        Exactly :data:`EVENT_SCHEMA`, sorted by ``(event_type, symbol, ts)``.
    """
    interval = dt.timedelta(minutes=interval_minutes)
    features = _prepared(features)
    found = []
    for spec in specs:
        cand = _candidates(features, spec, interval)
        keep = _cooldown_mask(cand.select(pl.col("symbol").rle_id()).to_series(), cand["ts"],
                              spec.cooldown_bars * interval)
        found.append(_as_events(cand.filter(keep), spec))
    events = _concat(found)
    if start is not None:
        events = events.filter(pl.col("ts") >= start)
    if end is not None:
        events = events.filter(pl.col("ts") < end)
    return events


def detect_events_by_day(features: pl.DataFrame, specs: Sequence[EventSpec], *,
                         interval_minutes: int, days: Sequence[dt.date]) -> pl.DataFrame:
    """Events of each UTC day in ``days``, each a function of that day's window only.

    Day d's events are those of :func:`detect_events` run on the rows of ``features`` with
    ``ts_open`` in ``[d - lookback, d + 1 day)``, restricted to ``[d, d + 1 day)``, where
    ``lookback`` is the largest ``spec.lookback_bars`` (lags plus cooldown) in base intervals
    rounded up to whole days. A lag that reaches before the window is null and the cooldown
    starts fresh at the window's start, so a day computed alone equals the same day computed
    in a batch of many days, whatever extra history ``features`` holds.

    Parameters
    ----------
    features
        Point-in-time features in the input contract of this module, covering the windows of
        ``days`` (rows outside them are ignored).
    specs
        The event types to detect.
    interval_minutes
        The base bar interval: the unit of ``lag`` and ``cooldown_bars``.
    days
        The UTC days to return events for (order and duplicates do not matter).

    Returns
    -------
    pl.DataFrame
        Exactly :data:`EVENT_SCHEMA`, sorted by ``(event_type, symbol, ts)``.
    """
    interval = dt.timedelta(minutes=interval_minutes)
    most = max((s.lookback_bars for s in specs), default=0)
    lookback_days = math.ceil(most * interval / _DAY)
    wanted = pl.Series(sorted(set(days)), dtype=pl.Date)
    features = _prepared(features)
    found = []
    for spec in specs:
        # A candidate at t belongs to the windows of days day(t) .. day(t) + lookback_days;
        # each (window, symbol) runs its own cooldown, and only the window's own day is kept.
        cand = (
            _candidates(features, spec, interval)
            .with_columns(pl.col("ts").dt.date().alias("_day"),
                          pl.int_ranges(0, lookback_days + 1).alias("_k"))
            .explode("_k")
            .with_columns((pl.col("_day") + pl.duration(days=pl.col("_k"))).alias("_window"))
            .filter(pl.col("_window").is_in(wanted.implode()))
        )
        window_start = pl.col("_window").cast(TS) - pl.duration(days=lookback_days)
        # Re-decide each candidate as if the window were all the data: a condition whose
        # lagged bar lies before the window's start sees null.
        in_window = [pl.col(f"_c{i}") & (pl.col("ts") - c.lag * interval >= window_start)
                     for i, c in enumerate(spec.conditions)]
        cand = (
            cand.filter(_detector(spec, in_window))
            .sort("_window", "symbol", "ts")
        )
        keep = _cooldown_mask(cand.select(pl.struct("_window", "symbol").rle_id()).to_series(),
                              cand["ts"], spec.cooldown_bars * interval)
        found.append(_as_events(cand.filter(keep & (cand["_day"] == cand["_window"])), spec))
    return _concat(found)


def _prepared(features: pl.DataFrame) -> pl.DataFrame:
    """``features`` sorted by ``(symbol, ts_open)``; duplicated bars are refused."""
    dupes = features.select(pl.struct("symbol", "ts_open").is_duplicated().sum()).item()
    if dupes:
        raise ValueError(f"features: {dupes} rows share a (symbol, ts_open) with another row")
    return features.sort("symbol", "ts_open")


def _condition(column: str, c: Condition) -> pl.Expr:
    """``c`` on ``column`` as a non-null boolean: null and NaN never satisfy it."""
    # polars orders NaN above every number, so NaN > threshold would hold without this.
    v = pl.col(column).fill_nan(None)
    held = {"gt": v > c.threshold, "lt": v < c.threshold,
            "abs_gt": v.abs() > c.threshold, "abs_lt": v.abs() < c.threshold}[c.op]
    return held.fill_null(False)


def _detector(spec: EventSpec, conditions: list[pl.Expr]) -> pl.Expr:
    if spec.detector == "all_of":
        return pl.all_horizontal(conditions)
    return pl.any_horizontal(conditions)


def _candidates(features: pl.DataFrame, spec: EventSpec, interval: dt.timedelta
                ) -> pl.DataFrame:
    """Bars where ``spec``'s detector holds, before the cooldown, sorted by (symbol, ts).

    Columns: symbol, ts, ts_known, severity, direction and ``_c{i}``, whether condition i
    holds (kept so that a window can re-decide the bar without the lagged conditions).
    """
    frame = features
    for feature, lag in sorted({(c.feature, c.lag) for c in spec.conditions if c.lag}):
        # The value of bar t - lag found by time: shift each bar's timestamp forward by the
        # lag and join, so a missing bar yields null instead of the bar before it.
        lagged = features.select(
            "symbol",
            pl.col("ts_open") + lag * interval,
            pl.col(feature).alias(_lag_column(feature, lag)),
        )
        frame = frame.join(lagged, on=["symbol", "ts_open"], how="left", maintain_order="left")
    held = [_condition(_lag_column(c.feature, c.lag) if c.lag else c.feature, c).alias(f"_c{i}")
            for i, c in enumerate(spec.conditions)]
    if spec.direction.sign_of is not None:
        direction = pl.col(spec.direction.sign_of).fill_nan(None).sign().fill_null(0)
    else:
        direction = pl.lit(spec.direction.fixed)
    return (
        frame.select(
            "symbol",
            pl.col("ts_open").alias("ts"),
            pl.col("ts_close").alias("ts_known"),
            pl.col(spec.severity_of).fill_nan(None).abs().cast(pl.Float64).alias("severity"),
            direction.cast(pl.Int8).alias("direction"),
            *held,
        )
        .filter(_detector(spec, [pl.col(f"_c{i}") for i in range(len(held))]))
    )


def _lag_column(feature: str, lag: int) -> str:
    return f"_lag{lag}_{feature}"


def _cooldown_mask(group: pl.Series, ts: pl.Series, cooldown: dt.timedelta) -> pl.Series:
    """Which candidates fire: the first of each group, then any beyond the last firing's
    cooldown. ``group`` is a run id over rows sorted by (group, ts)."""
    width = cooldown // _US
    keep: list[bool] = []
    last_group, last_fire = -1, 0
    for g, t in zip(group.to_list(), ts.dt.epoch("us").to_list(), strict=True):
        fires = g != last_group or t - last_fire > width
        if fires:
            last_group, last_fire = g, t
        keep.append(fires)
    return pl.Series(keep, dtype=pl.Boolean)


def _as_events(candidates: pl.DataFrame, spec: EventSpec) -> pl.DataFrame:
    return candidates.select(pl.lit(spec.name).alias("event_type"), *list(EVENT_SCHEMA)[1:])


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    return pl.concat(frames).select(
        pl.col(n).cast(t) for n, t in EVENT_SCHEMA.items()).sort(SORT_KEYS)
