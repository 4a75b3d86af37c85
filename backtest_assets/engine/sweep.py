"""Many backtests of one market at once: a parameter grid in one compiled, parallel pass.

A sweep runs K combinations (target series and exit rules) over the same bars, instruments
and funding, with exactly the rules of :func:`backtest_assets.engine.core.backtest` (it runs
the same compiled bar loop), and returns the headline metrics of each combination instead of
K full results. The bars, instruments and funding are checked once; every target is checked
like ``backtest`` checks it (non-finite, an order into a bar without a price, leverage above
a cap). Combinations are processed in chunks (``chunk`` at a time, one per thread), so the
memory is that of ``chunk`` runs however large the grid; ``targets`` may be any sequence,
including a lazy one whose ``__getitem__`` builds each target when asked.

Metrics are those of :func:`backtest_assets.engine.metrics.metrics` of the same run (same
definitions; sums are taken in bar order, so they agree to float rounding, ~1e-12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numba
import numpy as np
import polars as pl

from backtest_assets.engine.core import (
    ORDER_EVENTS,
    R_OPEN,
    REJECT_REASONS,
    TRADE_COLS,
    _loop,
    _plain_loop,
    _rules,
    bar_days,
    check_inputs,
    check_sizing,
    check_target,
    loop_arrays,
    loop_state,
    plain_loop,
)
from backtest_assets.engine.metrics import BARS_PER_YEAR_1M, curve_stats
from backtest_assets.engine.venue import ExitRules, Instrument, LimitOrders, RiskLimits

# Columns of the per-combination metrics the kernel writes, in this order.
SWEEP_METRICS = ("total_return", "sharpe", "sortino", "max_drawdown", "trades", "win_rate",
                 "fee_drag", "slippage_drag", "funding_pnl", "exposure", "final_equity",
                 "rejected", "blown_bar")
N_REJECT = len(REJECT_REASONS)
N_EVENTS = len(ORDER_EVENTS)


def sweep(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
          targets: Sequence[np.ndarray] | np.ndarray,
          instruments: Instrument | Sequence[Instrument], *,
          funding: np.ndarray | None = None,
          exits: ExitRules | Sequence[ExitRules] | None = None,
          init_cash: float = 1_000_000.0, long_sizing: Literal["equity", "cash"] = "equity",
          bars_per_year: float = BARS_PER_YEAR_1M, chunk: int | None = None,
          blocks: np.ndarray | Sequence[int] | None = None,
          risk: RiskLimits | None = None, day: np.ndarray | None = None,
          mark_open: np.ndarray | None = None, mark_high: np.ndarray | None = None,
          mark_low: np.ndarray | None = None, volume: np.ndarray | None = None,
          limits: LimitOrders | None = None
          ) -> pl.DataFrame | tuple[pl.DataFrame, np.ndarray]:
    """Metrics of K backtests sharing bars, instruments and funding.

    Parameters
    ----------
    open_, high, low, close, instruments, funding, init_cash, long_sizing, risk, day,
    mark_open, mark_high, mark_low, volume, limits
        As for :func:`backtest_assets.engine.core.backtest` (the same checks apply).
    targets : sequence of K (T,) or (T, S) arrays, or a (T, K) array for one symbol
        Each combination's target weights (NaN = keep).
    exits : ExitRules or sequence of K ExitRules, optional
        One rule set for every combination, or one per combination.
    bars_per_year : float
        Annualization of Sharpe and Sortino.
    chunk : int, optional
        Combinations simulated together (default: 4 per thread).
    blocks : (B + 1,) increasing bar indices from 0 to T, optional
        Also return, per combination, the bar returns' count, sum and sum of squares in each
        block ``[blocks[b], blocks[b + 1])`` (what CSCV and combinatorial cross-validation
        need to compute any union of blocks' Sharpe ratio exactly). A bar's return is
        ``equity[t] / equity[t - 1] - 1`` (the starting cash before bar 0), as in ``metrics``.

    Returns
    -------
    polars.DataFrame
        One row per combination (``combo`` = its index) with the columns of
        ``SWEEP_METRICS``: ``trades`` counts closed trades, ``rejected`` every rejected
        order, ``blown_bar`` is -1 unless the account was blown.
    numpy.ndarray
        With ``blocks`` only: (K, B, 3) float64, [n, sum, sum of squares] per block.
    """
    if isinstance(targets, np.ndarray) and targets.ndim == 2 and np.ndim(open_) == 1:
        targets = [targets[:, k] for k in range(targets.shape[1])]
    k_n = len(targets)
    if k_n == 0:
        raise ValueError("targets: give at least one combination")
    rules_k = [exits] * k_n if exits is None or isinstance(exits, ExitRules) else list(exits)
    if len(rules_k) != k_n:
        raise ValueError(f"exits: {len(rules_k)} rule sets for {k_n} targets")
    # The full check once (bars, instruments, funding against the first target) ...
    inp = check_inputs(open_, high, low, close, targets[0], instruments, funding=funding,
                       exits=rules_k[0], init_cash=init_cash, risk=risk, day=day,
                       mark_open=mark_open, mark_high=mark_high, mark_low=mark_low,
                       volume=volume, limits=limits)
    check_sizing(long_sizing, inp)
    for ex in rules_k:
        (ex or ExitRules()).validate()
    t_n, s_n = inp.open.shape
    bounds = _bounds(blocks, t_n)
    stats = np.zeros((k_n, max(len(bounds) - 1, 0), 3))
    rules = _rules(inp.instruments)
    market = loop_arrays(inp)
    split = any(i.participation is not None for i in inp.instruments)
    # the loop without the phases that cannot act, when no combination has exit rules
    plain = all(plain_loop(inp._replace(exits=ex or ExitRules()), rules) for ex in rules_k)
    chunk = chunk or 4 * numba.get_num_threads()
    out = np.empty((k_n, len(SWEEP_METRICS)))
    chunk = min(chunk, k_n)
    # Reused by every chunk: fresh (chunk, T) buffers would be page-faulted in each time.
    equity, exposure = np.empty((chunk, t_n)), np.empty((chunk, t_n))
    weights = np.empty((chunk, t_n, s_n))
    changed = np.empty((chunk, t_n, s_n), dtype=bool)
    for lo in range(0, k_n, chunk):
        ks = range(lo, min(lo + chunk, k_n))
        for j, k in enumerate(ks):  # ... and each target like backtest checks it
            tgt = np.asarray(targets[k], dtype=np.float64).reshape(t_n, -1)
            if tgt.shape != (t_n, s_n):
                raise ValueError(f"targets[{k}]: shape {tgt.shape} differs from the bars' "
                                 f"{(t_n, s_n)}")
            try:
                check_target(tgt, inp, weights=weights[j], changed=changed[j])
            except ValueError as exc:
                raise ValueError(f"targets[{k}]: {exc}") from None
        accs = np.stack([loop_state(inp.init_cash, rules_k[k] or ExitRules(), long_sizing,
                                    inp.risk, inp.limits) for k in ks])
        _sweep_kernel(*market, changed[:len(ks)], weights[:len(ks)], split, bar_days(inp),
                      rules, plain,
                      accs, equity[:len(ks)], exposure[:len(ks)], out[lo:lo + len(ks)],
                      bounds, stats[lo:lo + len(ks)])
    frame = pl.DataFrame(out, schema=list(SWEEP_METRICS), orient="row")
    ann = math.sqrt(bars_per_year)
    frame = frame.with_columns(
        (pl.col("sharpe") * ann), (pl.col("sortino") * ann),
        *(pl.col(c).cast(pl.Int64) for c in ("trades", "rejected", "blown_bar")),
    ).with_row_index("combo").with_columns(pl.col("combo").cast(pl.Int64))
    return frame if blocks is None else (frame, stats)


def _bounds(blocks: np.ndarray | Sequence[int] | None, t_n: int) -> np.ndarray:
    if blocks is None:
        return np.zeros(0, dtype=np.int64)
    b = np.asarray(blocks, dtype=np.int64)
    if b.ndim != 1 or len(b) < 2 or b[0] != 0 or b[-1] != t_n or (np.diff(b) <= 0).any():
        raise ValueError(f"blocks: need increasing bar indices from 0 to {t_n}, got "
                         f"{b.tolist()[:8]}{'...' if b.size > 8 else ''}")
    return b


@numba.njit(parallel=True, cache=True)
def _sweep_kernel(o, h, lo, c, mo, mh, ml, vol, rate, changed, weights, split, day, rules,
                  plain, accs, equity, exposure, out, bounds, stats):  # pragma: no cover
    """Run combination j of the chunk into equity[j] / exposure[j] and summarize it (and
    its bar returns per block into stats[j]); the other outputs of the loop are single-row
    accumulators (see core._loop)."""
    k_n = weights.shape[0]
    s_n = o.shape[1]
    for j in numba.prange(k_n):
        acc = accs[j].copy()
        fees, slippage, funding = np.zeros((1, s_n)), np.zeros((1, s_n)), np.zeros((1, s_n))
        # as trade_capacity: one row per change, or per bar and symbol when fills split
        n_rows = int(changed[j].sum()) + (changed[j].size if split else 0)
        trades = np.empty((max(1, n_rows), TRADE_COLS))
        rejected = np.zeros(N_REJECT, dtype=np.int64)
        if plain:
            _plain_loop(o, h, lo, c, mo, mh, ml, vol, rate, changed[j], weights[j], day, rules,
                        acc, equity[j], np.empty(1), exposure[j], np.empty((1, s_n)), fees,
                        slippage, funding, np.zeros((1, s_n)), np.zeros((1, s_n)), trades,
                        rejected, np.zeros(N_EVENTS, dtype=np.int64))
        else:
            _loop(o, h, lo, c, mo, mh, ml, vol, rate, changed[j], weights[j], day, rules, acc,
                  equity[j], np.empty(1),
                  exposure[j], np.empty((1, s_n)), fees, slippage, funding,
                  np.zeros((1, s_n)), np.zeros((1, s_n)), trades, rejected,
                  np.zeros(N_EVENTS, dtype=np.int64))
        _summarize(equity[j], exposure[j], fees, slippage, funding, trades[:int(acc[1])],
                   rejected, acc[2], accs[j, 0], out[j])
        ret = exposure[j]  # _summarize left the bar returns there
        for b in range(bounds.size - 1):
            for t in range(bounds[b], bounds[b + 1]):
                stats[j, b, 0] += 1.0
                stats[j, b, 1] += ret[t]
                stats[j, b, 2] += ret[t] * ret[t]


@numba.njit(cache=True)
def _summarize(equity, exposure, fees, slippage, funding, trades, rejected, blown, init,
               row):  # pragma: no cover
    """The metrics of metrics.py (Sharpe and Sortino before annualization). ``exposure`` is
    overwritten with the bar returns (scratch)."""
    t_n = equity.size
    exp_sum = 0.0
    for t in range(t_n):
        exp_sum += exposure[t]
    mean, sd, downside, mdd = curve_stats(equity, init, exposure)  # exposure: the returns
    closed, wins = 0, 0
    for i in range(trades.shape[0]):
        if trades[i, 9] != R_OPEN:
            closed += 1
            wins += trades[i, 8] > 0
    row[0] = equity[-1] / init - 1.0
    row[1] = mean / sd if sd > 0 else np.nan
    row[2] = mean / downside if downside > 0 else np.nan
    row[3] = mdd
    row[4] = closed
    row[5] = wins / closed if closed else np.nan
    row[6] = fees.sum() / init
    row[7] = slippage.sum() / init
    row[8] = -funding.sum() / init
    row[9] = exp_sum / t_n
    row[10] = equity[-1]
    row[11] = rejected.sum()
    row[12] = blown
