"""Mark price and premium index klines: archive files of the real layout through the klines path.

The files are ``tests/fixtures/binance_index_klines`` (markPriceKlines / premiumIndexKlines of
BTCUSDT 2022-05-06 in Binance's layout, values derived from that day's real perp klines: see
its SOURCES.md), served beside the real perp klines of ``../shared/data/binance``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest

from backtest_assets.core import bars as core_bars
from backtest_assets.core.frames import KLINE_SCHEMA
from backtest_assets.core.keys import InvalidKeyError
from backtest_assets.sources import binance as binance_module
from backtest_assets.sources.binance import BinanceSource
from backtest_assets.sources.binance_csv import ChecksumMismatchError
from tests.support.http_server import ArchiveServer

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "binance_index_klines"
SHARED = REPO.parent / "shared" / "data" / "binance"
DAY = dt.date(2022, 5, 6)
NAME = "BTCUSDT/1m/BTCUSDT-1m-2022-05-06.zip"
PERP = f"data/futures/um/daily/klines/{NAME}"
MARK = f"data/futures/um/daily/markPriceKlines/{NAME}"
PREMIUM = f"data/futures/um/daily/premiumIndexKlines/{NAME}"
FAR_FUTURE = dt.date(2030, 1, 1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def csv_lines(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode().splitlines()


def publish(root: Path, rel: str, lines: list[str]) -> None:
    """``rel`` as a zip holding ``lines`` and its CHECKSUM, under ``root``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(Path(rel).name.replace(".zip", ".csv"), "\n".join(lines) + "\n")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    path.with_name(path.name + ".CHECKSUM").write_text(f"{sha256(buffer.getvalue())}  "
                                                      f"{path.name}\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The fixture's files and the real perp klines of the day, as one archive folder."""
    if not (SHARED / PERP).is_file():
        pytest.skip(f"real Binance sample files not found at {SHARED} (a clone without ../shared)")
    site = tmp_path / "site"
    shutil.copytree(FIXTURE / "data", site / "data")
    for suffix in ("", ".CHECKSUM"):
        (site / f"{PERP}{suffix}").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED / f"{PERP}{suffix}", site / f"{PERP}{suffix}")
    return site


@pytest.fixture
def server(root: Path) -> Iterator[ArchiveServer]:
    with ArchiveServer(root) as served:
        yield served


@pytest.fixture
def make_source(tmp_path: Path) -> Callable[..., BinanceSource]:
    def make(server: ArchiveServer, **overrides: object) -> BinanceSource:
        options: dict[str, object] = {
            "base_url": server.base_url, "futures_api_url": server.base_url,
            "spot_api_url": server.base_url, "data_root": tmp_path / "data",
            "backoff_s": 0.0, "timeout_s": 5.0, "today": lambda: FAR_FUTURE,
            "sleep": lambda _s: None} | overrides
        return BinanceSource(**options)

    return make


def test_mark_and_premium_files_parse_through_the_klines_path(server, make_source, tmp_path,
                                                              monkeypatch) -> None:
    calls = []
    real = binance_module.parse_klines_csv

    def spy(data: bytes, **kwargs: object):
        calls.append((kwargs["source_file"], kwargs["signed"]))
        return real(data, **kwargs)

    monkeypatch.setattr(binance_module, "parse_klines_csv", spy)
    source = make_source(server)
    last = source.klines_1m("perp", "BTCUSDT", DAY)
    mark = source.mark_klines_1m("BTCUSDT", DAY)
    premium = source.premium_klines_1m("BTCUSDT", DAY)

    # one parser for the three folders; only the premium index is a signed rate
    assert calls == [(f"raw/{PERP}", False), (f"raw/{MARK}", False), (f"raw/{PREMIUM}", True)]
    for batch, rel in ((mark, MARK), (premium, PREMIUM)):
        assert not batch.missing and batch.quarantine == []
        assert batch.frame.schema == pl.Schema(KLINE_SCHEMA)
        assert batch.frame.height == 1440  # the header row detected and skipped
        assert batch.frame["ts_open"].to_list() == last.frame["ts_open"].to_list()
        (record,) = batch.files
        published = (FIXTURE / f"{rel}.CHECKSUM").read_text().split()[0]
        assert (record.status, record.sha256, record.path) == ("ok", published, f"raw/{rel}")
        assert record.url == f"{server.base_url}/{rel}"
        assert sha256((tmp_path / "data" / record.path).read_bytes()) == published
        zeros = batch.frame.select("volume", "quote_volume", "taker_buy_volume",
                                   "taker_buy_quote_volume")
        assert (zeros.to_numpy() == 0).all()

    # values as the CSV text says (mark: last x 0.9999 to 8 decimals; SOURCES.md)
    text = [line.split(",") for line in csv_lines(FIXTURE / MARK)[1:]]
    assert mark.frame["high"].to_list() == [float(r[2]) for r in text]
    assert mark.frame["trade_count"].unique().to_list() == [60]
    assert mark.frame["close"].to_list() == pytest.approx(
        (last.frame["close"] * 0.9999).to_list(), abs=5e-9)

    # the premium index: signed, negative in part of the day, all kept
    p = premium.frame
    assert (p["close"] < 0).sum() > 100 and (p["close"] > 0).sum() > 100
    assert ((p["low"] <= p["open"]) & (p["close"] <= p["high"])).all()


