"""BinanceSource against a local archive server (real sample files and generated ones)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import socket
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA
from backtest_assets.core.keys import InvalidKeyError
from backtest_assets.sources.binance import BinanceSource
from backtest_assets.sources.binance_csv import (
    ChecksumMismatchError,
    CorruptArchiveError,
    FetchError,
)
from tests.support.archive import KLINE_HEADER
from tests.support.http_server import ArchiveServer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "binance"
PERP_DAY = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-05-06.zip"
FAR_FUTURE = dt.date(2030, 1, 1)  # as "today": every archive day is long published


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(root: Path, rel: str, csv: bytes) -> bytes:
    """Put ``rel`` (a zip holding ``csv``) and its CHECKSUM under ``root``; return the zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(Path(rel).name.replace(".zip", ".csv"), csv)
    return publish_bytes(root, rel, buffer.getvalue())


def publish_bytes(root: Path, rel: str, data: bytes) -> bytes:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(path.name + ".CHECKSUM").write_text(f"{sha256(data)}  {path.name}\n")
    return data


def epoch_ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)


def kline_rows(day: dt.date, close: float = 100.5) -> list[list[object]]:
    """1440 REST-style kline rows of ``day``."""
    start = epoch_ms(dt.datetime(day.year, day.month, day.day))
    return [
        [
            t,
            "100.0",
            "101.0",
            "99.0",
            str(close),
            "10.0",
            t + 59_999,
            "1000.0",
            7,
            "4.0",
            "400.0",
            "0",
        ]
        for t in range(start, start + 1440 * 60_000, 60_000)
    ]


def kline_csv(day: dt.date, close: float = 100.5) -> bytes:
    return "".join(",".join(map(str, row)) + "\n" for row in kline_rows(day, close)).encode()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_source(tmp_path: Path, sleeps: list[float]) -> Callable[..., BinanceSource]:
    def make(server: ArchiveServer, **overrides: object) -> BinanceSource:
        options: dict[str, object] = {
            "base_url": server.base_url,
            "spot_api_url": server.base_url,
            "futures_api_url": server.base_url,
            "data_root": tmp_path / "data",
            "backoff_s": 0.01,
            "timeout_s": 5.0,
            "today": lambda: FAR_FUTURE,
            "sleep": sleeps.append,
        } | overrides
        return BinanceSource(**options)

    return make


@pytest.fixture
def archive() -> Iterator[ArchiveServer]:
    if not SHARED.is_dir():
        pytest.skip(f"Binance sample files not found at {SHARED} (a clone without ../shared)")
    with ArchiveServer(SHARED) as server:
        yield server


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[ArchiveServer, Path]]:
    """A server over an empty archive folder the test fills with generated files."""
    root = tmp_path / "site"
    root.mkdir()
    with ArchiveServer(root) as server:
        yield server, root


# --------------------------------------------------------------------- real sample files


@pytest.mark.binance_files
def test_perp_day_from_archive(archive: ArchiveServer, make_source, tmp_path: Path) -> None:
    batch = make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))

    frame = batch.frame
    assert not batch.missing and batch.quarantine == []
    assert frame.schema == pl.Schema(KLINE_SCHEMA)
    assert frame.height == 1440
    assert frame["ts_open"][0] == dt.datetime(2022, 5, 6, 0, 0)
    assert frame["ts_open"][-1] == dt.datetime(2022, 5, 6, 23, 59)
    with zipfile.ZipFile(SHARED / PERP_DAY) as archive_zip:
        first_line = archive_zip.read(archive_zip.namelist()[0]).decode().splitlines()[0]
    fields = first_line.split(",")
    assert frame.select("open", "high", "low", "close", "volume").row(0) == tuple(
        float(v) for v in fields[1:6]
    )
    assert frame["trade_count"][0] == int(fields[8])

    published = (SHARED / f"{PERP_DAY}.CHECKSUM").read_text().split()[0]
    [record] = batch.files
    assert record.status == "ok"
    assert record.path == f"raw/{PERP_DAY}"
    assert record.sha256 == published
    assert record.url == f"{archive.base_url}/{PERP_DAY}"
    kept = tmp_path / "data" / "raw" / PERP_DAY
    assert sha256(kept.read_bytes()) == published
    assert record.size == kept.stat().st_size
    assert (tmp_path / "data" / "raw" / f"{PERP_DAY}.CHECKSUM").read_bytes() == (
        SHARED / f"{PERP_DAY}.CHECKSUM"
    ).read_bytes()


