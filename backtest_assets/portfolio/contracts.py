"""Edge contracts: an edge's lifecycle ``DRAFT -> APPROVED -> RETIRED`` on recorded evidence
(pure; no Dagster).

An *edge* is a blueprint (its spec hash) with the overlays it names (their versions and
hashes). Its contract is approved only on evidence from the study: the walk-forward summary
(out-of-sample Sharpe and drawdown, trades, deflated Sharpe, PBO, the cost-stress Sharpe)
meeting every gate of ``specs/gates.yaml`` ``promotion``
(:func:`backtest_assets.strategies.promotion.gate_results`). The contract names the sha256 of
that evidence (its canonical JSON), so an approval can be traced to the figures it stood on.

Transitions, from the previous contract of the same edge identity (blueprint spec hash and
overlay hashes; a changed spec is a new edge that starts as a draft):

- no evidence: ``DRAFT`` stays ``DRAFT``; ``APPROVED`` is kept (nothing new disproves it);
- evidence meeting every gate: ``DRAFT -> APPROVED`` (``APPROVED`` stays);
- evidence failing a gate: ``DRAFT`` stays (reasons: the failed gates); ``APPROVED ->
  RETIRED``;
- ``RETIRED`` is final for that identity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backtest_assets.specs.models import PromotionGate
from backtest_assets.strategies.promotion import EVIDENCE, gate_results

STATES = ("DRAFT", "APPROVED", "RETIRED")


@dataclass(frozen=True)
class Contract:
    edge: str  # the blueprint name (overlays are part of its identity)
    identity: str  # sha256 of the blueprint spec hash and its overlays' hashes
    state: str
    previous: str | None
    reasons: tuple[str, ...]
    evidence_hash: str | None  # sha256 of the evidence's canonical JSON; None without any


def identity(spec_hash: str, overlays: Mapping[str, str]) -> str:
    """An edge's identity: its blueprint spec hash and each overlay's ``name -> hash``."""
    doc = {"blueprint": spec_hash, "overlays": dict(sorted(overlays.items()))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def evidence_hash(evidence: Mapping[str, float]) -> str:
    plain = {k: _plain(evidence.get(k)) for k in EVIDENCE}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def contract(edge: str, edge_identity: str, evidence: Mapping[str, float] | None,
             gate: PromotionGate, previous: str | None = None,
             why_none: str = "no walk-forward evidence") -> Contract:
    """The contract of ``edge`` now (module docstring); ``previous``: its last state for the
    same identity (None: a new edge); ``why_none``: the reason recorded without evidence."""
    if previous is not None and previous not in STATES:
        raise ValueError(f"previous: {previous!r} is not one of {STATES}")
    digest = None if evidence is None else evidence_hash(evidence)

    def made(state: str, reasons: Sequence[str]) -> Contract:
        return Contract(edge, edge_identity, state, previous, tuple(reasons), digest)

    if previous == "RETIRED":
        return made("RETIRED", ["retired: final for this version of the blueprint and its "
                                "overlays"])
    if evidence is None:
        return made(previous or "DRAFT", [why_none])
    results = gate_results(evidence, gate)
    failed = [why for _, ok, why in results if not ok]
    if failed:
        return made("RETIRED" if previous == "APPROVED" else "DRAFT", failed)
    return made("APPROVED", [why for _, _, why in results])


def _plain(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return float(v) if isinstance(v, float | int) and not isinstance(v, bool) else v
