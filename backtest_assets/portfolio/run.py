"""A portfolio of a study's edges, walked forward and run as one netted book (pure).

From each edge's target, own run (trades, equity) and walk-forward evidence:

1. **contracts** (:mod:`~backtest_assets.portfolio.contracts`): which edges are APPROVED;
   the spec's ``edges`` says whether only those enter (``approved``) or all (``all``);
2. **weights** (:mod:`~backtest_assets.portfolio.walkforward`): every ``rebalance_days`` from
   the first day with ``lookback_days`` behind it, the allocator fits the spec's mode and
   limits on the edges' daily returns of the lookback only; the exposure caps use each
   edge's largest possible target (its blueprint's target weight on each of its symbols:
   per symbol, gross and |net| bounds known before any bar), so the book's target never
   exceeds a cap on any bar, in or out of sample;
3. **the book** (:mod:`~backtest_assets.portfolio.book`): the edges' positions weighted by the
   weights in force, netted per symbol, run by the engine on the study's capital; flat before
   the first rebalance (out of sample from there);
4. **the equal-weight book** of every edge of the study, on the same schedule and netting:
   what the allocator and the contracts must beat.

Frames (one row per ...): ``contracts`` (edge), ``weights`` (rebalance x edge of the book),
``equity`` (book x bar: ``book`` and ``equal_weight``), ``metrics`` (book, out of sample).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.engine import Instrument, Result
from backtest_assets.portfolio.allocator import Limits
from backtest_assets.portfolio.book import run_book, weights_by_bar
from backtest_assets.portfolio.contracts import contract, identity
from backtest_assets.portfolio.walkforward import walk_forward
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


def run_portfolio(spec: PortfolioSpec, edges: Sequence[EdgeRun], *, ts: np.ndarray,
                  symbols: Sequence[str], bars: tuple[np.ndarray, ...],
                  instruments: Sequence[Instrument], funding: np.ndarray | None,
                  init_cash: float, bars_per_day: int, gate: PromotionGate,
                  previous: Mapping[str, str] | None = None) -> PortfolioRun:
    """The portfolio ``spec`` of ``edges`` (module docstring). ``bars``: (open, high, low,
    close), each (T, S) over ``symbols``; ``previous``: each edge identity's last contract
    state. Raises ``allocator.Infeasible`` naming the limit, ``ValueError`` for a study too
    short for one lookback and one rebalance period."""
    symbols = list(symbols)
    ts = np.asarray(ts).astype("datetime64[us]")
    o, h, lo, c = bars
    contracts = [contract(e.name, identity(e.spec_hash, {}), e.evidence, gate,
                          (previous or {}).get(identity(e.spec_hash, {})))
                 for e in edges]
    chosen = [e for e, k in zip(edges, contracts, strict=True)
              if spec.edges == "all" or k.state == "APPROVED"]
    contract_frame = pl.DataFrame({
        "edge": [k.edge for k in contracts], "identity": [k.identity for k in contracts],
        "state": [k.state for k in contracts],
        "previous_state": [k.previous for k in contracts],
        "in_book": [e in chosen for e in edges],
        "reasons": ["; ".join(k.reasons) for k in contracts],
        "evidence_hash": [k.evidence_hash for k in contracts]},
        schema={"edge": pl.String, "identity": pl.String, "state": pl.String,
                "previous_state": pl.String, "in_book": pl.Boolean, "reasons": pl.String,
                "evidence_hash": pl.String})
    every, lookback = spec.rebalance_days * bars_per_day, spec.lookback_days * bars_per_day
    bars_per_year = 365 * bars_per_day
    limits = Limits(**dataclasses.asdict(spec.limits))
    frames_eq, metric_rows, weight_rows = [], [], []
    book, book_tgt, starts = None, None, None

    def run(name: str, members: Sequence[EdgeRun], wf_weights: np.ndarray,
            at: np.ndarray) -> tuple[Result, np.ndarray]:
        targets = [_on_book(e, symbols) for e in members]
        alloc = weights_by_bar(wf_weights, at, len(ts))
        res, tgt = run_book(o, h, lo, c, targets, [e.trades for e in members], alloc,
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
        scores = [float((e.evidence or {}).get(spec.score, float("nan")) or 0.0)
                  for e in chosen]
        wf = walk_forward(np.column_stack([edge_returns(e) for e in chosen]), every=every,
                          lookback=lookback, limits=limits, mode=spec.mode,
                          scenario_bars=bars_per_day, exposures=_exposure_fn(chosen, symbols),
                          names=tuple(e.name for e in chosen), scores=scores,
                          shrink=spec.shrink, cluster_corr=spec.cluster_corr,
                          risk_aversion=spec.risk_aversion)
        starts = wf.rebalance_bars
        book, book_tgt = run("book", chosen, wf.weights, starts)
        for k, bar in enumerate(starts):
            for i, e in enumerate(chosen):
                weight_rows.append({"rebalance_ts": ts[bar].item(), "edge": e.name,
                                    "weight": float(wf.weights[k, i]),
                                    "turnover": float(wf.turnover[k]),
                                    "binding": ", ".join(wf.binding[k])})
    if edges:
        starts = starts if starts is not None else np.arange(lookback, len(ts), every)
        if starts.size:
            equal = np.full((len(starts), len(edges)), 1 / len(edges))
            run("equal_weight", edges, equal, starts)
    weights = pl.DataFrame(weight_rows, schema={
        "rebalance_ts": pl.Datetime("us"), "edge": pl.String, "weight": pl.Float64,
        "turnover": pl.Float64, "binding": pl.String})
    equity = pl.concat(frames_eq) if frames_eq else pl.DataFrame(schema={
        "book": pl.String, "ts": pl.Datetime("us"), "equity": pl.Float64,
        "gross": pl.Float64, "net": pl.Float64, "drawdown": pl.Float64})
    return PortfolioRun(contract_frame, weights, equity, pl.DataFrame(metric_rows), book,
                        book_tgt)