@pytest.mark.binance_files
def test_second_call_reuses_the_local_zip(archive: ArchiveServer, make_source) -> None:
    source = make_source(archive)
    first = source.klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    second = source.klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    # A new instance re-checks the CHECKSUM upstream but still reuses the verified bytes.
    third = make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))

    assert first.frame.equals(second.frame) and first.frame.equals(third.frame)
    assert archive.paths(".zip") == [f"/{PERP_DAY}"]
    assert archive.paths(".CHECKSUM") == [f"/{PERP_DAY}.CHECKSUM"] * 2


@pytest.mark.binance_files
@pytest.mark.parametrize("day", [dt.date(2021, 11, 27), dt.date(2021, 11, 28)])
def test_spot_adabtc_days(archive: ArchiveServer, make_source, day: dt.date) -> None:
    batch = make_source(archive).klines_1m("spot", "ADABTC", day)
    assert batch.frame.height == 1440
    assert batch.quarantine == []
    assert batch.frame["ts_open"].min() == dt.datetime(day.year, day.month, day.day)
    assert batch.frame["symbol"].unique().to_list() == ["ADABTC"]
    assert batch.files[0].path == f"raw/data/spot/daily/klines/ADABTC/1m/ADABTC-1m-{day}.zip"


@pytest.mark.binance_files
def test_spot_monthly_hours_and_real_gaps(archive: ArchiveServer, make_source) -> None:
    source = make_source(archive)
    batches = [source.klines("spot", "BTCUSDT", "1h", f"2021-0{m}") for m in (1, 2, 3)]

    assert [b.frame.height for b in batches] == [744, 671, 743]
    assert all(b.quarantine == [] for b in batches)
    hours = pl.concat([b.frame for b in batches])["ts_open"]
    expected = pl.datetime_range(
        dt.datetime(2021, 1, 1), dt.datetime(2021, 3, 31, 23), "1h", eager=True
    )
    assert set(expected.to_list()) - set(hours.to_list()) == {
        dt.datetime(2021, 2, 11, 4),
        dt.datetime(2021, 3, 6, 2),
    }
    assert (
        batches[1].files[0].path == "raw/data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2021-02.zip"
    )


@pytest.mark.binance_files
def test_missing_day_is_a_missing_batch(archive: ArchiveServer, make_source) -> None:
    batch = make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 7))
    assert batch.missing
    assert batch.frame.is_empty() and batch.frame.schema == pl.Schema(KLINE_SCHEMA)
    assert [f.status for f in batch.files] == ["missing"]
    assert batch.files[0].url.endswith("BTCUSDT-1m-2022-05-07.zip")


@pytest.mark.binance_files
def test_503_twice_then_success(archive: ArchiveServer, make_source, sleeps: list) -> None:
    archive.fail("BTCUSDT-1m-2022-05-06.zip", 503, times=2)
    batch = make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    assert batch.frame.height == 1440
    assert sleeps == [0.01, 0.02]  # backoff_s * 2**attempt
    assert [r.status for r in archive.requests if r.path.endswith(".zip")] == [503, 503, 200]


@pytest.mark.binance_files
def test_429_honours_retry_after(archive: ArchiveServer, make_source, sleeps: list) -> None:
    archive.fail(".zip.CHECKSUM", 429, times=1, headers={"Retry-After": "3"})
    batch = make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    assert batch.frame.height == 1440
    assert sleeps == [3.0]


@pytest.mark.binance_files
def test_persistent_500_raises_fetch_error(
    archive: ArchiveServer, make_source, sleeps: list
) -> None:
    archive.fail("BTCUSDT-1m-2022-05-06.zip", 500, times=100)
    source = make_source(archive, max_retries=2)
    with pytest.raises(FetchError) as excinfo:
        source.klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    assert f"{archive.base_url}/{PERP_DAY}" in str(excinfo.value)
    assert "HTTP 500" in str(excinfo.value)
    assert len(archive.paths(".zip")) == 3
    assert len(sleeps) == 2


@pytest.mark.binance_files
def test_other_4xx_is_not_retried(archive: ArchiveServer, make_source, sleeps: list) -> None:
    archive.fail("BTCUSDT-1m-2022-05-06.zip", 403, times=1)
    with pytest.raises(FetchError, match="HTTP 403"):
        make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    assert sleeps == []


@pytest.mark.binance_files
def test_retry_after_beyond_max_backoff_fails_at_once(
    archive: ArchiveServer, make_source, sleeps: list
) -> None:
    archive.fail("BTCUSDT-1m-2022-05-06.zip", 418, times=1, headers={"Retry-After": "7200"})
    with pytest.raises(FetchError, match="retry after 7200s"):
        make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))
    assert sleeps == []


