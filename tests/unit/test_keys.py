"""Symbols and partition keys are validated before they reach a path or SQL."""

import datetime as dt

import dagster as dg
import pytest

from backtest_assets.cli import main, symbol_blocks
from backtest_assets.core.keys import InvalidKeyError, validate_date, validate_symbol
from backtest_assets.defs.shared import parse_date_symbol_keys

HOSTILE = ["../x", "BTC'; DROP", "btcusdt", "", "B", "BTC/USDT", "BTC USDT", "BTC\nUSDT",
           "A" * 31, None, 42]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_hostile_symbols_are_refused(symbol):
    with pytest.raises(InvalidKeyError, match="invalid symbol"):
        validate_symbol(symbol)


@pytest.mark.parametrize("value", ["2024-13-01", "2024-1-1", "../2024-01-01", "2024-01-01'",
                                   dt.datetime(2024, 1, 1), None])
def test_bad_dates_are_refused(value):
    with pytest.raises(InvalidKeyError, match="invalid date"):
        validate_date(value)


def test_partition_keys_parse_sorted_and_validated():
    keys = ["2024-01-02|ETHUSDT", dg.MultiPartitionKey({"date": "2024-01-01",
                                                         "symbol": "BTCUSDT"})]
    assert parse_date_symbol_keys(keys) == [(dt.date(2024, 1, 1), "BTCUSDT"),
                                            (dt.date(2024, 1, 2), "ETHUSDT")]


@pytest.mark.parametrize("key", ["2024-01-01|../x", "2024-01-01|BTC'; DROP",
                                 "../../etc|BTCUSDT", "2024-01-01", "BTCUSDT"])
def test_hostile_partition_keys_are_refused(key):
    with pytest.raises(InvalidKeyError):
        parse_date_symbol_keys([key])


def test_cli_refuses_unknown_symbols_before_running(capsys):
    with pytest.raises(SystemExit, match=r"unknown symbol\(s\) \['../x'\]"):
        main(["run", "--start", "2024-01-01", "--end", "2024-01-01", "--symbols", "../x"])


def test_cli_refuses_days_outside_the_partitions():
    with pytest.raises(SystemExit, match=r"2023-12-31\.\.2024-01-02 is outside the partitions"):
        main(["run", "--start", "2023-12-31", "--end", "2024-01-02"])
    with pytest.raises(SystemExit, match="is outside the partitions 2024-01-01"):
        main(["run", "--start", "2024-01-01", "--end", "2999-01-01"])


def test_symbol_blocks_follow_the_universe_order():
    universe = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert symbol_blocks(["SOLUSDT", "BTCUSDT"], universe) == [["BTCUSDT"], ["SOLUSDT"]]
    assert symbol_blocks(["ETHUSDT", "SOLUSDT", "ETHUSDT"], universe) == [["ETHUSDT", "SOLUSDT"]]
