"""The Bybit venue (issue 18): its published values load and validate; the same leveraged
long costs more and is liquidated at another level on Bybit than on Binance; a blueprint
names either venue.

Sources of specs/fees.yaml's ``bybit_linear_vip0`` (its comments say more): fees 0.055 %
taker / 0.02 % maker (Bybit help center, "Perpetual & Futures Contract: Fees Explained",
2024-10-16); instruments-info filters of BTCUSDT and ETHUSDT (ccxt/ccxt @ 1f8d53ec :
ts/src/test/static/markets/bybit.json); BTCUSDT's risk limits, tiers 1-20 (Bybit's "Margin
Parameters" page). Scenario tables worked out by hand in the comments, on the reference
loop, the closed form and the compiled loop (tests/unit/test_engine_scenarios.ENGINES).

The engine applies Binance's rule on both venues: the maintenance margin is taken on the
notional at the liquidation price. Bybit's help article "Liquidation Price (USDT Contract)"
takes it on the position value at the entry price; the scenario below is chosen so that
both readings of Bybit's level lie below Binance's.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import Instrument
from backtest_assets.specs.models import Condition, Entry, Exits, StrategySpec
from backtest_assets.specs.registry import blueprint_problems, load_registry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.run import instruments_for, run_blueprint
from tests.unit.test_engine_scenarios import ENGINES, approx, only_trade, table

NAN = np.nan
REG = load_registry()
BINANCE = REG.fees.venues["binance_usdm_vip0"]
BYBIT = REG.fees.venues["bybit_linear_vip0"]


@pytest.fixture(params=list(ENGINES))
def run(request):
    return ENGINES[request.param]


# ---- the published values ----------------------------------------------------------------

def test_the_bybit_venue_loads_with_its_published_values():
    BYBIT.validate()
    assert REG.fees.default_venue == "binance_usdm_vip0"  # unchanged
    # Fees Explained: taker 0.055 %, maker 0.02 %; the slippage assumed as on Binance.
    assert (BYBIT.taker_bps, BYBIT.maker_bps, BYBIT.slippage_bps) == (5.5, 2.0, 1.0)
    assert (BYBIT.max_leverage, BYBIT.maintenance_margin_rate,
            BYBIT.liquidation_fee_rate) == (100, 0.005, 0.0)
    # instruments-info: qtyStep, tickSize, minNotionalValue, fundingInterval 480 minutes.
    btc, eth = BYBIT.rules("BTCUSDT"), BYBIT.rules("ETHUSDT")
    assert (btc.lot_size, btc.tick_size, btc.min_notional, btc.funding_interval_hours) == (
        0.001, 0.1, 5.0, 8.0)
    assert (eth.lot_size, eth.tick_size, eth.min_notional, eth.funding_interval_hours) == (
        0.01, 0.01, 5.0, 8.0)
    # Margin Parameters, BTCUSDT: tier 1 2,000,000 / 100x / 0.5 % / 0; tier 2 2,600,000 /
    # 90x / 0.56 % / 1,200; tier 20 80,000,000 / 14x / 4.5 % / 1,482,000.
    assert len(btc.brackets) == 20
    assert btc.brackets[0] == (2_000_000, 100, 0.005, 0)
    assert btc.brackets[1] == (2_600_000, 90, 0.0056, 1_200)
    assert btc.brackets[-1] == (80_000_000, 14, 0.045, 1_482_000)
    # No published risk limits for ETHUSDT were found, and nothing for SOLUSDT.
    assert eth.brackets == () and "SOLUSDT" not in (BYBIT.symbols or {})
    # Binance's symbols publish no funding interval here: the new field stays out of them.
    assert BINANCE.rules("BTCUSDT").funding_interval_hours is None


def test_bybit_deductions_are_continuous_as_published():
    """mmDeduction_k = mmDeduction_{k-1} + riskLimitValue_{k-1} x (mmr_k - mmr_{k-1}): tier
    2: 0 + 2,000,000 x 0.0006 = 1,200; tier 3: 1,200 + 2,600,000 x 0.0007 = 3,020; tier 20:
    1,107,000 + 75,000,000 x 0.005 = 1,482,000 (the page's own formula, and the engine's
    check, which the loader ran)."""
    inst = Instrument.from_venue("BTCUSDT", BYBIT)
    inst.validate()
    b = inst.brackets
    assert b[2].maint_amount == 3_020 and abs(1_200 + 2_600_000 * 0.0007 - 3_020) < 1e-9
    assert b[19].maint_amount == 1_107_000 + 75_000_000 * 0.005
    assert inst.max_notional == 2_000_000  # at 100x only the first tier
    assert Instrument.from_venue("BTCUSDT", BYBIT, max_leverage=10).max_notional == 80_000_000


def test_the_funding_interval_is_checked():
    rules = dict(BYBIT.rules("BTCUSDT").__dict__)
    for bad in (0.0, -8.0, 25.0, float("nan")):
        with pytest.raises(ValueError, match="funding_interval_hours"):
            type(BYBIT.rules("BTCUSDT"))(**{**rules, "funding_interval_hours": bad}).validate()


# ---- one strategy, two venues ------------------------------------------------------------
# Cash 1,000,000, leverage setting 10, BTCUSDT, target 4 decided at bar 0's close: buy
# 4 x 1,000,000 / 40,000 = 100 BTC at bar 1's open, 40,000 x 1.0001 = 40,004 (both venues:
# slippage 1 bp, tick 0.1, lot 0.001). Notional 4,000,400, margin 400,040.
#   entry fee  Binance 0.05 % x 4,000,400 = 2,000.20;  Bybit 0.055 % x 4,000,400 = 2,200.22
# Liquidation level:
#   Binance (maintenance on the notional at the level, in that notional's tier), tier 4
#   (3,000,000-12,000,000: 1 %, amount 11,450):
#     (40,004 x 0.9 - 11,450 / 100) / (1 - 0.01) = 35,889.1 / 0.99 = 36,251.616161...
#     (notional there 3,625,161.6: in tier 4)
#   Bybit ("Liquidation Price (USDT Contract)": maintenance on the position value at the
#   entry, 4,000,400, in its tier 5: 0.71 %, deduction 5,820; maintenance_at: entry):
#     MM = 4,000,400 x 0.0071 - 5,820 = 22,582.84
#     40,004 - (400,040 - 22,582.84) / 100 = 36,229.4284: below Binance's level.
#   (Binance's rule on Bybit's tiers would give tier 4 (0.67 %, 4,300) at the level:
#     (36,003.6 - 43) / 0.9933 = 36,203.161179..., lower still.)
# Bar 2's low 36,240 reaches Binance's level only.
#   Binance: closed at 36,251.616161...; margin left 400,040 + 100 x (36,251.616161 -
#     40,004) = 24,801.616161... = 1 % x 3,625,161.6 - 11,450; the clearance fee (1.25 % x
#     3,625,161.6 = 45,314.5) takes all of it. Equity 1,000,000 - 400,040 - 2,000.20 =
#     597,959.80 from then on.
#   Bybit: held; target 0 decided at bar 2's close, sold at bar 3's open 37,000 x 0.9999 =
#     36,996.3; exit fee 0.055 % x 3,699,630 = 2,034.7965; P&L 100 x (36,996.3 - 40,004) =
#     -300,770; equity 1,000,000 - 300,770 - 2,200.22 - 2,034.7965 = 694,994.9835.
BARS = table([(40_000, 40_100, 39_900, 40_000, 4.0),
              (40_000, 40_100, 39_900, 40_000, NAN),
              (38_000, 38_500, 36_240, 37_000, 0.0),
              (37_000, 37_100, 36_900, 37_000, NAN)])
BINANCE_LIQ = 35_889.1 / 0.99
BYBIT_LIQ = 36_229.4284


def test_the_same_long_costs_more_on_bybit_and_is_liquidated_on_binance_only(run):
    assert abs(BINANCE_LIQ - 36_251.61616161616) < 1e-9
    assert BYBIT_LIQ < 36_240 < BINANCE_LIQ
    binance = run(**BARS, instruments=Instrument.from_venue("BTCUSDT", BINANCE,
                                                            max_leverage=10),
                  init_cash=1_000_000.0)
    bybit = run(**BARS, instruments=Instrument.from_venue("BTCUSDT", BYBIT, max_leverage=10),
                init_cash=1_000_000.0)

    t = only_trade(binance)
    assert [t["qty"], t["entry_price"]] == approx([100, 40_004])
    assert (t["exit_bar"], t["exit_reason"]) == (2, "liquidation")
    assert t["exit_price"] == approx(BINANCE_LIQ)
    left = 0.01 * 100 * BINANCE_LIQ - 11_450  # 24,801.616161...
    assert left == pytest.approx(24_801.6161616, abs=1e-6)
    assert binance.fees[:, 0].tolist() == approx([0, 2_000.2, left, 0])
    assert binance.liquidation_fees[2, 0] == approx(left) and binance.insurance.sum() == 0
    assert binance.equity[2:].tolist() == approx([597_959.8, 597_959.8])

    t = only_trade(bybit)
    assert [t["qty"], t["entry_price"], t["exit_price"]] == approx([100, 40_004, 36_996.3])
    assert (t["exit_bar"], t["exit_reason"]) == (3, "signal")
    assert bybit.fees[:, 0].tolist() == approx([0, 2_200.22, 0, 2_034.7965])
    assert bybit.liquidation_fees.sum() == 0
    assert t["pnl"] == approx(-300_770 - 2_200.22 - 2_034.7965)
    assert bybit.equity[-1] == approx(694_994.9835)
    # The fees of the same fill differ by the ratio of the taker rates.
    assert bybit.fees[1, 0] / binance.fees[1, 0] == pytest.approx(5.5 / 5.0, rel=1e-12)


def test_a_deeper_low_liquidates_both_at_their_own_levels(run):
    """Bar 2's low at 36,200 reaches both levels. Binance closes at 36,251.616 (its
    clearance fee takes the margin left); Bybit at 36,229.4284, where the margin left is
    the maintenance margin at entry, 22,582.84: no clearance fee is published, so it goes
    to the insurance fund. Either way the trader loses the posted margin, 400,040, and the
    entry fee: Bybit's equity 1,000,000 - 400,040 - 2,200.22 = 597,759.78."""
    bars = {k: v.copy() for k, v in BARS.items()}
    bars["low"][2] = 36_200.0
    binance = run(**bars, instruments=Instrument.from_venue("BTCUSDT", BINANCE,
                                                            max_leverage=10),
                  init_cash=1_000_000.0)
    bybit = run(**bars, instruments=Instrument.from_venue("BTCUSDT", BYBIT, max_leverage=10),
                init_cash=1_000_000.0)
    assert only_trade(binance)["exit_price"] == approx(BINANCE_LIQ)
    t = only_trade(bybit)
    assert (t["exit_bar"], t["exit_reason"]) == (2, "liquidation")
    assert t["exit_price"] == approx(BYBIT_LIQ)
    assert bybit.insurance.sum() == approx(22_582.84) and bybit.liquidation_fees.sum() == 0
    assert t["pnl"] == approx(-400_040 - 2_200.22)
    assert bybit.equity[2:].tolist() == approx([597_759.78, 597_759.78])