def test_connection_errors_are_retried(tmp_path: Path, sleeps: list) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}"
    source = BinanceSource(
        base_url=url, data_root=tmp_path, max_retries=2, backoff_s=0.5, sleep=sleeps.append
    )
    with pytest.raises(FetchError, match=rf"{url}/data/.*failed after 3 attempts"):
        source.open_interest("BTCUSDT", dt.date(2022, 5, 6))
    assert sleeps == [0.5, 1.0]


@pytest.mark.binance_files
def test_tampered_zip_is_rejected_and_kept(
    archive: ArchiveServer, make_source, tmp_path: Path
) -> None:
    tampered = bytearray((SHARED / PERP_DAY).read_bytes())
    tampered[100] ^= 0xFF
    archive.override(f"/{PERP_DAY}", bytes(tampered))
    with pytest.raises(ChecksumMismatchError) as excinfo:
        make_source(archive).klines_1m("perp", "BTCUSDT", dt.date(2022, 5, 6))

    message = str(excinfo.value)
    actual = sha256(bytes(tampered))
    published = (SHARED / f"{PERP_DAY}.CHECKSUM").read_text().split()[0]
    assert "BTCUSDT-1m-2022-05-06.zip" in message and "perp/klines/BTCUSDT/1m/2022-05-06" in message
    assert actual in message and published in message
    rejected = tmp_path / "data" / "raw" / "_rejected" / f"{PERP_DAY}.{actual}"
    assert rejected.read_bytes() == bytes(tampered)
    assert not (tmp_path / "data" / "raw" / PERP_DAY).exists()
    # The error carries the manifest's record of the rejection.
    record = excinfo.value.rejected
    assert record is not None and record.status == "rejected"
    assert record.path == f"raw/_rejected/{PERP_DAY}.{actual}" and record.sha256 == actual
    assert record.size == len(tampered) and record.url.endswith(PERP_DAY)
    assert record.reason == f"ChecksumMismatchError: {message}"


# ------------------------------------------------------------------------ generated files


def test_upstream_change_keeps_the_superseded_bytes(site, make_source, tmp_path: Path) -> None:
    server, root = site
    rel = "data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-15.zip"
    old = publish(root, rel, kline_csv(dt.date(2024, 1, 15), close=100.5))
    assert make_source(server).klines_1m("perp", "ETHUSDT", dt.date(2024, 1, 15)).frame[
        "close"
    ].unique().to_list() == [100.5]

    new = publish(root, rel, kline_csv(dt.date(2024, 1, 15), close=100.25))
    batch = make_source(server).klines_1m("perp", "ETHUSDT", dt.date(2024, 1, 15))

    assert batch.frame["close"].unique().to_list() == [100.25]
    assert batch.files[0].sha256 == sha256(new)
    local = tmp_path / "data" / "raw" / rel
    assert local.read_bytes() == new
    assert local.with_name(f"{local.name}.superseded-{sha256(old)[:12]}").read_bytes() == old
    assert local.with_name(f"{local.name}.CHECKSUM").read_text().startswith(sha256(new))


def test_corrupt_zip_with_matching_checksum(site, make_source, tmp_path: Path) -> None:
    server, root = site
    rel = "data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-15.zip"
    garbage = publish_bytes(root, rel, b"PK\x03\x04 this is not really a zip")
    with pytest.raises(CorruptArchiveError, match=r"ETHUSDT-1m-2024-01-15\.zip") as excinfo:
        make_source(server).klines_1m("perp", "ETHUSDT", dt.date(2024, 1, 15))
    assert (tmp_path / "data" / "raw" / rel).read_bytes() == garbage
    record = excinfo.value.rejected
    assert record is not None and (record.status, record.path) == ("rejected", f"raw/{rel}")
    assert record.sha256 == sha256(garbage) and record.reason.startswith("CorruptArchiveError: ")


@pytest.mark.parametrize("csv", [b"", b"\n\n", KLINE_HEADER.encode() + b"\n"],
                         ids=["empty", "blank-lines", "header-only"])
def test_zip_holding_no_rows_is_a_missing_day(site, make_source, tmp_path: Path, csv) -> None:
    server, root = site
    rel = "data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-01-15.zip"
    data = publish(root, rel, csv)
    batch = make_source(server).klines_1m("perp", "ETHUSDT", dt.date(2024, 1, 15))
    assert batch.missing and batch.frame.is_empty() and not batch.quarantine
    (record,) = batch.files
    assert (record.status, record.path, record.sha256) == ("empty", f"raw/{rel}", sha256(data))


