"""Two studies side by side (reporting.compare) and the report's compare section."""

import dataclasses
import datetime as dt
import re

import polars as pl
import pytest

from backtest_assets.reporting.compare import BOTH, ONLY_A, ONLY_B, compare
from backtest_assets.reporting.report import render_report
from tests.unit.test_report import section, synthetic_inputs

A, B = "jan", "feb"
KEY = ["hypothesis_id", "event_type", "rule_template", "horizon", "symbol"]


def fdr_rows() -> pl.DataFrame:
    """h1 survives in A only, h2 in both (q and mean move), h3 in B only, h4 in neither,
    h5 is tested in A only and survives there."""
    rows = []
    for hid, (sa, qa, ma), (sb, qb, mb) in (
            ("h1", (True, 0.01, 0.002), (False, 0.4, 0.0001)),
            ("h2", (True, 0.02, 0.001), (True, 0.03, 0.0015)),
            ("h3", (False, 0.5, 0.0), (True, 0.04, -0.001)),
            ("h4", (False, 0.9, 0.0), (False, 0.8, 0.0))):
        for study, s, q, m in ((A, sa, qa, ma), (B, sb, qb, mb)):
            rows.append({"study": study, "hypothesis_id": hid, "event_type": "oi_flush",
                         "rule_template": "continuation", "horizon": "15m", "symbol": "BTCUSDT",
                         "survivor": s, "q": q, "mean": m, "n": 40})
    rows.append({"study": A, "hypothesis_id": "h5", "event_type": "funding_extreme",
                 "rule_template": "reversion", "horizon": "1h", "symbol": "ALL",
                 "survivor": True, "q": 0.001, "mean": 0.003, "n": 90})
    return pl.DataFrame(rows)


def tables() -> dict[str, pl.DataFrame]:
    records = pl.DataFrame([
        {"study": s, "start": dt.date(2024, m, 1), "end": dt.date(2024, m, 28),
         "symbols": ["BTCUSDT", "ETHUSDT"], "source": "synthetic", "study_hash": h * 16}
        for s, m, h in ((A, 1, "a"), (B, 2, "b"))])
    e1 = pl.DataFrame([
        {"study": s, "symbol": sym, "event_type": "oi_flush", "events": n,
         "prevalence_per_10k": p, "passed": ok}
        for s, n, p, ok in ((A, 40, 12.5, True), (B, 3, 0.9, False))
        for sym in ("BTCUSDT", "ALL")])
    metrics = pl.DataFrame([{"study": A, "blueprint": "bp_a", "total_return": 0.1,
                             "sharpe": 1.2, "max_drawdown": -0.05, "trades": 10}])
    decisions = pl.DataFrame([{"study": s, "blueprint": "bp_a", "to_stage": st}
                              for s, st in ((A, "walkforward"), (B, "backtest"))])
    return {"records": records, "e1": e1, "fdr": fdr_rows(), "metrics": metrics,
            "summary": None, "decisions": decisions}


def test_survivors_say_where_they_survive_and_how_q_and_the_mean_moved():
    c = compare(A, B, **tables())
    by_id = {r["hypothesis_id"]: r for r in c.survivors.to_dicts()}
    assert set(by_id) == {"h1", "h2", "h3", "h5"}  # h4 survives in neither
    assert {h: r["where"] for h, r in by_id.items()} == {
        "h1": ONLY_A, "h2": BOTH, "h3": ONLY_B, "h5": ONLY_A}
    assert by_id["h2"]["q_moved"] == pytest.approx(0.01)
    assert by_id["h2"]["mean_moved"] == pytest.approx(0.0005)
    assert by_id["h5"]["b_q"] is None and by_id["h5"]["q_moved"] is None  # not tested in B
    assert c.survivors.columns[:5] == KEY


def test_each_layer_side_by_side_with_both_studies_hashes():
    c = compare(A, B, **tables())
    assert c.studies["study"].to_list() == [A, B]
    assert c.studies["study_hash"].to_list() == ["a" * 16, "b" * 16]
    # pooled E-1 only, one row per event type, both verdicts
    assert c.e1.to_dicts() == [{
        "event_type": "oi_flush", "a_events": 40, "a_prevalence_per_10k": 12.5,
        "a_passed": True, "b_events": 3, "b_prevalence_per_10k": 0.9, "b_passed": False}]
    # a blueprint backtested in A only: its B values are missing
    assert c.backtests.select("blueprint", "a_sharpe", "b_sharpe").to_dicts() == [
        {"blueprint": "bp_a", "a_sharpe": 1.2, "b_sharpe": None}]
    assert c.walkforward.is_empty()  # neither study has walk-forward results
    assert c.promotions.to_dicts() == [{"blueprint": "bp_a", "a_to_stage": "walkforward",
                                        "b_to_stage": "backtest"}]


