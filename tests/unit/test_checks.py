"""Each named asset check fails on the defect it names, and only on it."""

import datetime as dt

import polars as pl
import pytest

from backtest_assets.core import bars
from backtest_assets.defs.bars.checks import bars_contract, source_bars_reconcile
from backtest_assets.defs.ingest.checks import (
    FUNDING_CONTRACT,
    KLINES_CONTRACT,
    OPEN_INTEREST_CONTRACT,
)
from backtest_assets.schemas.checks import evaluate
from backtest_assets.sources.synthetic import SyntheticSource

DAY = dt.date(2024, 1, 2)
SRC = SyntheticSource(seed=11)


@pytest.fixture(scope="module")
def good():
    return SRC.klines_1m("perp", "BTCUSDT", DAY).frame


def failing(frame, contract):
    return {o.name for o in evaluate(frame, contract) if not o.passed}


def set_row(frame, i, **values):
    return frame.with_row_index("_i").with_columns(
        [pl.when(pl.col("_i") == i).then(pl.lit(v)).otherwise(pl.col(k)).alias(k)
         for k, v in values.items()]).drop("_i")


def test_clean_synthetic_day_passes_every_check(good):
    assert failing(good, KLINES_CONTRACT) == set()
    assert failing(SRC.funding_rates("BTCUSDT", DAY).frame, FUNDING_CONTRACT) == set()
    assert failing(SRC.open_interest("BTCUSDT", DAY).frame, OPEN_INTEREST_CONTRACT) == set()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: set_row(f, 7, close=-1.0), {"positive_prices", "ohlc_sanity"}),
        (lambda f: set_row(f, 7, volume=-3.0), {"non_negative_volumes", "ohlc_sanity"}),
        (lambda f: set_row(f, 7, high=1.0), {"ohlc_sanity"}),
        (lambda f: pl.concat([f, f.slice(10, 1)]), {"unique_keys", "monotonic_time",
                                                    "row_count"}),
        (lambda f: pl.concat([f.slice(0, 5), f.slice(6, 1), f.slice(5, 1), f.slice(7)]),
         {"monotonic_time"}),
        (lambda f: f.filter(pl.col("ts_open").dt.hour() != 4), {"complete_days"}),
        (lambda f: set_row(f, 3, ts_open=dt.datetime(2024, 1, 2, 0, 3, 30)), {"row_count"}),
        (lambda f: f.drop("quote_volume"), {"schema"}),
        (lambda f: f.with_columns(pl.col("trade_count").cast(pl.Float64)), {"schema"}),
        (lambda f: set_row(f, 2, open=None), {"schema"}),
    ],
    ids=["negative-price", "negative-volume", "high-below-low", "duplicate-row",
         "out-of-order", "missing-hour", "off-grid", "missing-column", "wrong-dtype", "null"],
)
def test_each_defect_fails_its_check(good, mutate, expected):
    got = failing(mutate(good), KLINES_CONTRACT)
    if "schema" in expected:
        # Nothing else can be trusted once the schema fails: the rest report "not run".
        assert "schema" in got
    else:
        assert got == expected


def test_failure_names_the_row(good):
    outcomes = {o.name: o for o in evaluate(set_row(good, 7, close=-1.0), KLINES_CONTRACT)}
    desc = outcomes["positive_prices"].description
    assert "row 7" in desc and "BTCUSDT" in desc and "2024-01-02 00:07:00" in desc


def test_gaps_are_warnings_not_errors(good):
    outcomes = {o.name: o for o in evaluate(good.filter(pl.col("ts_open").dt.hour() != 4),
                                            KLINES_CONTRACT)}
    gap = outcomes["complete_days"]
    assert not gap.passed and gap.severity == "WARN" and not gap.blocking_failure
    assert gap.metadata["missing_slots"] == 60
    assert outcomes["row_count"].passed


