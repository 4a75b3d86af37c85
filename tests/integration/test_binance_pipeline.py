"""The market-data job on the real ``binance`` source over HTTP on 127.0.0.1.

Two kinds of archive: the real Binance files in ../shared/data/binance (run through the CLI
in a child process whose universe spec covers their dates), and archives generated here in
Binance's format for the default universe, to put every kind of bad input through the job.
"""

import csv
import datetime as dt
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile

import duckdb
import polars as pl
import pytest

from backtest_assets.cli import run
from backtest_assets.core.bars import day_coverage
from backtest_assets.core.summary import warehouse_summary
from backtest_assets.resources import WarehouseResource
from backtest_assets.sources.binance import BinanceSource
from backtest_assets.sources.synthetic import SyntheticSource
from tests.conftest import REPO, subprocess_env
from tests.support.archive import KLINE_HEADER, daily_klines_path, write_klines_day, write_zip
from tests.support.http_server import ArchiveServer
from tests.support.specs import specs_with_universe

INDEX_KLINES = REPO / "tests" / "fixtures" / "binance_index_klines"
REAL_UNIVERSE = """\
name: real-files
start_date: 2021-11-27
end_date: 2022-05-06
base_interval: 5m
bar_intervals: [1m, 5m, 15m]
symbols:
  - {symbol: BTCUSDT, markets: [perp, spot]}
  - {symbol: ADABTC, markets: [spot]}
"""


