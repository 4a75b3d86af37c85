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

Blind decisions. A strategy whose decisions cannot see the venue (it returns only
``Target`` intents, never reads the account ``on_bar`` is handed, has no ``on_fill`` and
starts with no intent) decides the same targets whatever the fills were, so the venue's
steps can wait: on a copy of it, ``on_bar`` is called at every bar's close with an account
that refuses to be read, its targets are collected, and the compiled engine runs them (the
engine equals this loop to 1e-9 on every bar and trade: tests/unit/test_sim_loop.py); the
strategy then takes the copy's state. The first read of the account, or any other intent,
abandons the copy and the run starts again on the loop, so a strategy that looks at its
account or orders by quantity is never run blind. ``Run.plan`` says which ran
(``"collected"`` or ``"loop"``); a collected run's ``fills`` are replayed on the loop when
first asked for. ``skip_quiet=False`` always runs the loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np

from backtest_assets.engine.core import (
    EXIT_REASONS,
    Result,
    check_inputs,
    check_target,
    forward_fill,
    simulate,
)
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
# The quiet-bar scan looks this many bars ahead first, then twice as far each time.
SCAN = 256


class Run:
    """A strategy's run: the engine's :class:`Result` (equity, trades, costs, refusals),
    every fill in the order it happened, and the ``plan`` that ran it (module docstring,
    Blind decisions): ``"loop"`` or ``"collected"``."""

    __slots__ = ("_fills", "_replay", "plan", "result")

    def __init__(self, result: Result, fills: tuple[Fill, ...] | None = None, *,
                 plan: str = "loop", replay=None) -> None:
        self.result, self.plan, self._fills, self._replay = result, plan, fills, replay

    @property
    def fills(self) -> tuple[Fill, ...]:
        """Every fill, in order (a collected run replays its targets on the loop the first
        time they are asked for)."""
        if self._fills is None:
            self._fills, self._replay = self._replay(), None
        return self._fills


class _NeedsVenue(BaseException):
    """A collected run's strategy read the account."""  # that the strategy cannot catch it)


class _Blind:
    """The account a collected run hands ``on_bar``: reading it needs the venue."""

    __slots__ = ()

    def __getattr__(self, name: str):
        raise _NeedsVenue(name)


def run_strategy(strategy: Strategy, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, instruments: Instrument | Sequence[Instrument], *,
                 ts: np.ndarray | None = None, volume: np.ndarray | None = None,
                 features: Mapping[str, np.ndarray] | None = None,
                 funding: np.ndarray | None = None, exits: ExitRules | None = None,
                 init_cash: float = 1_000_000.0, risk: RiskLimits | None = None,
                 day: np.ndarray | None = None, mark_open: np.ndarray | None = None,
                 mark_high: np.ndarray | None = None, mark_low: np.ndarray | None = None,
                 limits: LimitOrders | None = None, skip_quiet: bool = True,
                 history: int = 0) -> Run:
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
    skip_quiet : bool
        Run the venue's steps only on bars where one can change something (module
        docstring, Quiet bars); False runs them on every bar (the same result, slower: the
        tests compare the two).
    history : int
        The first ``history`` bars of every per-bar array (bars, ``ts``, features, funding,
        marks, volume, ``day``) are the past before the run: the strategy may read them
        (``bar.index`` counts from the first of them) but nothing trades there and the
        result covers the bars after them only. A walk-forward window reads the bars before
        it this way, as a live strategy would.
    Other parameters
        As for ``backtest``.

    Raises
    ------
    ValueError
        Bad input (as ``backtest``), or an intent for a symbol not in the run.
    """
    inp, view, history = prepare(open_, high, low, close, instruments, ts=ts, volume=volume,
                                 features=features, funding=funding, exits=exits,
                                 init_cash=init_cash, risk=risk, day=day,
                                 mark_open=mark_open, mark_high=mark_high,
                                 mark_low=mark_low, limits=limits, history=history)
    if skip_quiet:
        collected = _collected(strategy, inp, view, history)
        if collected is not None:
            return collected
    loop = _StrategyLoop(inp, strategy, view, history)
    result = loop.run_quiet() if skip_quiet else loop.run()
    return Run(result, tuple(loop.fills))


def _collected(strategy: Strategy, inp, view: BarView, history: int) -> Run | None:
    """The run of a strategy whose decisions cannot see the venue (module docstring, Blind
    decisions), or None when this one can: on a copy, ``on_bar`` is called on every bar with
    an account it may not read and its targets are collected; the engine then runs them. On
    success the strategy takes the copy's state, as if it had run."""
    if type(strategy).on_fill is not Strategy.on_fill or not hasattr(strategy, "__dict__"):
        return None
    try:
        trial = copy.deepcopy(strategy)
    except Exception:
        return None
    index = {inst.symbol: k for k, inst in enumerate(inp.instruments)}
    target = np.full(inp.open.shape, np.nan)
    try:
        if as_intents(trial.on_start(tuple(index))) or not _collect(
                trial, view, history, index, target):
            return None
    except _NeedsVenue:
        return None
    target[0, np.isnan(target[0])] = 0.0  # flat from the start, as the loop
    try:
        weights, changed = check_target(target, inp)
    except ValueError:
        return None  # the loop raises its own error at the bar
    result = simulate(inp._replace(target=target, weights=weights, changed=changed))
    strategy.__dict__.update(trial.__dict__)

    def replay() -> tuple[Fill, ...]:
        loop = _StrategyLoop(inp, _Replay(target, history), view, history)
        loop.run_quiet()
        return tuple(loop.fills)

    return Run(result, plan="collected", replay=replay)


