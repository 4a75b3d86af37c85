"""Edge contracts: DRAFT -> APPROVED -> RETIRED on the promotion gates, evidence hashed."""

import math

import pytest

from backtest_assets.portfolio.contracts import contract, evidence_hash, identity
from backtest_assets.specs.models import CostStress, PromotionGate

GATE = PromotionGate(min_deflated_sharpe=0.95, max_pbo=0.3, min_oos_sharpe=1.0,
                     max_oos_drawdown=0.2, min_oos_trades=30,
                     cost_stress=CostStress(multiplier=2.0, min_sharpe=0.0))
GOOD = {"deflated_sharpe": 0.99, "pbo": 0.1, "oos_sharpe": 2.0, "oos_max_drawdown": -0.05,
        "oos_trades": 80, "stress_sharpe": 0.8, "trials": 12}
ID = identity("a" * 64, {"funding_veto": "b" * 64})


def test_a_draft_is_approved_only_when_every_gate_passes():
    c = contract("e", ID, GOOD, GATE)
    assert (c.state, c.previous) == ("APPROVED", None)
    assert c.evidence_hash == evidence_hash(GOOD) and len(c.reasons) == 6
    for key, bad in (("pbo", 0.5), ("oos_trades", 10), ("stress_sharpe", -0.1),
                     ("deflated_sharpe", math.nan)):
        d = contract("e", ID, {**GOOD, key: bad}, GATE)
        assert d.state == "DRAFT" and len(d.reasons) == 1, (key, d.reasons)
    assert contract("e", ID, None, GATE).state == "DRAFT"


def test_an_approved_edge_is_retired_when_evidence_fails_and_retired_is_final():
    assert contract("e", ID, None, GATE, previous="APPROVED").state == "APPROVED"
    r = contract("e", ID, {**GOOD, "oos_sharpe": 0.2}, GATE, previous="APPROVED")
    assert r.state == "RETIRED" and "out-of-sample Sharpe 0.2 < 1" in r.reasons[0]
    assert contract("e", ID, GOOD, GATE, previous="RETIRED").state == "RETIRED"
    with pytest.raises(ValueError, match="previous"):
        contract("e", ID, GOOD, GATE, previous="LIVE")


def test_identity_and_evidence_hash_change_with_what_they_name():
    assert identity("a" * 64, {"x": "1", "y": "2"}) == identity("a" * 64, {"y": "2", "x": "1"})
    assert identity("a" * 64, {"x": "1"}) != identity("a" * 64, {"x": "2"})
    assert evidence_hash(GOOD) != evidence_hash({**GOOD, "pbo": 0.11})
    assert evidence_hash({**GOOD, "note": "ignored"}) == evidence_hash(GOOD)