def test_a_mark_file_failing_its_checksum_is_rejected(server, make_source, root) -> None:
    tampered = bytearray((root / MARK).read_bytes())
    tampered[-40] ^= 0xFF
    server.override(f"/{MARK}", bytes(tampered))
    with pytest.raises(ChecksumMismatchError) as info:
        make_source(server).mark_klines_1m("BTCUSDT", DAY)
    rejected = info.value.rejected
    assert rejected is not None and rejected.status == "rejected"
    assert rejected.url.endswith(MARK) and "ChecksumMismatchError" in rejected.reason


def test_bad_rows_are_quarantined_with_file_and_line(server, make_source, root) -> None:
    mark = csv_lines(root / MARK)
    fields = mark[10].split(",")
    fields[2], fields[3] = fields[3], fields[2]  # line 11: high < low
    mark[10] = ",".join(fields)
    publish(root, MARK, mark)
    premium = csv_lines(root / PREMIUM)
    premium[20] = premium[20].split(",", 2)[0] + ",nan," + premium[20].split(",", 2)[2]
    publish(root, PREMIUM, premium)
    source = make_source(server)

    for batch, rel, line, reason in (
            (source.mark_klines_1m("BTCUSDT", DAY), MARK, 11, "high < low"),
            (source.premium_klines_1m("BTCUSDT", DAY), PREMIUM, 21, "NaN in open")):
        (bad,) = batch.quarantine
        assert (bad.source_file, bad.line_no) == (f"raw/{rel}", line)
        assert reason in bad.reason and bad.raw_line == csv_lines(root / rel)[line - 1]
        assert batch.frame.height == 1439


def test_a_day_the_archive_does_not_have_is_missing(server, make_source) -> None:
    source = make_source(server)
    for batch in (source.mark_klines_1m("BTCUSDT", DAY + dt.timedelta(days=1)),
                  source.premium_klines_1m("BTCUSDT", DAY + dt.timedelta(days=1))):
        assert batch.missing and batch.frame.is_empty()
        assert [f.status for f in batch.files] == ["missing"]
    assert server.paths("Klines") == []  # an old day: no REST


def test_mark_and_premium_exist_for_usdm_only(server, make_source) -> None:
    source = make_source(server)
    with pytest.raises(InvalidKeyError, match="USD-M"):
        source.klines("spot", "BTCUSDT", "1m", DAY, dataset="markPriceKlines")
    with pytest.raises(InvalidKeyError, match="dataset"):
        source.klines("perp", "BTCUSDT", "1m", DAY, dataset="indexPrice")  # type: ignore[arg-type]
    assert server.requests == []


