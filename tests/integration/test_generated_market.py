"""The wider market through Dagster: the universe's generated cross-section ingested and
resampled like any symbol, each symbol a partition of the dynamic symbol dimension from its
listing day, nothing asked of a symbol before it lists or after it delists, and the alpha
bundle over a study of those symbols."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl
import pytest

from backtest_assets.cli import run
from backtest_assets.partitions import REGISTRY, registered_symbols, universe_listings
from backtest_assets.resources import WarehouseResource
from backtest_assets.sources.generated import _draw

UNIVERSE = REGISTRY.universe
SPEC = UNIVERSE.generated
START = UNIVERSE.start_date


def _calendar():
    return {x.symbol: x for x in universe_listings("synthetic")}


def _read(sql: str, *params) -> pl.DataFrame:
    with WarehouseResource().warehouse().connect(read_only=True) as conn:
        return conn.execute(sql, list(params)).pl()


def test_generated_symbols_go_through_ingest_and_bars_within_their_listing(data_root,
                                                                          instance):
    calendar = _calendar()
    late = next(x for x in calendar.values() if x.first_day > START)
    # three days around the late symbol's listing, with a symbol listed throughout
    first, last = late.first_day - dt.timedelta(days=1), late.first_day + dt.timedelta(days=1)
    steady = next(s for s in SPEC.names if calendar[s].first_day == START
                  and calendar[s].last_day >= last)
    assert run(first, last, ["BTCUSDT", steady, late.symbol], instance=instance, quiet=True,
               research=False)
    assert {late.symbol, steady, "BTCUSDT"} <= set(registered_symbols(instance))
    # the late symbol's keys start on its listing day: the day before was never asked for
    keys = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("bars_5m"))}
    assert f"{first}|{late.symbol}" not in keys
    assert {f"{late.first_day}|{late.symbol}", f"{last}|{late.symbol}",
            f"{first}|{steady}"} <= keys
    # what was ingested is the generator's 1m bars, and a 5m bar their aggregate
    u = _draw(SPEC, START)
    s = SPEC.names.index(steady) + 1
    raw = _read("SELECT ts_open, close FROM raw_perp_klines_1m WHERE symbol = ? "
                "ORDER BY ts_open", steady)
    rows = slice((first - START).days * 1440, ((last - START).days + 1) * 1440)
    have = np.isfinite(u.panel.close[rows, s])
    np.testing.assert_array_equal(raw["close"].to_numpy(), u.panel.close[rows, s][have])
    bars = _read("SELECT ts_open, open, high, low, close, quote_volume FROM bars_5m WHERE "
                 "symbol = ? AND market = 'perp' ORDER BY ts_open", steady)
    t0 = (first - START).days * 1440 + 600  # 10:00 of the first day
    bar = bars.filter(pl.col("ts_open") == dt.datetime.combine(first, dt.time(10))).row(
        0, named=True)
    block = slice(t0, t0 + 5)
    if np.isfinite(u.panel.close[block, s]).all():
        assert bar["open"] == u.panel.open[t0, s] and bar["close"] == u.panel.close[t0 + 4, s]
        assert bar["high"] == u.panel.high[block, s].max()
        assert bar["quote_volume"] == pytest.approx(u.panel.quote_volume[block, s].sum(),
                                                    rel=1e-12)
    # no spot and no open interest for a generated symbol: never asked for, not invented
    files = _read("SELECT asset, status FROM ingest_files WHERE symbol = ?", steady)
    by_asset = dict(files.group_by("asset").agg(pl.col("status").unique().sort()).rows())
    assert "raw_spot_klines_1m" not in by_asset  # a perp-only symbol: spot is never asked
    assert "raw_open_interest" not in by_asset
    assert by_asset["raw_perp_klines_1m"] == ["generated"]


def test_a_delisted_symbols_history_stays(data_root, instance):
    calendar = _calendar()
    gone = min((x for x in calendar.values() if x.last_day and x.last_day < START
                + dt.timedelta(days=SPEC.days - 1)), key=lambda x: x.last_day)
    day = gone.last_day
    assert run(day, day + dt.timedelta(days=1), [gone.symbol], instance=instance, quiet=True,
               research=False)
    keys = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey("bars_1m"))}
    assert keys == {f"{day}|{gone.symbol}"}  # the day after its delisting is not asked for
    assert gone.symbol in registered_symbols(instance)
    rows = _read("SELECT count(*) AS n, max(ts_open) AS last FROM raw_perp_klines_1m "
                 "WHERE symbol = ?", gone.symbol).row(0, named=True)
    assert 0 < rows["n"] <= 1440 and rows["last"].date() == day


def test_a_binance_run_refuses_generated_symbols(data_root, instance):
    with pytest.raises(SystemExit, match="not served by the binance source"):
        run(START, START, [SPEC.names[0]], instance=instance, quiet=True, research=False,
            resources_config={"market_source": {"config": {"market_source": "binance"}}})


@pytest.mark.slow
def test_the_alpha_bundle_over_a_study_of_the_generated_symbols(data_root, instance, tmp_path,
                                                                monkeypatch):
    """Three weeks of BTCUSDT and the 23 generated symbols through every data layer, then
    the alpha bundle: the liquid universe holds generated symbols, a late listing only once
    its ADV window has filled, and scores exist only after the first training period
    (~90 s on 2 cores)."""
    import shutil

    from backtest_assets.cli import alpha
    from backtest_assets.specs import default_specs_dir, reload_registries

    specs = tmp_path / "specs"
    shutil.copytree(default_specs_dir(), specs)
    end = START + dt.timedelta(days=20)
    symbols = ["BTCUSDT", *SPEC.names]
    (specs / "studies" / "xs.yaml").write_text(
        f"name: xs\nstart: {START}\nend: {end}\nsymbols: [{', '.join(symbols)}]\n"
        "source: synthetic\n")
    monkeypatch.setenv("BACKTEST_SPECS_DIR", str(specs))
    reload_registries()
    try:
        assert run(START, end, symbols, instance=instance, quiet=True)
        assert alpha(study="xs", instance=instance, quiet=True)
    finally:
        reload_registries()
    snap = _read("SELECT ts, symbol, member FROM universe_snapshot WHERE study = 'xs'")
    members = set(snap.filter("member")["symbol"].unique())
    assert len(members & set(SPEC.names)) >= 10
    calendar = _calendar()
    late = [x for x in calendar.values() if START < x.first_day <= end - dt.timedelta(days=2)]
    for x in late:  # 96 bars of 15m after its first bar at the earliest
        joined = snap.filter(pl.col("member") & (pl.col("symbol") == x.symbol))["ts"]
        if joined.len():
            assert joined.min() >= dt.datetime.combine(x.first_day, dt.time()) + dt.timedelta(
                hours=24) - dt.timedelta(minutes=5)
    scores = _read("SELECT ts, symbol, score FROM alpha_scores WHERE study = 'xs' "
                   "AND score IS NOT NULL")
    first_train = REGISTRY.alpha["combined_model_v1"].first_train_days
    assert scores.height > 0
    assert scores["ts"].min() >= dt.datetime.combine(START + dt.timedelta(days=first_train),
                                                     dt.time()) - dt.timedelta(minutes=5)
    assert set(scores["symbol"]) <= members
