"""Pandera models (``pandera.polars``) of the market-data frames, one per asset.

Columns and dtypes come from :mod:`backtest_assets.core.frames`, so a layout is written once.
Value checks carry the name of the asset check they feed (``positive_prices``,
``non_negative_volumes``, ``ohlc_sanity``); everything else a model finds (missing or extra
columns, dtypes, nulls) reports under ``schema``. The bars' mark price columns report under
the same names (``positive_prices`` where present; ``ohlc_sanity`` for their order and for
their presence agreeing with ``market`` and ``n_mark_bars``).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from backtest_assets.core.bars import BAR_SCHEMA
from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA

PRICE_COLS = ("open", "high", "low", "close")
VOLUME_COLS = ("volume", "quote_volume", "trade_count", "taker_buy_volume",
               "taker_buy_quote_volume")


def _ohlc_ok(data: pa.PolarsData) -> pl.LazyFrame:
    o, h, lo, c = (pl.col(x) for x in PRICE_COLS)
    return data.lazyframe.select(
        (lo <= o) & (lo <= c) & (o <= h) & (c <= h)
        & (pl.col("taker_buy_volume") <= pl.col("volume"))
    )


def _named(name: str, predicate) -> pa.Check:
    """A column check reported under ``name`` (pandera labels built-ins by their own name)."""
    return pa.Check(lambda d: d.lazyframe.select(predicate(pl.col(d.key))), name=name)


def _columns(schema: dict[str, pl.DataType], nullable: frozenset[str] = frozenset()
             ) -> dict[str, pa.Column]:
    cols = {}
    for name, dtype in schema.items():
        checks = []
        if name in PRICE_COLS:
            checks.append(_named("positive_prices", lambda c: c > 0))
        elif name in VOLUME_COLS:
            checks.append(_named("non_negative_volumes", lambda c: c >= 0))
        cols[name] = pa.Column(dtype, checks=checks, nullable=name in nullable)
    return cols


# low <= open, close <= high, and taker_buy_volume <= volume
_OHLC = pa.Check(_ohlc_ok, name="ohlc_sanity")

RAW_KLINES = pa.DataFrameSchema(_columns(KLINE_SCHEMA), checks=[_OHLC], strict=True,
                                name="raw_klines_1m")
# The premium index is a signed rate, not a price: no positive_prices, the rest as klines.
RAW_PREMIUM_KLINES = pa.DataFrameSchema(
    {**_columns(KLINE_SCHEMA), **{c: pa.Column(pl.Float64) for c in PRICE_COLS}},
    checks=[_OHLC], strict=True, name="raw_premium_index_klines_1m")

MARK_COLS = ("mark_open", "mark_high", "mark_low", "mark_close")


def _mark_ok(data: pa.PolarsData) -> pl.LazyFrame:
    """Mark OHLC ordered where present; on perp rows present iff ``0 < n_mark_bars`` (which is
    at most ``n_source_bars``); absent on spot rows, with ``n_mark_bars`` null."""
    o, h, lo, c = (pl.col(x) for x in MARK_COLS)
    n = pl.col("n_mark_bars")
    present = pl.all_horizontal(pl.col(x).is_not_null() for x in MARK_COLS)
    absent = pl.all_horizontal(pl.col(x).is_null() for x in MARK_COLS)
    ordered = ((lo <= o) & (lo <= c) & (o <= h) & (c <= h)).fill_null(True)
    perp_ok = n.is_not_null() & (n <= pl.col("n_source_bars")) & pl.when(n > 0).then(
        present).otherwise(absent)
    return data.lazyframe.select(
        ordered & pl.when(pl.col("market") == "perp").then(perp_ok)
        .otherwise(n.is_null() & absent).fill_null(False))


BARS = pa.DataFrameSchema(
    {**_columns(BAR_SCHEMA),
     "market": pa.Column(pl.String, pa.Check.isin(["perp", "spot"])),
     "n_source_bars": pa.Column(pl.Int32, pa.Check.ge(1)),
     **{c: pa.Column(pl.Float64, _named("positive_prices", lambda c: (c > 0).fill_null(True)),
                     nullable=True) for c in MARK_COLS},
     "n_mark_bars": pa.Column(pl.Int32, pa.Check.ge(0), nullable=True)},
    checks=[_OHLC, pa.Check(_mark_ok, name="ohlc_sanity"), pa.Check(
        lambda d: d.lazyframe.select(pl.col("ts_close") > pl.col("ts_open")),
        name="ts_close_after_ts_open")],
    strict=True, name="bars",
)

RAW_FUNDING = pa.DataFrameSchema(
    {**_columns(FUNDING_SCHEMA, frozenset({"funding_interval_hours", "mark_price"})),
     "funding_rate": pa.Column(pl.Float64, pa.Check.in_range(-0.05, 0.05)),
     "funding_interval_hours": pa.Column(pl.Int32, pa.Check.isin([1, 2, 4, 8]),
                                         nullable=True)},
    strict=True, name="raw_funding_rates",
)

_OI_NULLABLE = frozenset({"toptrader_ls_ratio_count", "toptrader_ls_ratio_sum",
                          "ls_ratio_count", "taker_ls_vol_ratio"})
RAW_OPEN_INTEREST = pa.DataFrameSchema(
    {**_columns(OPEN_INTEREST_SCHEMA, _OI_NULLABLE),
     **{c: pa.Column(pl.Float64, _named("non_negative_volumes", lambda c: c >= 0))
        for c in ("open_interest", "open_interest_value")}},
    strict=True, name="raw_open_interest",
)


# ---- research frames ---------------------------------------------------------------------

def _finite(data: pa.PolarsData) -> pl.LazyFrame:
    floats = [c for c, t in data.lazyframe.collect_schema().items() if t == pl.Float64]
    return data.lazyframe.select(
        pl.all_horizontal([pl.col(c).is_finite().fill_null(True) for c in floats] or [True]))


_KEYS = {"symbol": pa.Column(pl.String), "ts_open": pa.Column(pl.Datetime("us"))}


def features_model(names: list[str]) -> pa.DataFrameSchema:
    """pit_features: keys, ts_close, one nullable Float64 per feature spec; no inf values."""
    return pa.DataFrameSchema(
        {**_KEYS, "ts_close": pa.Column(pl.Datetime("us")),
         **{n: pa.Column(pl.Float64, nullable=True) for n in names}},
        checks=[pa.Check(_finite, name="finite_values")], strict=True, ordered=True,
        name="pit_features")


def labels_model(names: list[str]) -> pa.DataFrameSchema:
    """forward_labels: keys and one nullable Float64 per horizon; no inf values."""
    return pa.DataFrameSchema(
        {**_KEYS, **{n: pa.Column(pl.Float64, nullable=True) for n in names}},
        checks=[pa.Check(_finite, name="finite_values")], strict=True, ordered=True,
        name="forward_labels")


def events_model(event_types: list[str], interval_minutes: int) -> pa.DataFrameSchema:
    """event_table: one row per event of a known type, known one bar after its label."""
    width = interval_minutes * 60_000_000  # microseconds
    return pa.DataFrameSchema(
        {"event_type": pa.Column(pl.String, pa.Check.isin(event_types)),
         "symbol": pa.Column(pl.String),
         "ts": pa.Column(pl.Datetime("us")),
         "ts_known": pa.Column(pl.Datetime("us")),
         "severity": pa.Column(pl.Float64, pa.Check.ge(0)),
         "direction": pa.Column(pl.Int8, pa.Check.isin([-1, 0, 1]))},
        checks=[pa.Check(lambda d: d.lazyframe.select(
            (pl.col("ts_known") - pl.col("ts")).dt.total_microseconds() == width),
            name="known_at_bar_close")],
        strict=True, name="event_table")
