"""A portfolio of edges walked forward as one netted book: contracts choose the edges, the
book is flat before its first rebalance, every cap holds on every bar's target, turnover
stays in budget, and the equity reconciles to the fills."""

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import Instrument, backtest
from backtest_assets.portfolio.allocator import Infeasible
from backtest_assets.portfolio.run import EdgeRun, run_portfolio
from backtest_assets.specs.models import (
    CostStress,
    PortfolioLimits,
    PortfolioSpec,
    PromotionGate,
)

BPD, DAYS, E0 = 24, 40, 100_000.0
T = BPD * DAYS
SYMS = ["AUSDT", "BUSDT"]
GATE = PromotionGate(min_deflated_sharpe=0.95, max_pbo=0.3, min_oos_sharpe=1.0,
                     max_oos_drawdown=0.2, min_oos_trades=30, cost_stress=CostStress())
GOOD = {"deflated_sharpe": 0.99, "pbo": 0.1, "oos_sharpe": 2.0, "oos_max_drawdown": -0.05,
        "oos_trades": 80, "stress_sharpe": 0.8, "trials": 12}


@pytest.fixture(scope="module")
def market():
    rng = np.random.default_rng(0)
    # heavy-tailed hourly returns (Student-t, 3 dof) with a stormy stretch
    shocks = rng.standard_t(3, (T, 2)) / np.sqrt(3) * 0.01
    shocks[T // 2:T // 2 + 5 * BPD] *= 3
    close = 100 * np.exp(np.cumsum(shocks, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    high, low = np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998
    insts = [Instrument(symbol=s, taker_bps=5, max_leverage=3) for s in SYMS]
    ts = np.datetime64("2024-01-01T01:00") + np.arange(T) * np.timedelta64(1, "h")

    def edge(name: str, cols: list[str], seed: int, evidence: dict) -> EdgeRun:
        r = np.random.default_rng(seed)
        tgt = np.full((T, len(cols)), np.nan)
        tgt[0] = 0
        flips = r.random((T, len(cols))) < 0.02
        tgt[flips] = r.choice([-1.0, 0.0, 1.0], size=flips.sum())
        idx = [SYMS.index(s) for s in cols]
        res = backtest(open_[:, idx], high[:, idx], low[:, idx], close[:, idx], tgt,
                       [insts[i] for i in idx], init_cash=E0)
        return EdgeRun(name, tuple(cols), tgt, res.trades, res.equity, E0, "h" + name,
                       evidence, max_weight=1.0)

    edges = [edge("e1", ["AUSDT"], 1, GOOD), edge("e2", SYMS, 2, GOOD),
             edge("e3", ["BUSDT"], 3, {**GOOD, "pbo": 0.9}), edge("e4", ["AUSDT"], 4, None)]
    return dict(ts=ts, symbols=SYMS, bars=(open_, high, low, close), instruments=insts,
                funding=None, init_cash=E0, bars_per_day=BPD, gate=GATE), edges


def test_only_approved_edges_enter_and_the_book_reconciles(market):
    kw, edges = market
    spec = PortfolioSpec(name="b", mode="equal_risk", selection="study",
                         limits=PortfolioLimits(edge_max=0.8, gross_max=2.0))
    pr = run_portfolio(spec, edges, **kw)
    assert pr.contracts["state"].to_list() == ["APPROVED", "APPROVED", "DRAFT", "DRAFT"]
    assert pr.contracts["in_book"].to_list() == [True, True, False, False]
    assert set(pr.weights["edge"]) == {"e1", "e2"}
    first = 14 * BPD
    assert pr.weights["rebalance_ts"].to_list()[0] == kw["ts"][first].item()
    book = pr.book
    assert np.all(book.equity[:first] == E0) and np.all(pr.book_target[:first] == 0)
    # the equity is the fills' P&L: every fee and mark is in some trade
    assert book.equity[-1] - E0 == pytest.approx(book.trades["pnl"].sum(), abs=1e-6)
    metrics = {r["book"]: r for r in pr.metrics.to_dicts()}
    assert metrics["book"]["edges"] == 2 and metrics["equal_weight"]["edges"] == 4
    assert metrics["book"]["max_target_gross"] <= 2.0 + 1e-9


def test_the_optimizer_keeps_every_cap_on_every_bar_and_turnover_in_budget(market):
    kw, edges = market
    limits = PortfolioLimits(fully_invested=False, edge_max=0.7, gross_max=1.2, net_max=1.0,
                             symbol_max=0.9, turnover_max=0.4, cvar_max=0.05)
    spec = PortfolioSpec(name="o", mode="constrained_optimizer", edges="all", limits=limits,
                         selection="study")
    pr = run_portfolio(spec, edges, **kw)
    w = pr.weights
    assert w["weight"].min() >= 0 and w["weight"].max() <= 0.7 + 1e-9
    per = w.group_by("rebalance_ts").agg(pl.col("weight").sum(), pl.col("turnover").first())
    per = per.sort("rebalance_ts")
    assert per["weight"].max() <= 1 + 1e-9
    assert per["turnover"][1:].max() <= 0.4 + 1e-9  # the first is from cash
    target = pr.book_target
    assert np.abs(target).sum(axis=1).max() <= 1.2 + 1e-9  # gross, every bar
    assert np.abs(target.sum(axis=1)).max() <= 1.0 + 1e-9  # net, every bar
    assert np.abs(target).max() <= 0.9 + 1e-9  # per symbol, every bar


def test_limits_that_cannot_hold_are_refused_naming_them(market):
    kw, edges = market
    # 4 x 0.2 < 1, fully invested
    spec = PortfolioSpec(name="x", mode="constrained_optimizer", edges="all",
                         selection="study", limits=PortfolioLimits(edge_max=0.2))
    with pytest.raises(Infeasible, match="edge_max"):
        run_portfolio(spec, edges, **kw)


def test_equal_risk_books_give_each_edge_an_equal_share_of_the_variance(market):
    kw, edges = market
    spec = PortfolioSpec(name="r", mode="equal_risk", edges="all", selection="study",
                         limits=PortfolioLimits(fully_invested=True, gross_max=4.0))
    pr = run_portfolio(spec, edges, **kw)
    per = pr.weights.group_by("rebalance_ts").agg(pl.col("risk_contribution"))
    for shares in per["risk_contribution"].to_list():
        assert sum(shares) == pytest.approx(1.0)
        assert shares == pytest.approx([1 / len(edges)] * len(edges), abs=1e-6)


def test_as_of_selection_needs_evidence_as_of_each_review(market):
    kw, edges = market
    with pytest.raises(ValueError, match="as_of needs each edge's evidence"):
        run_portfolio(PortfolioSpec(name="a", mode="equal_risk"), edges, **kw)
    seen = []

    def evidence_at(i, bar):  # e1 proves itself from the second review on
        seen.append((i, bar))
        return GOOD if i == 0 and bar >= 21 * BPD else "not yet"

    pr = run_portfolio(PortfolioSpec(name="a", mode="equal_risk"), edges, **kw,
                       evidence_at=evidence_at)
    assert sorted({b for _, b in seen}) == [14 * BPD, 21 * BPD, 28 * BPD, 35 * BPD]
    e1 = pr.contracts.filter(pl.col("edge") == "e1")["state"].to_list()
    assert e1 == ["DRAFT", "APPROVED", "APPROVED", "APPROVED"]
    assert (pr.contracts.filter(pl.col("edge") != "e1")["reasons"] == "not yet").all()
    w = pr.weights.sort("rebalance_ts")
    assert set(w["edge"]) == {"e1"} and w["weight"].to_list()[0] == 0.0
    assert w["weight"].to_list()[1] > 0
