"""The futures ledger of a backtest, rebuilt independently from its trades and per-bar flows
(no Dagster).

The engine keeps spot-like cash (a short's proceeds sit in cash) and values positions at the
close. A venue's account reads differently: a wallet balance that moves only by realized
P&L, fees, funding and liquidation forfeits, margin posted out of it for each isolated
position, and unrealized P&L on top. :func:`ledger` builds that account bar by bar from the
trades table (entry and exit prices, quantities, bars) and the per-bar fee, funding and
insurance arrays, without the engine's cash or equity, and :func:`ledger_residual` compares
it with the engine's equity:

``available(t) + posted margin(t) + unrealized(t) = equity(t)``, where

- ``wallet(t) = init + sum of qty * (exit - entry) of the trades closed by t - fees to t -
  funding to t - insurance forfeits to t`` (slippage is in the fill prices; a liquidation's
  clearance fee is in the fees);
- ``posted margin(t) = sum of |qty| * entry / L`` over the isolated positions open at t's
  close, ``available(t) = wallet(t) - posted margin(t)``;
- ``unrealized(t) = sum of qty * (mark(t) - entry)`` over the positions open at t's close,
  marked at the last close.

So fees, funding and liquidation losses sum to the equity change with the trades' price
P&L, at every bar. A fee booked on the wrong bar, a trade with the wrong price or quantity,
a funding payment the equity missed, or equity that moved without a flow all show as a
residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.engine.core import Result, forward_fill
from backtest_assets.engine.venue import Instrument


@dataclass(frozen=True)
class Ledger:
    """(T,) per bar at its close."""

    wallet: np.ndarray
    posted_margin: np.ndarray
    available: np.ndarray
    unrealized: np.ndarray

    @property
    def equity(self) -> np.ndarray:
        return self.available + self.posted_margin + self.unrealized


def ledger(result: Result, close: np.ndarray, instruments: Sequence[Instrument],
           init_cash: float) -> Ledger:
    """The account of ``result`` rebuilt from its trades and per-bar flows (module doc)."""
    close = np.asarray(close, dtype=np.float64).reshape(len(result.equity), -1)
    t_n = close.shape[0]
    marks = np.nan_to_num(forward_fill(close, np.nan))
    index = {i.symbol: s for s, i in enumerate(instruments)}
    lev = np.array([i.max_leverage for i in instruments])
    margined = np.array([i.maintenance_margin_rate is not None for i in instruments])
    realized = np.zeros(t_n)
    unrealized = np.zeros(t_n)
    posted = np.zeros(t_n)
    tr = result.trades
    sign = np.where(tr["side"].to_numpy() == "long", 1.0, -1.0)
    qty = sign * tr["qty"].to_numpy()
    entry, exit_ = tr["entry_price"].to_numpy(), tr["exit_price"].to_numpy()
    first = tr["entry_bar"].to_numpy()
    last = tr["exit_bar"].fill_null(t_n).to_numpy()  # open at the end: held to the last bar
    sym = np.array([index[s] for s in tr["symbol"].to_list()], dtype=np.int64)
    for k in range(tr.height):
        s, a, b = sym[k], first[k], last[k]
        held = slice(a, b)  # open at the close of bars a .. b-1 (closed at b, or never)
        unrealized[held] += qty[k] * (marks[held, s] - entry[k])
        if margined[s]:
            posted[held] += abs(qty[k]) * entry[k] / lev[s]
        if b < t_n:
            realized[b] += qty[k] * (exit_[k] - entry[k])
    flows = (result.fees.sum(axis=1) + result.funding.sum(axis=1)
             + result.insurance.sum(axis=1))
    wallet = init_cash + np.cumsum(realized - flows)
    return Ledger(wallet=wallet, posted_margin=posted, available=wallet - posted,
                  unrealized=unrealized)


def ledger_residual(result: Result, close: np.ndarray, instruments: Sequence[Instrument],
                    init_cash: float) -> float:
    """Largest ``|available + posted margin + unrealized - equity|`` over the bars, as a
    fraction of the larger of the initial cash and the largest equity (0 when the books
    balance; float rounding leaves ~1e-12)."""
    book = ledger(result, close, instruments, init_cash)
    scale = max(init_cash, float(np.abs(result.equity).max(initial=0.0)))
    return float(np.abs(book.equity - result.equity).max(initial=0.0) / scale)


def ledger_frame(book: Ledger) -> pl.DataFrame:
    """The ledger's columns, for a table or a check's metadata."""
    return pl.DataFrame({"wallet": book.wallet, "posted_margin": book.posted_margin,
                         "available": book.available, "unrealized": book.unrealized})
