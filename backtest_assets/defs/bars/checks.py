"""What each bar frame must satisfy, and the reconciliation of a bar with its 1m sources."""

from __future__ import annotations

import polars as pl

from backtest_assets.schemas.checks import CheckOutcome, FrameContract
from backtest_assets.schemas.models import BARS


def bars_contract(minutes: int) -> FrameContract:
    return FrameContract(
        schema=BARS, key_cols=("symbol", "market", "ts_open"), time_col="ts_open",
        group_cols=("symbol", "market"), slot_minutes=minutes,
    )


def source_bars_reconcile(bars: pl.DataFrame, source_1m: pl.DataFrame, minutes: int
                          ) -> CheckOutcome:
    """Per (symbol, market, day): sum of ``n_source_bars`` equals the 1m bars behind it, sum
    of ``n_mark_bars`` the 1m bars with a mark, and the day's highest mark high and lowest
    mark low are the 1m bars' (null alike where there is no mark)."""
    keys = ["symbol", "market", pl.col("ts_open").dt.date().alias("date")]
    marks = [pl.col("n_mark_bars").sum().alias("marks"), pl.col("mark_high").max(),
             pl.col("mark_low").min()]
    have = bars.group_by(keys).agg(pl.col("n_source_bars").sum().alias("in_bars"),
                                   pl.col("n_source_bars").max().alias("max_n"), *marks)
    want = source_1m.group_by(keys).agg(pl.len().alias("source_rows"), *marks)
    joined = have.join(want, on=["symbol", "market", "date"], how="full", coalesce=True,
                       suffix="_1m")
    bad = joined.filter(
        (pl.col("in_bars").fill_null(0) != pl.col("source_rows").fill_null(0))
        | (pl.col("max_n").fill_null(0) > minutes)
        | pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_1m"))
                            for c in ("marks", "mark_high", "mark_low"))
    )
    return CheckOutcome(
        name="source_bars_reconcile", passed=bad.is_empty(),
        metadata={"days": joined.height, "mismatched_days": bad.height},
        description="" if bad.is_empty() else
        f"{bad.height} day(s) where bars do not add up to their 1m sources: "
        f"{bad.sort('date').head(3).to_dicts()}",
    )
