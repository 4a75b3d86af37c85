"""Canonical bars from 1-minute klines (pure polars; no Dagster).

Conventions (DESIGN.md, Time): a bar is labelled by ``ts_open`` (naive UTC) and
``ts_close = ts_open + interval``; its values are known at ``ts_close``. An N-minute bar
buckets 1m bars by ``floor(ts_open, N)``: open first, high max, low min, close last,
volumes summed. ``n_source_bars`` counts the 1m bars behind it, so a bucket missing minutes
is kept and flagged (``n_source_bars < N``), never filled; a bucket with no 1m bar at all has
no row.

Input contract: ``klines`` in ``KLINE_SCHEMA`` with unique, increasing ``ts_open`` per
symbol. Output contract: ``BAR_SCHEMA`` sorted by ``(symbol, market, ts_open)``.
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
}
SORT_KEYS = ["symbol", "market", "ts_open"]
_SUMMED = ["volume", "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume"]


def bars_1m(klines: pl.DataFrame, market: str) -> pl.DataFrame:
    """1-minute canonical bars of one market from raw klines."""
    return (
        klines.with_columns(
            market=pl.lit(market),
            ts_close=pl.col("ts_open") + dt.timedelta(minutes=1),
            n_source_bars=pl.lit(1, pl.Int32),
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
