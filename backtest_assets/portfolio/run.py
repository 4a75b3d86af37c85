"""A portfolio of a study's edges, walked forward and run as one netted book (pure).

From each edge's target, own run (trades, equity) and walk-forward evidence:

1. **contracts** (:mod:`~backtest_assets.portfolio.contracts`, :func:`select`): which edges
   are APPROVED. With ``selection: as_of`` (the default) the contracts are reviewed every
   ``review_days`` from the first rebalance on each edge's walk-forward evidence over the
   bars before the review only (:mod:`~backtest_assets.portfolio.evidence`), so a
   rebalance weights only edges approved on what was known then, and a retired edge leaves
   the book at the next rebalance; ``selection: study`` approves once on the study's whole
   walk-forward (in-sample selection). The spec's ``edges`` says whether only approved
   edges enter (``approved``) or all (``all``);
2. **weights** (:mod:`~backtest_assets.portfolio.walkforward`): every ``rebalance_days`` from
   the first day with ``lookback_days`` behind it, the allocator fits the spec's mode and
   limits on the eligible edges' daily returns of the lookback only (the others weigh 0;
   a rebalance whose eligible set changed is not held to the turnover budget); the
   exposure caps use each edge's largest possible target (its blueprint's target weight,
   times a volatility target's largest scale, on each of its symbols: per symbol, gross
   and |net| bounds known before any bar), so the book's target never exceeds a cap on any
   bar, in or out of sample. The realized exposure at a close drifts with prices between
   orders and is measured (``max_gross``, ``max_net``), not capped;
3. **the book** (:mod:`~backtest_assets.portfolio.book`): the edges' positions weighted by the
   weights in force, netted per symbol, run by the engine on the study's capital; flat before
   the first rebalance (out of sample from there); with no edge ever eligible it holds cash;
4. **the equal-weight book** of every edge of the study, on the same schedule and netting:
   what the allocator and the contracts must beat.

Frames (one row per ...): ``contracts`` (review x edge), ``weights`` (rebalance x edge ever
eligible, with ``eligible``),
``equity`` (book x bar: ``book`` and ``equal_weight``), ``metrics`` (book, out of sample).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.engine import Instrument, Result
from backtest_assets.portfolio.allocator import Limits
from backtest_assets.portfolio.book import run_book, weights_by_bar
from backtest_assets.portfolio.contracts import contract, identity
from backtest_assets.portfolio.walkforward import rebalance_bars, walk_forward
from backtest_assets.specs.models import PortfolioSpec, PromotionGate


@dataclass(frozen=True)
class EdgeRun:
    """One edge on the book's bars: its target over its own symbols, its own run."""

    name: str
    symbols: tuple[str, ...]
    target: np.ndarray  # (T, len(symbols)), the engine's contract (NaN = keep)
    trades: pl.DataFrame | None  # its own run's trades (symbol, exit_bar, exit_reason)
    equity: np.ndarray  # (T,) its own equity at each close
    init_cash: float
    spec_hash: str
    evidence: Mapping[str, float] | None  # its walk-forward summary row, if any
    max_weight: float = 1.0  # the largest |target| it can take on one symbol
    overlays: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> hash


@dataclass(frozen=True)
class PortfolioRun:
    contracts: pl.DataFrame
    weights: pl.DataFrame
    equity: pl.DataFrame
    metrics: pl.DataFrame
    book: Result | None
    book_target: np.ndarray | None


def _on_book(edge: EdgeRun, symbols: Sequence[str]) -> np.ndarray:
    """The edge's target in the book's columns (0 decided at bar 0 elsewhere)."""
    out = np.full((edge.target.shape[0], len(symbols)), np.nan)
    out[0] = 0.0
    for k, s in enumerate(edge.symbols):
        out[:, symbols.index(s)] = edge.target[:, k]
    return out


def edge_returns(edge: EdgeRun) -> np.ndarray:
    prev = np.concatenate([[edge.init_cash], edge.equity[:-1]])
    return edge.equity / prev - 1.0


def _exposure_fn(edges: Sequence[EdgeRun], symbols: Sequence[str]):
    """exposures(lo, hi) for the walk-forward: each edge's largest possible target per
    symbol, gross and |net| (its target weight on each of its symbols; window-free)."""
    per = np.array([[e.max_weight if s in e.symbols else 0.0 for s in symbols]
                    for e in edges])
    gross = per.sum(axis=1)
    return lambda lo, hi: (per, gross, gross)