def test_a_partition_without_rows_is_a_missing_day_warning(good):
    """Every file of a day 404ing leaves its partition empty: a whole day missing, not a pass."""
    next_day = DAY + dt.timedelta(days=1)
    keys = [(DAY, "BTCUSDT"), (next_day, "BTCUSDT"), (next_day, "ETHUSDT")]
    outcomes = {o.name: o for o in evaluate(good, KLINES_CONTRACT, keys=keys)}
    gap = outcomes["complete_days"]
    assert not gap.passed and gap.severity == "WARN" and not gap.blocking_failure
    assert gap.metadata["days_without_rows"] == 2
    assert gap.metadata["missing_slots"] == 2 * 1440
    assert gap.metadata["missing_days"] == "BTCUSDT 2024-01-03, ETHUSDT 2024-01-03"
    assert "BTCUSDT 2024-01-03" in gap.description and "ETHUSDT 2024-01-03" in gap.description
    assert outcomes["row_count"].passed
    empty = good.clear()
    (only,) = [o for o in evaluate(empty, KLINES_CONTRACT, keys=[(DAY, "BTCUSDT")])
               if o.name == "complete_days"]
    assert not only.passed and only.metadata["missing_days"] == "BTCUSDT 2024-01-02"
    assert failing(good, KLINES_CONTRACT) == set()  # without keys: only the frame's days


def test_bars_contract_and_reconcile(good):
    one = bars.bars_1m(good, "perp")
    five = bars.resample(one, 5)
    assert failing(five, bars_contract(5)) == set()
    assert source_bars_reconcile(five, one, 5).passed
    dropped = one.filter(pl.col("ts_open") != dt.datetime(2024, 1, 2, 0, 7))
    outcome = source_bars_reconcile(five, dropped, 5)
    assert not outcome.passed and outcome.metadata["mismatched_days"] == 1
    bad_n = five.with_columns(pl.col("n_source_bars") + 5)
    assert not source_bars_reconcile(bad_n, one, 5).passed
    assert "schema" in failing(five.with_columns(pl.lit("futures").alias("market")),
                               bars_contract(5))


def test_funding_complete_days_warns_with_the_missing_times():
    day = SRC.funding_rates("BTCUSDT", DAY).frame
    outcomes = {o.name: o for o in evaluate(day.filter(pl.col("ts").dt.hour() != 8),
                                            FUNDING_CONTRACT)}
    gap = outcomes["complete_days"]
    assert not gap.passed and gap.severity == "WARN" and not gap.blocking_failure
    assert gap.metadata["missing_prints"] == 1
    assert gap.metadata["missing_times"] == "BTCUSDT 2024-01-02 08:00"
    assert "BTCUSDT 2024-01-02 08:00" in gap.description
    assert {o.name for o in outcomes.values() if not o.passed} == {"complete_days"}
    # A print a few ms late is on time.
    late = day.with_columns(pl.col("ts") + pl.duration(milliseconds=3))
    assert failing(late, FUNDING_CONTRACT) == set()


def test_funding_complete_days_of_the_partitions_asked_for():
    days = [DAY, DAY + dt.timedelta(days=1)]
    two = pl.concat([SRC.funding_rates(s, d).frame for s in ("BTCUSDT", "ETHUSDT")
                     for d in days])
    keys = [(d, s) for s in ("BTCUSDT", "ETHUSDT") for d in days]
    assert {o.name: o.passed for o in evaluate(two, FUNDING_CONTRACT, keys=keys)}[
        "complete_days"]
    # ETHUSDT's second day delivered nothing: its three 8-hourly prints are missing.
    short = two.filter(~((pl.col("symbol") == "ETHUSDT") & (pl.col("ts").dt.day() == 3)))
    gap = {o.name: o for o in evaluate(short, FUNDING_CONTRACT, keys=keys)}["complete_days"]
    assert gap.metadata["missing_times"] == ("ETHUSDT 2024-01-03 00:00, "
                                             "ETHUSDT 2024-01-03 08:00, "
                                             "ETHUSDT 2024-01-03 16:00")
    # Without the keys only the days the rows show are checked.
    assert failing(short, FUNDING_CONTRACT) == set()