# ---- a blueprint names either venue ------------------------------------------------------
T0 = dt.datetime(2024, 1, 1)
N = 48  # four hours of 5-minute bars


def one_entry_market() -> tuple[Panel, dict[str, np.ndarray], pl.DataFrame]:
    """BTCUSDT on a random walk, a feature that crosses its threshold once (bar 5), and
    8-hourly funding (one print, at the first bar)."""
    rng = np.random.default_rng(18)
    ts = [T0 + dt.timedelta(minutes=5 * k) for k in range(N)]
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.002, N)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    bars = pl.DataFrame({"symbol": "BTCUSDT", "ts_open": ts, "open": open_,
                         "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close})
    panel = Panel.from_bars(bars, ("BTCUSDT",), T0, T0 + dt.timedelta(minutes=5 * N), 5)
    signal = np.zeros((N, 1))
    signal[5, 0] = 1.0
    funding = pl.DataFrame({"symbol": "BTCUSDT", "ts": [T0], "funding_rate": [0.0]})
    return panel, {"sig": signal}, funding


def blueprint(venue: str | None) -> StrategySpec:
    return StrategySpec(name="once", symbols=("BTCUSDT",),
                        entry=Entry(condition=Condition(feature="sig", op="gt",
                                                        threshold=0.5)),
                        direction="long", target_weight=0.5, leverage=1.0,
                        exits=Exits(time_stop_bars=6), venue=venue)


def test_a_blueprint_naming_bybit_runs_there_and_pays_its_taker_fee():
    """One entry and one time-stopped exit, the same quantity and fill prices on both
    venues (BTCUSDT's lot 0.001 and tick 0.1 on both), so the fee totals differ by the
    taker rates: 5.5 bps / 5 bps = 1.1."""
    panel, features, funding = one_entry_market()
    runs = {}
    for name in (None, "bybit_linear_vip0"):
        bp = blueprint(name)
        bp.validate()
        assert list(blueprint_problems(bp, ("BTCUSDT",), (), ("sig",), REG.fees)) == []
        venue = REG.fees.venues[bp.venue or REG.fees.default_venue]  # as the assets resolve it
        runs[name] = run_blueprint(bp, panel, features=features, events=None,
                                   funding=funding, venue=venue, init_cash=100_000.0)
    binance, bybit = runs[None].trades, runs["bybit_linear_vip0"].trades
    assert binance.height == bybit.height == 1
    assert binance["exit_reason"][0] == "time_stop"
    for col in ("qty", "entry_price", "exit_price", "entry_ts", "exit_ts"):
        assert binance[col][0] == bybit[col][0], col
    assert bybit["fees"][0] / binance["fees"][0] == pytest.approx(1.1, rel=1e-12)
    assert runs["bybit_linear_vip0"].equity["fees"].sum() == pytest.approx(
        1.1 * runs[None].equity["fees"].sum(), rel=1e-12)
    # The venue's leverage cap: 100 on Bybit, 20 on Binance's default venue.
    assert [i.max_leverage for i in instruments_for(blueprint("bybit_linear_vip0"), BYBIT)
            ] == [1.0]
    too_much = StrategySpec(**{**blueprint("bybit_linear_vip0").__dict__, "leverage": 50.0})
    assert list(blueprint_problems(too_much, ("BTCUSDT",), (), ("sig",), REG.fees)) == []
    assert [f for f, _ in blueprint_problems(
        StrategySpec(**{**too_much.__dict__, "venue": None}), ("BTCUSDT",), (), ("sig",),
        REG.fees)] == ["leverage"]
