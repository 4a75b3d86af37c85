"""Weights fit on each training window, applied out of sample, chained (no Dagster).

At every rebalance bar ``k`` (every ``every`` bars from the first with a full lookback) the
allocator sees the edges' returns of bars ``[k - lookback, k)`` only, summed into scenarios of
``scenario_bars`` bars (a day of 5m bars by default: CVaR and drawdown limits are stated per
day, and a 5m CVaR would be noise), and its weights hold from bar ``k`` to the next
rebalance. The out-of-sample book return of bar ``t`` is ``Σ_i w_i r_i(t)`` with the weights of
the last rebalance at or before ``t``: each edge trades its share of the book's capital,
rebalanced to its weight at every bar (the netted engine book is the exact version; this is
the allocator's own walk-forward). Turnover is budgeted between consecutive rebalances; the
first allocation, from cash, is not a turnover.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backtest_assets.portfolio.allocator import (
    Allocation,
    Edges,
    Infeasible,
    Limits,
    allocate,
    shrunk_cov,
)


@dataclass(frozen=True)
class WalkForward:
    rebalance_bars: np.ndarray  # K bar indices where new weights start
    weights: np.ndarray  # K x n
    turnover: np.ndarray  # K, Σ|w_k - w_{k-1}| (the first: Σ w_0, from cash)
    binding: list[tuple[str, ...]]  # the limits at their bound, per rebalance
    # K x n: each edge's share of the book's variance at each rebalance, w_i (Σw)_i / w'Σw
    # on the lookback's Ledoit-Wolf covariance of daily scenarios (0 without risk)
    risk_contribution: np.ndarray
    oos_returns: np.ndarray  # book return of each bar from the first rebalance on
    seconds: np.ndarray  # allocator time per rebalance


def scenarios(returns: np.ndarray, bars: int) -> np.ndarray:
    """Sums of ``bars`` consecutive rows (the last, partial block dropped)."""
    t = returns.shape[0] // bars * bars
    return returns[returns.shape[0] - t:].reshape(-1, bars, returns.shape[1]).sum(axis=1)


def rebalance_bars(n_bars: int, *, every: int, lookback: int, scenario_bars: int = 288
                   ) -> np.ndarray:
    """The bars where new weights start: every ``every`` bars from ``lookback`` on.
    Raises ``ValueError`` when the bars cannot hold the lookback (two scenarios at least)
    and one period."""
    if lookback < 2 * scenario_bars or every < 1 or lookback + every > n_bars:
        raise ValueError(f"{n_bars} bars cannot hold a lookback of {lookback} bars "
                         f"(>= 2 scenarios of {scenario_bars}) and one period of {every}")
    return np.arange(lookback, n_bars, every)


def walk_forward(returns: np.ndarray, *, every: int, lookback: int, limits: Limits,
                 mode: str, scenario_bars: int = 288,
                 exposures: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
                 | None = None, names: tuple[str, ...] | None = None,
                 eligible: np.ndarray | None = None, scores: np.ndarray | None = None,
                 **allocate_kw) -> WalkForward:
    """Rebalance every ``every`` bars on the previous ``lookback`` bars (module docstring).

    ``exposures(lo, hi)`` gives (exposure n x m, gross n, net n) of the edges over bars
    ``[lo, hi)`` (default: one unit each, one symbol); ``allocate_kw`` go to
    :func:`~backtest_assets.portfolio.allocator.allocate`.

    ``eligible`` (K x n bool, one row per rebalance; default all): the edges the allocator
    may weight at each rebalance (e.g. those whose contract is approved as of it); the
    others get 0. Where the set changes from one rebalance to the next, the turnover budget
    is not applied (an edge leaving must be sold whatever the budget; recorded in
    ``binding`` as ``members changed``). ``scores`` (n, or K x n): per-edge scores, as of
    each rebalance when 2-D (``score_weighted``).
    """
    r = np.asarray(returns, float)
    t, n = r.shape
    starts = rebalance_bars(t, every=every, lookback=lookback, scenario_bars=scenario_bars)
    names = names or tuple(f"edge_{i}" for i in range(n))
    ok = np.ones((len(starts), n), bool) if eligible is None else np.asarray(eligible, bool)
    if ok.shape != (len(starts), n):
        raise ValueError(f"eligible: shape {ok.shape}, expected {(len(starts), n)}")
    sc = None if scores is None else np.broadcast_to(np.asarray(scores, float),
                                                     (len(starts), n))
    weights, turnover, binding, seconds = [], [], [], []
    rc = np.zeros((len(starts), n))
    prev = None
    for j, k in enumerate(starts):
        idx = np.flatnonzero(ok[j])
        ex, gross, net = exposures(k - lookback, k) if exposures else \
            (np.ones((n, 1)), np.ones(n), np.ones(n))
        changed = j > 0 and not np.array_equal(ok[j], ok[j - 1])
        w = np.zeros(n)
        t0 = time.perf_counter()
        if idx.size:
            edges = Edges(names=tuple(names[i] for i in idx),
                          returns=scenarios(r[k - lookback:k][:, idx], scenario_bars),
                          exposure=ex[idx], gross=gross[idx], net=net[idx])
            step = limits if prev is not None and not changed else \
                dataclasses.replace(limits, turnover_max=None)
            kw = dict(allocate_kw)
            if sc is not None:
                kw["scores"] = sc[j, idx]
            try:
                a: Allocation = allocate(edges, step, mode,
                                         prev=None if prev is None else prev[idx], **kw)
            except Infeasible as exc:
                raise Infeasible(exc.binding, f"at the rebalance of bar {k} (edges: "
                                 f"{', '.join(edges.names)})") from None
            w[idx] = a.weights
            why = a.binding
            cov, _ = shrunk_cov(edges.returns)
            var = float(a.weights @ cov @ a.weights)
            if var > 0:
                rc[j, idx] = a.weights * (cov @ a.weights) / var
        else:
            why = ("no eligible edge",)
        seconds.append(time.perf_counter() - t0)
        weights.append(w)
        turnover.append(float(np.abs(w - (0 if prev is None else prev)).sum()))
        binding.append((*why, "members changed") if changed else why)
        prev = w
    w = np.array(weights)
    held = np.repeat(w, np.diff(np.append(starts, t)), axis=0)  # weights of each bar
    oos = np.einsum("tn,tn->t", r[starts[0]:], held)
    return WalkForward(starts, w, np.array(turnover), binding, rc, oos, np.array(seconds))