def _collect(trial: Strategy, view: BarView, history: int, index: dict[str, int],
             target: np.ndarray) -> bool:
    """``trial.on_bar`` at every bar's close, its targets recorded into ``target``; False
    when a bar returns what a collected run cannot take (:func:`_take`)."""
    weight = [0.0] * target.shape[1]
    blind = _Blind()
    on_bar = trial.on_bar
    for t in range(target.shape[0]):
        view.t = t + history
        got = on_bar(view, blind)
        if got is None:
            continue
        if type(got) is Target:  # the common case, kept cheap
            s = index.get(got.symbol)
            w = got.weight
            if s is None or w - w != 0:  # unknown symbol, or not finite
                return False
            if w != weight[s]:
                weight[s] = target[t, s] = w
        elif not _take(as_intents(got), t, index, weight, target):
            return False
    return True


def _take(intents, t: int, index: dict[str, int], weight: list[float],
          target: np.ndarray) -> bool:
    """Record bar t's targets into ``target`` (changes only); False when the bar holds
    anything a collected run cannot take: an order or a cancel, an unknown symbol or a
    non-finite weight (the loop refuses those, naming the bar), two targets for a symbol."""
    seen = set()
    for x in intents:
        s = index.get(x.symbol) if type(x) is Target else None
        if s is None or s in seen or not math.isfinite(x.weight):
            return False
        seen.add(s)
        if x.weight != weight[s]:
            weight[s] = target[t, s] = x.weight
    return True


class _Replay(Strategy):
    """A collected run's targets, bar by bar (its fills, on demand)."""

    def __init__(self, target: np.ndarray, history: int) -> None:
        super().__init__()
        self.target, self.history = target, history

    def on_bar(self, bar, account):
        row = self.target[bar.index - self.history]
        return [Target(s, float(w)) for s, w in zip(bar.symbols, row, strict=True)
                if w == w]


def prepare(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
            instruments: Instrument | Sequence[Instrument], *, ts: np.ndarray | None = None,
            volume: np.ndarray | None = None,
            features: Mapping[str, np.ndarray] | None = None,
            funding: np.ndarray | None = None, exits: ExitRules | None = None,
            init_cash: float = 1_000_000.0, risk: RiskLimits | None = None,
            day: np.ndarray | None = None, mark_open: np.ndarray | None = None,
            mark_high: np.ndarray | None = None, mark_low: np.ndarray | None = None,
            limits: LimitOrders | None = None, history: int = 0) -> tuple:
    """The checked inputs of a strategy run, the strategy's view and its history
    (:func:`run_strategy`; shared with :class:`backtest_assets.sim.live.SimAdapter`)."""
    o = np.asarray(open_, dtype=np.float64)
    if history and not 0 < history < len(o):
        raise ValueError(f"history: {history} bars of {len(o)}: the run needs at least one "
                         "bar after the history")
    past = {"open": o, "high": high, "low": low, "close": close, "volume": volume}
    if history:
        def cut(a):
            return None if a is None else np.asarray(a)[history:]
        open_, high, low, close, volume, funding, day, mark_open, mark_high, mark_low = (
            cut(a) for a in (open_, high, low, close, volume, funding, day, mark_open,
                             mark_high, mark_low))
        o = o[history:]
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
    if history:  # the same columns with the past in front (as the inputs are (T, S))
        columns = {k: np.vstack([np.asarray(past[k], dtype=np.float64).reshape(
                       history + shape[0], -1)[:history], v]) for k, v in columns.items()}
    view = BarView(np.arange(history + shape[0]) if ts is None else np.asarray(ts),
                   [i.symbol for i in inp.instruments], columns, features)
    return inp, view, history


