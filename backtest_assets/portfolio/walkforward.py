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

from backtest_assets.portfolio.allocator import Allocation, Edges, Limits, allocate


@dataclass(frozen=True)
class WalkForward:
    rebalance_bars: np.ndarray  # K bar indices where new weights start
    weights: np.ndarray  # K x n
    turnover: np.ndarray  # K, Σ|w_k - w_{k-1}| (the first: Σ w_0, from cash)
    binding: list[tuple[str, ...]]  # the limits at their bound, per rebalance
    oos_returns: np.ndarray  # book return of each bar from the first rebalance on
    seconds: np.ndarray  # allocator time per rebalance


def scenarios(returns: np.ndarray, bars: int) -> np.ndarray:
    """Sums of ``bars`` consecutive rows (the last, partial block dropped)."""
    t = returns.shape[0] // bars * bars
    return returns[returns.shape[0] - t:].reshape(-1, bars, returns.shape[1]).sum(axis=1)


def walk_forward(returns: np.ndarray, *, every: int, lookback: int, limits: Limits,
                 mode: str, scenario_bars: int = 288,
                 exposures: Callable[[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
                 | None = None, names: tuple[str, ...] | None = None,
                 **allocate_kw) -> WalkForward:
    """Rebalance every ``every`` bars on the previous ``lookback`` bars (module docstring).

    ``exposures(lo, hi)`` gives (exposure n x m, gross n, net n) of the edges over bars
    ``[lo, hi)`` (default: one unit each, one symbol); ``allocate_kw`` go to
    :func:`~backtest_assets.portfolio.allocator.allocate`.
    """
    r = np.asarray(returns, float)
    t, n = r.shape
    if lookback < 2 * scenario_bars or every < 1 or lookback + every > t:
        raise ValueError(f"{t} bars cannot hold a lookback of {lookback} bars "
                         f"(>= 2 scenarios of {scenario_bars}) and one period of {every}")
    names = names or tuple(f"edge_{i}" for i in range(n))
    starts = np.arange(lookback, t, every)
    weights, turnover, binding, seconds = [], [], [], []
    prev = None
    for k in starts:
        ex, gross, net = exposures(k - lookback, k) if exposures else \
            (np.ones((n, 1)), np.ones(n), np.ones(n))
        edges = Edges(names=names, returns=scenarios(r[k - lookback:k], scenario_bars),
                      exposure=ex, gross=gross, net=net)
        step = limits if prev is not None else dataclasses.replace(limits, turnover_max=None)
        t0 = time.perf_counter()
        a: Allocation = allocate(edges, step, mode, prev=prev, **allocate_kw)
        seconds.append(time.perf_counter() - t0)
        weights.append(a.weights)
        turnover.append(float(np.abs(a.weights - (0 if prev is None else prev)).sum()))
        binding.append(a.binding)
        prev = a.weights
    w = np.array(weights)
    held = np.repeat(w, np.diff(np.append(starts, t)), axis=0)  # weights of each bar
    oos = np.einsum("tn,tn->t", r[starts[0]:], held)
    return WalkForward(starts, w, np.array(turnover), binding, oos, np.array(seconds))
