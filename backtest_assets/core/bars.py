"""Canonical bars from 1-minute klines (pure polars; no Dagster).

Conventions (DESIGN.md, Time): a bar is labelled by ``ts_open`` (naive UTC) and
``ts_close = ts_open + interval``; its values are known at ``ts_close``. An N-minute bar
buckets 1m bars by ``floor(ts_open, N)``: open first, high max, low min, close last,
volumes summed. ``n_source_bars`` counts the 1m bars behind it, so a bucket missing minutes
is kept and flagged (``n_source_bars < N``), never filled; a bucket with no 1m bar at all has
no row.

Mark price beside last (perp rows): ``mark_open/high/low/close`` are the mark price kline of
the minute (null where the minute has no mark kline, and on every spot row), and
``n_mark_bars`` counts the 1m bars behind the bar that have a mark (perp: 0 to
``n_source_bars``; spot: null). A mark minute without a last-price minute has no bar, so it
is dropped. Resampling takes the mark's first open, max high, min low and last close over
the minutes that have one (null if none) and sums ``n_mark_bars``: a perp bar with
``n_mark_bars < n_source_bars`` has marks missing (its mark open/close are then those of
the first/last minute with a mark), and a study applies its own missing-mark policy.

Input contract: ``klines`` (and ``mark``) in ``KLINE_SCHEMA`` with unique, increasing
``ts_open`` per symbol. Output contract: ``BAR_SCHEMA`` sorted by
``(symbol, market, ts_open)``.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from backtest_assets.core.frames import KLINE_SCHEMA, TS

BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "market": pl.String(),
    "ts_open": TS,
    "ts_close": TS,
    **{k: v for k, v in KLINE_SCHEMA.items() if k not in ("symbol", "ts_open")},
    "n_source_bars": pl.Int32(),
    "mark_open": pl.Float64(),
    "mark_high": pl.Float64(),
    "mark_low": pl.Float64(),
    "mark_close": pl.Float64(),
    "n_mark_bars": pl.Int32(),
}
SORT_KEYS = ["symbol", "market", "ts_open"]
MARK_COLS = ["mark_open", "mark_high", "mark_low", "mark_close"]
# Columns the bars gained after warehouses held them (the mark, issue 18): an older bars table
# gains them on its next write (``warehouse.ADDED_COLUMNS``), null in the rows it keeps.
ADDED_COLUMNS = (*MARK_COLS, "n_mark_bars")
_SUMMED = ["volume", "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume"]


def bars_1m(klines: pl.DataFrame, market: str, mark: pl.DataFrame | None = None
            ) -> pl.DataFrame:
    """1-minute canonical bars of one market from raw klines, with the perp's ``mark``
    klines beside them (none given: no minute has a mark)."""
    if market == "perp":
        marks = (mark if mark is not None else pl.DataFrame(schema=KLINE_SCHEMA)).select(
            "symbol", "ts_open", *[pl.col(c[5:]).alias(c) for c in MARK_COLS])
        with_mark = klines.join(marks, on=["symbol", "ts_open"], how="left")
        n_mark = pl.col("mark_close").is_not_null().cast(pl.Int32)
    else:
        with_mark = klines.with_columns(pl.lit(None, pl.Float64).alias(c) for c in MARK_COLS)
        n_mark = pl.lit(None, pl.Int32)
    return (
        with_mark.with_columns(
            market=pl.lit(market),
            ts_close=pl.col("ts_open") + dt.timedelta(minutes=1),
            n_source_bars=pl.lit(1, pl.Int32),
            n_mark_bars=n_mark,
        )
        .select(BAR_SCHEMA.keys())
        .sort(SORT_KEYS)
    )


def resample(bars: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """Bucket 1-minute ``bars`` into ``minutes``-minute bars (see module docstring)."""
    width = dt.timedelta(minutes=minutes)
    return (
        bars.sort(SORT_KEYS)
        .with_columns(pl.col("ts_open").dt.truncate(f"{minutes}m").alias("_bucket"))
        .group_by(["symbol", "market", "_bucket"], maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            *[pl.col(c).sum() for c in _SUMMED],
            pl.col("n_source_bars").sum().cast(pl.Int32),
            pl.col("mark_open").drop_nulls().first(),
            pl.col("mark_high").max(),
            pl.col("mark_low").min(),
            pl.col("mark_close").drop_nulls().last(),
            # null (spot) stays null; a perp bucket counts its minutes with a mark
            pl.when(pl.col("n_mark_bars").count() > 0)
            .then(pl.col("n_mark_bars").sum()).cast(pl.Int32).alias("n_mark_bars"),
        )
        .rename({"_bucket": "ts_open"})
        .with_columns(ts_close=pl.col("ts_open") + width)
        .select(BAR_SCHEMA.keys())
    )


def day_coverage(frame: pl.DataFrame, *, time_col: str, group_cols: list[str],
                 slot_minutes: int) -> pl.DataFrame:
    """Rows, expected slots and missing slots per group and UTC day.

    ``expected`` is the number of ``slot_minutes`` slots in a day; ``misaligned`` counts rows
    whose time is not on the slot grid (a bug or bad input, never a gap).
    """
    per_day = 24 * 60 // slot_minutes
    return (
        frame.group_by([*group_cols, pl.col(time_col).dt.date().alias("date")])
        .agg(
            pl.len().alias("rows"),
            (pl.col(time_col).dt.truncate(f"{slot_minutes}m") != pl.col(time_col))
            .sum().alias("misaligned"),
        )
        .with_columns(expected=pl.lit(per_day, pl.UInt32))
        .with_columns(missing=(pl.col("expected").cast(pl.Int64) - pl.col("rows").cast(pl.Int64)))
        .sort([*group_cols, "date"])
    )
