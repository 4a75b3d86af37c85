"""Promotion gates and the lifecycle: one scenario per rule (pure)."""

from __future__ import annotations

import pytest

from backtest_assets.specs import load_registry
from backtest_assets.strategies.promotion import decide, gate_results

GATE = load_registry().gates.promotion  # dsr >= 0.95, pbo <= 0.3, oos sharpe >= 1, dd <= 0.2,
#                                         trades >= 30, sharpe at 2x costs >= 0, 30 demo days
GOOD = {"deflated_sharpe": 0.99, "pbo": 0.05, "oos_sharpe": 2.5, "oos_max_drawdown": -0.08,
        "oos_trades": 120, "stress_sharpe": 1.1, "trials": 90}


@pytest.mark.parametrize(("change", "failed"), [
    ({"deflated_sharpe": 0.9}, "deflated Sharpe over 90 trials 0.9 < 0.95"),
    ({"pbo": 0.45}, "probability of backtest overfitting 0.45 > 0.3"),
    ({"oos_sharpe": 0.4}, "out-of-sample Sharpe 0.4 < 1"),
    ({"oos_max_drawdown": -0.31}, "out-of-sample max drawdown 0.31 > 0.2"),
    ({"oos_trades": 12}, "out-of-sample trades 12 < 30"),
    ({"stress_sharpe": -0.2}, "out-of-sample Sharpe at 2x costs -0.2 < 0"),
    ({"pbo": float("nan")}, "probability of backtest overfitting is undefined"),
])
def test_each_failed_gate_archives_with_its_reason(change, failed):
    d = decide(GOOD | change, GATE, from_stage="backtest")
    assert (d.from_stage, d.to_stage, d.decision, d.passed) == \
        ("backtest", "archived", "archive", False)
    assert d.reasons == (failed,)


@pytest.mark.parametrize(("evidence", "from_stage", "demo_days", "to", "decision"), [
    (None, "idea", 0, "idea", "hold"),            # not evaluated yet
    (GOOD, "idea", 0, "demo", "promote"),         # every gate passes
    (GOOD, "backtest", 0, "demo", "promote"),
    (GOOD, "demo", 10, "demo", "hold"),           # live needs 30 demo days
    (GOOD, "demo", 30, "live", "promote"),
    (GOOD, "live", 90, "live", "hold"),
    (GOOD | {"oos_sharpe": 0.2}, "live", 90, "archived", "archive"),  # demoted
    (GOOD, "archived", 0, "archived", "hold"),    # final for this spec hash
])
def test_lifecycle(evidence, from_stage, demo_days, to, decision):
    d = decide(evidence, GATE, from_stage=from_stage, demo_days=demo_days)
    assert (d.to_stage, d.decision) == (to, decision)
    assert d.reasons


def test_a_decision_is_reproducible_from_its_inputs():
    a = decide(GOOD, GATE, from_stage="backtest")
    assert decide(dict(GOOD), GATE, from_stage="backtest") == a
    assert decide(GOOD | {"pbo": 0.06}, GATE, from_stage="backtest").inputs_hash != \
        a.inputs_hash
    assert decide(GOOD, GATE, from_stage="idea").inputs_hash != a.inputs_hash
    assert len(a.inputs_hash) == 64


def test_gate_results_name_every_gate():
    names = [n for n, _, _ in gate_results(GOOD, GATE)]
    assert names == ["deflated_sharpe", "pbo", "oos_sharpe", "oos_drawdown", "oos_trades",
                     "cost_stress"]
    with pytest.raises(ValueError, match="from_stage"):
        decide(GOOD, GATE, from_stage="paper")


def test_an_idea_with_backtests_but_no_walk_forward_is_at_backtest():
    d = decide(None, GATE, from_stage="idea", backtested=True)
    assert (d.to_stage, d.decision, d.reasons) == ("backtest", "hold",
                                                   ("no walk-forward evidence yet",))