class _Rows:
    """Rows of a (T, S) array as lists, made when a bar asks for its row: a run that skips
    quiet bars converts only the rows of the bars it steps through."""

    __slots__ = ("_a", "_cache")

    def __init__(self, a: np.ndarray) -> None:
        self._a, self._cache = a, {}

    def __getitem__(self, t: int) -> list[float]:
        row = self._cache.get(t)
        if row is None:
            row = self._cache[t] = self._a[t].tolist()
        return row

    def __len__(self) -> int:
        return len(self._a)


class _StrategyLoop(_Loop):
    """The reference loop with the strategy deciding at each close (module docstring)."""

    rows = _Rows

    def __init__(self, inp, strategy: Strategy, view: BarView, history: int = 0) -> None:
        super().__init__(inp)
        self.strategy, self.view, self.history = strategy, view, history
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.book: list[tuple[int, object]] = []  # (first bar it acts, order), given order
        self.fills: list[Fill] = []
        self.context: tuple[str, int] | None = None  # the strategy order being filled
        self.t = 0
        self.open_equity = NAN_EQUITY
        self.later: list[Target] = []  # targets from on_fill: ordered at the next open
        self.live = _LiveAccount(self)
        self.hears_fills = type(strategy).on_fill is not Strategy.on_fill
        self.apply(strategy.on_start(tuple(self.symbols)), 0)

    def open_limits(self) -> int:
        return super().open_limits() + sum(isinstance(o, Limit) for _, o in self.book)

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
        self.at_close(t)
        self.apply(self.strategy.on_bar(self.view, self.live), t + 1)

    def at_close(self, t: int) -> None:
        """The view moves to bar t's close; targets ``on_fill`` returned are ordered."""
        self.view.t, self.live._t = t + self.history, t
        later, self.later = self.later, []
        self.apply(later, t + 1)

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
            self.check(intent)
            if isinstance(intent, Target):
                if from_fill:
                    self.later.append(intent)
                    continue
                s = self.index[intent.symbol]
                if intent.weight != self.weight[s]:
                    self.weight_before[s], self.weight[s] = self.weight[s], intent.weight
                    self.pending[s] = True
                    self.check_leverage(s)
                continue
            if isinstance(intent, Limit):
                self.orders["limit_placed"] += 1
            at_once = not from_fill or isinstance(intent, (Stop, TakeProfit))
            self.book.append((start if at_once else start + 1, intent))

    def check(self, intent) -> None:
        """Refuse an intent no venue would take: an unknown symbol, a non-finite weight or
        quantity, a price or trigger that is not a positive number."""
        if intent.symbol not in self.index:
            raise ValueError(f"bar {self.t}: intent {intent!r}: symbol {intent.symbol!r} is "
                             f"not in the run {self.symbols}")
        # field -> (its value, the rule it must meet)
        rules = {"weight": (lambda v: True, "a finite number"),
                 "qty": (lambda v: v != 0, "a non-zero finite number"),
                 "price": (lambda v: v > 0, "a positive finite number"),
                 "trigger": (lambda v: v > 0, "a positive finite number")}
        for name, (rule, words) in rules.items():
            v = getattr(intent, name, None)
            if v is not None and not (math.isfinite(v) and rule(v)):
                raise ValueError(f"bar {self.t}: intent {intent!r}: {name} {v} is not {words}")
        if isinstance(intent, Limit) and intent.valid_bars < 1:
            raise ValueError(f"bar {self.t}: intent {intent!r}: valid_bars must be >= 1")

    def check_leverage(self, s: int) -> None:
        """The engine's rule for targets: the gross of the targets in force may not exceed
        the leverage setting of a symbol given a non-zero one."""
        gross = sum(abs(w) for w in self.weight)
        for i, w in enumerate(self.weight):
            cap = self.insts[i].max_leverage
            if w != 0 and gross > cap * (1 + 1e-12):
                raise ValueError(f"{self.symbols[s]} bar {self.t}: target gross leverage "
                                 f"{gross:g} exceeds the max leverage {cap:g} of "
                                 f"{self.symbols[i]}")

    # ---- quiet bars ----------------------------------------------------------------------
    def run_quiet(self) -> Result:
        """As :meth:`run`, with the venue's steps only on the bars where one of them can
        change something: a funding print on a held symbol, a held position's exit or
        liquidation level reached, an equity at an open or a close low enough for the blown
        or daily-loss check, a new UTC day under a daily cap, or any order of the run (a
        pending target, a working rest, a resting limit, the strategy's book). On the other
        bars only the close moves (the equity with it) and ``on_bar`` is called; the scan
        that finds them compares the same prices with the same levels, and leans to a full
        bar wherever an equity sits within 1e-9 of a threshold."""
        t_n, s_n = self.T, self.S
        o = self.o._a
        self.closes = forward_fill(self.c._a, np.nan)
        before = np.vstack([np.full((1, s_n), np.nan), self.closes[:-1]])
        self.open_marks_all = np.where(np.isnan(o), before, o)
        arr = {k: getattr(self, k)._a for k in ("o", "h", "lo", "mo", "mh", "ml")}
        with np.errstate(invalid="ignore"):  # NaN where a bar has no price: never a hit
            self.lowest = np.fmin.reduce([arr["o"], arr["lo"], arr["mo"], arr["ml"],
                                          self.closes, self.open_marks_all])
            self.highest = np.fmax.reduce([arr["o"], arr["h"], arr["mo"], arr["mh"],
                                           self.closes, self.open_marks_all])
        self.reach, self.more = SCAN, False
        self.fund_bars = ([np.flatnonzero(~np.isnan(col)) for col in self.rate._a.T]
                          if self.rate is not None else None)
        days = np.asarray(self.days) if self.days is not None else None
        self.new_days = (np.flatnonzero(np.diff(days) != 0) + 1) if days is not None else None
        out = {k: np.zeros(t_n) for k in ("equity", "cash", "exposure")}
        per = {k: np.zeros((t_n, s_n)) for k in ("position", "fees", "slippage", "funding",
                                                  "liquidation_fees", "insurance")}
        full = np.zeros(t_n, dtype=bool)
        live = self.live
        on_bar, view, weight, index = self.strategy.on_bar, self.view, self.weight, self.index
        shift = self.history
        quiet_until, busy = 0, True
        for t in range(t_n):
            if t >= quiet_until and self.more and not busy:
                # the last look ahead ended quiet: look again, twice as far
                self.reach = min(self.reach * 2, 1 << 16)
                quiet_until = self.next_event(t)
            if t >= quiet_until or busy:
                if t < quiet_until:  # an order cut the quiet stretch short: look less far
                    self.reach = max(SCAN // 8, self.reach // 2)
                self.last_close = before[t].tolist()
                for k, v in self.step(t).items():
                    (out if k in out else per)[k][t] = v
                full[t] = True
                quiet_until, busy = self.next_event(t + 1), self.busy()
                continue
            view.t, live._t = t + shift, t
            got = on_bar(view, live)
            if got is None:
                continue
            if type(got) is Target and got.symbol in index and got.weight == weight[
                    index[got.symbol]]:
                continue  # the target in force: nothing to order
            self.apply(got, t + 1)
            busy = self.busy()
        self._fill_quiet(full, out, per)
        self.last_close = self.closes[-1].tolist()  # open trades are marked at the last close
        return self.result({**out, **per})

    def busy(self) -> bool:
        """Whether some order of the run may act at the next bar."""
        return (bool(self.book) or any(self.pending) or any(self.working)
                or self.resting.count(None) != self.S)

    def _fill_quiet(self, full: np.ndarray, out: dict, per: dict) -> None:
        """Cash and positions of a quiet bar are those of the full bar before it; its equity
        and exposure follow the closes."""
        quiet = ~full
        if not quiet.any():
            return
        last = np.maximum.accumulate(np.where(full, np.arange(self.T), 0))[quiet]
        pos = per["position"][last]
        per["position"][quiet] = pos
        out["cash"][quiet] = out["cash"][last]
        marks = np.nan_to_num(self.closes[quiet])
        held = pos * marks
        equity = out["cash"][quiet] + held.sum(axis=1)
        gross = np.abs(held).sum(axis=1)
        out["equity"][quiet] = equity
        out["exposure"][quiet] = np.divide(gross, equity, out=np.zeros_like(gross),
                                           where=gross != 0)

    def next_event(self, t0: int) -> int:
        """The first bar from ``t0`` where a venue step may change something (run_quiet),
        looking at most ``self.reach`` bars ahead: past that, ``self.more`` says the answer
        is only where the look stopped (the loop looks again from there)."""
        t_n = self.T
        self.more = False
        if t0 >= t_n:
            return t_n
        first = t_n
        held = [s for s, p in enumerate(self.pos) if p is not None]
        if self.fund_bars is not None:
            for s in held:
                bars = self.fund_bars[s]
                k = np.searchsorted(bars, t0)
                if k < len(bars):
                    first = min(first, int(bars[k]))
        capped = self.risk.daily_loss_cap is not None
        if capped:
            k = np.searchsorted(self.new_days, t0)
            if k < len(self.new_days):
                first = min(first, int(self.new_days[k]))
        if self.time_stop is not None:
            for s in held:
                first = min(first, max(t0, self.pos[s].bar + self.time_stop))
        if not held or first == t0:
            return first
        end = min(first, t0 + self.reach)
        hit = self._scan(held, t0, end, capped)
        if hit is not None:
            return hit
        self.more = end < first
        return end

    def _scan(self, held: list[int], a: int, b: int, capped: bool) -> int | None:
        """The first bar in [a, b) where a held position's exit or liquidation level is
        reached or the equity nears the blown or daily-loss threshold (None if none): per
        symbol, the bar's lowest and highest of open, low, close, mark open and mark low
        (high) against the levels; one symbol's equity thresholds are price levels too, and
        several symbols' equity is summed."""
        scale = 1e-9 * max(abs(self.cash), 1.0)
        floors = []  # equity levels that make a bar full: blown, and the daily cap
        if self.blown_bar is None:
            floors.append(scale)
        if capped and not self.halted:
            floors.append(self.day_equity * (1 - self.risk.daily_loss_cap) + scale)
        one = len(held) == 1
        hit = None
        for s in held:
            p = self.pos[s]
            down = [x for x in ((p.liq, p.stop) if p.qty > 0 else (p.take,)) if x == x]
            up = [x for x in ((p.take,) if p.qty > 0 else (p.liq, p.stop)) if x == x]
            if one and floors:  # equity = cash + qty x price reaches a floor
                level = (max(floors) - self.cash) / p.qty
                (down if p.qty > 0 else up).append(level)
            if down:
                cond = self.lowest[a:b, s] <= max(down)
                hit = cond if hit is None else hit | cond
            if up:
                cond = self.highest[a:b, s] >= min(up)
                hit = cond if hit is None else hit | cond
        if not one and floors:
            value = np.full(b - a, self.cash)
            value_open = value.copy()
            for s in held:
                value += self.pos[s].qty * self.closes[a:b, s]
                value_open += self.pos[s].qty * self.open_marks_all[a:b, s]
            cond = (value <= max(floors)) | (value_open <= max(floors))
            hit = cond if hit is None else hit | cond
        if hit is None:
            return None
        k = np.flatnonzero(hit)
        return a + int(k[0]) if k.size else None

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
        if self.hears_fills:
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
        qty = self.lots(inst, order.qty)
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


class _LiveAccount:
    """The account as ``on_bar`` sees it on a quiet bar: read from the loop when asked
    (valid during the call)."""

    __slots__ = ("_loop", "_t")

    def __init__(self, loop: _StrategyLoop) -> None:
        self._loop, self._t = loop, 0

    @property
    def cash(self) -> float:
        return self._loop.cash

    @property
    def equity(self) -> float:
        loop = self._loop
        closes = getattr(loop, "closes", None)  # run_quiet's; run's last_close is current
        return loop.equity(loop.last_close if closes is None else closes[self._t].tolist())

    @property
    def position(self) -> dict[str, float]:
        return self._loop.account().position

    @property
    def entry_price(self) -> dict[str, float]:
        return self._loop.account().entry_price

    @property
    def open_orders(self) -> tuple[int, ...]:
        return tuple(o.id for _, o in self._loop.book)