def test_the_report_sets_each_named_study_beside_its_own():
    inputs = dataclasses.replace(synthetic_inputs(), study=A, compare_with=(B, "mar"),
                                 comparisons={B: compare(A, B, **tables())})
    page = section(render_report(inputs), "compare")
    assert f"<h3>{A} (A) and {B} (B)</h3>" in page
    # h1: the row of a survivor in A only, q in both and the move
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page) if "only jan" in r
               and "continuation" in r)
    assert "0.0100" in row and "0.4000" in row and "20.0" in row  # q A, q B, mean A (bps)
    assert "only feb" in page and ">both<" in page
    assert f'title="{"a" * 16}"' in page and f'title="{"b" * 16}"' in page
    assert ">fail<" in page and ">pass<" in page  # the E-1 verdicts
    assert "No walk-forward (out of sample) in either study." in page
    # a named study without results says how to get them
    assert "Study mar has no results yet" in page


def test_a_report_compared_with_nothing_says_how_to_compare():
    page = section(render_report(synthetic_inputs()), "compare")
    assert "Compared with no other study" in page and "compare_with" in page


def test_the_portfolio_section_shows_each_book_its_curve_and_its_weights():
    ts = [dt.datetime(2024, 1, 15) + dt.timedelta(hours=h) for h in range(48)]
    equity = pl.DataFrame([
        {"portfolio": "book_v1", "book": b, "ts": t, "equity": 1e5 * (1 + k * i * 1e-4),
         "drawdown": 0.0, "gross": 0.5, "net": 0.1}
        for b, k in (("book", 1), ("equal_weight", 2)) for i, t in enumerate(ts)])
    metrics = pl.DataFrame([
        {"portfolio": "book_v1", "book": b, "edges": n, "total_return": r, "sharpe": s,
         "max_drawdown": -0.01, "fees": 1234.0, "max_target_gross": 0.5, "max_gross": 0.52,
         "oos_start": ts[0], "selection": "as_of"}
        for b, n, r, s in (("book", 3, 0.1326, 27.08), ("equal_weight", 16, 0.0926, 31.85))])
    weights = pl.DataFrame([
        {"portfolio": "book_v1", "rebalance_ts": ts[0], "edge": e, "weight": w,
         "risk_contribution": rc}
        for e, w, rc in (("momentum_v1", 0.25, 0.2), ("p2_a", 0.35, 0.3), ("p2_b", 0.4, 0.5),
                         ("p2_c", 0.0, 0.0))])
    alone = pl.DataFrame([{"blueprint": "p2_a", "ts": t, "equity": 2e5 * (1 + i * 1e-3),
                           "drawdown": 0.0} for i, t in enumerate(ts)])
    inputs = dataclasses.replace(synthetic_inputs(), portfolio_metrics=metrics,
                                 portfolio_equity=equity, portfolio_weights=weights,
                                 equity=alone)
    page = section(render_report(inputs), "portfolio")
    assert "<h3>book_v1</h3>" in page and "13.26%" in page and "9.26%" in page
    assert 'data-chart="portfolio-book_v1"' in page
    assert "<th class=num>momentum_v1</th>" in page and "35.00% (30.00%)" in page
    assert "selection as of each review" in page
    # each edge alone starts at the book's equity at the first rebalance
    from backtest_assets.reporting.report import book_curves

    curves = book_curves(equity.drop("portfolio"), alone, ["p2_a", "p2_b"], ts[0])
    assert set(curves["blueprint"]) == {"book", "equal_weight", "alone: p2_a"}
    first = curves.group_by("blueprint").agg(pl.col("equity").first())
    assert (first["equity"] == 1e5).all()
    last = curves.filter(pl.col("blueprint") == "alone: p2_a")["equity"][-1]
    assert last == pytest.approx(1e5 * (1 + 47e-3))
    assert curves["drawdown"].max() <= 0
    empty = section(render_report(synthetic_inputs()), "portfolio")
    assert "No portfolio of this study" in empty


def test_the_alpha_section_shows_each_models_refits_and_spreads():
    import json

    model = pl.DataFrame([
        {"alpha_model": "combined_model_v1", "refit_ts": dt.datetime(2024, 1, 15 + 7 * k),
         "lambda": lam, "rows": 1000 * (k + 1),
         "coefficients": json.dumps({"xs_momentum": -0.0012 * (k + 1), "orderflow": 0.004})}
        for k, lam in enumerate((10.0, 100.0))])
    spreads = pl.DataFrame([
        {"alpha_model": "combined_model_v1", "signal": s, "bucket": b, "n_bars": 4412,
         "mean": m, "t_hac": t}
        for s, b, m, t in (("score", "q3-q1", 0.0009, 1.49), ("score", "q1", -0.0002, -0.5),
                           ("orderflow", "q3-q1", 0.0022, 5.72))])
    page = section(render_report(dataclasses.replace(
        synthetic_inputs(), alpha_model=model, alpha_expectancy=spreads)), "alpha")
    assert "<h3>combined_model_v1</h3>" in page and "2024-01-22" in page
    assert "-0.00240" in page and "100.000" in page  # the second refit's coefficient, lambda
    assert "22.0" in page and "5.72" in page and "<td>q1</td>" not in page  # spreads only
    empty = section(render_report(synthetic_inputs()), "alpha")
    assert "No alpha bundle of this study" in empty
