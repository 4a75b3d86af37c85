"""Mark price and premium index: the synthetic and generated sources, the bars' mark columns,
their checks, and an older warehouse gaining the columns (no Dagster)."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest

from backtest_assets.core import bars as core_bars
from backtest_assets.defs.bars.checks import bars_contract, source_bars_reconcile
from backtest_assets.defs.ingest.checks import KLINES_CONTRACT, PREMIUM_KLINES_CONTRACT
from backtest_assets.schemas.checks import evaluate
from backtest_assets.sources.generated import GeneratedUniverseSource
from backtest_assets.sources.synthetic import SyntheticSource
from backtest_assets.specs.models import GeneratedSymbolsSpec
from backtest_assets.warehouse import Box, PartitionLayout, Warehouse, WarehouseError

DAY = dt.date(2024, 1, 2)
SOURCE = SyntheticSource(seed=7)


def _passed(frame: pl.DataFrame, contract) -> dict[str, bool]:
    return {o.name: o.passed for o in evaluate(frame, contract)}


# ---- synthetic source ----------------------------------------------------------------------

def test_synthetic_mark_is_last_less_a_small_mean_reverting_deviation() -> None:
    last = SOURCE.klines_1m("perp", "BTCUSDT", DAY).frame
    mark = SOURCE.mark_klines_1m("BTCUSDT", DAY).frame
    assert mark["ts_open"].to_list() == last["ts_open"].to_list()
    dev = np.log(last["close"].to_numpy() / mark["close"].to_numpy())
    assert 0.5e-4 < dev.std() < 2e-4 and abs(dev.mean()) < 1e-4  # ~1 bp, centred
    assert 0.5 < np.corrcoef(dev[:-1], dev[1:])[0, 1] < 0.97  # mean-reverting, persistent
    assert (mark["high"] != last["high"]).all() and (mark["low"] != last["low"]).all()
    assert all(_passed(mark, KLINES_CONTRACT).values())
    assert (mark.select("volume", "quote_volume").to_numpy() == 0).all()


def test_synthetic_premium_is_mark_over_spot_less_one() -> None:
    spot = SOURCE.klines_1m("spot", "BTCUSDT", DAY).frame
    mark = SOURCE.mark_klines_1m("BTCUSDT", DAY).frame
    premium = SOURCE.premium_klines_1m("BTCUSDT", DAY).frame
    for c in ("open", "close"):
        np.testing.assert_allclose(premium[c].to_numpy(),
                                   mark[c].to_numpy() / spot[c].to_numpy() - 1, atol=1e-12)
    assert (premium["close"] < 0).any() and (premium["close"] > 0).any()
    assert premium["close"].abs().max() < 0.01
    assert all(_passed(premium, PREMIUM_KLINES_CONTRACT).values())
    assert not _passed(premium, KLINES_CONTRACT)["positive_prices"]  # why it has its own


def test_synthetic_mark_is_deterministic_and_continuous_across_midnight() -> None:
    day = SOURCE.mark_klines_1m("ETHUSDT", DAY).frame
    nxt = SyntheticSource(seed=7).mark_klines_1m("ETHUSDT", DAY + dt.timedelta(days=1)).frame
    again = SyntheticSource(seed=7).mark_klines_1m("ETHUSDT", DAY).frame
    assert day.equals(again)
    assert day["close"][-1] == nxt["open"][0]
    assert not day.equals(SyntheticSource(seed=8).mark_klines_1m("ETHUSDT", DAY).frame)


def test_generated_symbols_have_marks_where_they_have_bars() -> None:
    spec = GeneratedSymbolsSpec(symbols=6, days=4, seed=3, xs_effect=0.01)
    start = dt.date(2024, 1, 1)
    served = GeneratedUniverseSource(spec, start, other=SOURCE)
    checked = 0
    for name in spec.names:
        for i in range(spec.days):
            day = start + dt.timedelta(days=i)
            last = served.klines_1m("perp", name, day)
            mark = served.mark_klines_1m(name, day)
            premium = served.premium_klines_1m(name, day)
            assert mark.missing == last.missing == premium.missing
            if last.missing:
                continue
            checked += 1
            assert mark.frame["ts_open"].to_list() == last.frame["ts_open"].to_list()
            for frame, contract in ((mark.frame, KLINES_CONTRACT),
                                    (premium.frame, PREMIUM_KLINES_CONTRACT)):
                outcomes = _passed(frame, contract)  # complete_days warns of the gaps
                assert all(v for k, v in outcomes.items() if k != "complete_days")
            np.testing.assert_allclose(  # no spot: the index is the last price
                premium.frame["close"].to_numpy(),
                mark.frame["close"].to_numpy() / last.frame["close"].to_numpy() - 1, atol=1e-12)
    assert checked > 10
    assert served.mark_klines_1m("BTCUSDT", start).frame.equals(
        SOURCE.mark_klines_1m("BTCUSDT", start).frame)  # the wrapped source's symbols


# ---- bars ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_minute() -> pl.DataFrame:
    perp = SOURCE.klines_1m("perp", "BTCUSDT", DAY).frame
    mark = SOURCE.mark_klines_1m("BTCUSDT", DAY).frame.filter(
        pl.col("ts_open").dt.hour() != 3)  # an hour of marks missing
    return pl.concat([core_bars.bars_1m(perp, "perp", mark),
                      core_bars.bars_1m(SOURCE.klines_1m("spot", "BTCUSDT", DAY).frame,
                                        "spot")]).sort(core_bars.SORT_KEYS)


def test_bars_mark_columns_and_their_absence(one_minute) -> None:
    assert list(one_minute.columns[-5:]) == [*core_bars.MARK_COLS, "n_mark_bars"]
    spot = one_minute.filter(pl.col("market") == "spot")
    assert spot.select(*core_bars.MARK_COLS, "n_mark_bars").null_count().row(0) == (1440,) * 5
    perp = one_minute.filter(pl.col("market") == "perp")
    gap = perp.filter(pl.col("ts_open").dt.hour() == 3)
    assert gap["mark_close"].null_count() == 60 and gap["n_mark_bars"].to_list() == [0] * 60
    assert perp["n_mark_bars"].sum() == 1380
    assert all(_passed(one_minute, bars_contract(1)).values())
    # without a mark frame every perp minute lacks its mark
    bare = core_bars.bars_1m(SOURCE.klines_1m("perp", "BTCUSDT", DAY).frame, "perp")
    assert bare["n_mark_bars"].unique().to_list() == [0] and bare["mark_open"].null_count() == 1440


def test_resampled_marks_and_the_reconcile_check(one_minute) -> None:
    fifteen = core_bars.resample(one_minute, 15)
    perp = fifteen.filter(pl.col("market") == "perp")
    hour3 = perp.filter(pl.col("ts_open").dt.hour() == 3)
    assert hour3["n_mark_bars"].to_list() == [0] * 4 and hour3["mark_open"].null_count() == 4
    assert fifteen.filter(pl.col("market") == "spot")["n_mark_bars"].null_count() == 96
    assert all(_passed(fifteen, bars_contract(15)).values())
    assert source_bars_reconcile(fifteen, one_minute, 15).passed
    # a mark high that is not its minutes' is caught, and so is a miscounted n_mark_bars
    bad = fifteen.with_columns(mark_high=pl.when(pl.col("mark_high") == pl.col("mark_high").max())
                               .then(pl.col("mark_high") * 1.01).otherwise(pl.col("mark_high")))
    assert not source_bars_reconcile(bad, one_minute, 15).passed
    miscount = fifteen.with_columns(n_mark_bars=pl.col("n_mark_bars") - (pl.col("ts_open")
                                    == pl.col("ts_open").min()).cast(pl.Int32))
    assert not source_bars_reconcile(miscount, one_minute, 15).passed


@pytest.mark.parametrize(("edit", "check"), [
    (pl.col("mark_low") * -1, "positive_prices"),  # a non-positive mark
    (pl.col("mark_high") * 0.5, "ohlc_sanity"),  # mark high below its open
])
def test_bars_contract_checks_the_marks(one_minute, edit, check) -> None:
    name = "mark_low" if check == "positive_prices" else "mark_high"
    bad = one_minute.with_columns(edit.alias(name))
    outcomes = _passed(bad, bars_contract(1))
    assert not outcomes[check]


def test_bars_contract_wants_marks_and_counts_to_agree(one_minute) -> None:
    spot_with_mark = one_minute.with_columns(
        n_mark_bars=pl.when(pl.col("market") == "spot").then(0).otherwise(pl.col("n_mark_bars"))
        .cast(pl.Int32))
    assert not _passed(spot_with_mark, bars_contract(1))["ohlc_sanity"]
    counted_missing = one_minute.with_columns(
        n_mark_bars=pl.when(pl.col("market") == "perp").then(1).otherwise(None).cast(pl.Int32))
    assert not _passed(counted_missing, bars_contract(1))["ohlc_sanity"]


# ---- warehouse -------------------------------------------------------------------------------

def test_an_older_bars_table_gains_the_mark_columns(tmp_path, one_minute) -> None:
    layout = PartitionLayout(time_col="ts_open", time_dim="date",
                             value_dims={"symbol": "symbol"})
    path = tmp_path / "warehouse.duckdb"
    old = one_minute.drop(*core_bars.ADDED_COLUMNS)
    with duckdb.connect(str(path)) as conn:  # a bars table as written before the mark
        conn.register("old", old.to_arrow())
        conn.execute("CREATE TABLE bars_1m AS SELECT * FROM old")
        conn.execute("CREATE TABLE pit_features AS SELECT * FROM old")
    wh = Warehouse(path)
    nxt = one_minute.with_columns(pl.col("ts_open") + dt.timedelta(days=1),
                                  pl.col("ts_close") + dt.timedelta(days=1))
    wh.replace("bars_1m", nxt, layout, None)
    got = wh.read("bars_1m", layout)
    assert got.columns == old.columns + list(core_bars.ADDED_COLUMNS)
    assert got.height == one_minute.height  # the whole-table write replaced the rows
    # a partial write keeps the older rows with null marks
    with duckdb.connect(str(path)) as conn:
        conn.execute("DROP TABLE bars_1m")
        conn.register("old", old.to_arrow())
        conn.execute("CREATE TABLE bars_1m AS SELECT * FROM old")
    box = Box(equals=(("symbol", "BTCUSDT"),), start=dt.datetime(2024, 1, 3),
              end=dt.datetime(2024, 1, 4))
    wh.replace("bars_1m", nxt, layout, [box])
    got = wh.read("bars_1m", layout)
    assert got.height == 2 * one_minute.height
    older = got.filter(pl.col("ts_open") < dt.datetime(2024, 1, 3))
    assert older.select(core_bars.ADDED_COLUMNS).null_count().row(0) == (older.height,) * 5
    # other tables still refuse a frame with columns they lack
    with pytest.raises(WarehouseError, match="differ"):
        wh.replace("pit_features", nxt, layout, None)
