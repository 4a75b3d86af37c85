"""One book from several edges, netted per symbol and run on shared capital (no Dagster).

Each edge is a target (T x S, fraction of the edge's capital per symbol, NaN = keep, the
engine's contract) on the book's bars. The book's target at bar t is

    book[t, s] = Σ_i w_i(t) · eff_i[t, s]

where ``w_i(t)`` is edge i's allocation of the last rebalance at or before t (0 before the
first) and ``eff_i`` its position in force after bar t as a fraction of its capital: its target
forward-filled, except that after the edge's own run closed a position by a rule (stop,
take-profit, time stop, liquidation) at bar t the edge counts as flat from that close until
its target next changes (the engine re-enters only on a change). Opposite positions of two
edges in one symbol net, so the book trades and pays fees on the difference only. The
engine then runs the book on one account with the venue's rules (margin per symbol, leverage
setting, liquidation); a book whose gross would exceed a symbol's leverage setting is refused
before simulating, naming bar and symbol (the engine's check).

What is not replayed: an edge's intrabar stop fills at its stop price in its own run; in the
book its exit is decided at that bar's close and traded at the next open. The book's own
engine run may carry exit rules of its own (``exits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from backtest_assets.engine import ExitRules, Instrument, Result, backtest
from backtest_assets.engine.core import check_inputs, check_target

RULE_EXITS = ("stop_loss", "take_profit", "time_stop", "liquidation")


def effective_position(target: np.ndarray, trades: pl.DataFrame | None, bars) -> np.ndarray:
    """Edge position in force after each bar, as a fraction of its capital (module docstring):
    ``target`` forward-filled, flat after a rule exit of its run (``trades``: the engine's
    trades table of the edge's own run) until its target changes. ``bars``: the checked
    inputs (:func:`backtest_assets.engine.core.check_inputs`) of the book's symbols."""
    weights, changed = check_target(target, bars)
    eff = weights.copy()
    if trades is None or trades.is_empty():
        return eff
    t_all = eff.shape[0]
    column = {inst.symbol: k for k, inst in enumerate(bars.instruments)}
    rule = trades.filter(pl.col("exit_reason").is_in(RULE_EXITS)
                         & pl.col("exit_bar").is_not_null())
    for symbol, bar in zip(rule["symbol"].to_list(), rule["exit_bar"].to_list(), strict=True):
        s = column[symbol]
        later = np.flatnonzero(changed[bar + 1:, s])
        stop = bar + 1 + later[0] if later.size else t_all
        eff[bar:stop, s] = 0.0
    return eff


def weights_by_bar(weights: np.ndarray, rebalance_bars: Sequence[int], n_bars: int
                   ) -> np.ndarray:
    """(T, n) allocation in force at each bar: the last rebalance's at or before it."""
    w = np.asarray(weights, float).reshape(len(rebalance_bars), -1)
    out = np.zeros((n_bars, w.shape[1]))
    bounds = [*list(rebalance_bars), n_bars]
    for k in range(len(rebalance_bars)):
        out[bounds[k]:bounds[k + 1]] = w[k]
    return out


def book_target(positions: Sequence[np.ndarray], allocation: np.ndarray) -> np.ndarray:
    """``Σ_i allocation[:, i] · positions[i]``: (T, S) book target from edges' positions
    (T, S each) and the allocation in force at each bar (T, n)."""
    pos = np.stack([np.asarray(p, float) for p in positions])  # n, T, S
    if pos.shape[0] != allocation.shape[1] or pos.shape[1] != allocation.shape[0]:
        raise ValueError(f"{pos.shape[0]} edges over {pos.shape[1]} bars against an allocation "
                         f"of shape {allocation.shape}")
    return np.einsum("ntS,tn->tS", pos, allocation)


def run_book(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             targets: Sequence[np.ndarray], edge_trades: Sequence[pl.DataFrame | None],
             allocation: np.ndarray, instruments: Sequence[Instrument], *,
             funding: np.ndarray | None = None, init_cash: float = 1_000_000.0,
             exits: ExitRules | None = None) -> tuple[Result, np.ndarray]:
    """The netted book on shared capital: (engine result, its (T, S) target)."""
    bars = check_inputs(open_, high, low, close, np.zeros_like(np.asarray(close, float)),
                        instruments, init_cash=init_cash)
    positions = [effective_position(t, tr, bars)
                 for t, tr in zip(targets, edge_trades, strict=True)]
    target = book_target(positions, allocation)
    # an order only where the book's target moves: the rest keeps (NaN), like an edge's
    moved = np.vstack([target[:1] != 0, np.diff(target, axis=0) != 0])
    sparse_target = np.where(moved, target, np.nan)
    sparse_target[0] = target[0]  # every symbol decided at the first bar (flat or not)
    result = backtest(open_, high, low, close, sparse_target, instruments, funding=funding,
                      init_cash=init_cash, exits=exits)
    return result, target
