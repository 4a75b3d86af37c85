"""Canonical bars (perp and spot, ``market`` column) at 1m, 5m and 15m."""


import dagster as dg
import polars as pl

from backtest_assets.core import bars as core_bars
from backtest_assets.defs.bars.checks import bars_contract, source_bars_reconcile
from backtest_assets.defs.shared import LANDED, check_specs, checked_output, warehouse_asset
from backtest_assets.partitions import BARS_PARTITION_EXPR

_COMMON = warehouse_asset("bars", BARS_PARTITION_EXPR, automation_condition=LANDED)
_RECONCILE = ["source_bars_reconcile"]


@dg.asset(
    ins={"perp": dg.AssetIn("raw_perp_klines_1m"), "spot": dg.AssetIn("raw_spot_klines_1m"),
         "mark": dg.AssetIn("raw_mark_price_klines_1m")},
    check_specs=check_specs("bars_1m", bars_contract(1)),
    **_COMMON,
)
def bars_1m(context: dg.AssetExecutionContext, perp: pl.DataFrame, spot: pl.DataFrame,
            mark: pl.DataFrame):
    """1-minute bars of perp (mark OHLC beside last) and spot, labelled by ts_open (UTC)."""
    frame = pl.concat([core_bars.bars_1m(perp, "perp", mark), core_bars.bars_1m(spot, "spot")])
    frame = frame.sort(core_bars.SORT_KEYS)
    yield from checked_output(context, frame, frame, bars_contract(1),
                              metadata=_mark_metadata(frame))


def _mark_metadata(frame: pl.DataFrame) -> dict[str, int]:
    """Perp bars whose minutes all have a mark, and those missing some or all of them."""
    perp = frame.filter(pl.col("market") == "perp")
    short = perp.filter(pl.col("n_mark_bars") < pl.col("n_source_bars"))
    return {"perp_bars_missing_marks": short.height,
            "perp_bars_without_mark": int((short["n_mark_bars"] == 0).sum())}


def _resampled(context: dg.AssetExecutionContext, bars_1m: pl.DataFrame, minutes: int):
    frame = core_bars.resample(bars_1m, minutes)
    partial = int((frame["n_source_bars"] < minutes).sum())
    yield from checked_output(
        context, frame, frame, bars_contract(minutes),
        extra=[source_bars_reconcile(frame, bars_1m, minutes)],
        metadata={"partial_bars": partial, **_mark_metadata(frame)},
    )


@dg.asset(check_specs=check_specs("bars_5m", bars_contract(5), _RECONCILE), **_COMMON)
def bars_5m(context: dg.AssetExecutionContext, bars_1m: pl.DataFrame):
    """5-minute bars from 1m bars; n_source_bars < 5 flags a bucket with missing minutes."""
    yield from _resampled(context, bars_1m, 5)


@dg.asset(check_specs=check_specs("bars_15m", bars_contract(15), _RECONCILE), **_COMMON)
def bars_15m(context: dg.AssetExecutionContext, bars_1m: pl.DataFrame):
    """15-minute bars from 1m bars; n_source_bars < 15 flags a bucket with missing minutes."""
    yield from _resampled(context, bars_1m, 15)


defs = dg.Definitions(assets=[bars_1m, bars_5m, bars_15m])
