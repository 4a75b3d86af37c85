"""Reference backtest loop: plain Python, bar by bar, symbol by symbol.

Same inputs, rules and ``Result`` as :func:`backtest_assets.engine.core.backtest` (the
array contract and every rule are documented there), written independently as the oracle
for the parity tests: no vectorization, no closed form, one position object per symbol.
Everything at bar t is resolved before bar t+1, in this order:

1. funding on the position held into the open (``cash -= qty * mark open * rate``);
2. open-time exits of positions held into the open: liquidation (mark open beyond the
   liquidation price: closed at that price), stop-loss and take-profit (open beyond the
   level: filled at the open), time stop (the position is ``time_stop`` bars old);
3. blown check on the equity at the open, then the daily loss cap's (a new UTC day resets
   its reference equity to this one);
4. orders decided at the close of t-1, all sized from the equity of step 3 (with
   ``long_sizing="cash"`` a buy is then capped by the cash left at that point); an order
   opening or adding to an isolated position must find its initial margin and its fee in
   that equity less the margin the other symbols' positions hold at that point, after the
   venue's bracket limit and the risk manager's refusals (in that order); with limit orders
   the order rests instead (its price set from the last close), and a working rest left by
   the participation cap is sent again;
4b. resting limit orders the bar trades through fill at their price (maker fee), sized
   like a market order at that price; those past their last bar expire;
5. intrabar exits of every position (new ones included): liquidation at the mark's
   extreme, then stop-loss, then take-profit; a liquidation takes the position's whole
   posted margin;
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
    ORDER_EVENTS,
    REJECT_REASONS,
    Inputs,
    Result,
    check_inputs,
    check_sizing,
    trades_frame,
)
from backtest_assets.engine.venue import ExitRules, Instrument, LimitOrders, RiskLimits

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
                       risk: RiskLimits | None = None, day: np.ndarray | None = None,
                       mark_open: np.ndarray | None = None,
                       mark_high: np.ndarray | None = None,
                       mark_low: np.ndarray | None = None, volume: np.ndarray | None = None,
                       limits: LimitOrders | None = None) -> Result:
    """Simulate bar by bar in plain Python (the parity oracle of the fast engine).

    Parameters and result as :func:`backtest_assets.engine.core.backtest` (no ``path``).
    """
    inp = check_inputs(open_, high, low, close, target, instruments, funding=funding,
                       exits=exits, init_cash=init_cash, risk=risk, day=day,
                       mark_open=mark_open, mark_high=mark_high, mark_low=mark_low,
                       volume=volume, limits=limits)
    check_sizing(long_sizing, inp)
    return _Loop(inp, cash_capped_buys=long_sizing == "cash").run()


class _Resting:
    """A limit order waiting in the book: its price, side and last valid bar."""

    __slots__ = ("buy", "last_bar", "price")

    def __init__(self, price: float, buy: bool, last_bar: int) -> None:
        self.price, self.buy, self.last_bar = price, buy, last_bar


class _Loop:
    def __init__(self, inp: Inputs, cash_capped_buys: bool = False) -> None:
        self.cash_capped_buys = cash_capped_buys
        self.T, self.S = inp.open.shape
        rows = self.rows
        self.o, self.h, self.lo, self.c = (rows(a) for a in (inp.open, inp.high, inp.low,
                                                             inp.close))
        self.tgt = rows(inp.target)
        self.mo, self.mh, self.ml = (rows(a) for a in inp.marks)
        self.vol = None if inp.volume is None else rows(inp.volume)
        self.bar_volume = [NAN] * self.S
        self.limits = inp.limits
        self.resting: list[_Resting | None] = [None] * self.S
        self.working = [False] * self.S  # a market order's rest, cut by participation
        self.orders = dict.fromkeys(ORDER_EVENTS, 0)
        self.rate = None if inp.funding is None else rows(inp.funding)
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
        self.weight_before = [0.0] * self.S  # the target the last change replaced
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

    @staticmethod
    def rows(a: np.ndarray) -> list[list[float]]:
        """A (T, S) input as the rows this loop indexes ``[t][s]`` (Python floats)."""
        return a.tolist()

    # ---- one bar ------------------------------------------------------------------------
    def run(self) -> Result:
        out = {k: [] for k in ("equity", "cash", "position", "exposure", "fees", "slippage",
                               "funding", "liquidation_fees", "insurance")}
        for t in range(self.T):
            for k, v in self.step(t).items():
                out[k].append(v)
        arrays = {k: np.array(v, dtype=np.float64) for k, v in out.items()}
        return self.result(arrays)

    def step(self, t: int) -> dict:
        """Bar t from fresh per-bar rows, and what the result holds of it at its close."""
        self.fee_row, self.slip_row, self.fund_row = [0.0] * self.S, [0.0] * self.S, \
            [0.0] * self.S
        self.liq_fee_row, self.insurance_row = [0.0] * self.S, [0.0] * self.S
        self.bar(t)
        held = [p.qty if p is not None else 0.0 for p in self.pos]
        equity = self.equity(self.last_close)
        gross = sum(abs(q * m) for q, m in zip(held, self.last_close, strict=True) if q)
        return {"equity": equity, "cash": self.cash, "position": held,
                "exposure": gross / equity if gross else 0.0, "fees": self.fee_row,
                "slippage": self.slip_row, "funding": self.fund_row,
                "liquidation_fees": self.liq_fee_row, "insurance": self.insurance_row}

    def result(self, arrays: dict) -> Result:
        """The run's Result from its per-bar arrays."""
        self.orders["limit_open"] = self.open_limits()
        return Result(**arrays, trades=self.trades_table(), rejected=self.rejected,
                      blown_bar=self.blown_bar, path="reference", orders=self.orders)

    def open_limits(self) -> int:
        """Limit orders still resting after the last bar."""
        return sum(r is not None for r in self.resting)

    def bar(self, t: int) -> None:
        o = self.o[t]
        self.bar_volume = self.vol[t] if self.vol is not None else [NAN] * self.S
        if self.rate is not None:
            self.pay_funding(t, self.mo[t])
        for s in range(self.S):
            p = self.pos[s]
            if p is not None and not math.isnan(o[s]):
                self.open_exit(t, s, p, o[s], self.mo[t][s])
        marks = [o[s] if not math.isnan(o[s]) else self.last_close[s] for s in range(self.S)]
        equity = self.equity(marks)
        if self.blown_bar is None and equity <= 0:
            self.blow(t, marks)
        self.daily_loss_check(t, equity)
        self.send_orders(t, o, equity, marks)
        self.match_limits(t, o, equity, marks)
        for s in range(self.S):
            p = self.pos[s]
            if p is not None and not math.isnan(o[s]):
                self.intrabar_exit(t, s, p, o[s], self.h[t][s], self.lo[t][s],
                                   self.mh[t][s], self.ml[t][s])
        self.after_intrabar(t)
        self.last_close = [c if not math.isnan(c) else last
                           for c, last in zip(self.c[t], self.last_close, strict=True)]
        if self.blown_bar is None and self.equity(self.last_close) <= 0:
            self.blow(t, self.last_close)
        cap = self.risk.daily_loss_cap
        if cap is not None and self.equity(self.last_close) <= self.day_equity * (1 - cap):
            self.halted = True
        self.decide(t)

    def after_intrabar(self, t: int) -> None:
        """Nothing here; the strategy event loop (backtest_assets.sim.loop) checks its
        strategy's stop and take-profit orders at this point of the bar."""

    def send_orders(self, t: int, o: list[float], equity: float, marks: list[float]) -> None:
        """The orders decided at the close of t-1 (each replaces a resting limit), and the
        rests the participation cap left working."""
        for s in range(self.S):
            if self.pending[s]:
                self.pending[s] = False
                if self.resting[s] is not None:  # the new target replaces it
                    self.resting[s] = None
                    self.orders["limit_cancelled"] += 1
                self.working[s] = False
                if self.blown_bar is not None:
                    self.rejected["blown"] += 1
                elif self.as_limit(s):
                    self.place_limit(t, s, o[s], equity)
                else:
                    self.working[s] = self.order(t, s, o[s], equity, marks) == "wait"
            elif self.working[s] and not math.isnan(o[s]):
                self.working[s] = self.order(t, s, o[s], equity, marks, first=False) == "wait"

    def match_limits(self, t: int, o: list[float], equity: float, marks: list[float]) -> None:
        """Resting limits this bar trades through fill; those at their last bar expire."""
        for s in range(self.S):
            order = self.resting[s]
            if order is None:
                continue
            if not math.isnan(o[s]) and (self.lo[t][s] < order.price if order.buy
                                         else self.h[t][s] > order.price):
                outcome = self.order(t, s, o[s], equity, marks, first=False, limit=order)
                if outcome != "wait":
                    self.resting[s] = None
                    if outcome in ("done", "cancel"):
                        key = "limit_filled" if outcome == "done" else "limit_cancelled"
                        self.orders[key] += 1
            if self.resting[s] is not None and t >= order.last_bar:
                self.resting[s] = None
                self.orders["limit_expired"] += 1

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

    def pay_funding(self, t: int, mark: list[float]) -> None:
        for s, rate in enumerate(self.rate[t]):
            p = self.pos[s]
            if p is not None and not math.isnan(rate):
                pay = p.qty * mark[s] * rate
                self.cash -= pay
                self.fund_row[s] += pay
                p.funding += pay
                p.flow -= pay

    def decide(self, t: int) -> None:
        """Targets decided at the close of t: a change is an order at the next open."""
        for s, w in enumerate(self.tgt[t]):
            if not math.isnan(w) and w != self.weight[s]:
                self.weight_before[s], self.weight[s] = self.weight[s], w
                self.pending[s] = True

    def equity(self, marks: list[float]) -> float:
        return self.cash + sum(p.qty * marks[s] for s, p in enumerate(self.pos)
                               if p is not None)

    # ---- decisions ----------------------------------------------------------------------
    def as_limit(self, s: int) -> bool:
        """Whether this symbol's new order rests as a limit order: exits (a target of 0, or
        smaller on the same side) and entries (the rest) as the limit rule says."""
        if self.limits is None:
            return False
        w, before = self.weight[s], self.weight_before[s]
        reduces = w == 0 or (w * before > 0 and abs(w) < abs(before))
        return self.limits.exits if reduces else self.limits.entries

    def lots(self, inst: Instrument, qty: float) -> float:
        if inst.lot_size > 0:
            return math.trunc(qty / inst.lot_size + math.copysign(GRID_TOL, qty)) * inst.lot_size
        return qty

    def place_limit(self, t: int, s: int, o: float, equity: float) -> None:
        """Rest a limit order on the side the target asks for at this open, at the last
        close (this open if none) moved by the offset away from the market, on the grid."""
        inst, w = self.insts[s], self.weight[s]
        qty = self.lots(inst, w * equity / o)
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        if qty == old:
            if w != 0:
                self.rejected["zero_qty"] += 1
            return
        ref = o if math.isnan(self.last_close[s]) else self.last_close[s]
        offset, tick = self.limits.offset_bps / 1e4, inst.tick_size
        buy = qty > old
        if buy:
            price = ref * (1 - offset)
            price = math.floor(price / tick + GRID_TOL) * tick if tick > 0 else price
        else:
            price = ref * (1 + offset)
            price = math.ceil(price / tick - GRID_TOL) * tick if tick > 0 else price
        self.resting[s] = _Resting(price, buy, t + self.limits.valid_bars - 1)
        self.orders["limit_placed"] += 1

    def order(self, t: int, s: int, o: float, equity: float, marks: list[float], *,
              first: bool = True, limit: _Resting | None = None) -> str:
        """Send symbol s toward its target: a market order at the open (``first``: a new
        one, else the rest of one the participation cap cut), or the resting ``limit`` at its
        price. Returns "done", "wait" (a rest remains), "refused" or "cancel" (a limit whose
        side no longer moves the position toward the target)."""
        w = self.weight[s]
        inst = self.insts[s]
        qty = self.lots(inst, w * equity / (limit.price if limit is not None else o))
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        if limit is not None:
            if qty == old or (qty > old) != limit.buy:
                return "cancel"
        elif self.cash_capped_buys and qty > old:
            qty = min(qty, old + self.cash_room(s, o))
        if qty == old:
            if first and w != 0:
                self.rejected["zero_qty"] += 1
                return "refused"
            return "done"
        room = self.room(s)
        cut = abs(qty - old) > room
        if cut:  # the participation cap: this share of the bar's volume, the rest waits
            if room <= 0:
                return "wait"
            qty = old + math.copysign(room, qty - old)
        if limit is not None:
            price, fee_rate = limit.price, inst.maker
        elif inst.impact_coef > 0 and not self.bar_volume[s] > 0:
            self.rejected["no_volume"] += 1
            return "refused"
        else:
            price, fee_rate = self.fill_price(s, o, qty > old, abs(qty - old)), inst.taker
        refusal = self.refusal(s, qty, old, price, fee_rate, equity, marks)
        if refusal is not None:
            self.rejected[refusal] += 1
            return "refused"
        maker = limit is not None
        self.fill(t, s, qty, limit.price if maker else o, SIGNAL, maker=maker)
        if cut:
            self.orders["partial_fills"] += 1
            return "wait"
        return "done"

    def cash_room(self, s: int, o: float) -> float:
        """vectorbt's targetpercent: a buy (a short-to-long reversal included, its cash
        holding the short's proceeds) spends at most the cash it finds."""
        inst = self.insts[s]
        most = max(self.cash, 0.0) / (self.fill_price(s, o, True) * (1 + inst.taker))
        if inst.lot_size > 0:
            most = math.floor(most / inst.lot_size) * inst.lot_size
        return most

    def room(self, s: int) -> float:
        """The most units the participation cap lets an order fill in this bar."""
        inst, volume = self.insts[s], self.bar_volume[s]
        if inst.participation is None:
            return math.inf
        room = inst.participation * volume if volume > 0 else 0.0
        if inst.lot_size > 0:
            room = math.floor(room / inst.lot_size + GRID_TOL) * inst.lot_size
        return room

    def refusal(self, s: int, qty: float, old: float, price: float, fee_rate: float,
                equity: float, marks: list[float]) -> str | None:
        """Why an order taking symbol s from ``old`` to ``qty`` at ``price`` is refused:
        the venue's min notional and brackets, the risk manager, then the margin."""
        inst = self.insts[s]
        if qty != 0 and abs(qty - old) * price < inst.min_notional:
            return "min_notional"
        if not (qty != 0 and (qty * old <= 0 or abs(qty) > abs(old))):
            return None  # only reduces: never refused for what follows
        if abs(qty) * price > self.max_notional(inst):
            # the venue's brackets allow no position this large at the leverage setting
            return "leverage_bracket"
        refusal = self.risk_refusal(s, qty, price, equity, marks)
        if refusal is not None:
            return refusal
        if inst.maintenance_margin_rate is not None:
            # Isolated margin: the new position's initial margin and the order's fee must be
            # available in the equity this open sizes from, less what the other symbols'
            # positions hold now.
            others = sum(p.margin for i, p in enumerate(self.pos) if p is not None and i != s)
            cost = abs(qty) * price / inst.max_leverage + fee_rate * abs(qty - old) * price
            if cost > equity - others + MARGIN_TOL * equity:
                return "insufficient_margin"
        return None

    def open_exit(self, t: int, s: int, p: _Position, o: float, mark: float) -> None:
        # NaN levels (rule off) compare False, so no separate "is set" test is needed.
        long = p.qty > 0
        if mark <= p.liq if long else mark >= p.liq:
            self.liquidate(t, s, p)
        elif o <= p.stop if long else o >= p.stop:
            self.fill(t, s, 0.0, o, STOP_LOSS)
        elif o >= p.take if long else o <= p.take:
            self.fill(t, s, 0.0, o, TAKE_PROFIT)
        elif self.time_stop is not None and t - p.bar >= self.time_stop:
            self.fill(t, s, 0.0, o, TIME_STOP)

    def intrabar_exit(self, t: int, s: int, p: _Position, o: float, h: float,
                      lo: float, mark_high: float, mark_low: float) -> None:
        if p.qty > 0:
            if mark_low <= p.liq:
                self.liquidate(t, s, p)
            elif lo <= p.stop:
                self.fill(t, s, 0.0, min(o, p.stop), STOP_LOSS)
            elif h >= p.take:
                self.fill(t, s, 0.0, max(o, p.take), TAKE_PROFIT)
        elif mark_high >= p.liq:
            self.liquidate(t, s, p)
        elif h >= p.stop:
            self.fill(t, s, 0.0, max(o, p.stop), STOP_LOSS)
        elif lo <= p.take:
            self.fill(t, s, 0.0, min(o, p.take), TAKE_PROFIT)

    def blow(self, t: int, marks: list[float]) -> None:
        self.blown_bar = t
        for s in range(self.S):  # nothing may fill afterwards
            if self.resting[s] is not None:
                self.resting[s] = None
                self.orders["limit_cancelled"] += 1
            self.working[s] = False
        for s, p in enumerate(self.pos):
            if p is not None:
                self.fill(t, s, 0.0, marks[s], BLOWN)

    # ---- execution ----------------------------------------------------------------------
    def fill_price(self, s: int, price: float, buy: bool, units: float = 0.0) -> float:
        """A market fill's price: slippage (and the square-root impact of ``units`` on the
        bar's volume, the full coefficient on a bar without volume) against the trader."""
        inst = self.insts[s]
        tick = inst.tick_size
        slip = inst.slippage
        if inst.impact_coef > 0:
            volume = self.bar_volume[s]
            slip += inst.impact_coef * (math.sqrt(units / volume) if volume > 0 else 1.0)
        if buy:
            px = price * (1 + slip)
            return math.ceil(px / tick - GRID_TOL) * tick if tick > 0 else px
        px = price * (1 - slip)
        return math.floor(px / tick + GRID_TOL) * tick if tick > 0 else px

    def fill(self, t: int, s: int, new_qty: float, price: float, reason: int,
             maker: bool = False) -> None:
        """Order taking symbol s to ``new_qty``: market at ``price`` before slippage, or a
        limit (``maker``) at ``price`` with the maker fee."""
        inst = self.insts[s]
        p = self.pos[s]
        old = p.qty if p is not None else 0.0
        delta = new_qty - old
        if maker:
            px, fee = price, inst.maker * abs(delta) * price
        else:
            px = self.fill_price(s, price, delta > 0, abs(delta))
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
        if inst.maintenance_at == "entry":
            # Bybit: MM = |qty| px rate - amount in the entry value's tier; the level is
            # where margin + unrealized PnL = MM: px -+ (IM - MM) / |qty|
            notional = abs(qty) * px
            k = next((i for i, (cap, _, _) in enumerate(tiers) if notional <= cap * (1 + 1e-12)),
                     None)
            if k is None:
                return NAN
            _, rate, amount = tiers[k]
            margin_less_mm = notional / lev - (notional * rate - amount)
            level = px - math.copysign(margin_less_mm / abs(qty), qty)
            return level if level > 0 else NAN
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
        if reason != SIGNAL:  # an exit: the symbol's orders go with it, flat until a new target
            if self.resting[s] is not None:
                self.resting[s] = None
                self.orders["limit_cancelled"] += 1
            self.working[s] = False

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