def cli(tmp_path, base_url, *args):
    specs = specs_with_universe(
        tmp_path / "specs", REAL_UNIVERSE, ["BTCUSDT", "ADABTC"],
        study="name: default\nstart: 2021-11-27\nend: 2021-11-28\nsymbols: [ADABTC]\n")
    (tmp_path / "home").mkdir(exist_ok=True)
    env = subprocess_env(BACKTEST_SPECS_DIR=str(specs), BACKTEST_DATA_ROOT=str(tmp_path / "data"),
                         DAGSTER_HOME=str(tmp_path / "home"))
    proc = subprocess.run(
        [sys.executable, "-m", "backtest_assets", "run", "--source", "binance",
         "--base-url", base_url, "--market-data-only", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def query(tmp_path, sql):
    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()


def csv_rows(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        (name,) = zf.namelist()
        text = zf.read(name).decode()
    return [r for r in csv.reader(io.StringIO(text)) if r and r[0].isdigit()]


def test_real_files_ingest_to_bars(tmp_path, binance_files):
    # the real files, and beside them the mark price / premium index day of the real layout
    # (values derived from the perp day: tests/fixtures/binance_index_klines/SOURCES.md)
    site = tmp_path / "site"
    shutil.copytree(binance_files / "data", site / "data")
    shutil.copytree(INDEX_KLINES / "data", site / "data", dirs_exist_ok=True)
    with ArchiveServer(site) as server:
        out = cli(tmp_path, server.base_url, "--start", "2022-05-06", "--end", "2022-05-06",
                  "--symbols", "BTCUSDT")
        cli(tmp_path, server.base_url, "--start", "2021-11-27", "--end", "2021-11-28",
            "--symbols", "ADABTC")
    assert "all runs succeeded" in out
    perp = query(tmp_path, "SELECT * FROM raw_perp_klines_1m ORDER BY ts_open")
    assert perp.height == 1440
    assert perp["ts_open"][0] == dt.datetime(2022, 5, 6)
    assert perp["ts_open"][-1] == dt.datetime(2022, 5, 6, 23, 59)
    counts = query(tmp_path, "SELECT symbol, market, count(*) n FROM bars_1m "
                             "GROUP BY ALL ORDER BY ALL").rows()
    assert counts == [("ADABTC", "spot", 2880), ("BTCUSDT", "perp", 1440)]
    assert query(tmp_path, "SELECT count(*) FROM bars_5m").item() == 288 + 2 * 288

    # A 5m bar recomputed independently from the CSV text inside the real zip.
    rel = "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2022-05-06.zip"
    rows = csv_rows(binance_files / rel)
    start = int(dt.datetime(2022, 5, 6, 13, 35, tzinfo=dt.UTC).timestamp() * 1000)
    five = [r for r in rows if start <= int(r[0]) < start + 5 * 60_000]
    assert len(five) == 5
    bar = query(tmp_path, "SELECT * FROM bars_5m WHERE symbol = 'BTCUSDT' "
                          "AND ts_open = TIMESTAMP '2022-05-06 13:35:00'").row(0, named=True)
    assert bar["open"] == float(five[0][1]) and bar["close"] == float(five[-1][4])
    assert bar["high"] == max(float(r[2]) for r in five)
    assert bar["low"] == min(float(r[3]) for r in five)
    assert bar["volume"] == pytest.approx(sum(float(r[5]) for r in five), rel=1e-12)
    assert bar["trade_count"] == sum(int(r[8]) for r in five)
    assert bar["n_source_bars"] == 5

    # The mark beside last: the 1m bars carry the mark file's values, the 5m bar aggregates them.
    marks = csv_rows(INDEX_KLINES / rel.replace("/klines/", "/markPriceKlines/"))
    assert len(marks) == 1440
    mark_1m = query(tmp_path, "SELECT mark_open, mark_high, mark_low, mark_close, n_mark_bars "
                              "FROM bars_1m WHERE market = 'perp' ORDER BY ts_open").rows()
    assert mark_1m == [(*(float(x) for x in r[1:5]), 1) for r in marks]
    five_marks = [r for r in marks if start <= int(r[0]) < start + 5 * 60_000]
    assert (bar["mark_open"], bar["mark_high"], bar["mark_low"], bar["mark_close"],
            bar["n_mark_bars"]) == (float(five_marks[0][1]),
                                    max(float(r[2]) for r in five_marks),
                                    min(float(r[3]) for r in five_marks),
                                    float(five_marks[-1][4]), 5)
    spot_marks = query(tmp_path, "SELECT count(*) FROM bars_5m WHERE market = 'spot' AND "
                                 "(mark_close IS NOT NULL OR n_mark_bars IS NOT NULL)").item()
    assert spot_marks == 0
    premium = query(tmp_path, "SELECT * FROM raw_premium_index_klines_1m")
    assert premium.height == 1440 and (premium["close"] < 0).any()

    # Raw bytes kept with the sha256 of their CHECKSUM; absent days recorded as missing.
    files = query(tmp_path, "SELECT * FROM ingest_files ORDER BY ALL")
    kline = files.filter(pl.col("asset") == "raw_perp_klines_1m",
                         pl.col("url").str.ends_with("BTCUSDT-1m-2022-05-06.zip")).row(
        0, named=True)
    expected = (binance_files / f"{rel}.CHECKSUM").read_text().split()[0]
    assert kline["sha256"] == expected and kline["status"] == "ok"
    kept = tmp_path / "data" / kline["path"]
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == expected
    missing = set(files.filter(pl.col("status") == "missing")["asset"])
    assert {"raw_spot_klines_1m", "raw_funding_rates", "raw_open_interest"} <= missing


def test_real_hourly_file_gaps_are_the_two_known_missing_hours(tmp_path, binance_files):
    with ArchiveServer(binance_files) as server:
        src = BinanceSource(base_url=server.base_url, data_root=tmp_path)
        frame = pl.concat([src.klines("spot", "BTCUSDT", "1h", f"2021-0{m}").frame
                           for m in (1, 2, 3)])
    assert frame.height == 744 + 671 + 743
    cov = day_coverage(frame, time_col="ts_open", group_cols=["symbol"], slot_minutes=60)
    gaps = cov.filter(pl.col("missing") > 0)
    assert gaps.select("date", "missing").rows() == [(dt.date(2021, 2, 11), 1),
                                                      (dt.date(2021, 3, 6), 1)]
    hours = set(frame["ts_open"])
    assert dt.datetime(2021, 2, 11, 4) not in hours and dt.datetime(2021, 3, 6, 2) not in hours


# ---- bad input through the job, on generated archives for the default universe ----------

DAY = dt.date(2024, 1, 2)
SYNTH = SyntheticSource(seed=5)


@pytest.fixture
def archive(tmp_path):
    """A served archive holding one good perp day of BTCUSDT (other datasets 404)."""
    root = tmp_path / "archive"
    write_klines_day(root, "perp", "BTCUSDT", DAY, SYNTH.klines_1m("perp", "BTCUSDT", DAY).frame)
    with ArchiveServer(root) as server:
        yield root, server


def ingest(server, instance):
    # rebuild: each call asks the archive again (a key ingested before is up to date)
    return run(DAY, DAY, ["BTCUSDT"], instance=instance, quiet=True, research=False,
               rebuild=True,
               resources_config={"market_source": {"config": {
                   "market_source": "binance", "base_url": server.base_url}}})


def table(name):
    wh = WarehouseResource().warehouse()
    with wh.connect(read_only=True) as conn:
        return conn.sql(f"SELECT * FROM {name} ORDER BY ALL").pl()  # noqa: S608


def failure_message(instance):
    (last, *_) = instance.get_runs(limit=1)
    msgs = [r.event_log_entry.dagster_event.step_failure_data.error.to_string()
            for r in instance.get_records_for_run(last.run_id).records
            if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.is_step_failure]
    assert msgs, "the run has no failed step"
    return "\n".join(msgs)


def replace_line(n, new):
    return lambda lines: [new(x) if i == n else x for i, x in enumerate(lines)]


def tamper(root, rel):
    """Upstream publishes a new CHECKSUM, but the bytes served do not match it."""
    data = bytearray((root / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / rel).write_bytes(bytes(data))
    (root / f"{rel}.CHECKSUM").write_text(f"{'ab' * 32}  {rel.rsplit('/', 1)[1]}\n")


def truncate(root, rel):
    """Upstream replaces the file with a truncated zip (its CHECKSUM matches the bytes)."""
    data = (root / rel).read_bytes()
    (root / rel).write_bytes(data[: len(data) // 2])
    digest = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    (root / f"{rel}.CHECKSUM").write_text(f"{digest}  {rel.rsplit('/', 1)[1]}\n")


def rewrite(edit):
    def apply(root, rel):
        write_klines_day(root, "perp", "BTCUSDT", DAY,
                         SYNTH.klines_1m("perp", "BTCUSDT", DAY).frame, edit=edit)
    return apply


REL = daily_klines_path("perp", "BTCUSDT", DAY)
PARTITION = "2024-01-02"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (tamper, "ChecksumMismatchError"),
        (truncate, "CorruptArchiveError"),
        (rewrite(replace_line(99, lambda x: x + ",1")), "line 100"),
        (rewrite(replace_line(99, lambda x: x.replace(",", ",abc,", 1).rsplit(",", 1)[0])),
         "line 100"),
    ],
    ids=["checksum-mismatch", "truncated-zip", "wrong-column-count", "garbage-field"],
)
def test_unreadable_input_fails_with_file_and_partition_and_keeps_previous_data(
        archive, data_root, instance, damage, message):
    root, server = archive
    assert ingest(server, instance)
    before = table("raw_perp_klines_1m")
    assert before.height == 1440
    damage(root, REL)
    assert not ingest(server, instance)
    msg = failure_message(instance)
    assert message in msg and "BTCUSDT-1m-2024-01-02.zip" in msg and PARTITION in msg, msg
    assert table("raw_perp_klines_1m").equals(before)
    # Raw bytes are never lost: the good zip stays, a rejected download is kept beside it.
    kept = list((data_root / "raw").rglob("BTCUSDT-1m-2024-01-02.zip*"))
    assert any(p.name == "BTCUSDT-1m-2024-01-02.zip" for p in kept)
    # The manifest tells it: the rejected file with its reason and kept bytes, beside the
    # previous good file's row (the data the table still holds).
    files = table("ingest_files").filter(pl.col("asset") == "raw_perp_klines_1m")
    assert sorted(files["status"]) == ["ok", "rejected"], files
    rejected = files.filter(pl.col("status") == "rejected").row(0, named=True)
    assert rejected["url"].endswith(REL) and rejected["date"] == DAY
    assert message in rejected["reason"] and PARTITION in rejected["reason"], rejected
    bytes_kept = data_root / rejected["path"]
    assert bytes_kept.is_file() and (rejected["sha256"] is None or rejected["sha256"]
                                     == hashlib.sha256(bytes_kept.read_bytes()).hexdigest())
    assert "rejected" in msg


def test_rejected_file_on_a_first_run_is_recorded_and_nothing_else_written(
        archive, data_root, instance):
    root, server = archive
    tamper(root, REL)
    assert not ingest(server, instance)
    assert "ChecksumMismatchError" in failure_message(instance)
    files = table("ingest_files")
    (row,) = files.filter(pl.col("asset") == "raw_perp_klines_1m").iter_rows(named=True)
    assert (row["symbol"], row["date"], row["status"]) == ("BTCUSDT", DAY, "rejected")
    assert row["path"].startswith("raw/_rejected/") and "ChecksumMismatchError" in row["reason"]
    kept = (data_root / row["path"]).read_bytes()
    assert kept == (root / REL).read_bytes()
    assert hashlib.sha256(kept).hexdigest() == row["sha256"]
    assert "raw_perp_klines_1m" not in WarehouseResource().warehouse().tables()


def check_evaluations(instance):
    """(asset, check) -> evaluation of the last run."""
    (last, *_) = instance.get_runs(limit=1)
    out = {}
    for r in instance.get_records_for_run(last.run_id).records:
        event = r.event_log_entry.dagster_event
        if event and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            out[(data.asset_key.to_user_string(), data.check_name)] = data
    return out


def summary_row(name):
    text = warehouse_summary(WarehouseResource().warehouse(), DAY, DAY)
    (line,) = [x for x in text.splitlines() if x.startswith(f"{name} ")]
    return dict(zip(["table", "rows", "symbols", "missing", "partial"], line.split(),
                    strict=True)), text


def no_perp_file(root, rel):
    """Every file of the day 404s (the fixture serves only the perp klines zip)."""
    (root / rel).unlink()
    (root / f"{rel}.CHECKSUM").unlink()


def empty_csv(root, rel):
    write_zip(root, rel, "")


def header_only(root, rel):
    write_zip(root, rel, KLINE_HEADER + "\n")


@pytest.mark.parametrize(("make", "status"),
                         [(no_perp_file, "missing"), (empty_csv, "empty"),
                          (header_only, "empty")],
                         ids=["every-file-404", "empty-csv", "header-only-csv"])
def test_a_day_without_data_is_missing_in_manifest_summary_and_check(
        archive, data_root, instance, make, status):
    root, server = archive
    make(root, REL)
    assert ingest(server, instance)
    files = {r["asset"]: r for r in table("ingest_files").iter_rows(named=True)}
    assert files["raw_perp_klines_1m"]["status"] == status
    assert {files[a]["status"] for a in ("raw_spot_klines_1m", "raw_funding_rates",
                                         "raw_open_interest")} == {"missing"}
    assert table("raw_perp_klines_1m").is_empty()

    row, text = summary_row("raw_perp_klines_1m")
    assert row["missing"] == "1440", text
    assert summary_row("bars_1m")[0]["missing"] == str(2 * 1440), text  # perp and spot
    assert f"raw_perp_klines_1m BTCUSDT {DAY} {status}" in text, text

    checks = check_evaluations(instance)
    for asset in ("raw_perp_klines_1m", "raw_spot_klines_1m", "raw_open_interest"):
        check = checks[(asset, "complete_days")]
        assert (check.passed, check.severity.value) == (False, "WARN"), asset
        assert check.metadata["missing_days"].value == f"BTCUSDT {DAY}", asset
        assert f"BTCUSDT {DAY}" in check.description


def nan_close(x):
    f = x.split(",")
    f[4] = "NaN"
    return ",".join(f)


def swap_high_low(x):
    f = x.split(",")
    f[2], f[3] = f[3], f[2]
    return ",".join(f)


def zero_open(x):
    f = x.split(",")
    f[1] = "0"
    return ",".join(f)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda ls: [*ls[:11], ls[10], *ls[11:]], "duplicate"),
        (lambda ls: [*ls[:10], ls[11], ls[10], *ls[12:]], "out of order"),
        (replace_line(10, swap_high_low), "high"),
        (replace_line(10, zero_open), "non-positive"),
        (replace_line(10, nan_close), "NaN"),
    ],
    ids=["duplicate-row", "out-of-order", "high-below-low", "non-positive-price", "nan"],
)
def test_bad_rows_are_quarantined_with_reason_and_line(archive, data_root, instance, edit,
                                                       reason):
    root, server = archive
    rewrite(edit)(root, REL)
    assert ingest(server, instance)
    q = table("ingest_quarantine").filter(pl.col("asset") == "raw_perp_klines_1m")
    assert q.height == 1, q
    row = q.row(0, named=True)
    assert reason.lower() in row["reason"].lower(), row
    assert row["source_file"].endswith("BTCUSDT-1m-2024-01-02.zip")
    assert row["line_no"] in (11, 12, 13) and row["raw_line"]
    perp = table("raw_perp_klines_1m")
    assert perp.height in (1439, 1440) and perp["ts_open"].is_unique().all()
    # The quarantined bytes are still in the kept zip.
    (kept,) = (data_root / "raw").rglob("BTCUSDT-1m-2024-01-02.zip")
    with zipfile.ZipFile(kept) as zf:
        assert row["raw_line"] in zf.read(zf.namelist()[0]).decode()


def test_missing_minutes_are_gaps_flagged_downstream_not_filled(archive, data_root, instance):
    root, server = archive
    rewrite(lambda ls: ls[:600] + ls[660:])(root, REL)  # 10:00-10:59 absent
    assert ingest(server, instance)
    assert table("raw_perp_klines_1m").height == 1380
    bars = table("bars_5m").filter(pl.col("market") == "perp")
    assert bars.height == 288 - 12
    assert bars.filter(pl.col("ts_open").dt.hour() == 10).is_empty()
    (last,) = instance.get_runs(limit=1)
    warn = [e for e in instance.get_records_for_run(last.run_id).records
            if e.event_log_entry.dagster_event
            and e.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    gaps = {(d.asset_key.to_user_string(), d.passed, d.severity.value)
            for d in (e.event_log_entry.dagster_event.event_specific_data for e in warn)
            if d.check_name == "complete_days"}
    assert ("raw_perp_klines_1m", False, "WARN") in gaps
    assert ("bars_1m", False, "WARN") in gaps


def test_partial_bucket_is_kept_with_its_source_count(archive, data_root, instance):
    root, server = archive
    rewrite(lambda ls: ls[:602] + ls[605:])(root, REL)  # 10:02-10:04 absent
    assert ingest(server, instance)
    bar = table("bars_5m").filter((pl.col("market") == "perp")
                                  & (pl.col("ts_open") == dt.datetime(2024, 1, 2, 10)))
    assert bar["n_source_bars"].to_list() == [2]
    fifteen = table("bars_15m").filter(pl.col("ts_open") == dt.datetime(2024, 1, 2, 10))
    assert fifteen["n_source_bars"].to_list() == [12]
