"""Collecting a range of source days: a file refused whole does not hide the next one."""

import datetime as dt

import polars as pl
import pytest

from backtest_assets.core.frames import KLINE_SCHEMA, empty
from backtest_assets.core.ingest import collect
from backtest_assets.sources.base import RawFileRecord, SourceBatch, SourceDataError
from backtest_assets.sources.synthetic import SyntheticSource

SRC = SyntheticSource(seed=3)
DAYS = [dt.date(2024, 1, d) for d in (2, 3, 4, 5)]
BAD = {DAYS[1]: "checksum", DAYS[3]: "corrupt zip"}


def rejecting(symbol, day):
    if day in BAD:
        exc = SourceDataError(f"{symbol} {day}: {BAD[day]}")
        exc.rejected = RawFileRecord(url=f"http://x/{day}.zip", path=f"raw/_rejected/{day}",
                                     sha256="ab" * 32, size=3, status="rejected",
                                     reason=f"SourceDataError: {BAD[day]}")
        raise exc
    return SRC.klines_1m("perp", symbol, day)


def test_every_rejected_file_of_a_range_is_collected_with_its_reason():
    got = collect("raw_perp_klines_1m", [(d, "BTCUSDT") for d in DAYS], rejecting, KLINE_SCHEMA)
    assert got.rejected.select("date", "status", "reason").rows() == [
        (DAYS[1], "rejected", "SourceDataError: checksum"),
        (DAYS[3], "rejected", "SourceDataError: corrupt zip")]
    assert got.errors == [f"SourceDataError: BTCUSDT {DAYS[1]}: checksum",
                          f"SourceDataError: BTCUSDT {DAYS[3]}: corrupt zip"]
    assert got.frame.height == 2 * 1440  # the good days were still read
    assert set(got.files["status"]) == {"generated"} and got.files["reason"].is_null().all()


def test_an_error_without_a_rejected_file_propagates():
    def failing(symbol, day):
        raise SourceDataError("network down")

    with pytest.raises(SourceDataError, match="network down"):
        collect("raw_perp_klines_1m", [(DAYS[0], "BTCUSDT")], failing, KLINE_SCHEMA)


def test_an_empty_day_is_listed_missing():
    def no_rows(symbol, day):
        record = RawFileRecord(url="u", path="raw/u", sha256="0" * 64, size=22, status="empty")
        return SourceBatch(frame=empty(KLINE_SCHEMA), files=[record], missing=True)

    got = collect("raw_perp_klines_1m", [(DAYS[0], "BTCUSDT")], no_rows, KLINE_SCHEMA)
    assert got.missing == [f"BTCUSDT {DAYS[0]}"] and got.files["status"].to_list() == ["empty"]
    assert got.rejected.is_empty() and isinstance(got.rejected, pl.DataFrame)
