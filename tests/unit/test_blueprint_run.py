"""One blueprint's backtest as frames, and the blueprint catalog with its refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.specs.models import Condition, Entry, Exits, StrategySpec
from backtest_assets.specs.registry import load_registry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.blueprints import from_survivor
from backtest_assets.strategies.catalog import catalog, load_blueprint, problems
from backtest_assets.strategies.run import instruments_for, run_blueprint
from tests.support.bars import random_walk_frame

REG = load_registry()
VENUE = REG.fees.venues["binance_usdm_vip0"]
T0 = dt.datetime(2024, 1, 1)
N = 2 * 288  # two days of 5-minute bars


def market(symbols=("BTCUSDT", "ETHUSDT"), seed=0) -> tuple[Panel, pl.DataFrame]:
    """A random walk per symbol on the grid, and 8-hourly funding for those symbols."""
    rng = np.random.default_rng(seed)
    frames, funding = [], []
    ts = [T0 + dt.timedelta(minutes=5 * k) for k in range(N)]
    for i, s in enumerate(symbols):
        frames.append(random_walk_frame(rng, s, ts, 40_000 / (i + 1)))
        funding.append(pl.DataFrame({"symbol": s, "ts": ts[::96],
                                     "funding_rate": rng.normal(1e-4, 1e-4, N // 96)}))
    panel = Panel.from_bars(pl.concat(frames), symbols, T0, T0 + dt.timedelta(days=2), 5)
    return panel, pl.concat(funding)


def momentum(**kw) -> StrategySpec:
    fields = dict(name="mom", symbols=("BTCUSDT", "ETHUSDT"),
                  entry=Entry(condition=Condition(feature="ret_12", op="abs_gt",
                                                  threshold=0.01)),
                  direction="continuation", target_weight=0.5,
                  exits=Exits(stop_loss=0.01, time_stop_bars=12), leverage=1.0)
    return StrategySpec(**{**fields, **kw})


def ret_12(panel: Panel) -> np.ndarray:
    c = panel.close
    out = np.full_like(c, np.nan)
    out[12:] = c[12:] / c[:-12] - 1
    return out


def test_run_frames_reconcile():
    panel, funding = market()
    bp = momentum()
    run = run_blueprint(bp, panel, features={"ret_12": ret_12(panel)}, events=None,
                        funding=funding, venue=VENUE, init_cash=100_000.0)
    trades, equity, m = run.trades, run.equity, run.metrics.row(0, named=True)
    assert trades.height > 10 and set(trades["blueprint"]) == {"mom"}
    assert equity.height == N and equity["ts"][0] == T0 + dt.timedelta(minutes=5)
    assert trades["pnl"].sum() == pytest.approx(equity["equity"][-1] - 100_000.0, rel=1e-9)
    assert m["total_return"] == pytest.approx(equity["equity"][-1] / 100_000.0 - 1, rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(equity["drawdown"].min(), rel=1e-12)
    assert m["trades"] == trades.filter(pl.col("exit_reason") != "open").height
    # Fill times are bar opens; entries are the bar after a signal (one bar = 5 minutes).
    k = trades["entry_bar"].to_numpy()
    assert (trades["entry_ts"].to_numpy() == panel.ts[k]).all()
    assert set(trades["exit_reason"]) <= {"stop_loss", "time_stop", "open", "signal"}
    assert "time_stop" in set(trades["exit_reason"])
    # Funding was exchanged (8-hourly rates on held positions), and fees at venue rates.
    assert equity["funding"].abs().sum() > 0
    assert m["fee_drag"] > 0 and m["rejected_min_notional"] == 0
    # Margin: 0.5 + 0.5 at a 1x setting posts the entry notional, about the equity (over it
    # when the positions lose); a 1x long cannot be liquidated (its level is 0). With both
    # symbols signalling, the second entry's margin (its notional, slippage included) is
    # more than the first left: refused.
    assert 0.9 < m["margin_usage_max"] < 1.1
    assert m["min_liquidation_distance"] > 0
    assert m["rejected_insufficient_margin"] > 0 and m["liquidations"] == 0


def test_a_symbol_that_never_signals_stays_flat_and_pays_no_funding():
    # Found by the 7-day certification batch: a blueprint whose entry never fires for one of
    # its symbols in the window was refused ("funding given for a symbol that is never
    # given a target"); it is a flat symbol, not a misaligned column.
    panel, funding = market()
    features = {"ret_12": ret_12(panel)}
    features["ret_12"][:, 1] = 0.0  # ETHUSDT never passes the entry threshold
    run = run_blueprint(momentum(), panel, features=features, events=None, funding=funding,
                        venue=VENUE, init_cash=1e5)
    assert run.trades.height > 0 and set(run.trades["symbol"]) == {"BTCUSDT"}
    assert run.equity["equity"][-1] != 1e5


def test_run_refuses_bad_input_before_simulating():
    panel, funding = market()
    with pytest.raises(ValueError, match="leverage 25 is above the venue's cap of 20"):
        run_blueprint(momentum(leverage=25.0), panel, features={"ret_12": ret_12(panel)},
                      events=None, funding=funding, venue=VENUE, init_cash=1e5)
    with pytest.raises(ValueError, match=r"entry\.condition\.feature 'ret_12' is not among"):
        run_blueprint(momentum(), panel, features={}, events=None, funding=funding,
                      venue=VENUE, init_cash=1e5)
    sol = funding.filter(pl.col("symbol") == "BTCUSDT").with_columns(symbol=pl.lit("SOLUSDT"))
    with pytest.raises(ValueError, match="funding: SOLUSDT is not traded by this backtest"):
        run_blueprint(momentum(), panel, features={"ret_12": ret_12(panel)}, events=None,
                      funding=pl.concat([funding, sol]), venue=VENUE, init_cash=1e5)
    broken = dataclasses.replace(panel, open=panel.open.copy())
    k = int(run_blueprint(momentum(), panel, features={"ret_12": ret_12(panel)}, events=None,
                          funding=funding, venue=VENUE, init_cash=1e5)
            .trades["entry_bar"][0])
    broken.open[k, 0] = np.nan  # a fill bar without a price
    with pytest.raises(ValueError, match=f"BTCUSDT bar {k}"):
        run_blueprint(momentum(), broken, features={"ret_12": ret_12(panel)}, events=None,
                      funding=funding, venue=VENUE, init_cash=1e5)


def test_instruments_take_the_venue_filters_and_the_blueprint_leverage():
    insts = instruments_for(momentum(leverage=3.0, target_weight=1.5), VENUE)
    assert [(i.symbol, i.lot_size, i.min_notional, i.max_leverage) for i in insts] == [
        ("BTCUSDT", 0.001, 100.0, 3.0), ("ETHUSDT", 0.001, 20.0, 3.0)]
    assert all(i.maintenance_margin_rate == 0.004 for i in insts)


def test_leveraged_run_reports_margin_and_liquidation_distance():
    panel, funding = market(seed=3)
    bp = momentum(leverage=8.0, target_weight=3.0)
    features = {"ret_12": ret_12(panel)}
    run = run_blueprint(bp, panel, features=features, events=None, funding=funding,
                        venue=VENUE, init_cash=100_000.0)
    m = run.metrics.row(0, named=True)
    assert m["rejected_insufficient_margin"] == 0  # 3 + 3 at a setting of 8: headroom
    # Independently: a fill posts qty * entry / L, L = the blueprint's leverage (the
    # symbol's setting, whatever the target), and its level is the engine's.
    lev = 8.0
    usage, distance = [], []
    for t in range(N):
        posted, dist = 0.0, np.inf
        for row in run.trades.iter_rows(named=True):
            exit_bar = N if row["exit_bar"] is None else row["exit_bar"]
            if not row["entry_bar"] <= t < exit_bar:
                continue
            posted += row["qty"] * row["entry_price"] / lev
            c = panel.close[t, bp.symbols.index(row["symbol"])]
            if row["side"] == "long":
                dist = min(dist, (c - row["entry_price"] * (1 - 1 / lev) / (1 - 0.004)) / c)
            else:
                dist = min(dist, (row["entry_price"] * (1 + 1 / lev) / (1 + 0.004) - c) / c)
        if posted:
            usage.append(posted / run.equity["equity"][t])
            distance.append(dist)
    assert len(usage) > 50
    assert m["margin_usage_mean"] == pytest.approx(np.mean(usage), rel=1e-9)
    assert m["margin_usage_max"] == pytest.approx(max(usage), rel=1e-9)
    assert m["min_liquidation_distance"] == pytest.approx(min(distance), rel=1e-9)
    # At 8x a level sits 1/8 of the entry away, less the maintenance margin.
    assert 0 < m["min_liquidation_distance"] < 1 / 8


def test_a_gross_weight_at_the_leverage_setting_has_entries_refused_for_margin():
    # 3 + 3 at a setting of 6: with one symbol in (margin 3/6 of the equity, plus slippage),
    # the other's entry asks for more than is left; the engine refuses it, as the venue would.
    panel, funding = market(seed=3)
    bp = momentum(leverage=6.0, target_weight=3.0)
    run = run_blueprint(bp, panel, features={"ret_12": ret_12(panel)}, events=None,
                        funding=funding, venue=VENUE, init_cash=100_000.0)
    m = run.metrics.row(0, named=True)
    assert m["rejected_insufficient_margin"] > 0
    assert m["rejected_zero_qty"] == m["rejected_min_notional"] == m["rejected_blown"] == 0



@pytest.mark.parametrize("name", sorted(n for n, bp in REG.strategies.items()
                                         if bp.entry.code is None))  # code: its own tests
def test_baseline_blueprints_keep_trading_under_the_margin_check(name):
    # 0.3 on each of 3 symbols at a 1x setting posts at most 0.9 of the equity (plus
    # slippage): every entry finds its margin. Entries are made to fire often here.
    panel, funding = market(symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), seed=5)
    rng = np.random.default_rng(0)
    features = {"ret_48": rng.normal(0, 0.02, panel.open.shape),
                "ret_1_z": rng.normal(0, 2.5, panel.open.shape),
                # what the overlays read (momentum_guarded_v1)
                "funding_rate": rng.normal(1e-4, 2e-4, panel.open.shape),
                "rv_48_z": rng.normal(0, 1.0, panel.open.shape),
                "rv_48": rng.uniform(0.005, 0.02, panel.open.shape)}
    events = pl.DataFrame({"event_type": "vol_compression_breakout",
                           "symbol": rng.choice(panel.symbols, 60),
                           "ts": panel.ts[rng.integers(0, N, 60)],
                           "direction": rng.choice([-1, 1], 60)}).unique(["symbol", "ts"])
    run = run_blueprint(REG.strategies[name], panel, features=features, events=events,
                        funding=funding, venue=VENUE, init_cash=100_000.0)
    m = run.metrics.row(0, named=True)
    assert m["trades"] + m["overlay_blocked"] >= 20  # entries fired (or an overlay refused them)
    assert m["trades"] >= 10
    assert m["rejected_insufficient_margin"] == 0 and m["liquidations"] == 0
    assert 0.5 < m["margin_usage_max"] < 0.95

def survivors() -> pl.DataFrame:
    return pl.DataFrame({
        "hypothesis_id": ["h_b", "h_a"], "event_type": ["volatility_shock", "oi_flush"],
        "rule_template": ["continuation", "mean_reversion"], "horizon": ["60m", "15m"],
        "symbol": ["ALL", "ETHUSDT"], "n": [90, 40], "mean": [0.008, 0.003], "q": [0.001, 0.02]})


def test_catalog_lists_baselines_then_survivors_and_round_trips():
    table = catalog(REG, survivors(), REG.default_study.symbols)
    assert table["blueprint"].to_list() == [*REG.strategies,
                                            "p2_oi_flush_mean_reversion_15m_ethusdt",
                                            "p2_volatility_shock_continuation_60m_all"]
    assert table["source"].to_list() == ["spec"] * len(REG.strategies) + ["phase2"] * 2
    assert table["hypothesis_id"].to_list()[-2:] == ["h_a", "h_b"]
    for row in table.iter_rows(named=True):
        bp = load_blueprint(row)
        assert bp.name == row["blueprint"]
    pooled = load_blueprint(table.row(-1, named=True))
    assert pooled.symbols == REG.default_study.symbols and pooled.exits.time_stop_bars == 12
    assert problems(REG, table) == []
    assert catalog(REG, None, REG.default_study.symbols).height == len(REG.strategies)


def test_a_study_catalogs_only_baselines_it_holds_the_symbols_of_and_pools_over_its_own():
    btc_only = catalog(REG, survivors(), ("BTCUSDT",))
    kept = [n for n, bp in REG.strategies.items() if set(bp.symbols) <= {"BTCUSDT"}]
    assert btc_only.filter(pl.col("source") == "spec")["blueprint"].to_list() == kept
    pooled = load_blueprint(btc_only.row(-1, named=True))
    assert pooled.name == "p2_volatility_shock_continuation_60m_all"
    assert pooled.symbols == ("BTCUSDT",)  # ALL: every symbol of the study


def test_catalog_problems_name_the_blueprint_and_field():
    table = catalog(REG, survivors(), REG.default_study.symbols)
    row = table.filter(pl.col("source") == "phase2").head(1)

    def edited(old: str, new: str) -> pl.DataFrame:
        return row.with_columns(pl.col("spec_json").str.replace(old, new, literal=True))

    name = row["blueprint"][0]
    assert problems(REG, edited('"oi_flush"', '"oi_crash"')) == [
        f"{name}: entry.event: unknown event type 'oi_crash'"]
    assert problems(REG, edited('"ETHUSDT"', '"DOGEUSDT"')) == [
        f"{name}: symbols[0]: DOGEUSDT is not in universe.yaml"]
    assert problems(REG, edited('"leverage":2.0', '"leverage":40.0')) == [
        f"{name}: leverage: 40.0 is above binance_usdm_vip0's cap of 20.0"]
    assert problems(REG, pl.concat([row, row])) == [f"{name}: 2 blueprints share this name"]
    assert problems(REG, edited('"target_weight":1.0', '"target_weight":-1.0'))[0].startswith(
        f"{name}: ")


def test_a_survivor_trades_its_full_weight_thanks_to_the_leverage_headroom():
    # A single-symbol survivor puts its whole budget (weight 1) on one symbol; its setting of
    # 2 posts half the notional. At a setting of 1 a long entry's margin is its notional at
    # the open plus the slippage, less what the lot rounding cut: more than the equity unless
    # the rounding cut more than the slippage added, so entries are refused at random. (The
    # events fall, so the mean reversion buys; a short sells below the open and fits.)
    panel, funding = market(symbols=("ETHUSDT",), seed=2)
    row = survivors().row(1, named=True)  # oi_flush mean reversion 15m on ETHUSDT
    bp = from_survivor(row, universe_symbols=("ETHUSDT",), horizon_bars={"15m": 3})
    rng = np.random.default_rng(1)
    events = pl.DataFrame({"event_type": "oi_flush", "symbol": "ETHUSDT",
                           "ts": np.unique(panel.ts[rng.integers(0, N, 40)]),
                           "direction": -1})
    args = dict(features={}, events=events, funding=funding, venue=VENUE, init_cash=1e5)
    m = run_blueprint(bp, panel, **args).metrics.row(0, named=True)
    assert bp.leverage == 2.0 and m["trades"] >= 20
    assert m["rejected_insufficient_margin"] == 0
    assert m["margin_usage_max"] == pytest.approx(0.5, abs=0.01)
    at_1x = run_blueprint(dataclasses.replace(bp, leverage=1.0), panel, **args)
    m1 = at_1x.metrics.row(0, named=True)
    assert m1["rejected_insufficient_margin"] >= 5
    assert m1["trades"] + m1["rejected_insufficient_margin"] == m["trades"]


def test_study_data_reads_bars_in_time_order_whatever_order_the_table_holds(tmp_path):
    """Found by a 2-year study: a scan of a large table returns rows in no particular order,
    and the panel refuses unsorted bars. Here the table holds them shuffled on purpose."""
    from backtest_assets.defs.backtest.market import StudyData
    from backtest_assets.defs.shared import symbol_layout
    from backtest_assets.warehouse import Warehouse

    rng = np.random.default_rng(5)
    ts = [T0 + dt.timedelta(minutes=5 * k) for k in range(N)]
    bars = pl.concat([random_walk_frame(rng, s, ts, 40_000.0) for s in ("BTCUSDT", "ETHUSDT")])
    shuffled = bars.with_columns(market=pl.lit("perp")).sample(fraction=1.0, shuffle=True,
                                                               seed=3)
    funding = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"],
                            "ts": [T0 + dt.timedelta(hours=8)] * 2, "funding_rate": [1e-4] * 2})
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace(f"bars_{REG.universe.base_interval}", shuffled, symbol_layout("ts_open"), None)
    wh.replace("raw_funding_rates", funding, symbol_layout("ts"), None)
    feature = momentum().entry.condition.feature
    wh.replace("pit_features", shuffled.select("symbol", "ts_open",
                                               pl.col("close").alias(feature)),
               symbol_layout("ts_open"), None)
    with wh.connect(read_only=True) as conn:  # the table does hold them out of order
        stored = conn.sql(f"SELECT ts_open FROM bars_{REG.universe.base_interval}").pl()  # noqa: S608
    assert not stored["ts_open"].is_sorted()
    study = dataclasses.replace(REG.default_study, start=T0.date(),
                                end=(T0 + dt.timedelta(days=1)).date())
    data = StudyData.read(wh, study, [momentum()])
    for frame in (data.bars, data.features):
        for _, own in frame.group_by("symbol"):
            assert own["ts_open"].is_sorted()
    assert data.bars.height == bars.height
    data.for_blueprint(momentum(), REG.base_minutes)  # the panel accepts them


def test_a_blueprints_risk_manager_refuses_and_counts_by_reason():
    """``risk:`` of a blueprint reaches the engine with the bars' UTC days: a position cap
    below the blueprint's sizing refuses every entry (``rejected_max_position``), a tight
    daily loss cap stops some; the metrics count them; the ledger still balances; a blueprint
    without limits keeps its hash."""
    from backtest_assets.specs.loader import spec_hash
    from backtest_assets.specs.models import RiskSpec

    panel, funding = market()
    feats = {"ret_12": ret_12(panel)}
    base = momentum()
    assert spec_hash(dataclasses.replace(base, risk=None)) == spec_hash(base)
    free = run_blueprint(base, panel, features=feats, events=None, funding=funding,
                         venue=VENUE, init_cash=100_000.0).metrics.row(0, named=True)
    assert free["trades"] > 0
    capped = run_blueprint(
        dataclasses.replace(base, risk=RiskSpec(max_position_notional=1_000.0)), panel,
        features=feats, events=None, funding=funding, venue=VENUE,
        init_cash=100_000.0).metrics.row(0, named=True)
    assert capped["trades"] == 0 and capped["rejected_max_position"] > 0
    daily = run_blueprint(
        dataclasses.replace(base, risk=RiskSpec(daily_loss_cap=0.001)), panel,
        features=feats, events=None, funding=funding, venue=VENUE,
        init_cash=100_000.0).metrics.row(0, named=True)
    assert daily["rejected_daily_loss"] > 0 and daily["trades"] < free["trades"]
    assert max(free["ledger_residual"], capped["ledger_residual"],
               daily["ledger_residual"]) < 1e-12
    with pytest.raises(ValueError, match="daily_loss_cap"):
        RiskSpec(daily_loss_cap=2.0).validate()
