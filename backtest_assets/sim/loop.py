"""The strategy event loop: a :class:`~backtest_assets.sim.api.Strategy` on the platform's
venue rules, bar by bar.

The loop's core is the engine's reference loop (:mod:`backtest_assets.engine.reference`), so
fees, slippage, ticks and lots, funding on the mark, isolated margin and brackets,
liquidation on the mark, the risk manager, limit orders and the liquidity rules are the
vectorized engine's own, implemented once; a strategy's ``Target`` intents are that engine's
targets, and a strategy that returns the targets of a target array gives the engine's
result for that array (to 1e-9 on every bar and trade; tests/unit/test_sim_loop.py).

Events of one bar, in this fixed order (each step sees what the previous ones did):

1. market data: the bar's open;
2. funding on the positions held into the open (at the mark open);
3. liquidation checks at the mark open, then the engine's exit rules at the open;
4. the strategy's stop and take-profit orders the open gaps through (filled at the open);
5. orders decided at the previous close, through the risk manager and the venue's
   refusals: targets first (symbol order), then the strategy's market orders (in the order
   they were given);
6. resting limits (targets' and the strategy's) the bar trades through;
7. intrabar: liquidation on the mark's extreme, the engine's stop, then take-profit; then
   the strategy's stops and take-profits, in the order given, until none triggers;
8. the close: marks, the blown and daily-loss checks, then ``on_bar`` (its intents act from
   the next open).

Every fill of the strategy's position, whoever caused it, is delivered to ``on_fill`` as it
happens; intents ``on_fill`` returns act from that moment (a stop placed on an entry watches
the rest of that bar, a market order fills at the next open). The drain ends when a step
leaves no new event; a bar whose stops keep triggering each other more than
``MAX_DRAIN`` times is an error. Nothing is random: a run repeated gives identical results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backtest_assets.engine.core import EXIT_REASONS, GRID_TOL, Result, check_inputs
from backtest_assets.engine.reference import LIQUIDATION, SIGNAL, STOP_LOSS, TAKE_PROFIT, _Loop
from backtest_assets.engine.venue import ExitRules, Instrument, LimitOrders, RiskLimits
from backtest_assets.sim.api import (
    Account,
    BarView,
    Cancel,
    Fill,
    Limit,
    Market,
    Stop,
    Strategy,
    TakeProfit,
    Target,
    as_intents,
)

MAX_DRAIN = 1_000


@dataclass(frozen=True)
class Run:
    """A strategy's run: the engine's :class:`Result` (equity, trades, costs, refusals) and
    every fill in the order it happened."""

    result: Result
    fills: tuple[Fill, ...]


def run_strategy(strategy: Strategy, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, instruments: Instrument | Sequence[Instrument], *,
                 ts: np.ndarray | None = None, volume: np.ndarray | None = None,
                 features: Mapping[str, np.ndarray] | None = None,
                 funding: np.ndarray | None = None, exits: ExitRules | None = None,
                 init_cash: float = 1_000_000.0, risk: RiskLimits | None = None,
                 day: np.ndarray | None = None, mark_open: np.ndarray | None = None,
                 mark_high: np.ndarray | None = None, mark_low: np.ndarray | None = None,
                 limits: LimitOrders | None = None) -> Run:
    """Run ``strategy`` over the bars (array contract of
    :func:`backtest_assets.engine.core.backtest`; no target: the strategy decides).

    Parameters
    ----------
    strategy : Strategy
        Called at every bar's close (module docstring).
    ts : np.ndarray, optional
        (T,) bar open times the strategy may read (``bar.ts``); default 0..T-1.
    features : mapping of str to (T,) or (T, S) arrays, optional
        What the strategy may read besides the bars, known at each bar's close.
    Other parameters
        As for ``backtest``.

    Raises
    ------
    ValueError
        Bad input (as ``backtest``), or an intent for a symbol not in the run.
    """
    o = np.asarray(open_, dtype=np.float64)
    shape = o.shape if o.ndim == 2 else (o.shape[0], 1)
    # The engine's input checks, with a target that orders nothing (0 on the first bar: the
    # symbols count as traded, so funding for them is accepted).
    no_target = np.full(shape, np.nan)
    no_target[0] = 0.0
    inp = check_inputs(open_, high, low, close, no_target, instruments, funding=funding,
                       exits=exits, init_cash=init_cash, risk=risk, day=day,
                       mark_open=mark_open, mark_high=mark_high, mark_low=mark_low,
                       volume=volume, limits=limits)
    columns = {"open": inp.open, "high": inp.high, "low": inp.low, "close": inp.close}
    if inp.volume is not None:
        columns["volume"] = inp.volume
    view = BarView(np.arange(shape[0]) if ts is None else np.asarray(ts),
                   [i.symbol for i in inp.instruments], columns, features)
    loop = _StrategyLoop(inp, strategy, view)
    result = loop.run()
    return Run(result=result, fills=tuple(loop.fills))


class _StrategyLoop(_Loop):
    """The reference loop with the strategy deciding at each close (module docstring)."""

    def __init__(self, inp, strategy: Strategy, view: BarView) -> None:
        super().__init__(inp)
        self.strategy, self.view = strategy, view
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.book: list[tuple[int, object]] = []  # (first bar it acts, order), given order
        self.fills: list[Fill] = []
        self.context: tuple[str, int] | None = None  # the strategy order being filled
        self.t = 0
        self.open_equity = NAN_EQUITY
        self.later: list[Target] = []  # targets from on_fill: ordered at the next open
        self.apply(strategy.on_start(tuple(self.symbols)), 0)

    def run(self) -> Result:
        result = super().run()
        result.orders["limit_open"] += sum(isinstance(o, Limit) for _, o in self.book)
        return result

    # ---- the strategy -------------------------------------------------------------------
    def account(self) -> Account:
        marks = self.last_close
        pos = {s: (p.qty if p is not None else 0.0) for s, p in zip(self.symbols, self.pos,
                                                                     strict=True)}
        entry = {s: p.entry for s, p in zip(self.symbols, self.pos, strict=True)
                 if p is not None}
        return Account(cash=self.cash, equity=self.equity(marks), position=pos,
                       entry_price=entry, open_orders=tuple(o.id for _, o in self.book))

    def decide(self, t: int) -> None:
        self.view.t = t
        later, self.later = self.later, []
        self.apply(later, t + 1)
        self.apply(self.strategy.on_bar(self.view, self.account()), t + 1)

    def apply(self, out, start: int, *, from_fill: bool = False) -> None:
        """Take the strategy's intents: targets as the engine's (from ``on_fill``: at the
        next open), orders into the book from bar ``start`` (from ``on_fill``: stops and
        take-profits at once, market and limit orders from the next bar), cancels out of
        it."""
        for intent in as_intents(out):
            if isinstance(intent, Cancel):
                gone = [o for _, o in self.book if o.id == intent.id]
                self.book = [(b, o) for b, o in self.book if o.id != intent.id]
                self.orders["limit_cancelled"] += sum(isinstance(o, Limit) for o in gone)
                continue
            if intent.symbol not in self.index:
                raise ValueError(f"intent {intent!r}: symbol {intent.symbol!r} is not in the "
                                 f"run {self.symbols}")
            if isinstance(intent, Target):
                if from_fill:
                    self.later.append(intent)
                    continue
                s = self.index[intent.symbol]
                if intent.weight != self.weight[s]:
                    self.weight_before[s], self.weight[s] = self.weight[s], intent.weight
                    self.pending[s] = True
                continue
            if isinstance(intent, Limit):
                self.orders["limit_placed"] += 1
            at_once = not from_fill or isinstance(intent, (Stop, TakeProfit))
            self.book.append((start if at_once else start + 1, intent))

    # ---- fills reach the strategy -------------------------------------------------------
    def fill(self, t: int, s: int, new_qty: float, price: float, reason: int,
             maker: bool = False) -> None:
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        fees_before = self.fee_row[s]
        super().fill(t, s, new_qty, price, reason, maker)
        p = self.pos[s]
        px = p.entry if p is not None else self.trades[-1][5]
        kind, oid = self.context or (EXIT_REASONS[reason], 0)
        self.notify(Fill(bar=t, symbol=self.symbols[s], qty=new_qty - old, price=px,
                         fee=self.fee_row[s] - fees_before, reason=kind, order_id=oid))

    def liquidate(self, t: int, s: int, p) -> None:
        fees_before = self.fee_row[s]
        super().liquidate(t, s, p)
        self.notify(Fill(bar=t, symbol=self.symbols[s], qty=-p.qty, price=p.liq,
                         fee=self.fee_row[s] - fees_before,
                         reason=EXIT_REASONS[LIQUIDATION]))

    def notify(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.apply(self.strategy.on_fill(fill, self.account()), self.t, from_fill=True)

    # ---- the strategy's orders ----------------------------------------------------------
    def bar(self, t: int) -> None:
        self.t = t
        super().bar(t)

    def send_orders(self, t: int, o: list[float], equity: float, marks: list[float]) -> None:
        self.open_equity, self.open_marks = equity, marks
        self.triggers(t, at_open=True)
        # a target for a symbol without a price this bar waits for its next bar
        waiting = [s for s in range(self.S) if self.pending[s] and math.isnan(o[s])]
        for s in waiting:
            self.pending[s] = False
        super().send_orders(t, o, equity, marks)
        for s in waiting:
            self.pending[s] = True
        for entry in [e for e in self.book if e[0] <= t and isinstance(e[1], Market)]:
            order = entry[1]
            s = self.index[order.symbol]
            if math.isnan(o[s]):
                continue  # no price this bar: it waits for the symbol's next bar
            self.book.remove(entry)
            self.execute(t, s, order, o[s], "market", SIGNAL)

    def match_limits(self, t: int, o: list[float], equity: float, marks: list[float]) -> None:
        super().match_limits(t, o, equity, marks)
        for entry in [e for e in self.book if e[0] <= t and isinstance(e[1], Limit)]:
            order = entry[1]
            s = self.index[order.symbol]
            if not math.isnan(o[s]) and (self.lo[t][s] < order.price if order.qty > 0
                                         else self.h[t][s] > order.price):
                self.book.remove(entry)
                if self.execute(t, s, order, order.price, "limit", SIGNAL, maker=True):
                    self.orders["limit_filled"] += 1
            elif t >= entry[0] + order.valid_bars - 1:
                self.book.remove(entry)
                self.orders["limit_expired"] += 1

    def after_intrabar(self, t: int) -> None:
        for _ in range(MAX_DRAIN):
            if not self.triggers(t, at_open=False):
                return
        raise RuntimeError(f"bar {t}: the strategy's stops kept triggering each other "
                           f"{MAX_DRAIN} times")

    def triggers(self, t: int, *, at_open: bool) -> bool:
        """Fill the first stop or take-profit of the book this bar reaches (at the open
        when it opens beyond the trigger); whether one filled."""
        for entry in list(self.book):
            start, order = entry
            if start > t or not isinstance(order, (Stop, TakeProfit)):
                continue
            s = self.index[order.symbol]
            o = self.o[t][s]
            if math.isnan(o):
                continue
            buy = order.qty > 0
            # a buy stop and a sell take-profit wait for the price to rise to the trigger
            rising = buy == isinstance(order, Stop)
            trig = order.trigger
            if at_open:
                hit = o >= trig if rising else o <= trig
                price = o
            else:
                hit = self.h[t][s] >= trig if rising else self.lo[t][s] <= trig
                price = max(o, trig) if rising else min(o, trig)
            if hit:
                self.book.remove(entry)
                stop = isinstance(order, Stop)
                self.execute(t, s, order, price, "stop" if stop else "take_profit",
                             STOP_LOSS if stop else TAKE_PROFIT)
                return True
        return False

    def execute(self, t: int, s: int, order, price: float, kind: str, reason: int,
                maker: bool = False) -> bool:
        """Fill ``order`` (its quantity rounded toward zero to the lot, cut by reduce-only)
        at ``price`` (before slippage for a market fill), or count its refusal; whether it
        filled."""
        inst = self.insts[s]
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        qty = order.qty
        if inst.lot_size > 0:
            qty = math.trunc(qty / inst.lot_size + math.copysign(GRID_TOL, qty)) * inst.lot_size
        if order.reduce_only:
            qty = 0.0 if old * qty >= 0 else math.copysign(min(abs(qty), abs(old)), qty)
            if qty == 0.0:
                return False  # nothing to reduce: the order lapses
        if qty == 0.0:
            self.rejected["zero_qty"] += 1
            return False
        new = old + qty
        px = price if maker else self.fill_price(s, price, qty > 0, abs(qty))
        refusal = self.refusal(s, new, old, px, inst.maker if maker else inst.taker,
                               self.open_equity, self.open_marks)
        if refusal is not None:
            self.rejected[refusal] += 1
            return False
        self.context = (kind, order.id)
        try:
            self.fill(t, s, new, price, reason, maker)
        finally:
            self.context = None
        return True


NAN_EQUITY = float("nan")
