"""Blueprints to engine inputs: the panel grid, targets (signal, direction, hold rules), exit
rules, survivor blueprints, and one run through the real engine. Bars are 5 minutes from
2024-01-01 00:00; the expected arrays sit beside their inputs."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import ExitRules, Instrument, backtest
from backtest_assets.specs.models import Condition, Entry, Exits, StrategySpec
from backtest_assets.specs.registry import load_registry
from backtest_assets.strategies import Panel, exit_rules, from_survivor, spec_name, targets

NAN = np.nan
T0 = dt.datetime(2024, 1, 1)
W = 0.25  # target_weight of the test blueprints


def at(k: float) -> dt.datetime:
    """Open time of bar k (fractions fall between bars)."""
    return T0 + dt.timedelta(minutes=5 * k)


def bars(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    """Bars from (symbol, bar k, close) rows: open = close - 1, high = close + 1, low = open - 1."""
    sym, k, c = zip(*rows, strict=True)
    c = np.array(c, dtype=float)
    return pl.DataFrame({"symbol": list(sym), "ts_open": [at(x) for x in k],
                         "open": c - 1, "high": c + 1, "low": c - 2, "close": c})


def flat(n: int, symbols: tuple[str, ...] = ("BTCUSDT",)) -> Panel:
    """A panel of n bars at price 100 (o = h = l = c)."""
    ts = np.datetime64(T0, "us") + np.arange(n) * np.timedelta64(5, "m")
    p = np.full((n, len(symbols)), 100.0)
    return Panel(ts, symbols, p, p, p, p, interval_minutes=5)


def blueprint(**kw) -> StrategySpec:
    spec = {"name": "bp", "symbols": ("BTCUSDT",), "direction": "continuation",
            "target_weight": W, "entry": Entry(event="shock")} | kw
    return StrategySpec(**spec)


def events(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    """Events from (event_type, symbol, bar k, direction) rows."""
    et, sym, k, d = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pl.DataFrame({"event_type": list(et), "symbol": list(sym),
                         "ts": [at(x) for x in k], "direction": list(d)},
                        schema={"event_type": pl.String, "symbol": pl.String,
                                "ts": pl.Datetime("us"), "direction": pl.Int8})


def same(a: np.ndarray, b: list) -> None:
    np.testing.assert_array_equal(a, np.array(b, dtype=float))


# ---- Panel -----------------------------------------------------------------------------------

def test_panel_aligns_bars_on_the_grid():
    frame = bars([
        ("ETHUSDT", 0, 10), ("ETHUSDT", 1, 11), ("ETHUSDT", 3, 13),  # bar 2 missing
        ("BTCUSDT", -1, 99),  # before start: dropped
        ("BTCUSDT", 0, 100), ("BTCUSDT", 1, 101), ("BTCUSDT", 2, 102), ("BTCUSDT", 3, 103),
        ("BTCUSDT", 4, 104),  # at end: dropped
        ("SOLUSDT", 0, 5),    # not a panel symbol: dropped
    ])
    p = Panel.from_bars(frame, ["BTCUSDT", "ETHUSDT"], at(0), at(4), 5)
    assert p.ts.tolist() == [at(0), at(1), at(2), at(3)]
    assert p.symbols == ("BTCUSDT", "ETHUSDT")
    same(p.close, [[100, 10], [101, 11], [102, NAN], [103, 13]])
    same(p.open, [[99, 9], [100, 10], [101, NAN], [102, 12]])
    same(p.low[2], [100, NAN])


def test_panel_grid_end_is_exclusive_and_rounds_up():
    p = Panel.from_bars(bars([("BTCUSDT", 0, 100)]), ["BTCUSDT"], at(0), at(2.5), 5)
    assert p.ts.tolist() == [at(0), at(1), at(2)]  # 00:10 < 00:12:30
    same(p.close[:, 0], [100, NAN, NAN])


BTC_ETH = ["BTCUSDT", "ETHUSDT"]


@pytest.mark.parametrize(("rows", "message"), [
    ([("BTCUSDT", 0, 100), ("BTCUSDT", 1, 101), ("ETHUSDT", 0, 10), ("BTCUSDT", 1, 101)],
     r"bars: duplicated \(symbol, ts_open\) BTCUSDT 2024-01-01 00:05:00"),
    ([("BTCUSDT", 0, 100), ("ETHUSDT", 1.4, 11)],
     r"bars: ETHUSDT ts_open 2024-01-01 00:07:00 is not on the grid of 5 minutes"),
    ([("ETHUSDT", 0, 10), ("BTCUSDT", 2, 102), ("ETHUSDT", 1, 11), ("BTCUSDT", 1, 101)],
     r"bars: BTCUSDT rows are not sorted by ts_open: 2024-01-01 00:05:00 follows"),
    ([("BTCUSDT", 0, 100), ("ETHUSDT", 9, 10)],  # ETH only after the window
     r"bars: ETHUSDT has no bar in \[2024-01-01 00:00:00, 2024-01-01 00:20:00\)"),
])
def test_panel_refuses_bad_bars(rows, message):
    with pytest.raises(ValueError, match=message):
        Panel.from_bars(bars(rows), BTC_ETH, at(0), at(4), 5)


def test_panel_sort_order_is_checked_per_symbol_as_given():
    # interleaved symbols, each in order: fine
    frame = bars([("ETHUSDT", 0, 10), ("BTCUSDT", 0, 100), ("ETHUSDT", 1, 11),
                  ("BTCUSDT", 1, 101)])
    p = Panel.from_bars(frame, BTC_ETH, at(0), at(2), 5)
    same(p.close, [[100, 10], [101, 11]])


def test_column_pivots_and_refuses_off_grid():
    p = flat(3, ("BTCUSDT", "ETHUSDT"))
    frame = pl.DataFrame({"symbol": ["ETHUSDT", "BTCUSDT", "XRPUSDT"],
                          "ts_open": [at(2), at(0), at(1)], "ret_1": [0.5, -0.5, 9.0]})
    same(p.column(frame, "ret_1"), [[-0.5, NAN], [NAN, NAN], [NAN, 0.5]])  # XRP ignored
    off = frame.with_columns(pl.col("ts_open") + dt.timedelta(minutes=1))
    with pytest.raises(ValueError, match=r"ret_1: ETHUSDT ts_open 2024-01-01 00:11:00 is not"):
        p.column(off, "ret_1")


def funding_frame(rows: list[tuple[str, dt.datetime, float]]) -> pl.DataFrame:
    sym, ts, rate = zip(*rows, strict=True)
    return pl.DataFrame({"symbol": list(sym), "ts": list(ts), "funding_rate": list(rate)})


def test_funding_lands_on_the_first_priced_bar_at_or_after_its_time():
    frame = bars([("BTCUSDT", k, 100) for k in range(6)]
                 + [("ETHUSDT", k, 10) for k in (0, 1, 3, 4)])  # ETH lacks bars 2 and 5
    p = Panel.from_bars(frame, ["BTCUSDT", "ETHUSDT"], at(0), at(6), 5)
    rates = funding_frame([
        ("BTCUSDT", at(0), 1e-4),               # on a bar open: bar 0
        ("BTCUSDT", at(2.4), 2e-4),             # 00:12: bar 3 (00:15)
        ("ETHUSDT", at(2), 3e-4),               # ETH has no bar 2: bar 3
        ("ETHUSDT", at(4.5), 4e-4),             # after ETH's last bar: dropped
        ("BTCUSDT", at(-1), 5e-4),              # before start: dropped
        ("BTCUSDT", at(6), 6e-4),               # at end: dropped
    ])
    same(p.funding(rates), [[1e-4, NAN], [NAN, NAN], [NAN, NAN], [2e-4, 3e-4], [NAN, NAN],
                            [NAN, NAN]])


def test_funding_refuses_an_untraded_symbol_and_two_rates_on_one_bar():
    p = flat(4)
    with pytest.raises(ValueError, match=r"funding: ETHUSDT is not traded by this backtest "
                                         r"\(symbols: BTCUSDT\)"):
        p.funding(funding_frame([("BTCUSDT", at(0), 1e-4), ("ETHUSDT", at(0), 1e-4)]))
    with pytest.raises(ValueError, match=r"funding: BTCUSDT has two rates on the bar "
                                         r"2024-01-01 00:10:00"):
        p.funding(funding_frame([("BTCUSDT", at(1.5), 1e-4), ("BTCUSDT", at(2), 1e-4)]))


# ---- targets: signals and direction ---------------------------------------------------------

@pytest.mark.parametrize(("direction", "btc", "eth"), [
    ("continuation", W, -W),     # follow the event: BTC up, ETH down
    ("mean_reversion", -W, W),   # fade it
    ("long", W, W),
    ("short", -W, -W),
])
def test_event_entry_direction(direction, btc, eth):
    p = flat(5, ("BTCUSDT", "ETHUSDT"))
    ev = events([("shock", "BTCUSDT", 1, 1), ("shock", "ETHUSDT", 3, -1),
                 ("other", "BTCUSDT", 2, 1),    # another event type: ignored
                 ("shock", "ETHUSDT", 4, 0)])   # no direction: no signal
    bp = blueprint(symbols=("ETHUSDT", "BTCUSDT"), direction=direction)
    same(targets(bp, p, None, ev), [[NAN, NAN], [btc, NAN], [NAN, NAN], [NAN, eth],
                                    [NAN, NAN]])


FEATURE = [NAN, 0.5, -2.0, 3.0, 0.0, -0.1]  # one symbol, bars 0..5; threshold 1


@pytest.mark.parametrize(("op", "lag", "expected"), [
    ("gt", 0, [NAN, NAN, NAN, W, NAN, NAN]),        # 3 > 1
    ("lt", 0, [NAN, W, -W, NAN, NAN, -W]),          # 0.5, -2, -0.1 < 1; NaN and 0 never
    ("abs_gt", 0, [NAN, NAN, -W, W, NAN, NAN]),     # |-2|, |3| > 1
    ("abs_lt", 0, [NAN, W, NAN, NAN, NAN, -W]),     # |0.5|, |-0.1| < 1; 0 has no sign
    ("gt", 2, [NAN, NAN, NAN, NAN, NAN, W]),        # bar 5 sees bar 3
    ("lt", 2, [NAN, NAN, NAN, W, -W, NAN]),         # bars 3, 4 see 0.5, -2; bars 0-1 NaN
])
def test_condition_entry_ops_and_lag(op, lag, expected):
    bp = blueprint(entry=Entry(condition=Condition(feature="x", op=op, threshold=1.0,
                                                   lag=lag)))
    got = targets(bp, flat(6), {"x": np.array(FEATURE)[:, None]}, None)
    same(got[:, 0], expected)


def test_hold_window_skips_signals_and_resets_after_h_bars():
    # signal at:  1  2  .  4  5  .  7  .  9     (H = 3, T = 10)
    signal = [0, 1, 1, 0, 1, 1, 0, 1, 0, 1]
    expected = [NAN, W, NAN, NAN, 0, W, NAN, NAN, 0, W]
    # 1 enters; 2, 4 fall in 2..4; 0 at 1+3 = 4; 5 = 1+H+1 re-enters; 7 in 6..8; 0 at 8;
    # 9 enters and its reset at 12 is beyond the end
    bp = blueprint(entry=Entry(condition=Condition(feature="x", op="gt", threshold=0.5)),
                   exits=Exits(time_stop_bars=3))
    got = targets(bp, flat(10), {"x": np.array(signal, dtype=float)[:, None]}, None)
    same(got[:, 0], expected)


def test_hold_window_is_per_symbol_and_ignores_other_side_inside():
    p = flat(6, ("BTCUSDT", "ETHUSDT"))
    ev = events([("shock", "BTCUSDT", 0, 1), ("shock", "BTCUSDT", 1, -1),  # 1 in 1..2
                 ("shock", "ETHUSDT", 1, -1), ("shock", "BTCUSDT", 3, -1)])
    bp = blueprint(symbols=("BTCUSDT", "ETHUSDT"), exits=Exits(time_stop_bars=2))
    same(targets(bp, p, None, ev), [[W, NAN], [NAN, -W], [0, NAN], [-W, 0], [NAN, NAN],
                                    [0, NAN]])


def test_without_time_stop_every_signal_bar_gets_its_weight():
    ev = events([("shock", "BTCUSDT", k, d) for k, d in ((0, 1), (1, 1), (3, -1))])
    bp = blueprint(exits=Exits(stop_loss=0.02))
    same(targets(bp, flat(5), None, ev)[:, 0], [W, W, NAN, -W, NAN])


def test_targets_refusals():
    p = flat(4)
    cond = blueprint(entry=Entry(condition=Condition(feature="ret_1", op="gt", threshold=0)))
    with pytest.raises(ValueError, match=r"bp: entry.condition.feature 'ret_1' is not among "
                                         r"the features read \(\['vol'\]\)"):
        targets(cond, p, {"vol": np.zeros((4, 1))}, None)
    with pytest.raises(ValueError, match=r"bp: entry.event 'shock' needs the events table"):
        targets(blueprint(), p, None, None)
    with pytest.raises(ValueError, match=r"bp: events: BTCUSDT ts 2024-01-01 00:06:00 is not"):
        targets(blueprint(), p, None, events([("shock", "BTCUSDT", 1.2, 1)]))
    with pytest.raises(ValueError, match=r"missing from the panel: \['ETHUSDT'\], not in the "
                                         r"blueprint: \[\]"):
        targets(blueprint(symbols=("BTCUSDT", "ETHUSDT")), p, None, events([]))


# ---- through the engine ----------------------------------------------------------------------

def test_event_trade_through_the_engine_is_entered_next_open_and_time_stopped():
    opens = [100, 101, 102, 104, 103, 105, 106, 108, 107, 109, 110, 111]
    frame = pl.DataFrame({"symbol": "BTCUSDT", "ts_open": [at(k) for k in range(12)],
                          "open": opens, "high": [o + 2.0 for o in opens],
                          "low": [o - 2.0 for o in opens], "close": [o + 1.0 for o in opens]})
    p = Panel.from_bars(frame, ["BTCUSDT"], at(0), at(12), 5)
    bp = blueprint(target_weight=0.5, exits=Exits(time_stop_bars=4))
    tgt = targets(bp, p, None, events([("shock", "BTCUSDT", 2, 1)]))
    same(tgt[:, 0], [NAN, NAN, 0.5, NAN, NAN, NAN, 0, NAN, NAN, NAN, NAN, NAN])
    r = backtest(p.open, p.high, p.low, p.close, tgt,
                 Instrument(symbol="BTCUSDT", taker_bps=0, slippage_bps=0),
                 exits=exit_rules(bp), init_cash=10_000.0)
    trade = r.trades.row(0, named=True)
    assert r.trades.height == 1
    assert (trade["entry_bar"], trade["exit_bar"], trade["exit_reason"]) == (3, 7, "time_stop")
    assert trade["qty"] == pytest.approx(10_000 * 0.5 / 104)  # at open 3
    assert r.equity[-1] - 10_000 == pytest.approx(trade["qty"] * (108 - 104))  # opens 7, 3


def test_engine_refuses_a_panel_with_a_non_positive_price():
    frame = bars([("BTCUSDT", k, c) for k, c in enumerate([100, 100, 100, 1, 100])])
    p = Panel.from_bars(frame, ["BTCUSDT"], at(0), at(5), 5)  # bar 3: open 0, low -1
    tgt = targets(blueprint(), p, None, events([("shock", "BTCUSDT", 2, 1)]))
    with pytest.raises(ValueError, match="BTCUSDT bar 3"):
        backtest(p.open, p.high, p.low, p.close, tgt, Instrument(symbol="BTCUSDT"))


def test_exit_rules_copy_the_blueprint_exits():
    bp = blueprint(exits=Exits(stop_loss=0.02, take_profit=0.04, time_stop_bars=12))
    assert exit_rules(bp) == ExitRules(stop_loss=0.02, take_profit=0.04, time_stop=12)
    assert exit_rules(blueprint()) == ExitRules()


# ---- survivors -------------------------------------------------------------------------------

UNIVERSE = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
HORIZONS = {"fwd_ret_5m": 1, "fwd_ret_15m": 3, "fwd_ret_60m": 12}


def survivor(**kw) -> dict:
    return {"hypothesis_id": "h42", "event_type": "funding_spike",
            "rule_template": "mean_reversion", "horizon": "60m", "symbol": "ALL", "n": 120,
            "mean": 0.00125, "q": 0.0123} | kw


def test_from_survivor_pooled():
    bp = from_survivor(survivor(), universe_symbols=UNIVERSE, horizon_bars=HORIZONS)
    assert bp.name == "p2_funding_spike_mean_reversion_60m_all"
    assert bp.symbols == UNIVERSE
    assert bp.entry == Entry(event="funding_spike")
    assert bp.direction == "mean_reversion"
    assert bp.target_weight == pytest.approx(1 / 3)
    assert bp.leverage == 2.0  # the setting its isolated margin is posted at: 2x headroom
    assert bp.exits == Exits(time_stop_bars=12)
    assert bp.venue is None
    assert bp.description == ("Phase-2 survivor h42: mean_reversion after funding_spike over "
                              "60m on ALL (n=120, mean=12.5 bps, q=0.0123)")


def test_from_survivor_single_symbol_and_budget():
    bp = from_survivor(survivor(symbol="ETHUSDT", rule_template="continuation",
                                horizon="15m"),
                       universe_symbols=UNIVERSE, horizon_bars={"15m": 3}, weight_budget=2.0)
    assert (bp.name, bp.symbols) == ("p2_funding_spike_continuation_15m_ethusdt", ("ETHUSDT",))
    assert (bp.target_weight, bp.leverage, bp.exits.time_stop_bars) == (2.0, 4.0, 3)
    half = from_survivor(survivor(), universe_symbols=UNIVERSE, horizon_bars=HORIZONS,
                         weight_budget=0.6)
    assert (half.target_weight, half.leverage) == (pytest.approx(0.2), 2.0)


def test_from_survivor_shortens_long_names_deterministically():
    full = "p2_vol_compression_breakout_continuation_15m_btcusdt"  # 52 characters
    short = "p2_vol_compression_breakout_continuation_bf6ffd"  # 41 chars, "_" dropped, sha256
    assert spec_name(full) == short
    assert spec_name("p2_short") == "p2_short"
    bp = from_survivor(survivor(event_type="vol_compression_breakout",
                                rule_template="continuation", horizon="15m",
                                symbol="BTCUSDT"),
                       universe_symbols=UNIVERSE, horizon_bars=HORIZONS)
    assert bp.name == short
    assert len(spec_name(full + "x")) == 47 and spec_name(full + "x") != short


@pytest.mark.parametrize(("kw", "budget", "message"), [
    ({"rule_template": "momentum"}, 1.0, "rule_template: 'momentum'"),
    ({"horizon": "4h"}, 1.0, r"horizon: '4h' is not in horizon_bars"),
    ({}, 0.0, r"target_weight: 0.0 is out of range"),
    ({"event_type": "Funding-Spike"}, 1.0, r"name: .* is not a lower_snake_case name"),
])
def test_from_survivor_validates(kw, budget, message):
    with pytest.raises(ValueError, match=message):
        from_survivor(survivor(**kw), universe_symbols=UNIVERSE, horizon_bars=HORIZONS,
                      weight_budget=budget)


# ---- the baseline blueprints -----------------------------------------------------------------

def test_baseline_specs_produce_targets_the_engine_accepts():
    strategies = load_registry().strategies
    assert sorted(strategies) == ["momentum_guarded_v1", "momentum_v1", "reversion_v1",
                                  "sma_cross_code_v1", "vol_compression_momentum_v1",
                                  "vol_compression_reversion_v1", "vol_compression_v1"]
    strategies = {n: bp for n, bp in strategies.items() if bp.entry.code is None}
    rng = np.random.default_rng(7)
    n = 400
    p = flat(n, UNIVERSE)
    features = {"ret_48": rng.normal(0, 0.02, (n, 3)), "ret_1_z": rng.normal(0, 2.0, (n, 3))}
    features["ret_48"][:48] = NAN  # warm-up
    k = rng.choice(n, 30, replace=False)
    ev = events([("vol_compression_breakout", UNIVERSE[i % 3], int(t), 1 - 2 * (i % 2))
                 for i, t in enumerate(k)])
    for bp in strategies.values():
        tgt = targets(bp, p, features, ev)
        assert tgt.shape == (n, 3)
        values = set(np.unique(tgt[~np.isnan(tgt)]).tolist())
        assert {0.0, bp.target_weight} <= values <= {0.0, bp.target_weight,
                                                     -bp.target_weight}, bp.name
        r = backtest(p.open, p.high, p.low, p.close, tgt,
                     [Instrument(symbol=s) for s in UNIVERSE], exits=exit_rules(bp))
        assert r.trades.height > 0 and math.isclose(r.equity[-1], 1_000_000.0), bp.name