@pytest.mark.parametrize(("path", "call", "value"), [
    ("/fapi/v1/markPriceKlines", "mark_klines_1m", "36500.12345678"),
    ("/fapi/v1/premiumIndexKlines", "premium_klines_1m", "-0.00031924"),
])
def test_rest_fallback_pages_for_a_recent_day(server, make_source, path, call, value) -> None:
    day = dt.date(2024, 3, 2)
    start = int(dt.datetime(2024, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [[t, value, value, value, value, "0", t + 59_999, "0", 12, "0", "0", "0"]
            for t in range(start, start + 1440 * 60_000, 60_000)]

    def answer(query: dict[str, str]) -> object:
        lo, hi = int(query["startTime"]), int(query["endTime"])
        return [r for r in rows if lo <= r[0] <= hi][:int(query["limit"])]

    server.json(path, answer)
    batch = getattr(make_source(server, today=lambda: dt.date(2024, 3, 3)), call)("BTCUSDT", day)
    assert not batch.missing and batch.quarantine == []
    assert batch.frame.height == 1440 and batch.frame["close"].unique().to_list() == [float(value)]
    calls = [r for r in server.requests if r.path == path]
    assert [(c.query["limit"], c.query["symbol"], c.query["interval"]) for c in calls] == [
        ("1500", "BTCUSDT", "1m")]  # USD-M pages of 1500: the day's 1440 rows in one
    assert [f.status for f in batch.files] == ["rest"]
    assert batch.files[0].path.startswith(f"raw/rest{path}/BTCUSDT/1m/2024-03-02-")


def test_published_waits_for_the_mark_and_premium_files(server, make_source, root) -> None:
    metrics = f"data/futures/um/daily/metrics/BTCUSDT/BTCUSDT-metrics-{DAY}.zip"
    publish(root, metrics, ["create_time,symbol"])
    assert make_source(server).published("BTCUSDT", DAY, ["perp"])
    (root / f"{PREMIUM}.CHECKSUM").unlink()
    assert not make_source(server).published("BTCUSDT", DAY, ["perp"])


def test_bars_carry_the_mark_of_the_day_and_resample_it(server, make_source) -> None:
    source = make_source(server)
    perp = source.klines_1m("perp", "BTCUSDT", DAY).frame
    mark = source.mark_klines_1m("BTCUSDT", DAY).frame
    holes = mark.filter(~pl.col("ts_open").dt.minute().is_in([7, 8]))  # minutes without a mark
    one = core_bars.bars_1m(perp, "perp", holes)
    assert one.height == 1440
    joined = one.join(mark, on="ts_open", suffix="_m")
    kept = joined.filter(~pl.col("ts_open").dt.minute().is_in([7, 8]))
    for c in ("open", "high", "low", "close"):
        assert kept[f"mark_{c}"].to_list() == kept[f"{c}_m"].to_list()
    assert joined.filter(pl.col("ts_open").dt.minute().is_in([7, 8]))["mark_open"].null_count() \
        == 48
    assert one["n_mark_bars"].to_list() == [0 if t.minute in (7, 8) else 1 for t in one["ts_open"]]

    for minutes in (5, 15):
        got = core_bars.resample(one, minutes).sort("ts_open")
        want = (holes.group_by(pl.col("ts_open").dt.truncate(f"{minutes}m"))
                .agg(pl.col("open").sort_by("ts_open").first(), pl.col("high").max(),
                     pl.col("low").min(), pl.col("close").sort_by("ts_open").last(),
                     pl.len().cast(pl.Int32).alias("n"))
                .sort("ts_open"))
        assert got.height == 1440 // minutes
        merged = got.join(want, on="ts_open", how="left")
        assert merged["mark_open"].to_list() == merged["open_right"].to_list()
        assert merged["mark_high"].to_list() == merged["high_right"].to_list()
        assert merged["mark_low"].to_list() == merged["low_right"].to_list()
        assert merged["mark_close"].to_list() == merged["close_right"].to_list()
        assert merged["n_mark_bars"].to_list() == merged["n"].to_list()
    five = core_bars.resample(one, 5).filter(pl.col("ts_open").dt.minute() == 5).row(0, named=True)
    assert (five["n_source_bars"], five["n_mark_bars"]) == (5, 3)  # 00:07, 00:08 lack a mark


def test_a_liquidation_on_that_day_is_computed_on_the_mark(server, make_source) -> None:
    """The day's 5m bars from the archive files (last and mark: the mark 1 bp under the last
    on this fixture), a long from the second bar's open at a leverage setting whose
    liquidation price lies between the day's lowest mark low and lowest last low after the
    entry: the engine liquidates it where the mark first reaches the level, at the level,
    and the same run on the last price alone holds it to the end."""
    import numpy as np

    from backtest_assets.engine import Instrument, backtest
    from backtest_assets.strategies import Panel

    source = make_source(server)
    one = core_bars.bars_1m(source.klines_1m("perp", "BTCUSDT", DAY).frame, "perp",
                            source.mark_klines_1m("BTCUSDT", DAY).frame)
    start = dt.datetime(2022, 5, 6)
    panel = Panel.from_bars(core_bars.resample(one, 5).with_columns(pl.lit("BTCUSDT")
                                                                    .alias("symbol")),
                            ("BTCUSDT",), start, start + dt.timedelta(days=1), 5)
    assert np.isfinite(panel.mark_low).all()
    entry, mmr = panel.open[1, 0], 0.004
    last_floor, mark_floor = panel.low[1:, 0].min(), panel.mark_low[1:, 0].min()
    assert mark_floor < last_floor  # the mark's bars reach lower than the last's
    level = (last_floor + mark_floor) / 2
    # long liquidation price entry * (1 - 1/L) / (1 - mmr) = level, solved for L
    setting = 1 / (1 - level * (1 - mmr) / entry)
    target = np.full((len(panel.ts), 1), np.nan)
    target[0, 0] = 1.0
    inst = Instrument(symbol="BTCUSDT", max_leverage=setting, maintenance_margin_rate=mmr)
    bars = {"open_": panel.open, "high": panel.high, "low": panel.low, "close": panel.close,
            "target": target, "instruments": inst}
    on_mark = backtest(**bars, mark_open=panel.mark_open, mark_high=panel.mark_high,
                       mark_low=panel.mark_low)
    (t,) = on_mark.trades.iter_rows(named=True)
    first = int(np.argmax(panel.mark_low[1:, 0] <= level)) + 1
    assert (t["exit_reason"], t["exit_bar"]) == ("liquidation", first)
    assert t["exit_price"] == pytest.approx(level, rel=1e-12)
    assert panel.low[first, 0] > level  # the last price never got there
    assert backtest(**bars).trades["exit_reason"].to_list() == ["open"]
