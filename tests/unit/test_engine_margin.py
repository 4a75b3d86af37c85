"""Isolated margin (issue 13): a liquidation takes the posted margin and no more, an order
needs its initial margin, and a run needs bars.

Scenario tables as in test_engine_scenarios (the comments work out the numbers by hand),
run on the reference loop, the fast engine (closed form when it applies) and the compiled
loop; then a property over random heavy-tailed, gapping paths. Unless a scenario says
otherwise: cash 10,000, taker 10 bps, slippage 10 bps, maintenance margin 1%, liquidation
(clearance) fee 0.5%, leverage setting 10.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import (
    REJECT_REASONS,
    ExitRules,
    Instrument,
    backtest,
    backtest_reference,
)
from backtest_assets.engine.core import check_inputs
from backtest_assets.engine.metrics import metrics
from backtest_assets.engine.sweep import sweep
from backtest_assets.specs.models import VenueSpec
from backtest_assets.specs.registry import load_registry
from tests.unit.test_engine_scenarios import ENGINES, approx, only_trade, table

NAN = np.nan
CASH = 10_000.0
PERP = Instrument(symbol="BTCUSDT", taker_bps=10, slippage_bps=10, max_leverage=10,
                  maintenance_margin_rate=0.01, liquidation_fee_rate=0.005)


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


# ---- liquidation: the loss is the posted margin ------------------------------------------
# Long: target 8 decided at bar 0, filled at bar 1: buy 800 @ 100 * 1.001 = 100.1, fee 80.08,
# margin 800 * 100.1 / 10 = 8,008; cash 10,000 - 80,080 - 80.08 = -70,160.08, equity at the
# close 9,839.92. Liquidation price 100.1 * 0.9 / 0.99 = 91, bankruptcy price 90.09. At 91
# the margin left is 8,008 + 800 * (91 - 100.1) = 728 (= 1% of 800 * 91): the clearance fee
# is 0.5% of 800 * 91 = 364, the other 364 go to the insurance fund. Cash += 800 * 100.1 -
# 8,008 = 72,072: cash = equity = 1,911.92 = 10,000 - 8,008 - 80.08.
# (The old charge, 1% + 0.5% of 800 * 91 on top, would have left 1,547.92: 364 more lost.)
# Short: target -8: sell 800 @ 99.9, fee 79.92, margin 7,992; cash 89,840.08, equity at the
# close 9,840.08. Liquidation price 99.9 * 1.1 / 1.01 = 108.80198, bankruptcy 109.89; margin
# left there 1% of 800 * 108.80198 = 870.4158, clearance fee 435.2079, insurance 435.2079.
# Cash += -800 * 99.9 - 7,992: cash = equity = 1,928.08 = 10,000 - 7,992 - 79.92.
# (The old charge would have left 1,492.87.)
LONG_LIQ, SHORT_LIQ = 100.1 * 0.9 / 0.99, 99.9 * 1.1 / 1.01
LIQUIDATIONS = {
    #                   target  bar 2 (o, h, l, c)        liq price  margin  entry fee  equity
    "long_in_bar":      (8.0, (99, 100, 90, 92),          LONG_LIQ,  8_008,  80.08, 1_911.92),
    "long_gap":         (8.0, (85, 86, 84, 85),           LONG_LIQ,  8_008,  80.08, 1_911.92),
    "short_in_bar":     (-8.0, (101, 110, 100, 105),      SHORT_LIQ, 7_992,  79.92, 1_928.08),
    "short_gap":        (-8.0, (115, 120, 114, 118),      SHORT_LIQ, 7_992,  79.92, 1_928.08),
}
# The gaps open past the bankruptcy price (85 < 90.09, 115 > 109.89): the position is still
# closed at its liquidation price and loses its margin, the insurance fund covers the rest.


@pytest.mark.parametrize("name", list(LIQUIDATIONS))
def test_liquidation_loses_the_posted_margin_and_no_more(run, name):
    target, bar2, liq, margin, entry_fee, equity = LIQUIDATIONS[name]
    bars = table([(100, 101, 99, 100, target), (100, 101, 99, 100, NAN),
                  (*bar2, NAN), (100, 101, 99, 100, NAN)])
    r = run(**bars, instruments=PERP, init_cash=CASH)
    t = only_trade(r)
    assert (t["exit_bar"], t["exit_reason"], t["exit_price"]) == (2, "liquidation", approx(liq))
    left = 0.01 * 800 * liq  # the maintenance margin at the liquidation price
    clearance = 0.005 * 800 * liq
    assert r.fees[:, 0].tolist() == approx([0, entry_fee, clearance, 0])
    assert r.liquidation_fees[:, 0].tolist() == approx([0, 0, clearance, 0])
    assert r.insurance[:, 0].tolist() == approx([0, 0, left - clearance, 0])
    assert r.cash[2:].tolist() == approx([equity, equity])
    assert r.equity[2:].tolist() == approx([equity, equity])
    assert [t["fees"], t["insurance"]] == approx([entry_fee + clearance, left - clearance])
    # The loss is exactly the posted margin (|qty| * entry / L), its entry fee apart ...
    assert -t["pnl"] - entry_fee == pytest.approx(800 * t["entry_price"] / 10, rel=1e-12)
    assert -t["pnl"] - entry_fee == pytest.approx(margin, rel=1e-12)
    # ... so the equity never goes below the start less the margin and the entry fee.
    assert r.equity.min() >= CASH - margin - entry_fee - 1e-9
    assert r.blown_bar is None


def test_clearance_fee_takes_the_whole_maintenance_margin_at_binance_rates(run):
    # Binance USD-M tier 1: maintenance 0.4% < clearance fee 1.25%: the fee is what is left,
    # 0.4% of 800 * liq, and nothing goes to the insurance fund. No costs, setting 10.
    perp = Instrument(symbol="BTCUSDT", max_leverage=10, maintenance_margin_rate=0.004,
                      liquidation_fee_rate=0.0125)
    bars = table([(100, 101, 99, 100, 8.0), (100, 101, 99, 100, NAN),
                  (95, 96, 80, 85, NAN)])  # low 80 < liq = 100 * 0.9 / 0.996 = 90.3614
    r = run(**bars, instruments=perp, init_cash=CASH)
    liq = 90 / 0.996
    t = only_trade(r)
    assert t["exit_price"] == approx(liq)
    assert r.fees[2, 0] == approx(0.004 * 800 * liq) and r.insurance[2, 0] == 0
    assert r.equity[2] == approx(CASH - 8_000)  # margin 800 * 100 / 10


# ---- the issue's account: 10x on 1,000,000 at Binance USD-M VIP 0 -----------------------
VENUE = load_registry().fees.venues["binance_usdm_vip0"]


@pytest.mark.parametrize(("target", "equity", "rejected", "blown"), [
    # Before issue 13 (the loss was margin + 1.25% clearance fee, L the gross target):
    # 10x long -118,063.60, 10x short -141,838.00, 9x long -105,012.10, 9x short -128,889.09.
    (10.0, 1_000_000.0, 1, None),    # buy 250 @ 40,004: margin 1,000,100 > 1,000,000: refused
    (-10.0, 1_000_000.0, 1, None),   # sell 250 @ 39,996: margin 999,900 + fee 4,999.5 >
                                     # 1,000,000: refused (the fee is due from the balance too)
    (9.0, 95_409.55, 0, None),       # 225 @ 40,004: margin 900,090, fee 4,500.45
    (-9.0, 95_590.45, 0, None),      # 225 @ 39,996: margin 899,910, fee 4,499.55
])
def test_issue_13_ten_x_on_a_million(run, target, equity, rejected, blown):
    inst = Instrument.from_venue("BTCUSDT", VENUE, max_leverage=10.0)
    bars = table([(40_000, 40_100, 39_900, 40_000, target),
                  (40_000, 40_100, 39_900, 40_000, NAN),
                  (40_000, 50_000, 30_000, 40_000, NAN)])  # both levels inside the bar
    r = run(**bars, instruments=inst, init_cash=1_000_000.0)
    assert r.equity[-1] == approx(equity)
    assert r.rejected["insufficient_margin"] == rejected
    assert r.blown_bar == blown
    for t in r.trades.iter_rows(named=True):
        margin = t["qty"] * t["entry_price"] / 10
        entry_fee = 5e-4 * t["qty"] * t["entry_price"]
        assert -t["pnl"] == pytest.approx(margin + entry_fee, rel=1e-12)


# ---- initial margin ----------------------------------------------------------------------

def test_a_target_at_the_leverage_setting_is_refused_when_slippage_lifts_its_margin(run):
    bars = table([
        (100, 101, 99, 100, 10.0),  # 1,000 units @ 100.1: margin 10,010 > 10,000: refused
        (100, 101, 99, 100, 9.0),   # 900 @ 100.1 (fee 90.09): margin 9,009: filled
        (100, 101, 99, 100, 10.0),  # equity 10,000 - 90 (slippage) - 90.09 = 9,819.91 ->
                                    # 981.991 units, margin 9,829.73 > 9,819.91: refused
        (100, 101, 99, 100, 5.0),   # 490.9955 units: a reduce
        (100, 101, 99, 100, NAN),
    ])
    r = run(**bars, instruments=PERP, init_cash=CASH)
    assert r.rejected["insufficient_margin"] == 2
    assert r.position[:, 0].tolist() == approx([0, 0, 900, 900, 490.9955])


def test_the_second_symbol_is_refused_for_the_margin_the_first_posted(run):
    # Setting 3 for both, taker and slippage 10 bps; targets 1.5 + 1.5 (gross 3).
    # A fills first (symbol order): 150 @ 100.1, margin 5,005. B needs 300 @ 50.05 = 5,005 of
    # 10,000 - 5,005 = 4,995: refused. Alone, B would have had 10,000: filled.
    insts = [Instrument(symbol=name, taker_bps=10, slippage_bps=10, max_leverage=3,
                        maintenance_margin_rate=0.01) for name in ("AUSDT", "BUSDT")]
    o = np.array([[100, 50]] * 3, dtype=float)
    target = np.array([[1.5, 1.5], [NAN, NAN], [NAN, NAN]])
    r = run(o, o + 1, o - 1, o, target, insts, init_cash=CASH)
    assert r.rejected == {**dict.fromkeys(REJECT_REASONS, 0), "zero_qty": 0,
                          "min_notional": 0, "insufficient_margin": 1}
    assert r.position[1].tolist() == [150, 0]
    alone = run(o, o + 1, o - 1, o, np.array([[0, 1.5], [NAN, NAN], [NAN, NAN]]), insts,
                init_cash=CASH)
    assert alone.position[1].tolist() == [0, 300] and alone.rejected["insufficient_margin"] == 0


def test_margin_held_by_other_symbols_limits_increases_and_reversals_not_reduces(run):
    # No costs; setting 3 for both (each position posts notional / 3), maintenance 1%.
    # A falls from 100 to 80 in bar 1 (its liquidation price is 66.67 / 0.99 = 67.34); B
    # stays at 50. Margin stays as posted at the fill: B holds 5,000 throughout.
    inst = {"max_leverage": 3, "maintenance_margin_rate": 0.01}
    insts = [Instrument(symbol="AUSDT", **inst), Instrument(symbol="BUSDT", **inst)]
    o = np.array([[100, 50], [100, 50], [80, 50], [80, 50], [80, 50]], dtype=float)
    c = np.array([[100, 50], [80, 50], [80, 50], [80, 50], [80, 50]], dtype=float)
    target = np.array([
        [1.5, 1.5],    # bar 1: A 150 @ 100 posts 5,000 of 10,000; B 300 @ 50 needs 5,000 of
                       # the 5,000 left: exactly enough. Cash -20,000.
        [1.2, NAN],    # bar 2: equity -20,000 + 12,000 + 15,000 = 7,000 (10,000 posted). A to
                       # 1.2 * 7,000 / 80 = 105: its margin 2,800 > 7,000 - 5,000, but a
                       # reduce is never refused for margin.
        [1.3, NAN],    # bar 3: A to 113.75 (an increase): 3,033.33 > 2,000: refused
        [-1.0, NAN],   # bar 4: A to -87.5 (a reversal, smaller than the long it replaces):
                       # 2,333.33 > 2,000: refused
        [NAN, NAN],
    ])
    r = run(o, np.maximum(o, c) + 1, np.minimum(o, c) - 1, c, target, insts, init_cash=CASH)
    assert r.rejected["insufficient_margin"] == 2
    assert r.position.tolist() == approx([[0, 0], [150, 300], [105, 300], [105, 300],
                                          [105, 300]])
    assert r.equity.tolist() == approx([CASH, 7_000, 7_000, 7_000, 7_000])


def test_only_isolated_positions_need_margin(run):
    spot = Instrument(symbol="BTCUSDT", taker_bps=10, slippage_bps=10)  # no margin rules
    bars = table([(100, 101, 99, 100, 1.0), (100, 101, 99, 100, NAN)])
    assert run(**bars, instruments=spot, init_cash=CASH).position[1, 0] == approx(100)


def test_a_maintenance_rate_at_or_above_one_over_the_leverage_is_refused():
    inst = Instrument(symbol="A", max_leverage=50, maintenance_margin_rate=0.02)
    for engine in ENGINES.values():
        with pytest.raises(ValueError, match=r"A: maintenance_margin_rate: 0.02 is not below "
                                             r"1 / max_leverage \(50\)"):
            engine(**table([(100, 101, 99, 100, 1.0)]), instruments=inst)
    venue = VenueSpec(maker_bps=2, taker_bps=5, slippage_bps=1, max_leverage=125,
                      maintenance_margin_rate=0.01)  # a blueprint at the cap could not trade
    with pytest.raises(ValueError, match=r"maintenance_margin_rate: 0\.01 is not below"):
        venue.validate()


# ---- no bars -----------------------------------------------------------------------------

def test_a_run_without_bars_is_refused_with_a_clear_message():
    empty = np.empty(0)
    inst = Instrument(symbol="BTCUSDT")
    for engine in ENGINES.values():
        with pytest.raises(ValueError, match=r"no bars: open has shape \(0, 1\)"):
            engine(empty, empty, empty, empty, empty, inst)
    with pytest.raises(ValueError, match="no bars"):
        check_inputs(np.empty((0, 2)), *[np.empty((0, 2))] * 4, [inst, inst])
    with pytest.raises(ValueError, match="no bars"):
        sweep(empty, empty, empty, empty, [empty], inst)
    with pytest.raises(ValueError, match="no symbols"):
        backtest(np.empty((3, 0)), *[np.empty((3, 0))] * 4, [])


def test_metrics_of_a_run_without_bars_are_refused():
    ok = backtest(*[np.full(2, 100.0)] * 4, np.array([0.5, NAN]), Instrument(symbol="X"))
    empty = type(ok)(**{**ok.__dict__, "equity": np.empty(0), "cash": np.empty(0),
                        "position": np.empty((0, 1)), "exposure": np.empty(0)})
    with pytest.raises(ValueError, match="no bars"):
        metrics(empty, np.empty(0), init_cash=1e6)


# ---- property: no isolated position loses more than its margin and its own fees ----------

def gapping_case(seed: int) -> dict:
    """A random leveraged strategy on heavy-tailed paths whose opens gap past bankruptcy
    prices. Slippage and ticks are 0: an exit's slippage is a cost of that exit (a stop
    filled with slippage just above the bankruptcy price can land below it)."""
    rng = np.random.default_rng([seed, 13])
    t_n, s_n = int(rng.integers(60, 200)), int(rng.integers(1, 4))
    vol = rng.uniform(0.005, 0.05)
    jump = np.where(rng.random((t_n, s_n)) < 0.03,
                    rng.choice([-1.0, 1.0], (t_n, s_n)) * rng.uniform(0.05, 0.5, (t_n, s_n)),
                    0.0)
    ret = rng.standard_t(3, (t_n, s_n)) * vol + jump
    close = 100 * np.exp(np.cumsum(ret, axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, vol / 4, (t_n, s_n))
                                                        + jump)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, (t_n, s_n))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, (t_n, s_n))))
    lev = float(rng.choice([2.0, 5.0, 10.0, 25.0]))
    target = np.where(rng.random((t_n, s_n)) < 0.15,
                      rng.uniform(-1, 1, (t_n, s_n)) * lev / s_n, np.nan)
    insts = [Instrument(symbol=f"S{s}", taker_bps=float(rng.choice([0.0, 5.0])),
                        max_leverage=lev,
                        maintenance_margin_rate=float(rng.choice([0.0, 0.004, 0.02])),
                        liquidation_fee_rate=float(rng.choice([0.0, 0.005, 0.0125])))
             for s in range(s_n)]
    funding = np.where(rng.random((t_n, s_n)) < 0.1, rng.normal(1e-4, 1e-3, (t_n, s_n)),
                       np.nan)
    funding[:, np.isnan(target).all(axis=0)] = np.nan
    exits = ExitRules(stop_loss=0.05) if rng.random() < 0.3 else None
    return {"open_": open_, "high": high, "low": low, "close": close, "target": target,
            "instruments": insts, "funding": funding, "exits": exits,
            "init_cash": 10_000.0}


def test_no_isolated_position_loses_more_than_its_margin_and_its_fees():
    liquidated = gapped = 0
    for seed in range(300):
        case = gapping_case(seed)
        lev = case["instruments"][0].max_leverage
        taker = np.array([i.taker for i in case["instruments"]])
        for r in (backtest(**case), backtest_reference(**case)):
            tr = r.trades.with_columns(col=pl.col("symbol").str.slice(1).cast(pl.Int64))
            notional = (tr["qty"] * tr["entry_price"]).to_numpy()
            margin, tol = notional / lev, 1e-9 * notional
            loss = -(tr["pnl"] + tr["funding"]).to_numpy()  # funding is paid from cash
            assert (loss <= margin + tr["fees"].to_numpy() + tol).all(), seed
            # A liquidated trade loses its margin and its own entry fee: at most the taker
            # fee on its notional (less when it grew from a smaller trade of the same side,
            # which paid for the rest).
            liq = (tr["exit_reason"] == "liquidation").to_numpy()
            entry_fee = notional * taker[tr["col"].to_numpy()]
            assert (loss[liq] >= margin[liq] - tol[liq]).all(), seed
            assert (loss[liq] <= margin[liq] + entry_fee[liq] + tol[liq]).all(), seed
            side = np.where(tr["side"].to_numpy() == "long", 1.0, -1.0)
            price_pnl = side * (tr["qty"] * (tr["exit_price"] - tr["entry_price"])).to_numpy()
            np.testing.assert_allclose(  # the trade's P&L in parts
                tr["pnl"].to_numpy(), price_pnl - (tr["fees"] + tr["funding"]
                                                   + tr["insurance"]).to_numpy(),
                rtol=0, atol=1e-9 * notional.max(initial=1.0))
        gone = tr.filter(pl.col("exit_reason") == "liquidation")
        side = np.where(gone["side"].to_numpy() == "long", 1.0, -1.0)
        opens = case["open_"][gone["exit_bar"].to_numpy(), gone["col"].to_numpy()]
        bankrupt = gone["entry_price"].to_numpy() * (1 - side / lev)
        liquidated += gone.height
        gapped += int((side * (opens - bankrupt) < 0).sum())
    assert liquidated > 200 and gapped > 20  # the paths did liquidate, also through gaps