def _oos_metrics(name: str, equity: np.ndarray, start: int, result: Result,
                 target: np.ndarray, close: np.ndarray, bars_per_year: float) -> dict:
    eq = equity[start:]
    base = equity[start - 1] if start else result.equity[0]
    rets = np.diff(np.concatenate([[base], eq])) / np.concatenate([[base], eq[:-1]])
    sd = rets.std(ddof=1) if rets.size > 1 else 0.0
    peak = np.maximum.accumulate(np.concatenate([[base], eq]))
    value = result.position * np.nan_to_num(close)
    gross = np.abs(value).sum(axis=1) / result.equity
    net = value.sum(axis=1) / result.equity
    return {"book": name, "total_return": float(eq[-1] / base - 1),
            "sharpe": float(rets.mean() / sd * math.sqrt(bars_per_year)) if sd > 0 else 0.0,
            "max_drawdown": float((np.concatenate([[base], eq]) / peak - 1).min()),
            "fees": float(result.fees[start:].sum()),
            "trades": int(result.trades.height),
            "max_target_gross": float(np.abs(target).sum(axis=1).max()),
            "max_target_net": float(np.abs(target.sum(axis=1)).max()),
            "max_gross": float(gross[start:].max()), "max_net": float(np.abs(net[start:]).max())}


EvidenceAt = Callable[[int, int], "Mapping[str, float] | str"]


@dataclass(frozen=True)
class Selection:
    """Which edges the book may weight at each rebalance, and the contracts behind it."""

    contracts: pl.DataFrame  # one row per review x edge
    eligible: np.ndarray  # K x n bool, per rebalance
    scores: np.ndarray  # K x n, the spec's score as of each rebalance


def select(spec: PortfolioSpec, edges: Sequence[EdgeRun], starts: np.ndarray, ts: np.ndarray,
           gate: PromotionGate, evidence_at: EvidenceAt | None) -> Selection:
    """The contracts of ``edges`` at each review and the edges each rebalance may weight.

    ``as_of``: a review every ``review_days`` (default: every rebalance) from the first
    rebalance; at the review of bar k each edge's evidence is ``evidence_at(i, k)`` (its
    walk-forward over bars before k, or why there is none) and its contract moves on from
    its state at the previous review (the lifecycle is replayed from DRAFT at the study's
    start: the same inputs give the same contracts). ``study``: one review at the study's
    end on each edge's ``evidence`` (the whole walk-forward). ``spec.edges == "all"`` makes
    every edge eligible whatever its contract.
    """
    n, k_all = len(edges), len(starts)
    ids = [identity(e.spec_hash, e.overlays) for e in edges]
    if spec.selection == "as_of":
        if evidence_at is None:
            raise ValueError(f"portfolio {spec.name}: selection as_of needs each edge's "
                             "evidence as of each review (evidence_at)")
        step = (spec.review_days or spec.rebalance_days) // spec.rebalance_days
        reviews = list(range(0, k_all, step))
    else:
        reviews = [None]
    state: list[str | None] = [None] * n
    rows, approved = [], np.zeros((len(reviews), n), bool)
    scores = np.zeros((len(reviews), n))
    for r, j in enumerate(reviews):
        bar = None if j is None else int(starts[j])
        for i, e in enumerate(edges):
            ev = e.evidence if bar is None else evidence_at(i, bar)  # type: ignore[misc]
            why = ev if isinstance(ev, str) else "no walk-forward evidence"
            ev = None if isinstance(ev, str) else ev
            c = contract(e.name, ids[i], ev, gate, state[i], why_none=why)
            state[i] = c.state
            approved[r, i] = c.state == "APPROVED"
            scores[r, i] = float((ev or {}).get(spec.score, math.nan) or 0.0)
            rows.append({"as_of": (ts[-1] if bar is None else ts[bar]).item(),
                         "edge": c.edge, "identity": c.identity, "state": c.state,
                         "previous_state": c.previous,
                         "in_book": spec.edges == "all" or c.state == "APPROVED",
                         "reasons": "; ".join(c.reasons), "evidence_hash": c.evidence_hash})
    # each rebalance takes the last review at or before it
    at = np.zeros(k_all, int) if reviews == [None] else \
        np.searchsorted(np.array(reviews), np.arange(k_all), side="right") - 1
    eligible = np.ones((k_all, n), bool) if spec.edges == "all" else approved[at]
    frame = pl.DataFrame(rows, schema={
        "as_of": pl.Datetime("us"), "edge": pl.String, "identity": pl.String,
        "state": pl.String, "previous_state": pl.String, "in_book": pl.Boolean,
        "reasons": pl.String, "evidence_hash": pl.String})
    return Selection(frame, eligible, np.nan_to_num(scores[at]))


