"""Parsers of Binance archive CSVs and REST JSON (backtest_assets.sources.binance_csv)."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA
from backtest_assets.sources.binance_csv import (
    BinanceDataError,
    BinanceFormatError,
    ChecksumMismatchError,
    CorruptArchiveError,
    FetchError,
    parse_funding_csv,
    parse_funding_json,
    parse_klines_csv,
    parse_klines_json,
    parse_metrics_csv,
    parse_open_interest_json,
    read_zip_member,
)

HEADS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "binance" / "format-heads"
needs_heads = pytest.mark.skipif(
    not HEADS.is_dir(), reason=f"Binance sample files not found at {HEADS} (no ../shared)"
)

DAY = dt.datetime(2024, 1, 1)
DAY_MS = 1704067200000  # 2024-01-01 00:00 UTC
MINUTE_MS = 60_000
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def kline(ts_ms: int, **fields: str) -> str:
    """A valid 1m kline line at ``ts_ms``; ``fields`` override columns by name."""
    values = {
        "open": "100.0",
        "high": "101.0",
        "low": "99.0",
        "close": "100.5",
        "volume": "10.0",
        "quote_volume": "1000.0",
        "count": "5",
        "taker_buy_volume": "4.0",
        "taker_buy_quote_volume": "400.0",
    } | fields
    return (
        f"{fields.get('open_time', ts_ms)},{values['open']},{values['high']},{values['low']},"
        f"{values['close']},{values['volume']},{ts_ms + MINUTE_MS - 1},"
        f"{values['quote_volume']},{values['count']},{values['taker_buy_volume']},"
        f"{values['taker_buy_quote_volume']},0"
    )


def minutes(*offsets: int) -> list[str]:
    return [kline(DAY_MS + m * MINUTE_MS) for m in offsets]


def csv(lines: list[str], *, header: bool = False) -> bytes:
    return ("\n".join([HEADER, *lines] if header else lines) + "\n").encode()


def parse(data: bytes, **kwargs: object) -> tuple[pl.DataFrame, list]:
    options = {
        "source_file": "BTCUSDT-1m-2024-01-01.csv",
        "symbol": "BTCUSDT",
        "period_start": DAY,
        "period_end": DAY + dt.timedelta(days=1),
    } | kwargs
    return parse_klines_csv(data, **options)


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ klines


def test_header_and_no_header_parse_to_identical_frames() -> None:
    lines = minutes(0, 1, 2, 3)
    with_header, q1 = parse(csv(lines, header=True))
    without_header, q2 = parse(csv(lines))
    assert q1 == q2 == []
    assert with_header.schema == pl.Schema(KLINE_SCHEMA)
    assert with_header.equals(without_header)
    assert with_header.height == 4
    assert with_header["ts_open"].to_list() == [DAY + dt.timedelta(minutes=m) for m in range(4)]


def test_crlf_and_blank_trailing_lines_do_not_matter() -> None:
    lines = minutes(0, 1, 2)
    crlf = ("\r\n".join(lines) + "\r\n\r\n").encode()
    assert parse(crlf)[0].equals(parse(csv(lines))[0])


def test_empty_file_gives_empty_frame_with_schema() -> None:
    frame, quarantine = parse(b"")
    assert frame.is_empty() and quarantine == []
    assert frame.schema == pl.Schema(KLINE_SCHEMA)


@needs_heads
def test_um_1h_head_with_header() -> None:
    data = (HEADS / "um-BTCUSDT-1h-2026-09-15-head.csv").read_bytes()
    frame, quarantine = parse(
        data,
        interval="1h",
        period_start=dt.datetime(2026, 9, 15),
        period_end=dt.datetime(2026, 9, 16),
    )
    assert quarantine == []
    assert frame.schema == pl.Schema(KLINE_SCHEMA)
    assert frame["ts_open"].to_list() == [dt.datetime(2026, 9, 15, h) for h in range(3)]
    assert frame.row(0) == (
        "BTCUSDT",
        dt.datetime(2026, 9, 15),
        78153.00,
        78223.30,
        77905.50,
        77928.50,
        5124.846,
        399835975.06250,
        109441,
        2423.990,
        189098398.43360,
    )


@needs_heads
def test_microsecond_timestamps_match_millisecond_version() -> None:
    us_data = (HEADS / "spot-BTCUSDT-1m-2026-09-15-head.csv").read_bytes()
    ms_lines = []
    for line in us_data.decode().splitlines():
        fields = line.split(",")
        fields[0], fields[6] = str(int(fields[0]) // 1000), str(int(fields[6]) // 1000)
        ms_lines.append(",".join(fields))
    period = {"period_start": dt.datetime(2026, 9, 15), "period_end": dt.datetime(2026, 9, 16)}
    from_us, q_us = parse(us_data, **period)
    from_ms, q_ms = parse(csv(ms_lines), **period)
    assert q_us == q_ms == []
    assert from_us.height == 4
    assert from_us["ts_open"][0] == dt.datetime(2026, 9, 15, 0, 0)
    assert from_us["ts_open"][-1] == dt.datetime(2026, 9, 15, 0, 3)
    assert from_us.equals(from_ms)
    assert from_us["open"][0] == 78189.2


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize(
    "bad_line", ["1704067320000,1,2,3", kline(DAY_MS + 2 * MINUTE_MS) + ",extra"]
)
def test_wrong_column_count_names_file_partition_and_line(header: bool, bad_line: str) -> None:
    lines = [*minutes(0, 1), bad_line, *minutes(3)]
    expected_line = 4 if header else 3
    with pytest.raises(BinanceFormatError) as excinfo:
        parse(csv(lines, header=header))
    message = str(excinfo.value)
    assert message.startswith(
        "BTCUSDT-1m-2024-01-01.csv (BTCUSDT 1m [2024-01-01 00:00:00, 2024-01-02 00:00:00)) "
        f"line {expected_line}: expected 12 columns"
    )


def test_non_numeric_garbage_is_a_format_error() -> None:
    lines = [*minutes(0), kline(DAY_MS + MINUTE_MS, high="12x5"), *minutes(2)]
    with pytest.raises(BinanceFormatError, match=r"\.csv \(BTCUSDT 1m .*\) line 2: column high"):
        parse(csv(lines))


def test_partition_label_can_be_given() -> None:
    with pytest.raises(BinanceFormatError, match=r"f\.csv \(perp/klines/BTCUSDT/1m/2024-01-01\)"):
        parse(b"1,2\n", source_file="f.csv", partition="perp/klines/BTCUSDT/1m/2024-01-01")


def _at(minute: int, **fields: str) -> str:
    return kline(DAY_MS + minute * MINUTE_MS, **fields)


QUARANTINE_CASES = {
    "nan close": ([_at(0), _at(1), _at(2, close="NaN"), _at(3)], 2, "NaN in close"),
    "nan trade count": ([_at(0), _at(1, count="NaN"), _at(2)], 1, "NaN in count"),
    "high < low": (
        [_at(0), _at(1, high="98.0", open="98.5", close="98.5"), _at(2)],
        1,
        "high < low",
    ),
    "open above high": ([_at(0), _at(1, open="102.0")], 1, "open/close outside [low, high]"),
    "non-positive price": ([_at(0), _at(1, low="0", open="0.5"), _at(2)], 1, "non-positive price"),
    "negative volume": ([_at(0), _at(1, quote_volume="-1")], 1, "negative volume"),
    "taker > volume": ([_at(0), _at(1, taker_buy_volume="10.5")], 1, "taker_buy_volume > volume"),
    "duplicate": ([_at(0), _at(1), _at(1, close="100.2"), _at(2)], 2, "duplicate open_time"),
    "out of order": ([_at(0), _at(2), _at(3), _at(1), _at(4)], 3, "out of order"),
    "before period": ([_at(-1), _at(0), _at(1)], 0, "outside period"),
    "after period": ([_at(0), _at(1), _at(1440)], 2, "outside period"),
    "not aligned": ([_at(0), _at(1), kline(DAY_MS + 2 * MINUTE_MS + 1000)], 2, "not aligned"),
}


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("case", QUARANTINE_CASES, ids=list(QUARANTINE_CASES))
def test_quarantine_reason_line_and_raw_text(case: str, header: bool) -> None:
    lines, bad_index, reason = QUARANTINE_CASES[case]
    frame, quarantine = parse(csv(lines, header=header))
    assert len(quarantine) == 1, quarantine
    record = quarantine[0]
    assert record.source_file == "BTCUSDT-1m-2024-01-01.csv"
    assert record.line_no == bad_index + 1 + header
    assert record.raw_line == lines[bad_index]
    assert reason in record.reason
    assert frame.height == len(lines) - 1
    assert frame["ts_open"].is_sorted() and frame["ts_open"].n_unique() == frame.height


def test_duplicate_keeps_the_first_row() -> None:
    frame, _ = parse(csv([_at(0), _at(0, close="100.2")]))
    assert frame["close"].to_list() == [100.5]


def test_a_whole_day_repeated_quarantines_every_repeat() -> None:
    day = minutes(*range(1440))
    frame, quarantine = parse(csv(day + day))
    assert frame.height == 1440
    assert len(quarantine) == 1440
    assert [q.line_no for q in quarantine[:2]] == [1441, 1442]
    assert quarantine[-1].reason == "duplicate open_time 2024-01-01 23:59:00"
    assert quarantine[-1].raw_line == day[-1]


def test_rows_after_a_quarantined_row_are_judged_against_kept_rows_only() -> None:
    # The NaN row is refused first, so the row that repeats its open_time is not a duplicate.
    lines = [_at(0), _at(1, close="NaN"), _at(1), _at(2)]
    frame, quarantine = parse(csv(lines))
    assert [q.line_no for q in quarantine] == [2]
    assert frame.height == 3


# --------------------------------------------------------------------------------- zips


def test_read_zip_member_returns_the_csv() -> None:
    assert read_zip_member(zipped({"a.csv": b"x,y\n"}), source_file="a.zip", partition="p") == (
        b"x,y\n"
    )


def _crc_broken() -> bytes:
    data = bytearray(zipped({"a.csv": b"1,2,3\n" * 50}, zipfile.ZIP_STORED))
    data[data.index(b"1,2,3") + 2] = ord("9")
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("truncated", zipped({"a.csv": b"1,2,3\n" * 500})[:-30]),
        ("not a zip", b"PK\x03\x04 definitely not a zip"),
        ("crc error", _crc_broken()),
        ("two members", zipped({"a.csv": b"1\n", "b.csv": b"2\n"})),
        ("no member", zipped({})),
        ("not a csv", zipped({"a.txt": b"1\n"})),
    ],
)
def test_corrupt_zip_names_file_and_partition(name: str, data: bytes) -> None:
    with pytest.raises(CorruptArchiveError) as excinfo:
        read_zip_member(data, source_file="raw/x/BTCUSDT-1m.zip", partition="perp/klines/BTCUSDT")
    assert "raw/x/BTCUSDT-1m.zip" in str(excinfo.value)
    assert "perp/klines/BTCUSDT" in str(excinfo.value)


def test_exceptions_share_one_base() -> None:
    for error in (BinanceFormatError, CorruptArchiveError, ChecksumMismatchError, FetchError):
        assert issubclass(error, BinanceDataError)


# ------------------------------------------------------------------------------ funding

FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"


def funding_line(day: int, hour: int, rate: str = "0.00010000", hours: str = "8") -> str:
    ts = int(dt.datetime(2024, 1, day, hour, tzinfo=dt.UTC).timestamp() * 1000)
    return f"{ts},{hours},{rate}"


def parse_funding(lines: list[str], day: int) -> tuple[pl.DataFrame, list]:
    data = "\n".join([FUNDING_HEADER, *lines]).encode()
    return parse_funding_csv(
        data,
        source_file="BTCUSDT-fundingRate-2024-01.csv",
        symbol="BTCUSDT",
        period_start=dt.datetime(2024, 1, 1),
        period_end=dt.datetime(2024, 2, 1),
        keep_start=dt.datetime(2024, 1, day),
        keep_end=dt.datetime(2024, 1, day + 1),
    )


def test_funding_filters_to_the_requested_day() -> None:
    lines = [funding_line(d, h, rate=f"0.000{d}{h:02d}") for d in (1, 2, 3) for h in (0, 8, 16)]
    frame, quarantine = parse_funding(lines, day=2)
    assert quarantine == []
    assert frame.schema == pl.Schema(FUNDING_SCHEMA)
    assert frame["ts"].to_list() == [dt.datetime(2024, 1, 2, h) for h in (0, 8, 16)]
    assert frame["funding_rate"].to_list() == [0.000200, 0.000208, 0.000216]
    assert frame["funding_interval_hours"].to_list() == [8, 8, 8]
    assert frame["mark_price"].null_count() == 3


def test_funding_quarantines_only_rows_of_the_kept_window_and_period() -> None:
    lines = [
        funding_line(1, 0, rate="NaN"),  # another day: dropped, not quarantined
        funding_line(2, 0),
        funding_line(2, 8, rate="NaN"),
        funding_line(2, 8),
        funding_line(2, 8),
        funding_line(2, 16, hours="0"),
        "1706745600000,8,0.0001",  # 2024-02-01: not this month's file
    ]
    frame, quarantine = parse_funding(lines, day=2)
    assert frame["ts"].to_list() == [dt.datetime(2024, 1, 2, h) for h in (0, 8)]
    assert [(q.line_no, q.raw_line) for q in quarantine] == [
        (4, lines[2]),
        (6, lines[4]),
        (7, lines[5]),
        (8, lines[6]),
    ]
    reasons = [q.reason for q in quarantine]
    assert "NaN in last_funding_rate" in reasons[0]
    assert "duplicate calc_time" in reasons[1]
    assert "non-positive funding_interval_hours" in reasons[2]
    assert "outside period" in reasons[3]


def test_funding_wrong_column_count() -> None:
    with pytest.raises(BinanceFormatError, match=r"line 3: expected 3 columns"):
        parse_funding([funding_line(2, 0), "1704182400000,8"], day=2)


# ------------------------------------------------------------------------------ metrics

METRICS_HEADER = (
    "create_time,symbol,sum_open_interest,sum_open_interest_value,"
    "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
    "count_long_short_ratio,sum_taker_long_short_vol_ratio"
)


def parse_metrics(data: bytes, day: dt.datetime = DAY) -> tuple[pl.DataFrame, list]:
    return parse_metrics_csv(
        data,
        source_file="BTCUSDT-metrics.csv",
        symbol="BTCUSDT",
        period_start=day,
        period_end=day + dt.timedelta(days=1),
    )


@needs_heads
def test_metrics_head_file() -> None:
    data = (HEADS / "um-BTCUSDT-metrics-2026-09-15-head.csv").read_bytes()
    frame, quarantine = parse_metrics(data, dt.datetime(2026, 9, 15))
    assert quarantine == []
    assert frame.schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert frame.row(0, named=True) == {
        "symbol": "BTCUSDT",
        "ts": dt.datetime(2026, 9, 15),
        "open_interest": 103513.561,
        "open_interest_value": 8088539305.1839,
        "toptrader_ls_ratio_count": 1.21791190,
        "toptrader_ls_ratio_sum": 2.06913400,
        "ls_ratio_count": 1.17124703,
        "taker_ls_vol_ratio": 1.12654900,
    }
    assert frame["ts"][1] == dt.datetime(2026, 9, 15, 0, 25)


def test_metrics_quarantine_and_empty_ratios() -> None:
    rows = [
        "2024-01-01 00:00:00,BTCUSDT,100.5,4000000.0,1.1,2.0,1.2,0.9",
        "2024-01-01 00:05:00,BTCUSDT,NaN,4000000.0,1.1,2.0,1.2,0.9",
        "2024-01-01 00:05:00,BTCUSDT,-3,4000000.0,1.1,2.0,1.2,0.9",
        "2024-01-01 00:05:00,BTCUSDT,101.0,4100000.0,,,,",
        "2024-01-01 00:05:00,BTCUSDT,101.5,4200000.0,1.1,2.0,1.2,0.9",
        "2024-01-01 00:03:00,BTCUSDT,102.0,4300000.0,1.1,2.0,1.2,0.9",
        "2024-01-01 00:10:00,ETHUSDT,102.0,4300000.0,1.1,2.0,1.2,0.9",
        "2024-01-02 00:00:00,BTCUSDT,102.0,4300000.0,1.1,2.0,1.2,0.9",
    ]
    frame, quarantine = parse_metrics("\n".join([METRICS_HEADER, *rows]).encode())
    assert frame["open_interest"].to_list() == [100.5, 101.0]
    assert frame["toptrader_ls_ratio_count"].to_list() == [1.1, None]
    found = {q.line_no: q.reason for q in quarantine}
    assert sorted(found) == [3, 4, 6, 7, 8, 9]
    assert "NaN in sum_open_interest" in found[3]
    assert "negative open interest" in found[4]
    assert found[6] == "duplicate create_time 2024-01-01 00:05:00"
    assert "out of order" in found[7]
    assert "symbol is not BTCUSDT" in found[8]
    assert "outside period" in found[9]
    assert quarantine[0].raw_line == rows[1]


def test_metrics_bad_time_is_a_format_error() -> None:
    data = f"{METRICS_HEADER}\n2024-01-01T00:00,BTCUSDT,1,1,1,1,1,1\n".encode()
    with pytest.raises(BinanceFormatError, match=r"line 2: column create_time"):
        parse_metrics(data)


# --------------------------------------------------------------------------------- REST


def test_klines_json_pages_share_the_csv_checks() -> None:
    def row(minute: int, close: str = "100.5") -> list[object]:
        ts = DAY_MS + minute * MINUTE_MS
        return [
            ts,
            "100.0",
            "101.0",
            "99.0",
            close,
            "10.0",
            ts + 59_999,
            "1000.0",
            5,
            "4.0",
            "400.0",
            "0",
        ]

    pages = [
        ("p0.json", json.dumps([row(0), row(1)]).encode()),
        ("p1.json", json.dumps([row(2, close="NaN"), row(3), row(3)]).encode()),
    ]
    frame, quarantine = parse_klines_json(
        pages, symbol="BTCUSDT", period_start=DAY, period_end=DAY + dt.timedelta(days=1)
    )
    assert frame.schema == pl.Schema(KLINE_SCHEMA)
    assert frame["ts_open"].to_list() == [DAY + dt.timedelta(minutes=m) for m in (0, 1, 3)]
    assert [(q.source_file, q.line_no) for q in quarantine] == [("p1.json", 1), ("p1.json", 3)]
    assert "NaN in close" in quarantine[0].reason
    assert "duplicate open_time" in quarantine[1].reason
    assert json.loads(quarantine[0].raw_line) == row(2, close="NaN")


def test_klines_json_rejects_error_payloads() -> None:
    with pytest.raises(BinanceFormatError, match=r"p0\.json .*expected a JSON array"):
        parse_klines_json(
            [("p0.json", b'{"code": -1121, "msg": "Invalid symbol."}')],
            symbol="BTCUSDT",
            period_start=DAY,
            period_end=DAY + dt.timedelta(days=1),
        )


def test_funding_and_open_interest_json() -> None:
    funding = [
        {
            "symbol": "BTCUSDT",
            "fundingTime": DAY_MS + h * 3_600_000,
            "fundingRate": "0.0001",
            "markPrice": mark,
        }
        for h, mark in ((0, "42000.5"), (8, ""), (16, "42100.0"))
    ]
    frame, quarantine = parse_funding_json(
        [("f.json", json.dumps(funding).encode())],
        symbol="BTCUSDT",
        period_start=DAY,
        period_end=DAY + dt.timedelta(days=1),
    )
    assert quarantine == []
    assert frame.schema == pl.Schema(FUNDING_SCHEMA)
    assert frame["mark_price"].to_list() == [42000.5, None, 42100.0]
    assert frame["funding_interval_hours"].null_count() == 3

    oi = [
        {
            "symbol": "BTCUSDT",
            "sumOpenInterest": "100.5",
            "sumOpenInterestValue": "4000000.0",
            "timestamp": DAY_MS + i * 300_000,
        }
        for i in range(3)
    ]
    frame, quarantine = parse_open_interest_json(
        [("oi.json", json.dumps(oi).encode())],
        symbol="BTCUSDT",
        period_start=DAY,
        period_end=DAY + dt.timedelta(days=1),
    )
    assert quarantine == []
    assert frame.schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert frame["ts"].to_list() == [DAY + dt.timedelta(minutes=5 * i) for i in range(3)]
    assert frame["open_interest_value"].to_list() == [4000000.0] * 3
    assert frame["taker_ls_vol_ratio"].null_count() == 3
