"""Parse throughput of the Binance klines CSV reader, next to DuckDB's read_csv, same file.

The file is a year of synthetic 1m klines (527,040 rows) written in Binance's archive format
(12 columns, epoch milliseconds, no header). Each reader turns it into a polars frame:

- ``parse_klines_csv``: ours, from the bytes: header detection, ms/us normalisation, the
  row checks that feed the quarantine, canonical dtypes.
- DuckDB ``read_csv`` with the 12 columns typed, into polars (``.pl()``): the reference.
- polars ``read_csv`` with the same types and no checks: the floor of our approach.

    .venv/bin/python bench/csv_parse.py [--days 366] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import polars as pl

from backtest_assets.sources.binance_csv import parse_klines_csv
from backtest_assets.sources.synthetic import SyntheticSource

START = dt.date(2024, 1, 1)
COLUMNS = {
    "open_time": "BIGINT", "open": "DOUBLE", "high": "DOUBLE", "low": "DOUBLE",
    "close": "DOUBLE", "volume": "DOUBLE", "close_time": "BIGINT", "quote_volume": "DOUBLE",
    "count": "BIGINT", "taker_buy_volume": "DOUBLE", "taker_buy_quote_volume": "DOUBLE",
    "ignore": "BIGINT",
}


def write_year(path: Path, days: int) -> int:
    src = SyntheticSource(seed=7)
    frame = pl.concat([src.klines_1m("perp", "BTCUSDT", START + dt.timedelta(days=i)).frame
                       for i in range(days)])
    ms = pl.col("ts_open").dt.epoch("ms")
    frame.select(
        ms.alias("open_time"), "open", "high", "low", "close", "volume",
        (ms + 59_999).alias("close_time"), "quote_volume", pl.col("trade_count").alias("count"),
        "taker_buy_volume", "taker_buy_quote_volume", pl.lit(0).alias("ignore"),
    ).write_csv(path, include_header=False)
    return frame.height


def time_it(fn, repeats: int) -> tuple[float, int]:
    runs, rows = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=366)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTCUSDT-1m-year.csv"
        n = write_year(path, args.days)
        start = dt.datetime.combine(START, dt.time())
        end = start + dt.timedelta(days=args.days)

        def ours() -> int:
            frame, quarantine = parse_klines_csv(
                path.read_bytes(), source_file=path.name, symbol="BTCUSDT", interval="1m",
                period_start=start, period_end=end)
            assert not quarantine
            return frame.height

        def duck() -> int:
            con = duckdb.connect()
            try:
                return con.read_csv(str(path), header=False, columns=COLUMNS).pl().height
            finally:
                con.close()

        def polars_plain() -> int:
            return pl.read_csv(path, has_header=False, new_columns=list(COLUMNS),
                               schema_overrides={"open_time": pl.Int64}).height

        results = {name: time_it(fn, args.repeats) for name, fn in
                   (("duckdb read_csv -> polars (reference)", duck),
                    ("parse_klines_csv (ours, with checks)", ours),
                    ("polars read_csv, no checks", polars_plain))}
        size_mb = path.stat().st_size / 1e6
    ref = results["duckdb read_csv -> polars (reference)"][0]
    print(f"{n:,} rows, {size_mb:.1f} MB CSV; median of {args.repeats}")
    print(f"{'reader':<40} {'median s':>9} {'rows/s':>12} {'t / t_duckdb':>12}")
    for name, (secs, rows) in results.items():
        assert rows == n, (name, rows)
        print(f"{name:<40} {secs:>9.3f} {rows / secs:>12,.0f} {secs / ref:>12.2f}")


if __name__ == "__main__":
    main()
