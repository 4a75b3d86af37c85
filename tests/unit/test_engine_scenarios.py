"""Backtest engine rules, one literal scenario each (freqtrade style).

Each table is a few OHLC rows with the target decided at that bar's close; the comments
beside it work out the expected fills, fees, funding and P&L by hand. Every scenario runs
on the reference loop, the fast engine (closed form when it applies) and the compiled loop.
Unless a scenario says otherwise: cash 10,000, taker 10 bps, slippage 10 bps.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from backtest_assets.engine import (
    REJECT_REASONS,
    ExitRules,
    Instrument,
    backtest,
    backtest_reference,
)
from backtest_assets.specs.loader import build, read_yaml
from backtest_assets.specs.models import FeesSpec

REPO = Path(__file__).resolve().parents[2]
ENGINES = {"reference": backtest_reference, "fast": partial(backtest, path="closed_form"),
           "compiled": partial(backtest, path="compiled")}
NAN = np.nan
CASH = 10_000.0
COSTS = Instrument(symbol="BTCUSDT", taker_bps=10, slippage_bps=10)


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


def table(rows: list[tuple[float, ...]]) -> dict[str, np.ndarray]:
    """Columns open, high, low, close, target of one symbol from (o, h, l, c, target) rows."""
    o, h, lo, c, tgt = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    return {"open_": o, "high": h, "low": lo, "close": c, "target": tgt}


def approx(x: float | list) -> object:
    return pytest.approx(np.array(x, dtype=float) if isinstance(x, list) else x, rel=1e-12,
                         abs=1e-9)


def only_trade(result) -> dict:
    assert result.trades.height == 1
    return result.trades.row(0, named=True)


def test_entry_at_next_open_and_exit_on_signal(run):
    bars = table([
        # open  high  low   close  target
        (100, 101, 99, 100, 1.0),   # decided at this close; nothing fills at bar 0
        (100, 102, 99, 101, NAN),   # buy 10,000/100 = 100 @ 100*1.001 = 100.1, fee 10.01
                                    # cash -20.01; equity -20.01 + 100*101 = 10,079.99
        (101, 103, 100, 102, 0.0),  # equity -20.01 + 10,200 = 10,179.99; exit decided
        (102, 103, 101, 102, NAN),  # sell 100 @ 102*0.999 = 101.898, fee 10.1898
    ])                              # cash = equity = 10,159.6002
    r = run(**bars, instruments=COSTS, init_cash=CASH)
    assert r.position[:, 0].tolist() == [0, 100, 100, 0]
    assert r.equity.tolist() == approx([10_000, 10_079.99, 10_179.99, 10_159.6002])
    assert r.cash[1] == approx(-20.01)  # spot-like: the long borrows its costs
    assert r.fees[:, 0].tolist() == approx([0, 10.01, 0, 10.1898])
    assert r.slippage[:, 0].tolist() == approx([0, 10.0, 0, 10.2])  # 100 * (0.1 | 0.102)
    assert r.exposure[1] == approx(10_100 / 10_079.99)
    t = only_trade(r)
    # pnl = 100 * (101.898 - 100.1) - 20.1998 = 159.6002 = final equity - cash
    assert (t["side"], t["entry_bar"], t["exit_bar"], t["exit_reason"]) == ("long", 1, 3,
                                                                           "signal")
    assert [t["qty"], t["entry_price"], t["exit_price"], t["fees"], t["pnl"]] == approx(
        [100, 100.1, 101.898, 20.1998, 159.6002])


def test_stop_loss_intrabar_then_no_reentry_on_same_target(run):
    bars = table([
        (100, 101, 99, 100, 1.0),
        (100, 101, 98, 99, NAN),    # buy 100 @ 100.1 (fee 10.01); stop at 100.1*0.95 = 95.095
        (99, 100, 94, 96, NAN),     # low 94 <= 95.095: sell @ 95.095*0.999 = 94.999905,
                                    # fee 9.4999905; cash 9,470.4805095
        (96, 97, 95, 96, 1.0),      # the same target again: no order
        (96, 97, 95, 96, NAN),
    ])
    r = run(**bars, instruments=COSTS, exits=ExitRules(stop_loss=0.05), init_cash=CASH)
    assert r.position[:, 0].tolist() == [0, 100, 0, 0, 0]
    assert r.equity[2:].tolist() == approx([9_470.4805095] * 3)
    t = only_trade(r)
    # pnl = 100 * (94.999905 - 100.1) - (10.01 + 9.4999905) = -529.5194905
    assert (t["exit_bar"], t["exit_reason"]) == (2, "stop_loss")
    assert [t["exit_price"], t["fees"], t["pnl"]] == approx([94.999905, 19.5099905,
                                                             -529.5194905])


def test_take_profit_on_a_short(run):
    bars = table([
        (100, 101, 99, 100, -1.0),
        (100, 101, 98, 99, NAN),    # sell 100 @ 99.9 (fee 9.99): cash 19,980.01;
                                    # take-profit at 99.9*0.95 = 94.905
        (97, 98, 94, 95, NAN),      # low 94 <= 94.905: buy @ 94.905*1.001 = 94.999905,
                                    # fee 9.4999905; cash 10,470.5195095
    ])
    r = run(**bars, instruments=COSTS, exits=ExitRules(take_profit=0.05), init_cash=CASH)
    assert r.cash[1] == approx(19_980.01)
    assert r.equity[2] == approx(10_470.5195095)
    t = only_trade(r)
    # pnl = 100 * (99.9 - 94.999905) - 19.4899905 = 470.5195095
    assert (t["side"], t["exit_reason"]) == ("short", "take_profit")
    assert [t["qty"], t["exit_price"], t["pnl"]] == approx([100, 94.999905, 470.5195095])


def test_time_stop_exits_at_the_open_n_bars_after_entry(run):
    bars = table([
        (100, 101, 99, 100, 1.0),
        (100, 102, 99, 101, NAN),   # entry bar 1: buy 100 @ 100.1, fee 10.01
        (101, 104, 100, 103, NAN),
        (103, 104, 102, 103, NAN),  # bar 1 + 2: sell at the open @ 103*0.999 = 102.897,
    ])                              # fee 10.2897; cash -20.01 + 10,289.7 - 10.2897
    r = run(**bars, instruments=COSTS, exits=ExitRules(time_stop=2), init_cash=CASH)
    assert r.position[:, 0].tolist() == [0, 100, 100, 0]
    assert r.equity[3] == approx(10_259.4003)
    t = only_trade(r)
    assert (t["entry_bar"], t["exit_bar"], t["exit_reason"]) == (1, 3, "time_stop")
    assert t["exit_price"] == approx(102.897)


def test_stop_is_taken_first_when_both_levels_are_in_one_bar(run):
    bars = table([
        (100, 101, 99, 100, 1.0),
        (100, 101, 99, 100, NAN),   # buy 100 @ 100.1: stop 95.095, take-profit 105.105
        (100, 106, 95, 100, NAN),   # high 106 and low 95 reach both: the stop is assumed
    ])                              # first, sell @ 95.095*0.999 = 94.999905
    r = run(**bars, instruments=COSTS, exits=ExitRules(stop_loss=0.05, take_profit=0.05),
            init_cash=CASH)
    t = only_trade(r)
    assert t["exit_reason"] == "stop_loss"
    assert t["exit_price"] == approx(94.999905)
    assert r.equity[2] == approx(9_470.4805095)


def test_gap_through_the_stop_fills_at_the_open(run):
    bars = table([
        (100, 101, 99, 100, 1.0),
        (100, 101, 99, 100, NAN),   # buy 100 @ 100.1, stop 95.095
        (90, 92, 89, 91, NAN),      # opens at 90, below the stop: sell @ 90*0.999 = 89.91,
    ])                              # fee 8.991; cash -20.01 + 8,991 - 8.991 = 8,961.999
    r = run(**bars, instruments=COSTS, exits=ExitRules(stop_loss=0.05), init_cash=CASH)
    t = only_trade(r)
    assert (t["exit_bar"], t["exit_reason"]) == (2, "stop_loss")
    assert t["exit_price"] == approx(89.91)
    assert r.slippage[2, 0] == approx(9.0)  # 100 * (90 - 89.91), measured from the open
    assert r.equity[2] == approx(8_961.999)


def test_funding_a_long_pays_and_a_short_receives(run):
    # Two symbols on shared cash, no costs: A long 0.5, B short 0.5.
    o = np.array([[100, 50], [100, 50], [100, 50], [100, 50]], dtype=float)
    target = np.array([[0.5, -0.5], [NAN, NAN], [NAN, NAN], [NAN, NAN]])
    funding = np.array([[NAN, NAN],
                        [0.001, 0.001],   # bar 1: nothing held into this open, nothing paid
                        [0.001, 0.002],   # bar 2: A pays 50*100*0.001 = 5, B receives
                        [NAN, NAN]])      #        100*50*0.002 = 10; cash 10,000 + 5
    insts = [Instrument(symbol="AUSDT"), Instrument(symbol="BUSDT")]
    # fills at bar 1: A 0.5*10,000/100 = 50, B -0.5*10,000/50 = -100; cash stays 10,000
    r = run(o, o, o, o, target, insts, funding=funding, init_cash=CASH)
    assert r.position[1].tolist() == [50, -100]
    assert r.funding == approx([[0, 0], [0, 0], [5, -10], [0, 0]])
    assert r.cash.tolist() == approx([10_000, 10_000, 10_005, 10_005])
    assert r.trades["funding"].to_list() == approx([5, -10])
    assert r.trades["exit_reason"].to_list() == ["open", "open"]


def test_liquidation_at_the_bar_extreme_before_the_stop(run):
    # No taker fee or slippage; maintenance 1%, liquidation fee 0.5%, leverage setting 3:
    # every isolated position posts notional / 3, whatever the target.
    a = Instrument(symbol="AUSDT", max_leverage=3, maintenance_margin_rate=0.01,
                   liquidation_fee_rate=0.005)
    b = Instrument(symbol="BUSDT", max_leverage=3, maintenance_margin_rate=0.01,
                   liquidation_fee_rate=0.005)
    o = np.array([[100, 50], [100, 50], [60, 50], [60, 50]], dtype=float)
    high = o + 1
    low = np.array([[99, 49], [95, 49], [50, 49], [59, 49]], dtype=float)
    target = np.array([[1.5, 0.5], [NAN, NAN], [NAN, NAN], [NAN, NAN]])
    # Bar 1: buy A 150 @ 100 (margin 5,000 of 10,000 available) and B 100 @ 50 (margin
    # 1,666.67 of the 5,000 left); cash -10,000.
    # A's liquidation price: 100 * (1 - 1/3) / (1 - 0.01) = 67.3400...; its stop (45%) is 55.
    # Bar 2: low 50 reaches both: liquidated at 67.34 (before the stop). Left of the margin
    # there: 5,000 + 150 * (67.34 - 100) = 101.01 = 1% of 150 * 67.34; clearance fee 0.5% =
    # 50.505, the other 50.505 to the insurance fund. Cash += 150 * 100 - 5,000 = 10,000:
    # cash 0, equity 0 + 100 * 50 = 5,000: the loss is the margin, 5,000, and no more.
    r = run(o, high, low, o, target, [a, b], exits=ExitRules(stop_loss=0.45), init_cash=CASH)
    liq = 200 / 3 / 0.99
    trades = r.trades.filter(symbol="AUSDT").row(0, named=True)
    assert (trades["exit_bar"], trades["exit_reason"]) == (2, "liquidation")
    assert trades["exit_price"] == approx(liq)
    assert r.fees[2, 0] == approx(0.005 * 150 * liq)
    assert r.liquidation_fees[2].tolist() == approx([0.005 * 150 * liq, 0])
    assert r.insurance[2].tolist() == approx([0.005 * 150 * liq, 0])
    assert r.cash[2] == approx(0)
    assert r.equity[2] == approx(10_000 - 5_000)
    assert [trades["fees"], trades["insurance"], trades["pnl"]] == approx(
        [0.005 * 150 * liq, 0.005 * 150 * liq, -5_000])
    assert r.position[2].tolist() == [0, 100]
    assert r.blown_bar is None


def test_short_liquidated_at_the_high(run):
    # 1x short (gross 1 -> leverage 1), maintenance 0, no liquidation fee, no costs:
    # sell 100 @ 100, margin 10,000; liquidation where 10,000 - 100 * (p - 100) = 0: p = 200.
    inst = Instrument(symbol="BTCUSDT", maintenance_margin_rate=0.0)
    bars = table([
        (100, 101, 99, 100, -1.0),
        (100, 150, 99, 140, NAN),
        (150, 210, 140, 160, NAN),  # high 210 >= 200: bought back at 200, cash 20,000 -
    ])                              # 20,000 = 0 -> the account is blown at the close
    r = run(**bars, instruments=inst, init_cash=CASH)
    t = only_trade(r)
    assert (t["exit_reason"], t["exit_price"], t["pnl"]) == ("liquidation", approx(200),
                                                             approx(-10_000))
    assert r.equity[2] == approx(0)
    assert r.blown_bar == 2


def test_min_notional_rejection_is_counted_never_resized(run):
    inst = Instrument(symbol="BTCUSDT", min_notional=100)
    bars = table([
        (100, 101, 99, 100, 0.005),  # 0.005 * 10,000 / 100 = 0.5 units = 50 < 100: rejected
        (100, 101, 99, 100, NAN),
        (100, 101, 99, 100, 0.02),   # 2 units = 200 >= 100: filled at bar 3
        (100, 101, 99, 100, 0.0),    # the close (2 -> 0) is exempt
        (100, 101, 99, 100, NAN),
    ])
    r = run(**bars, instruments=inst, init_cash=CASH)
    assert r.position[:, 0].tolist() == [0, 0, 0, 2, 0]
    assert r.rejected == {**dict.fromkeys(REJECT_REASONS, 0), "zero_qty": 0,
                          "min_notional": 1, "insufficient_margin": 0}


def test_lot_and_tick_rounding(run):
    inst = Instrument(symbol="BTCUSDT", slippage_bps=10, lot_size=0.1, tick_size=0.05)
    bars = table([
        (30, 31, 29, 30, 0.0001),  # 0.0001 * 10,000 / 30 = 0.033 units -> 0: rejected
        (30, 31, 29, 30, 1.0),     # (zero_qty) at bar 1
        (30, 31, 29, 30, 0.5),     # 10,000 / 30 = 333.33 -> 333.3 units (toward zero), bought
                                   # @ 30 * 1.001 = 30.03 -> 30.05 (up to the tick);
                                   # cash 10,000 - 333.3 * 30.05 = -15.665
        (30, 31, 29, 30, 0.5003),  # equity -15.665 + 333.3 * 30 = 9,983.335 -> 166.389 ->
                                   # 166.3: sell 167 @ 29.97 -> 29.95 (down); cash 4,985.985
        (30, 31, 29, 30, NAN),     # equity 9,974.985 -> 0.5003 of it = 166.317 -> 166.3:
    ])                             # no change, rejected (zero_qty)
    r = run(**bars, instruments=inst, init_cash=CASH)
    assert r.position[:, 0].tolist() == approx([0, 0, 333.3, 166.3, 166.3])
    assert r.cash.tolist() == approx([CASH, CASH, -15.665, 4_985.985, 4_985.985])
    assert r.trades["entry_price"].to_list() == approx([30.05, 29.95])
    assert r.trades["exit_price"][0] == approx(29.95)
    assert r.rejected == {**dict.fromkeys(REJECT_REASONS, 0), "zero_qty": 2,
                          "min_notional": 0, "insufficient_margin": 0}


def test_blown_account_closes_everything_and_stops_trading(run):
    bars = table([
        (100, 101, 99, 100, -1.0),
        (100, 101, 99, 100, NAN),   # sell 100 @ 100 (no costs): cash 20,000
        (250, 260, 240, 250, 1.0),  # opens at 250: equity 20,000 - 25,000 < 0 -> blown at
        (250, 260, 240, 250, NAN),  # the open, bought back @ 250; the long is not filled
        (250, 260, 240, 250, 0.5),
        (250, 260, 240, 250, NAN),
    ])
    r = run(**bars, instruments=Instrument(symbol="BTCUSDT"), init_cash=CASH)
    assert r.blown_bar == 2
    t = only_trade(r)
    assert (t["exit_bar"], t["exit_reason"], t["exit_price"]) == (2, "blown", 250)
    assert r.position[:, 0].tolist() == [0, -100, 0, 0, 0, 0]
    assert r.equity[2:].tolist() == approx([-5_000] * 4)
    assert r.rejected["blown"] == 2
    assert (r.fees[3:] == 0).all()


def test_round_trip_costs_the_fees_spec_round_trip(run):
    # DESIGN.md: a round trip with market orders costs 2 x (taker + slippage) of notional.
    # At a flat price 100: buy 100 units @ 100(1+s), sell @ 100(1-s), fees f on both legs:
    # loss = 100 * 100 * 2s + f * 100 * (100(1+s) + 100(1-s)) = 10,000 * 2(s + f).
    path = REPO / "specs" / "fees.yaml"
    fees = build(FeesSpec, read_yaml(path), file=path)
    # Tick rounding off: a 0.1 tick at price 100 would move the 1 bp slippage to 10 bps.
    inst = Instrument.from_venue("BTCUSDT", fees.venues[fees.default_venue], tick_size=0.0)
    bars = table([(100, 100, 100, 100, 1.0), (100, 100, 100, 100, 0.0),
                  (100, 100, 100, 100, NAN)])
    r = run(**bars, instruments=inst, init_cash=CASH)
    assert r.position[1, 0] == approx(100)
    assert 1 - r.equity[-1] / CASH == approx(fees.round_trip())


def test_instrument_from_venue_takes_the_venue_rules_and_symbol_filters():
    path = REPO / "specs" / "fees.yaml"
    fees = build(FeesSpec, read_yaml(path), file=path)
    perp = Instrument.from_venue("SOLUSDT", fees.venues["binance_usdm_vip0"])
    assert (perp.taker_bps, perp.slippage_bps, perp.max_leverage) == (5.0, 1.0, 20.0)
    assert (perp.lot_size, perp.tick_size, perp.min_notional) == (1.0, 0.01, 5.0)
    # SOLUSDT's first bracket (0.5 % up to 20,000 USDT, 100x) sets its rate; ten tiers
    assert (perp.maintenance_margin_rate, perp.liquidation_fee_rate) == (0.005, 0.0125)
    assert len(perp.brackets) == 10 and perp.brackets[1].maint_amount == 30
    assert perp.max_notional == 8_000_000  # the last tier allowing 20x
    unlisted = Instrument.from_venue("XRPUSDT", fees.venues["binance_usdm_vip0"])
    assert unlisted.maintenance_margin_rate == 0.004 and unlisted.brackets == ()
    spot = Instrument.from_venue("BTCUSDT", fees.venues["binance_spot_vip0"], max_leverage=1.0)
    assert spot.maintenance_margin_rate is None and spot.lot_size == 0.00001
    unknown = Instrument.from_venue("XRPUSDT", fees.venues["binance_usdm_vip0"])
    assert (unknown.lot_size, unknown.tick_size, unknown.min_notional) == (0.0, 0.0, 0.0)


def test_no_change_of_target_no_trade(run):
    bars = table([(100, 101, 99, 100, NAN), (100, 101, 99, 100, 0.0), (100, 101, 99, 100, NAN)])
    r = run(**bars, instruments=COSTS, init_cash=CASH)
    assert r.equity.tolist() == [CASH] * 3
    assert r.trades.is_empty() and r.trades.columns[-1] == "exit_reason"
    assert r.rejected == dict.fromkeys(REJECT_REASONS, 0)


def test_closed_form_is_taken_when_asked_and_no_rule_is_path_dependent():
    bars = table([(100, 101, 99, 100, 1.0), (100, 102, 99, 101, -1.0), (101, 103, 100, 102, NAN)])
    assert backtest(**bars, instruments=COSTS).path == "compiled"  # the default
    closed = partial(backtest, path="closed_form")
    assert closed(**bars, instruments=COSTS).path == "closed_form"
    assert closed(**bars, instruments=COSTS, exits=ExitRules(time_stop=5)).path == "compiled"


# ---- bad input is refused before any simulation ------------------------------------------

def _bars(n: int = 4, s: int = 1) -> dict[str, np.ndarray]:
    o = np.full((n, s), 100.0)
    return {"open_": o, "high": o + 1, "low": o - 1, "close": o.copy()}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize(("change", "message"), [
    (lambda k: k.update(high=k["high"][:-1]), "high: shape"),
    (lambda k: k["close"].__setitem__((2, 0), np.inf), "BTCUSDT bar 2: open/high/low/close"),
    (lambda k: k["low"].__setitem__((1, 0), -1.0), "BTCUSDT bar 1"),
    (lambda k: [a.__setitem__((2, 0), np.nan) for a in (k["open_"], k["high"], k["low"],
                                                        k["close"])],
     "BTCUSDT bar 2: the order decided at bar 1 would fill"),
    (lambda k: k["target"].__setitem__((1, 0), 2.0), "BTCUSDT bar 1: target gross leverage 2"),
    (lambda k: k.update(funding=np.full((4, 1), 1e-4), target=np.full((4, 1), np.nan)),
     "BTCUSDT bar 0: funding given for a symbol that is never given a target"),
])
def test_bad_input_is_refused_naming_symbol_and_bar(engine, change, message):
    kw = _bars() | {"target": np.array([[0.0], [1.0], [NAN], [NAN]])}
    change(kw)
    with pytest.raises(ValueError, match=message):
        ENGINES[engine](**kw, instruments=Instrument(symbol="BTCUSDT"))


@pytest.mark.parametrize(("kw", "message"), [
    ({"instruments": [Instrument(symbol="A"), Instrument(symbol="B")]},
     "instruments: 2 given for 1 symbols"),
    ({"instruments": Instrument(symbol="A", lot_size=-1)}, "A: lot_size: -1"),
    ({"instruments": Instrument(symbol="A", maintenance_margin_rate=1.0)},
     "A: maintenance_margin_rate"),
    ({"exits": ExitRules(stop_loss=1.5)}, "stop_loss: 1.5"),
    ({"exits": ExitRules(time_stop=0)}, "time_stop: 0"),
    ({"init_cash": 0.0}, "init_cash: 0.0"),
])
def test_bad_rules_are_refused(kw, message):
    args = _bars() | {"target": np.zeros((4, 1)), "instruments": Instrument(symbol="A")} | kw
    for engine in ENGINES.values():
        with pytest.raises(ValueError, match=message):
            engine(**args)
