"""Promotion decisions: gates on the walk-forward evidence, and the lifecycle (pure).

Lifecycle: ``idea -> backtest -> demo -> live -> archived``.

- A blueprint without walk-forward evidence stays an ``idea``, or moves to ``backtest`` once
  it has backtest results.
- With walk-forward evidence it has been backtested. If every gate of ``specs/gates.yaml``
  ``promotion`` passes it goes on to ``demo`` (paper trading); otherwise it is ``archived``
  with the failed gates as reasons. Editing the spec makes a new blueprint version (a new
  spec hash), which starts again as an idea.
- ``demo -> live`` needs, besides the gates, ``min_demo_days`` of demo trading on record,
  consistent with the backtest (:mod:`.demo`: the forward test); a demo that decays, or
  breaches the drawdown limit or is liquidated, is ``archived`` with the reason.
- A ``demo`` or ``live`` blueprint whose evidence now fails a gate is ``archived``.
- ``archived`` is final for that spec hash.

A decision is a function of its inputs only (the evidence row, the gate, the stage it comes
from and the demo days); ``inputs_hash`` is the sha256 of their canonical JSON, so the same
inputs always give the same decision and the same hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backtest_assets.specs.loader import to_plain
from backtest_assets.specs.models import PromotionGate

if TYPE_CHECKING:
    from backtest_assets.lifecycle.demo import DemoEvidence

STAGES = ("idea", "backtest", "demo", "live", "archived")
# The walk-forward summary columns a decision reads.
EVIDENCE = ("deflated_sharpe", "pbo", "oos_sharpe", "oos_max_drawdown", "oos_trades",
            "stress_sharpe", "trials")


@dataclass(frozen=True)
class Decision:
    """``from_stage -> to_stage``; ``decision`` is promote, hold or archive."""

    from_stage: str
    to_stage: str
    decision: str
    passed: bool
    reasons: tuple[str, ...]
    inputs_hash: str


def gate_results(evidence: Mapping[str, float], gate: PromotionGate
                 ) -> list[tuple[str, bool, str]]:
    """(gate, passed, explanation) for each promotion gate; a missing or NaN figure fails."""
    dd = evidence.get("oos_max_drawdown")
    checks = [
        ("deflated_sharpe", evidence.get("deflated_sharpe"), ">=", gate.min_deflated_sharpe,
         f"deflated Sharpe over {evidence.get('trials', '?')} trials"),
        ("pbo", evidence.get("pbo"), "<=", gate.max_pbo, "probability of backtest overfitting"),
        ("oos_sharpe", evidence.get("oos_sharpe"), ">=", gate.min_oos_sharpe,
         "out-of-sample Sharpe"),
        ("oos_drawdown", None if dd is None else -dd, "<=", gate.max_oos_drawdown,
         "out-of-sample max drawdown"),
        ("oos_trades", evidence.get("oos_trades"), ">=", gate.min_oos_trades,
         "out-of-sample trades"),
        ("cost_stress", evidence.get("stress_sharpe"), ">=", gate.cost_stress.min_sharpe,
         f"out-of-sample Sharpe at {gate.cost_stress.multiplier:g}x costs"),
    ]
    out = []
    for name, value, op, bound, what in checks:
        ok = value is not None and math.isfinite(value) and (
            value >= bound if op == ">=" else value <= bound)
        shown = "undefined" if value is None or not math.isfinite(value) else f"{value:.4g}"
        out.append((name, ok, f"{what} {shown} {op if ok else _negate(op)} {bound:g}"
                    if shown != "undefined" else f"{what} is undefined"))
    return out


def decide(evidence: Mapping[str, float] | None, gate: PromotionGate, *,
           from_stage: str = "idea", backtested: bool = False, demo_days: int = 0,
           demo: DemoEvidence | None = None) -> Decision:
    """The next stage of a blueprint (module docstring).

    Parameters
    ----------
    evidence : mapping or None
        The blueprint's walk-forward summary (at least the ``EVIDENCE`` columns); None when
        it has not been evaluated.
    gate : PromotionGate
        ``specs/gates.yaml`` ``promotion``.
    from_stage : str
        The stage of the previous decision for the same spec hash (``idea`` if none).
    backtested : bool
        Whether the blueprint has backtest results (an idea without walk-forward evidence
        then moves to ``backtest``).
    demo_days : int
        Days of demo trading on record (demo -> live), when ``demo`` is not given.
    demo : DemoEvidence, optional
        The demo's forward record and its consistency test (:mod:`.demo`): a ``demo``
        blueprint that breached it (decaying, drawdown, liquidation) is archived with the
        reasons; live needs ``min_demo_days`` of it, tested consistent.
    """
    if from_stage not in STAGES:
        raise ValueError(f"from_stage: {from_stage!r} is not one of {STAGES}")
    inputs = {"evidence": None if evidence is None else
              {k: _plain(evidence.get(k)) for k in EVIDENCE},
              "gate": to_plain(gate), "from_stage": from_stage, "backtested": backtested,
              "demo_days": demo_days}
    if demo is not None:  # left out otherwise: decisions without a demo keep their hash
        demo_days = demo.days
        inputs |= {"demo_days": demo_days, "demo": {
            k: _plain(getattr(demo, k)) for k in ("mean", "z", "max_drawdown",
                                                  "liquidations")}}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    def made(to: str, decision: str, passed: bool, reasons: list[str]) -> Decision:
        return Decision(from_stage, to, decision, passed, tuple(reasons), digest)

    if from_stage == "archived":
        return made("archived", "hold", False, ["archived: a new version of the spec starts "
                                                "again as an idea"])
    if evidence is None:
        to = "backtest" if backtested and from_stage == "idea" else from_stage
        return made(to, "hold", False, ["no walk-forward evidence yet"])
    results = gate_results(evidence, gate)
    failed = [why for _, ok, why in results if not ok]
    if failed:
        return made("archived", "archive", False, failed)
    passed = [why for _, ok, why in results]
    if from_stage in ("idea", "backtest"):
        return made("demo", "promote", True, passed)
    if from_stage == "demo" and demo is not None:
        return made(*_from_demo(demo, gate, passed))
    if from_stage == "demo" and demo_days >= gate.min_demo_days:
        return made("live", "promote", True, [*passed, f"{demo_days} demo days >= "
                                                       f"{gate.min_demo_days}"])
    if from_stage == "demo":
        return made("demo", "hold", True, [f"live needs {gate.min_demo_days} days of demo "
                                           f"trading on record, {demo_days} so far"])
    return made("live", "hold", True, passed)


def _from_demo(demo: DemoEvidence, gate: PromotionGate, passed: list[str]
               ) -> tuple[str, str, bool, list[str]]:
    """(to stage, decision, passed, reasons) of a demo blueprint whose gates pass."""
    if demo.breaches:
        return "archived", "archive", False, list(demo.breaches)
    if demo.days >= gate.min_demo_days and demo.consistent:
        return "live", "promote", True, [*passed, (
            f"{demo.days} demo days >= {gate.min_demo_days}, consistent with the backtest "
            f"(t = {demo.z:.2f}, demo Sharpe {demo.sharpe:.2f})")]
    return "demo", "hold", True, [demo.untested or (
        f"live needs {gate.min_demo_days} days of demo trading on record, {demo.days} so "
        f"far (t = {demo.z:.2f})")]


def _negate(op: str) -> str:
    return {">=": "<", "<=": ">"}[op]


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
