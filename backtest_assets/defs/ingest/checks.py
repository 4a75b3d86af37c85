"""What each raw market-data frame must satisfy before it is written."""

from __future__ import annotations

from backtest_assets.schemas.checks import FrameContract
from backtest_assets.schemas.models import (
    RAW_FUNDING,
    RAW_KLINES,
    RAW_OPEN_INTEREST,
    RAW_PREMIUM_KLINES,
)

KLINES_CONTRACT = FrameContract(
    schema=RAW_KLINES, key_cols=("symbol", "ts_open"), time_col="ts_open",
    group_cols=("symbol",), slot_minutes=1,
)
# Premium index klines: a signed rate (no positive_prices), otherwise as klines.
PREMIUM_KLINES_CONTRACT = FrameContract(
    schema=RAW_PREMIUM_KLINES, key_cols=("symbol", "ts_open"), time_col="ts_open",
    group_cols=("symbol",), slot_minutes=1, value_checks=("non_negative_volumes", "ohlc_sanity"),
)
FUNDING_CONTRACT = FrameContract(
    schema=RAW_FUNDING, key_cols=("symbol", "ts"), time_col="ts", group_cols=("symbol",),
    slot_minutes=None, value_checks=(), max_rows_per_day=24,  # 1-hour funding at the most
    funding_prints=True,
)
OPEN_INTEREST_CONTRACT = FrameContract(
    schema=RAW_OPEN_INTEREST, key_cols=("symbol", "ts"), time_col="ts", group_cols=("symbol",),
    slot_minutes=5, value_checks=("non_negative_volumes",),
)
