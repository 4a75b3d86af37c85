"""Canonical column layouts of the raw market-data frames.

Every source (Binance archive, Binance REST, synthetic) returns frames with exactly these
columns and dtypes, so the assets downstream never know where the data came from.
Timestamps are naive ``Datetime("us")`` holding UTC wall time (see DESIGN.md, Time).
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us")

KLINE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts_open": TS,
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "quote_volume": pl.Float64(),
    "trade_count": pl.Int64(),
    "taker_buy_volume": pl.Float64(),
    "taker_buy_quote_volume": pl.Float64(),
}

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,  # calc_time / fundingTime: when the rate is fixed and published
    "funding_interval_hours": pl.Int32(),  # null where the source does not say (REST)
    "funding_rate": pl.Float64(),
    "mark_price": pl.Float64(),  # null where the source does not say (archive)
}

OPEN_INTEREST_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": TS,  # create_time: when the 5-minute snapshot was published
    "open_interest": pl.Float64(),  # contracts (base asset units)
    "open_interest_value": pl.Float64(),  # quote units
    "toptrader_ls_ratio_count": pl.Float64(),
    "toptrader_ls_ratio_sum": pl.Float64(),
    "ls_ratio_count": pl.Float64(),
    "taker_ls_vol_ratio": pl.Float64(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line_no": pl.Int64(),  # 1-based line in the CSV (header counts), null when not a row
    "reason": pl.String(),
    "raw_line": pl.String(),
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame with the given canonical layout."""
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema`` (missing nullable columns become null)."""
    cols = []
    for name, dtype in schema.items():
        if name in frame.columns:
            cols.append(pl.col(name).cast(dtype))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(cols)