def _rest_klines(rows: list[list[object]], cap: int) -> Callable[[dict[str, str]], object]:
    def answer(query: dict[str, str]) -> object:
        start, end = int(query["startTime"]), int(query["endTime"])
        limit = min(int(query["limit"]), cap)
        assert query["symbol"] == "BTCUSDT" and query["interval"] == "1m"
        return [row for row in rows if start <= row[0] <= end][:limit]

    return answer


@pytest.mark.parametrize(
    ("market", "path", "limit", "pages"),
    [("perp", "/fapi/v1/klines", 1500, 1), ("spot", "/api/v3/klines", 1000, 2)],
)
def test_rest_fallback_for_recent_day(
    site, make_source, tmp_path: Path, market: str, path: str, limit: int, pages: int
) -> None:
    server, _ = site
    day = dt.date(2024, 3, 2)
    server.json(path, _rest_klines(kline_rows(day), cap=limit))
    source = make_source(server, today=lambda: dt.date(2024, 3, 3))

    batch = source.klines_1m(market, "BTCUSDT", day)

    assert not batch.missing and batch.quarantine == []
    assert batch.frame.schema == pl.Schema(KLINE_SCHEMA)
    assert batch.frame.height == 1440
    assert batch.frame["ts_open"][-1] == dt.datetime(2024, 3, 2, 23, 59)
    rest_calls = [r for r in server.requests if r.path == path]
    assert [r.query["limit"] for r in rest_calls] == [str(limit)] * pages
    assert rest_calls[0].query["startTime"] == str(epoch_ms(dt.datetime(2024, 3, 2)))
    assert rest_calls[0].query["endTime"] == str(epoch_ms(dt.datetime(2024, 3, 3)) - 1)
    assert [f.status for f in batch.files] == ["rest"] * pages
    for record in batch.files:
        assert record.path.startswith(f"raw/rest{path}/BTCUSDT/1m/2024-03-02-")
        assert record.path.endswith(".json")
        kept = (tmp_path / "data" / record.path).read_bytes()
        assert sha256(kept) == record.sha256 and len(kept) == record.size
    assert sum(len(json.loads((tmp_path / "data" / f.path).read_bytes())) for f in batch.files) == (
        1440
    )


def test_old_missing_day_does_not_use_rest(site, make_source) -> None:
    server, _ = site
    source = make_source(server, today=lambda: dt.date(2024, 3, 10))
    batch = source.klines_1m("perp", "BTCUSDT", dt.date(2024, 3, 2))
    assert batch.missing
    assert server.paths("/klines") == []


FUNDING_REL = "data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip"


def _funding_month() -> bytes:
    lines = ["calc_time,funding_interval_hours,last_funding_rate"]
    for day in range(1, 32):
        for hour in (0, 8, 16):
            ts = epoch_ms(dt.datetime(2024, 1, day, hour))
            lines.append(f"{ts},8,0.000{day:02d}{hour:02d}")
    return ("\n".join(lines) + "\n").encode()


def test_funding_from_monthly_zip_filtered_to_day(site, make_source) -> None:
    server, root = site
    publish(root, FUNDING_REL, _funding_month())
    source = make_source(server)

    batch = source.funding_rates("BTCUSDT", dt.date(2024, 1, 15))
    other_day = source.funding_rates("BTCUSDT", dt.date(2024, 1, 16))

    frame = batch.frame
    assert frame.schema == pl.Schema(FUNDING_SCHEMA)
    assert frame["ts"].to_list() == [dt.datetime(2024, 1, 15, h) for h in (0, 8, 16)]
    assert frame["funding_interval_hours"].to_list() == [8, 8, 8]
    assert frame["funding_rate"].to_list() == [0.0001500, 0.0001508, 0.0001516]
    assert frame["mark_price"].null_count() == 3
    assert batch.quarantine == [] and batch.files[0].path == f"raw/{FUNDING_REL}"
    assert other_day.frame["ts"][0] == dt.datetime(2024, 1, 16)
    # One monthly file serves both days: checked and downloaded once per source object.
    assert server.paths(".CHECKSUM") == [f"/{FUNDING_REL}.CHECKSUM"]
    assert server.paths(".zip") == [f"/{FUNDING_REL}"]


