"""Reference backtest loop: plain Python, bar by bar, symbol by symbol.

Same inputs, rules and ``Result`` as :func:`backtest_assets.engine.core.backtest` (the
array contract and every rule are documented there), written independently as the oracle
for the parity tests: no vectorization, no closed form, one position object per symbol.
Everything at bar t is resolved before bar t+1, in this order:

1. funding on the position held into the open (``cash -= qty * open * rate``);
2. open-time exits of positions held into the open: liquidation (open beyond the
   liquidation price: closed at that price), stop-loss and take-profit (open beyond the
   level: filled at the open), time stop (the position is ``time_stop`` bars old);
3. blown check on the equity at the open, then the daily loss cap's (a new UTC day resets
   its reference equity to this one);
4. orders decided at the close of t-1, all sized from the equity of step 3 (with
   ``long_sizing="cash"`` a buy is then capped by the cash left at that point); an order
   opening or adding to an isolated position must find its initial margin and its fee in
   that equity less the margin the other symbols' positions hold at that point, after the
   venue's bracket limit and the risk manager's refusals (in that order);
5. intrabar exits of every position (new ones included): liquidation at the extreme, then
   stop-loss, then take-profit; a liquidation takes the position's whole posted margin;
6. marks at the close, blown check on the equity at the close, then the daily loss cap's;
7. targets decided at the close of t (orders for t+1).

Slow by design (several microseconds per bar and symbol): use it on small inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from backtest_assets.engine.core import (
    EXIT_REASONS,
    GRID_TOL,
    MARGIN_TOL,
    REJECT_REASONS,
    Inputs,
    Result,
    check_inputs,
    trades_frame,
)
from backtest_assets.engine.venue import ExitRules, Instrument, RiskLimits

SIGNAL, STOP_LOSS, TAKE_PROFIT, TIME_STOP, LIQUIDATION, BLOWN, OPEN = range(len(EXIT_REASONS))
NAN = float("nan")


class _Position:
    """An open trade: constant signed quantity since ``bar``."""

    __slots__ = ("bar", "entry", "fees", "flow", "funding", "insurance", "liq", "margin",
                 "qty", "stop", "take")

    def __init__(self, bar: int, qty: float, entry: float, liq: float, margin: float,
                 stop: float, take: float) -> None:
        self.bar, self.qty, self.entry = bar, qty, entry
        self.liq, self.margin, self.stop, self.take = liq, margin, stop, take
        self.fees = 0.0
        self.funding = 0.0
        self.insurance = 0.0
        self.flow = -qty * entry  # cash flows of this trade: its P&L once closed


def backtest_reference(open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                       close: np.ndarray, target: np.ndarray,
                       instruments: Instrument | Sequence[Instrument], *,
                       funding: np.ndarray | None = None, exits: ExitRules | None = None,
                       init_cash: float = 1_000_000.0,
                       long_sizing: Literal["equity", "cash"] = "equity",
                       risk: RiskLimits | None = None, day: np.ndarray | None = None) -> Result:
    """Simulate bar by bar in plain Python (the parity oracle of the fast engine).

    Parameters and result as :func:`backtest_assets.engine.core.backtest` (no ``path``).
    """
    if long_sizing not in ("equity", "cash"):
        raise ValueError(f"long_sizing: {long_sizing!r} is not 'equity' or 'cash'")
    inp = check_inputs(open_, high, low, close, target, instruments, funding=funding,
                       exits=exits, init_cash=init_cash, risk=risk, day=day)
    return _Loop(inp, cash_capped_buys=long_sizing == "cash").run()


class _Loop:
    def __init__(self, inp: Inputs, cash_capped_buys: bool = False) -> None:
        self.cash_capped_buys = cash_capped_buys
        self.T, self.S = inp.open.shape
        self.o, self.h, self.lo, self.c = (a.tolist() for a in (inp.open, inp.high, inp.low,
                                                                inp.close))
        self.tgt = inp.target.tolist()
        self.rate = None if inp.funding is None else inp.funding.tolist()
        self.insts = inp.instruments
        self.symbols = [i.symbol for i in inp.instruments]
        ex = inp.exits
        self.sl = NAN if ex.stop_loss is None else ex.stop_loss
        self.tp = NAN if ex.take_profit is None else ex.take_profit
        self.time_stop = ex.time_stop
        self.cash = inp.init_cash
        self.pos: list[_Position | None] = [None] * self.S
        self.last_close = [NAN] * self.S
        self.weight = [0.0] * self.S
        self.pending = [False] * self.S
        self.blown_bar: int | None = None
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.trades: list[tuple] = []
        self.fee_row = [0.0] * self.S
        self.slip_row = [0.0] * self.S
        self.fund_row = [0.0] * self.S
        self.liq_fee_row = [0.0] * self.S
        self.insurance_row = [0.0] * self.S
        # the risk manager: its limits, and the UTC day whose first open set the loss cap's
        # reference equity (halted: no new risk until the day changes)
        self.risk = inp.risk
        self.days = None if inp.day is None else inp.day.tolist()
        self.day = None
        self.day_equity = NAN
        self.halted = False

    # ---- one bar ------------------------------------------------------------------------
    def run(self) -> Result:
        out = {k: [] for k in ("equity", "cash", "position", "exposure", "fees", "slippage",
                               "funding", "liquidation_fees", "insurance")}
        for t in range(self.T):
            self.fee_row, self.slip_row, self.fund_row = [0.0] * self.S, [0.0] * self.S, \
                [0.0] * self.S
            self.liq_fee_row, self.insurance_row = [0.0] * self.S, [0.0] * self.S
            self.bar(t)
            held = [p.qty if p is not None else 0.0 for p in self.pos]
            equity = self.equity(self.last_close)
            gross = sum(abs(q * m) for q, m in zip(held, self.last_close, strict=True) if q)
            out["equity"].append(equity)
            out["cash"].append(self.cash)
            out["position"].append(held)
            out["exposure"].append(gross / equity if gross else 0.0)
            out["fees"].append(self.fee_row)
            out["slippage"].append(self.slip_row)
            out["funding"].append(self.fund_row)
            out["liquidation_fees"].append(self.liq_fee_row)
            out["insurance"].append(self.insurance_row)
        arrays = {k: np.array(v, dtype=np.float64) for k, v in out.items()}
        return Result(**arrays, trades=self.trades_table(), rejected=self.rejected,
                      blown_bar=self.blown_bar, path="reference")

    def bar(self, t: int) -> None:
        o = self.o[t]
        if self.rate is not None:
            self.pay_funding(t, o)
        for s in range(self.S):
            p = self.pos[s]
            if p is not None and not math.isnan(o[s]):
                self.open_exit(t, s, p, o[s])
        marks = [o[s] if not math.isnan(o[s]) else self.last_close[s] for s in range(self.S)]
        equity = self.equity(marks)
        if self.blown_bar is None and equity <= 0:
            self.blow(t, marks)
        self.daily_loss_check(t, equity)
        for s in range(self.S):
            if self.pending[s]:
                self.pending[s] = False
                if self.blown_bar is not None:
                    self.rejected["blown"] += 1
                else:
                    self.order(t, s, o[s], equity, marks)
        for s in range(self.S):
            p = self.pos[s]
            if p is not None and not math.isnan(o[s]):
                self.intrabar_exit(t, s, p, o[s], self.h[t][s], self.lo[t][s])
        self.last_close = [c if not math.isnan(c) else last
                           for c, last in zip(self.c[t], self.last_close, strict=True)]
        if self.blown_bar is None and self.equity(self.last_close) <= 0:
            self.blow(t, self.last_close)
        cap = self.risk.daily_loss_cap
        if cap is not None and self.equity(self.last_close) <= self.day_equity * (1 - cap):
            self.halted = True
        self.decide(t)

    def daily_loss_check(self, t: int, equity: float) -> None:
        """At each open: a new UTC day resets the cap's reference to this equity; a loss of
        the cap's fraction since the day's first open halts new risk for the day."""
        cap = self.risk.daily_loss_cap
        if cap is None:
            return
        if self.days[t] != self.day:
            self.day, self.day_equity, self.halted = self.days[t], equity, False
        elif equity <= self.day_equity * (1 - cap):
            self.halted = True

    def risk_refusal(self, s: int, qty: float, price: float, equity: float,
                     marks: list[float]) -> str | None:
        """The risk manager's reason to refuse an order adding risk, or None."""
        r = self.risk
        if self.halted:
            return "daily_loss"
        notional = abs(qty) * price
        if r.max_position_notional is not None and notional > r.max_position_notional:
            return "max_position"
        total = notional + sum(abs(p.qty) * marks[i] for i, p in enumerate(self.pos)
                               if p is not None and i != s)
        if r.max_total_notional is not None and total > r.max_total_notional:
            return "max_total"
        if r.max_leverage is not None and total > r.max_leverage * equity:
            return "max_leverage"
        return None

    def pay_funding(self, t: int, o: list[float]) -> None:
        for s, rate in enumerate(self.rate[t]):
            p = self.pos[s]
            if p is not None and not math.isnan(rate):
                pay = p.qty * o[s] * rate
                self.cash -= pay
                self.fund_row[s] += pay
                p.funding += pay
                p.flow -= pay

    def decide(self, t: int) -> None:
        """Targets decided at the close of t: a change is an order at the next open."""
        for s, w in enumerate(self.tgt[t]):
            if not math.isnan(w) and w != self.weight[s]:
                self.weight[s] = w
                self.pending[s] = True

    def equity(self, marks: list[float]) -> float:
        return self.cash + sum(p.qty * marks[s] for s, p in enumerate(self.pos)
                               if p is not None)

    # ---- decisions ----------------------------------------------------------------------
    def order(self, t: int, s: int, o: float, equity: float, marks: list[float]) -> None:
        w = self.weight[s]
        inst = self.insts[s]
        qty = w * equity / o
        if inst.lot_size > 0:
            qty = math.trunc(qty / inst.lot_size + math.copysign(GRID_TOL, qty)) * inst.lot_size
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        if self.cash_capped_buys and qty > old:
            # vectorbt's targetpercent: a buy (a short-to-long reversal included, its cash
            # holding the short's proceeds) spends at most the cash it finds.
            unit_cost = self.fill_price(s, o, True) * (1 + inst.taker)
            most = max(self.cash, 0.0) / unit_cost
            if inst.lot_size > 0:
                most = math.floor(most / inst.lot_size) * inst.lot_size
            qty = min(qty, old + most)
        if qty == old:
            if w != 0:
                self.rejected["zero_qty"] += 1
            return
        price = self.fill_price(s, o, qty > old)
        if qty != 0 and abs(qty - old) * price < inst.min_notional:
            self.rejected["min_notional"] += 1
            return
        opens = qty != 0 and (qty * old <= 0 or abs(qty) > abs(old))
        if opens and abs(qty) * price > self.max_notional(inst):
            # the venue's brackets allow no position this large at the leverage setting
            self.rejected["leverage_bracket"] += 1
            return
        refusal = self.risk_refusal(s, qty, price, equity, marks) if opens else None
        if refusal is not None:
            self.rejected[refusal] += 1
            return
        if inst.maintenance_margin_rate is not None and opens:
            # Isolated margin: the new position's initial margin and the order's fee must be
            # available in the equity this open sizes from, less what the other symbols'
            # positions hold now.
            others = sum(p.margin for i, p in enumerate(self.pos) if p is not None and i != s)
            cost = abs(qty) * price / inst.max_leverage + inst.taker * abs(qty - old) * price
            if cost > equity - others + MARGIN_TOL * equity:
                self.rejected["insufficient_margin"] += 1
                return
        self.fill(t, s, qty, o, SIGNAL)

    def open_exit(self, t: int, s: int, p: _Position, o: float) -> None:
        # NaN levels (rule off) compare False, so no separate "is set" test is needed.
        long = p.qty > 0
        if o <= p.liq if long else o >= p.liq:
            self.liquidate(t, s, p)
        elif o <= p.stop if long else o >= p.stop:
            self.fill(t, s, 0.0, o, STOP_LOSS)
        elif o >= p.take if long else o <= p.take:
            self.fill(t, s, 0.0, o, TAKE_PROFIT)
        elif self.time_stop is not None and t - p.bar >= self.time_stop:
            self.fill(t, s, 0.0, o, TIME_STOP)

    def intrabar_exit(self, t: int, s: int, p: _Position, o: float, h: float,
                      lo: float) -> None:
        if p.qty > 0:
            if lo <= p.liq:
                self.liquidate(t, s, p)
            elif lo <= p.stop:
                self.fill(t, s, 0.0, min(o, p.stop), STOP_LOSS)
            elif h >= p.take:
                self.fill(t, s, 0.0, max(o, p.take), TAKE_PROFIT)
        elif h >= p.liq:
            self.liquidate(t, s, p)
        elif h >= p.stop:
            self.fill(t, s, 0.0, max(o, p.stop), STOP_LOSS)
        elif lo <= p.take:
            self.fill(t, s, 0.0, min(o, p.take), TAKE_PROFIT)

    def blow(self, t: int, marks: list[float]) -> None:
        self.blown_bar = t
        for s, p in enumerate(self.pos):
            if p is not None:
                self.fill(t, s, 0.0, marks[s], BLOWN)

    # ---- execution ----------------------------------------------------------------------
    def fill_price(self, s: int, price: float, buy: bool) -> float:
        inst = self.insts[s]
        tick = inst.tick_size
        if buy:
            px = price * (1 + inst.slippage)
            return math.ceil(px / tick - GRID_TOL) * tick if tick > 0 else px
        px = price * (1 - inst.slippage)
        return math.floor(px / tick + GRID_TOL) * tick if tick > 0 else px

    def fill(self, t: int, s: int, new_qty: float, price: float, reason: int) -> None:
        """Market order taking symbol s to ``new_qty`` at ``price`` before slippage."""
        inst = self.insts[s]
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        delta = new_qty - old
        px = self.fill_price(s, price, delta > 0)
        fee = inst.taker * abs(delta) * px
        self.cash -= delta * px + fee
        self.fee_row[s] += fee
        self.slip_row[s] += delta * (px - price)
        # The part of the order that reduces the old position is the old trade's exit.
        reducing = min(abs(delta), abs(old)) if old * delta < 0 else 0.0
        fee_out = fee * reducing / abs(delta)
        if p is not None:
            p.fees += fee_out
            p.flow += old * px - fee_out
            self.close_trade(t, s, p, px, reason)
        if new_qty != 0:
            self.open_trade(t, s, new_qty, px, fee - fee_out)

    @staticmethod
    def max_notional(inst: Instrument) -> float:
        """The largest notional of the highest tier whose leverage allows the setting."""
        allowed = [b.cap for b in inst.brackets if b.max_leverage >= inst.max_leverage]
        return allowed[-1] if inst.brackets else math.inf

    @staticmethod
    def liquidation_level(inst: Instrument, qty: float, px: float) -> float:
        """Where margin + unrealized PnL meets the maintenance margin of the tier holding
        the notional at that price: each tier's candidate level, kept if its notional falls
        in that tier (NaN without margin rules or without a positive level)."""
        mmr, lev = inst.maintenance_margin_rate, inst.max_leverage
        if mmr is None:
            return NAN
        tiers = [(b.cap, b.mmr, b.maint_amount) for b in inst.brackets] or [(math.inf, mmr,
                                                                            0.0)]
        floor = 0.0
        for cap, rate, amount in tiers:
            # long: margin + qty (P - px) = qty P rate - amount; short: the mirror image
            if qty > 0:
                level = (px * (1 - 1 / lev) - amount / qty) / (1 - rate)
            else:
                level = (px * (1 + 1 / lev) + amount / -qty) / (1 + rate)
            notional = abs(qty) * level
            if floor * (1 - 1e-12) <= notional <= cap * (1 + 1e-12):
                return level if level > 0 else NAN
            floor = cap
        return NAN

    def open_trade(self, t: int, s: int, qty: float, px: float, fee: float) -> None:
        inst = self.insts[s]
        mmr, lev = inst.maintenance_margin_rate, inst.max_leverage
        margin = 0.0 if mmr is None else abs(qty) * px / lev
        liq = self.liquidation_level(inst, qty, px)
        if qty > 0:
            p = _Position(t, qty, px, liq, margin, px * (1 - self.sl), px * (1 + self.tp))
        else:
            p = _Position(t, qty, px, liq, margin, px * (1 + self.sl), px * (1 - self.tp))
        p.fees = fee
        p.flow -= fee
        self.pos[s] = p

    def liquidate(self, t: int, s: int, p: _Position) -> None:
        """Closed at the liquidation price; the trader loses the posted margin, no more: what
        is left of it there (the maintenance margin) pays the clearance fee, and the rest goes
        to the insurance fund."""
        inst = self.insts[s]
        left = p.margin + p.qty * (p.liq - p.entry)  # margin + unrealized PnL at the level
        left = min(max(left, 0.0), p.margin)
        clearance = min(inst.liquidation_fee_rate * abs(p.qty) * p.liq, left)
        back = p.qty * p.entry - p.margin  # = qty * liq - left: the position less its margin
        self.cash += back
        self.fee_row[s] += clearance
        self.liq_fee_row[s] += clearance
        self.insurance_row[s] += left - clearance
        p.fees += clearance
        p.insurance = left - clearance
        p.flow += back
        self.close_trade(t, s, p, p.liq, LIQUIDATION)

    def close_trade(self, t: int, s: int, p: _Position, px: float, reason: int) -> None:
        self.trades.append((s, p.bar, t, p.qty, p.entry, px, p.fees, p.funding, p.insurance,
                            p.flow, reason))
        self.pos[s] = None

    def trades_table(self):
        rows = list(self.trades)
        for s, p in enumerate(self.pos):
            if p is not None:
                mark = self.last_close[s]
                rows.append((s, p.bar, -1, p.qty, p.entry, mark, p.fees, p.funding,
                             p.insurance, p.flow + p.qty * mark, OPEN))
        cols = list(zip(*rows, strict=True)) if rows else [()] * 11
        sym, entry_bar, exit_bar, qty, entry, exit_, fees, fund, insurance, pnl, reason = (
            np.array(c) for c in cols)
        qty = qty.astype(np.float64)
        return trades_frame(self.symbols, sym.astype(np.int64), entry_bar.astype(np.int64),
                            exit_bar.astype(np.int64), np.sign(qty), np.abs(qty),
                            entry.astype(np.float64), exit_.astype(np.float64),
                            fees.astype(np.float64), fund.astype(np.float64),
                            insurance.astype(np.float64), pnl.astype(np.float64),
                            reason.astype(np.int64))