def run_portfolio(spec: PortfolioSpec, edges: Sequence[EdgeRun], *, ts: np.ndarray,
                  symbols: Sequence[str], bars: tuple[np.ndarray, ...],
                  instruments: Sequence[Instrument], funding: np.ndarray | None,
                  init_cash: float, bars_per_day: int, gate: PromotionGate,
                  evidence_at: EvidenceAt | None = None) -> PortfolioRun:
    """The portfolio ``spec`` of ``edges`` (module docstring). ``bars``: (open, high, low,
    close), each (T, S) over ``symbols``; ``ts``: each bar's close; ``evidence_at(i, k)``:
    edge i's walk-forward summary over bars ``[0, k)`` or why there is none (selection
    ``as_of``). Raises ``allocator.Infeasible`` naming the limit and rebalance,
    ``ValueError`` for a study too short for one lookback and one rebalance period."""
    symbols = list(symbols)
    ts = np.asarray(ts).astype("datetime64[us]")
    o, h, lo, c = bars
    every, lookback = spec.rebalance_days * bars_per_day, spec.lookback_days * bars_per_day
    starts = rebalance_bars(len(ts), every=every, lookback=lookback,
                            scenario_bars=bars_per_day)
    sel = select(spec, edges, starts, ts, gate, evidence_at)
    members = np.flatnonzero(sel.eligible.any(axis=0))
    chosen = [edges[i] for i in members]
    contract_frame = sel.contracts
    bars_per_year = 365 * bars_per_day
    limits = Limits(**dataclasses.asdict(spec.limits))
    frames_eq, metric_rows, weight_rows = [], [], []
    book, book_tgt = None, None

    def run(name: str, members: Sequence[EdgeRun], wf_weights: np.ndarray,
            at: np.ndarray) -> tuple[Result, np.ndarray]:
        targets = [_on_book(e, symbols) for e in members] or [np.zeros((len(ts), len(symbols)))]
        alloc = weights_by_bar(wf_weights, at, len(ts))
        res, tgt = run_book(o, h, lo, c, targets, [e.trades for e in members] or [None], alloc,
                            instruments, funding=funding, init_cash=init_cash)
        value = res.position * np.nan_to_num(c)
        frames_eq.append(pl.DataFrame({
            "book": name, "ts": ts, "equity": res.equity,
            "gross": np.abs(value).sum(axis=1) / res.equity,
            "net": value.sum(axis=1) / res.equity,
            "drawdown": res.equity / np.maximum.accumulate(
                np.maximum(res.equity, init_cash)) - 1}))
        metric_rows.append({**_oos_metrics(name, res.equity, int(at[0]), res, tgt, c,
                                           bars_per_year), "edges": len(members),
                            "oos_start": ts[int(at[0])].item()})
        return res, tgt

    if chosen:
        wf = walk_forward(np.column_stack([edge_returns(e) for e in chosen]), every=every,
                          lookback=lookback, limits=limits, mode=spec.mode,
                          scenario_bars=bars_per_day, exposures=_exposure_fn(chosen, symbols),
                          names=tuple(e.name for e in chosen),
                          eligible=sel.eligible[:, members], scores=sel.scores[:, members],
                          shrink=spec.shrink, cluster_corr=spec.cluster_corr,
                          risk_aversion=spec.risk_aversion)
        for k, bar in enumerate(starts):
            for i, e in enumerate(chosen):
                weight_rows.append({"rebalance_ts": ts[bar].item(), "edge": e.name,
                                    "eligible": bool(sel.eligible[k, members[i]]),
                                    "weight": float(wf.weights[k, i]),
                                    "risk_contribution": float(wf.risk_contribution[k, i]),
                                    "turnover": float(wf.turnover[k]),
                                    "binding": ", ".join(wf.binding[k])})
    # no edge ever eligible: the book holds cash (its row says so: 0 edges)
    book, book_tgt = run("book", chosen, wf.weights if chosen else np.zeros((len(starts), 1)),
                         starts)
    if edges:
        equal = np.full((len(starts), len(edges)), 1 / len(edges))
        run("equal_weight", edges, equal, starts)
    weights = pl.DataFrame(weight_rows, schema={
        "rebalance_ts": pl.Datetime("us"), "edge": pl.String, "eligible": pl.Boolean,
        "weight": pl.Float64, "risk_contribution": pl.Float64,
        "turnover": pl.Float64, "binding": pl.String})
    equity = pl.concat(frames_eq) if frames_eq else pl.DataFrame(schema={
        "book": pl.String, "ts": pl.Datetime("us"), "equity": pl.Float64,
        "gross": pl.Float64, "net": pl.Float64, "drawdown": pl.Float64})
    return PortfolioRun(contract_frame, weights, equity, pl.DataFrame(metric_rows), book,
                        book_tgt)
