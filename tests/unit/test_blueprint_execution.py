"""A blueprint's execution (issue 18) through ``run_blueprint``: limit orders named in its
``execution`` block pay the maker fee and are counted in the metrics, a participation cap
splits its fills, and the study's ``missing_marks`` policy refuses or completes bars without
a mark price (``Panel.with_mark_policy``) before the engine sees them. A blueprint or study
without the new fields keeps its hash."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.specs.loader import build, spec_hash
from backtest_assets.specs.models import (
    Condition,
    Entry,
    ExecutionSpec,
    Exits,
    StrategySpec,
    StudySpec,
)
from backtest_assets.specs.registry import load_registry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.run import run_blueprint

REG = load_registry()
VENUE = REG.fees.venues[REG.fees.default_venue]  # maker 2 bps, taker 5, slippage 1
T0 = dt.datetime(2024, 1, 1)
N = 48


def market(marks: bool = True, volume: float = 1_000.0) -> tuple[Panel, dict, pl.DataFrame]:
    """BTCUSDT on a random walk whose lows dip 0.1 % under the open (a passive buy at the
    last close fills on the next bar), with mark prices 1 bp off the last, a signal at bar 5
    and one funding print of 0."""
    rng = np.random.default_rng(7)
    ts = [T0 + dt.timedelta(minutes=5 * k) for k in range(N)]
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    frame = {"symbol": "BTCUSDT", "ts_open": ts, "open": open_, "high": high, "low": low,
             "close": close, "volume": np.full(N, volume)}
    if marks:
        frame |= {"mark_open": open_ * 1.0001, "mark_high": high * 1.0001,
                  "mark_low": low * 1.0001}
    panel = Panel.from_bars(pl.DataFrame(frame), ("BTCUSDT",), T0,
                            T0 + dt.timedelta(minutes=5 * N), 5)
    signal = np.zeros((N, 1))
    signal[5, 0] = 1.0
    funding = pl.DataFrame({"symbol": "BTCUSDT", "ts": [T0], "funding_rate": [0.0]})
    return panel, {"sig": signal}, funding


def blueprint(execution: ExecutionSpec | None = None) -> StrategySpec:
    return StrategySpec(name="once", symbols=("BTCUSDT",),
                        entry=Entry(condition=Condition(feature="sig", op="gt", threshold=0.5)),
                        direction="long", target_weight=0.5, leverage=1.0,
                        exits=Exits(time_stop_bars=6), execution=execution)


def run(bp: StrategySpec, panel: Panel, features: dict, funding: pl.DataFrame):
    return run_blueprint(bp, panel, features=features, events=None, funding=funding,
                         venue=VENUE, init_cash=100_000.0)


def test_a_limit_entry_pays_the_maker_fee_and_is_counted():
    panel, features, funding = market()
    limit = ExecutionSpec(orders="limit", limit_offset_bps=0.0, limit_valid_bars=3,
                          limit_exits=False)
    market_run, limit_run = (run(blueprint(e), panel, features, funding)
                             for e in (None, limit))
    m = limit_run.metrics.row(0, named=True)
    assert (m["limit_placed"], m["limit_filled"], m["limit_expired"]) == (1, 1, 0)
    t, base = limit_run.trades.row(0, named=True), market_run.trades.row(0, named=True)
    # the entry rests at bar 5's close (tick 0.1, rounded down) and fills at it, the exit
    # (a time stop) is a market order: fees = maker on entry + taker on exit
    limit_px = np.floor(panel.close[5, 0] / 0.1 + 1e-9) * 0.1
    assert t["entry_price"] == pytest.approx(limit_px, rel=1e-12)
    entry_fee = 2e-4 * t["qty"] * t["entry_price"]
    exit_fee = 5e-4 * t["qty"] * t["exit_price"]
    assert t["fees"] == pytest.approx(entry_fee + exit_fee, rel=1e-9)
    assert base["fees"] > t["fees"]  # the market run paid the taker fee on both sides
    assert m["rejected_no_volume"] == 0 and m["mark_fallback_bars"] == 0
    assert market_run.metrics["limit_placed"][0] == 0


def test_a_participation_cap_splits_the_entry_and_the_exit_over_bars():
    """50,000 USDT of BTC at about 40,000 is 1.25 BTC; at most 25 % of each bar's 2 BTC,
    0.5 BTC, fills per bar: the entry in three fills from bar 6 (0.5, then 1.0 held, then
    the rest), the blueprint's exit six bars later in three more (1.253 -> 0.753 -> 0.253
    -> 0): four fills cut short. Each fill starts a trade of its own."""
    panel, features, funding = market(volume=2.0)
    r = run(blueprint(ExecutionSpec(participation=0.25)), panel, features, funding)
    assert r.metrics["partial_fills"][0] == 4
    assert r.trades["entry_bar"].to_list() == [6, 7, 8, 12, 13]
    held = r.trades["qty"].to_list()
    assert held[:2] == pytest.approx([0.5, 1.0])
    assert np.diff(held[2:]).tolist() == pytest.approx([-0.5, -0.5])
    assert 1.2 < held[2] < 1.3 and held[-1] < 0.5


def test_missing_marks_are_refused_by_default_and_fall_back_with_a_count():
    panel, features, funding = market()
    gap = dataclasses.replace(panel, mark_open=panel.mark_open.copy())
    gap.mark_open[[10, 11], 0] = np.nan
    with pytest.raises(ValueError, match=r"BTCUSDT: 2 bar\(s\) with a price but no mark "
                                         r"price, the first at 2024-01-01 00:50:00"):
        gap.with_mark_policy("refuse")
    filled = gap.with_mark_policy("last")
    assert filled.mark_fallback == 2
    assert filled.mark_open[10, 0] == panel.open[10, 0]
    assert filled.mark_open[12, 0] == panel.mark_open[12, 0]
    r = run(blueprint(), filled, features, funding)
    assert r.metrics["mark_fallback_bars"][0] == 2
    assert panel.with_mark_policy("refuse") is panel  # nothing missing: unchanged
    bare, _, _ = market(marks=False)
    assert bare.mark_open is None and bare.with_mark_policy("refuse") is bare


def test_the_engine_refuses_marks_the_policy_did_not_complete():
    panel, features, funding = market()
    gap = dataclasses.replace(panel, mark_low=panel.mark_low.copy())
    gap.mark_low[20, 0] = np.nan
    with pytest.raises(ValueError, match="BTCUSDT bar 20: mark open/high/low"):
        run(blueprint(), gap, features, funding)


def test_specs_without_the_new_fields_keep_their_hash_and_the_fields_load():
    bp = blueprint()
    assert spec_hash(bp) == spec_hash(dataclasses.replace(bp, execution=None))
    assert spec_hash(bp) != spec_hash(blueprint(ExecutionSpec(orders="limit")))
    loaded = build(ExecutionSpec, {"orders": "limit", "limit_offset_bps": 5,
                                   "limit_valid_bars": 4, "participation": 0.1},
                   file="blueprint.yaml")
    assert loaded.limits().valid_bars == 4 and loaded.participation == 0.1
    for bad, field in (({"orders": "stop"}, "orders"), ({"participation": 1.5}, "participation"),
                       ({"orders": "limit", "limit_valid_bars": 0}, "valid_bars")):
        with pytest.raises(ValueError, match=field):
            ExecutionSpec(**bad).validate()
    study = StudySpec(name="s", start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2),
                      symbols=("BTCUSDT",))
    assert spec_hash(study) == spec_hash(dataclasses.replace(study, missing_marks="refuse"))
    assert spec_hash(study) != spec_hash(dataclasses.replace(study, missing_marks="last"))
    with pytest.raises(ValueError, match="missing_marks"):
        dataclasses.replace(study, missing_marks="mid").validate()


def test_an_older_metrics_table_gains_the_venue_columns():
    """A warehouse written before these columns existed gains them on its next
    backtest_metrics write (warehouse.ADDED_COLUMNS): the list names every column of
    issue 18's rules the metrics frame has, and nothing it lacks."""
    from backtest_assets.engine import ORDER_EVENTS
    from backtest_assets.warehouse import ADDED_COLUMNS

    panel, features, funding = market()
    columns = set(run(blueprint(), panel, features, funding).metrics.columns)
    added = set(ADDED_COLUMNS["backtest_metrics"])
    assert added <= columns
    assert {*ORDER_EVENTS, "mark_fallback_bars", "rejected_no_volume",
            "ledger_residual"} <= added