def test_funding_rest_fallback(site, make_source) -> None:
    server, _ = site
    day = dt.datetime(2024, 2, 20)
    rows = [
        {
            "symbol": "BTCUSDT",
            "fundingTime": epoch_ms(day) + h * 3_600_000,
            "fundingRate": "0.00012000",
            "markPrice": "51000.10000000",
        }
        for h in (0, 8, 16)
    ]
    server.json("/fapi/v1/fundingRate", lambda query: rows)
    batch = make_source(server, today=lambda: dt.date(2024, 2, 21)).funding_rates(
        "BTCUSDT", day.date()
    )
    assert batch.frame["ts"].to_list() == [day + dt.timedelta(hours=h) for h in (0, 8, 16)]
    assert batch.frame["mark_price"].to_list() == [51000.1] * 3
    assert batch.frame["funding_interval_hours"].null_count() == 3
    assert [f.status for f in batch.files] == ["rest"]


def _metrics_day(day: dt.datetime) -> bytes:
    lines = [
        "create_time,symbol,sum_open_interest,sum_open_interest_value,"
        "count_toptrader_long_short_ratio,sum_toptrader_long_short_ratio,"
        "count_long_short_ratio,sum_taker_long_short_vol_ratio"
    ]
    for i in range(288):
        ts = day + dt.timedelta(minutes=5 * i)
        lines.append(
            f"{ts:%Y-%m-%d %H:%M:%S},BTCUSDT,{1000 + i}.5,{(1000 + i) * 40000}.0,1.2,2.1,1.3,0.95"
        )
    return ("\n".join(lines) + "\n").encode()


def test_open_interest_from_daily_metrics_zip(site, make_source) -> None:
    server, root = site
    rel = "data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-2024-01-15.zip"
    publish(root, rel, _metrics_day(dt.datetime(2024, 1, 15)))

    batch = make_source(server).open_interest("BTCUSDT", dt.date(2024, 1, 15))

    frame = batch.frame
    assert frame.schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert frame.height == 288 and batch.quarantine == []
    assert frame.row(1, named=True) == {
        "symbol": "BTCUSDT",
        "ts": dt.datetime(2024, 1, 15, 0, 5),
        "open_interest": 1001.5,
        "open_interest_value": 40040000.0,
        "toptrader_ls_ratio_count": 1.2,
        "toptrader_ls_ratio_sum": 2.1,
        "ls_ratio_count": 1.3,
        "taker_ls_vol_ratio": 0.95,
    }
    assert batch.files[0].path == f"raw/{rel}"


def test_open_interest_rest_fallback(site, make_source) -> None:
    server, _ = site
    day = dt.datetime(2024, 2, 20)
    rows = [
        {
            "symbol": "BTCUSDT",
            "sumOpenInterest": "100.5",
            "sumOpenInterestValue": "5000000.0",
            "timestamp": epoch_ms(day) + i * 300_000,
        }
        for i in range(288)
    ]
    server.json("/futures/data/openInterestHist", lambda query: rows[: int(query["limit"])])
    batch = make_source(server, today=lambda: dt.date(2024, 2, 21)).open_interest(
        "BTCUSDT", day.date()
    )
    assert batch.frame.height == 288
    assert batch.frame["ls_ratio_count"].null_count() == 288
    [call] = [r for r in server.requests if r.path == "/futures/data/openInterestHist"]
    assert call.query["period"] == "5m" and call.query["limit"] == "500"


@pytest.mark.parametrize("symbol", ["../x", "BTC'; DROP"])
def test_invalid_symbol_fails_before_any_request(site, make_source, symbol: str) -> None:
    server, _ = site
    source = make_source(server)
    calls = [
        lambda: source.klines_1m("perp", symbol, dt.date(2024, 1, 1)),
        lambda: source.klines("spot", symbol, "1h", "2024-01"),
        lambda: source.funding_rates(symbol, dt.date(2024, 1, 1)),
        lambda: source.open_interest(symbol, dt.date(2024, 1, 1)),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError):
            call()
    assert server.requests == []


@pytest.mark.parametrize(
    ("market", "interval", "period"),
    [
        ("perp", "1m/../../x", "2024-01-01"),
        ("futures", "1m", "2024-01-01"),
        ("spot", "1h", "2024-13"),
        ("spot", "1h", "2024-01-01/../x"),
    ],
)
def test_invalid_keys_fail_before_any_request(
    site, make_source, market: str, interval: str, period: str
) -> None:
    server, _ = site
    with pytest.raises(InvalidKeyError):
        make_source(server).klines(market, "BTCUSDT", interval, period)
    assert server.requests == []
