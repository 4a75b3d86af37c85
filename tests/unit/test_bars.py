"""Canonical bars: literal 1m rows with the expected resampled bars written beside them."""

import datetime as dt

import polars as pl
import pytest

from backtest_assets.core import bars
from backtest_assets.core.frames import KLINE_SCHEMA, conform

T0 = dt.datetime(2024, 1, 1)


def klines(rows):
    """rows: (minute, open, high, low, close, volume, taker_buy_volume)."""
    return conform(pl.DataFrame(
        [{"symbol": "BTCUSDT", "ts_open": T0 + dt.timedelta(minutes=m), "open": o, "high": h,
          "low": lo, "close": c, "volume": v, "quote_volume": v * c, "trade_count": 2,
          "taker_buy_volume": tb, "taker_buy_quote_volume": tb * c}
         for m, o, h, lo, c, v, tb in rows]), KLINE_SCHEMA)


ONE_MINUTE = klines([
    # minute open   high   low    close  volume taker_buy
    (0,      100.0, 101.0, 99.0,  100.5, 1.0,   0.6),   # bucket 00:00
    (1,      100.5, 102.0, 100.0, 101.5, 2.0,   1.5),
    (2,      101.5, 101.6, 98.0,  99.0,  3.0,   0.5),
    (3,      99.0,  99.5,  98.5,  99.2,  1.0,   0.5),
    (4,      99.2,  100.0, 99.1,  99.8,  1.0,   0.4),
    (5,      99.8,  100.2, 99.7,  100.1, 0.5,   0.2),   # bucket 00:05, minutes 6-9 missing
    (12,     100.0, 100.3, 99.9,  100.2, 4.0,   3.0),   # bucket 00:10, 10-11 and 13-14 missing
    # 00:15 bucket entirely missing: no row, never filled
    (20,     100.2, 100.4, 100.1, 100.3, 1.0,   0.5),   # bucket 00:20
])

EXPECTED_5M = [
    # ts_open  open   high   low   close  volume taker_buy n_source_bars
    ("00:00", 100.0, 102.0, 98.0, 99.8,  8.0,   3.5,      5),
    ("00:05", 99.8,  100.2, 99.7, 100.1, 0.5,   0.2,      1),
    ("00:10", 100.0, 100.3, 99.9, 100.2, 4.0,   3.0,      1),
    ("00:20", 100.2, 100.4, 100.1, 100.3, 1.0,  0.5,      1),
]


def test_resample_5m_matches_hand_computed_bars():
    out = bars.resample(bars.bars_1m(ONE_MINUTE, "perp"), 5)
    assert list(out.schema.items()) == list(bars.BAR_SCHEMA.items())
    got = [(r["ts_open"].strftime("%H:%M"), r["open"], r["high"], r["low"], r["close"],
            r["volume"], r["taker_buy_volume"], r["n_source_bars"]) for r in out.to_dicts()]
    assert got == EXPECTED_5M
    assert (out["ts_close"] - out["ts_open"]).unique().to_list() == [dt.timedelta(minutes=5)]
    assert out["market"].unique().to_list() == ["perp"]


def test_resample_15m_counts_source_bars_and_keeps_partial_bucket():
    out = bars.resample(bars.bars_1m(ONE_MINUTE, "perp"), 15)
    assert out["ts_open"].dt.strftime("%H:%M").to_list() == ["00:00", "00:15"]
    assert out["n_source_bars"].to_list() == [7, 1]
    first = out.row(0, named=True)
    assert (first["open"], first["high"], first["low"], first["close"]) == \
        (100.0, 102.0, 98.0, 100.2)
    assert first["volume"] == pytest.approx(12.5)
    assert first["trade_count"] == 14


def test_bars_1m_labels_and_markets_are_kept_apart():
    perp = bars.bars_1m(ONE_MINUTE, "perp")
    spot = bars.bars_1m(ONE_MINUTE.with_columns(pl.col("close") * 0.999), "spot")
    both = bars.resample(pl.concat([spot, perp]), 5)
    assert both.group_by("market").len().sort("market")["len"].to_list() == [4, 4]
    assert perp["n_source_bars"].unique().to_list() == [1]
    assert (perp["ts_close"] == perp["ts_open"] + dt.timedelta(minutes=1)).all()


def test_resample_is_independent_of_input_order():
    shuffled = bars.bars_1m(ONE_MINUTE, "perp").sample(fraction=1.0, shuffle=True, seed=3)
    assert bars.resample(shuffled, 5).equals(bars.resample(bars.bars_1m(ONE_MINUTE, "perp"), 5))


def test_day_coverage_counts_gaps_and_misaligned_rows():
    b = bars.bars_1m(ONE_MINUTE, "perp")
    cov = bars.day_coverage(b, time_col="ts_open", group_cols=["symbol"], slot_minutes=1)
    assert cov.row(0, named=True) == {"symbol": "BTCUSDT", "date": dt.date(2024, 1, 1),
                                      "rows": 8, "misaligned": 0, "expected": 1440,
                                      "missing": 1432}
    shifted = b.with_columns(pl.col("ts_open") + dt.timedelta(seconds=30))
    cov = bars.day_coverage(shifted, time_col="ts_open", group_cols=["symbol"], slot_minutes=1)
    assert cov["misaligned"].to_list() == [8]
