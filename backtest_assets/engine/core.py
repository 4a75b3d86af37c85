"""Fast backtest engine: bars x symbols of OHLC, target weights in, equity and trades out.

Array contract
--------------
open, high, low, close : (T, S) float64
    One row per bar (labelled by its open time), one column per symbol; a 1-D array is one
    symbol. At least one bar and one symbol (no bars is refused: there is nothing to
    simulate, and no metric of an empty run is defined). A bar is either all four NaN (the
    symbol has no bar: it cannot trade, it is valued at its last close) or all finite with
    ``0 < low <= min(open, close)`` and ``max(open, close) <= high``; anything else is
    refused.
target : (T, S) float64
    Target position as a fraction of equity, decided at the close of bar t; NaN keeps the
    previous target (0 before the first). Only a change of target makes an order.
funding : (T, S) float64 or None
    Funding rate exchanged at the open of bar t; NaN (or None) where none is exchanged.
mark_open, mark_high, mark_low : (T, S) float64 or None
    The mark price's bar (Mark prices, below); where a bar has a price its mark must be
    finite with ``0 < low <= open <= high`` (a study completes missing marks by its policy
    before the engine: refused otherwise). None: the bars' own open/high/low.
volume : (T, S) float64 or None
    Base volume of each bar (finite, >= 0 where the bar has a price), for the liquidity
    rules (participation cap, impact).
instruments : Instrument or sequence of S Instrument
    Fees, slippage, lot, tick, min notional, leverage setting and margin rules per symbol.
exits : ExitRules or None
    Stop-loss, take-profit and time stop applied to every position.

Rules (the reference loop in ``reference.py`` implements the same rules independently)
---------------------------------------------------------------------------------------
Orders. A target at bar t that differs from the previous target fills at the open of bar
t+1 as a market order (DESIGN.md, Labels and entries); a target on the last bar never
fills. The target quantity is ``target * E / open`` rounded toward zero to the lot size,
where E is the equity at that open (cash after funding and open-time exits, plus every
position at its open, or its last close if it has no bar); every order at one open is sized
from the same E. The order is the difference from the current position. A buy fills at
``open * (1 + slippage)`` rounded up to the tick, a sell at ``open * (1 - slippage)``
rounded down; the taker fee is ``taker * |qty| * fill price``; ``cash -= qty * fill + fee``.
Long sizing (``long_sizing``). With the default ``"equity"`` a buy is sized as above (a
100% long costs more than the cash: slippage and fee are paid on top). With ``"cash"``
(vectorbt's ``from_orders(size_type="targetpercent")``) a buy is additionally capped by
the cash available when it fills: its quantity increase is at most
``cash / (fill * (1 + taker))`` (rounded down to the lot), so ``qty * fill + fee`` never
exceeds the cash; a 100% long from flat spends all the cash and has weight exactly 1 after
costs. A reversal from short to long is one buy order whose cap uses the cash including
the short's proceeds (as vectorbt's single reversal order); sells (and so a -100% short,
``-E / open`` units) are never capped. Orders of one open fill in symbol order, so a later
buy is capped by the cash left by the earlier fills of that open. A buy capped to zero
quantity while the target is not zero is rejected (``zero_qty``). The closed form does not
apply to ``"cash"``: such runs take the compiled loop.
An order that rounds to zero quantity while the target is not zero is rejected
(``zero_qty``); an order whose ``|qty| * fill`` is below the min notional is rejected
(``min_notional``) unless it closes the position (exchanges accept reduce-only closes).
An order that opens, increases or reverses an isolated position is rejected
(``insufficient_margin``) when its initial margin and fee exceed the available balance
(Isolated margin, below). A rejected order is counted, never resized, and not retried: the
next order needs the next change of target. A target whose gross leverage (sum of |target| over
symbols) exceeds the max leverage of a symbol it gives a non-zero target is refused before
simulating.

Positions and trades. Quantities are held fixed between fills (no re-balancing). Every
fill that changes a symbol's quantity ends its trade at the fill price and starts a new one
there, so a trade has one quantity; the fee of a fill goes to the trade it closes for the
part that reduces the position and to the new trade for the part that adds to it.

Accounting. ``equity(t) = cash(t) + sum(position * close)`` with the last close for a
symbol without a bar (spot-like, as vectorbt: a short's proceeds sit in cash). Per bar and
symbol the result holds fees, slippage cost (``qty * (fill - price before slippage)``,
including tick rounding), funding, and the liquidation clearance fees (part of the fees)
and insurance-fund forfeits (not part of them) of Isolated margin, below.

Funding. At a bar with a rate, ``payment = position held into the open * mark open * rate``
is taken from cash before anything else at that open: a long pays a positive rate, a short
receives it. It is settled on the mark (the venues' rule; the open without marks).

Mark prices. Liquidations trigger on the mark: at the open when the mark open is at or
beyond the liquidation price, inside the bar when the mark's extreme (low for a long, high
for a short) reaches it; the position is then closed at the liquidation price as below.
Everything else (fills, stops, take-profits, the equity, the blown check) uses the last
price. Without marks the last price's bar stands in for the mark.

Limit orders (``limits``: ``LimitOrders``; off by default). A change of target decided at
the close of bar t that the rule makes a limit (entries: orders to open, increase or
reverse a target; exits: a target of 0, or smaller on the same side) is not filled at the
next open: it rests from bar t+1 for ``valid_bars`` bars on the side the target asks for at
that open (buy if the target quantity there is above the position), at the last close
known at the decision less ``offset`` for a buy (rounded down to the tick) or plus it for
a sell (rounded up). It fills in the first of those bars that trades through it, strictly
(a buy when the low is below the limit, a sell when the high is above: a touch does not
fill), at the limit price, without slippage, paying the maker fee; the quantity is then
the target's at that price, ``target * E / limit`` rounded to the lot, from the equity E
of that bar's open, and the order meets the same refusals as a market order (min notional,
brackets, risk manager, margin, with the maker fee in the margin check). A resting order
is cancelled when a new target is decided (the new one replaces it), when an exit (stop,
take-profit, time stop, liquidation, blown account) closes the symbol's position (after an
exit the symbol stays flat until its target changes), when at its fill the target asks for
no change or for the other side, or when the account is blown; unfilled after its last bar
it expires. Limit fills come after
the market orders of the same open and before the bar's intrabar exits, so a position a
limit opens can be stopped in its fill bar. ``Result.orders`` counts placed, filled,
expired, cancelled and still-open limits. Stops, take-profits, time stops, liquidations and
a blown account's closes are always market orders.

Liquidity (``Instrument.participation``, ``Instrument.impact_coef``; need ``volume``).
Participation cap: a signal order (market or limit) fills at most ``participation *
volume`` of its fill bar (rounded down to the lot); the rest stays working: a market
order's rest is sent again at each next open, re-sized to the target from that open's
equity, a limit's keeps resting until it expires; either ends when the target is reached,
when a new target replaces it, when an exit closes the position, or when a slice is
refused (a slice under the min notional among them). A bar without volume fills nothing
and the order waits. Each fill starts a new trade; ``Result.orders["partial_fills"]``
counts the fills the cap cut short.
Impact: a market fill of ``q`` units in a bar of volume ``V`` slips by ``slippage +
impact_coef * sqrt(q / V)`` instead of ``slippage`` (every market fill: signals, stops,
take-profits, time stops, a blown account's closes; an exit on a bar without volume pays
the full coefficient); a signal order into a bar without volume is refused
(``no_volume``) unless a participation cap makes it wait. Exits are never capped.

Exits (per position, from its fill bar on; a gap is judged at the open, before orders):
stop-loss at ``entry * (1 - sl)`` for a long (``1 + sl`` short), hit when the low (high)
reaches it; take-profit at ``entry * (1 + tp)`` (``1 - tp`` short), hit when the high (low)
reaches it; when both could hit in one bar the stop is taken (conservative). If the bar
opens beyond the level the exit fills at the open. The exit is a market order: the level
(or open) with slippage against the trader, rounded to the tick, plus the taker fee. Time
stop: the position is closed at the open ``time_stop`` bars after its entry bar (the first
bar with a price from then on). After an exit the symbol stays flat until its target
changes again.

Isolated margin (instruments with a maintenance margin rate ``mmr``; Binance USD-M and Bybit
isolated margin). ``L`` is the symbol's leverage setting, ``Instrument.max_leverage`` (the
target only sets the notional: a 0.3 target at setting 2 posts 0.15 of the equity). A fill
that leaves a position posts its initial margin ``margin = |qty| * fill / L`` (the new
position's; the old one's is released). Margin is a claim on the equity, not a cash flow:
cash stays spot-like (above), and the posted margin only limits new orders and fixes what a
liquidation takes. A position without a maintenance margin rate posts none.
Initial margin check: an order that opens, increases or reverses an isolated position is
rejected (``insufficient_margin``) when ``|new qty| * fill / L`` plus the order's taker fee
(the venue takes it from the same balance) exceeds the available balance, ``E`` (the equity
every order of this open is sized from) minus the margin posted by the other symbols'
positions; orders of one open fill in symbol order, so a later order
sees the margin posted (or released) by the earlier ones. The zero-quantity and min-notional
rules are checked first; an order that only reduces a position is never rejected for margin.
With slippage > 0 a target of gross leverage L (notional L x equity) asks for more margin
than the equity and is rejected, as on the venue.
Liquidation (Binance USD-M isolated: when the margin balance, margin + unrealized PnL, falls
to the maintenance margin ``mmr * |qty| * price``): the liquidation price is
``entry * (1 - 1/L) / (1 - mmr)`` for a long and ``entry * (1 + 1/L) / (1 + mmr)`` for a
short; the bankruptcy price, where the margin is gone, is ``entry * (1 - 1/L)`` (long) and
``entry * (1 + 1/L)`` (short). ``mmr < 1/L`` is required (``Instrument.validate``: the
venues cap the leverage of a tier below 1/mmr), so the level lies on the losing side of the
entry. It is checked at the open and at the bar's extreme (low for a long, high for a
short) before the stops of the same bar. The position is closed at the liquidation price,
and what is left of its margin there is taken: ``remaining = margin + qty * (liq - entry)``
(the maintenance margin, ``mmr * |qty| * liq``, from the margin actually posted and at
least 0), of which the clearance fee ``min(liquidation_fee_rate * |qty| * liq, remaining)``
is charged as a fee (in ``fees`` and ``liquidation_fees``) and the rest goes to the
insurance fund (``insurance``); the trader gets none of it back. So a liquidated position
loses exactly its posted margin, ``cash += qty * entry - margin``, its own entry fee and
funding apart. A bar that opens past the bankruptcy price changes nothing: the loss is
still the margin (the insurance fund covers the shortfall). Other exits stay market orders
at their price: a stop set just short of the liquidation price and filled with slippage can
land past the bankruptcy price and lose that slippage on top. Funding is paid from cash, not
from the posted margin, so it does not move the liquidation price.

Margin tiers (``Instrument.brackets``: Binance's leverage brackets, Bybit's risk limits).
The maintenance margin of a position of notional N is ``N * mmr_k - amount_k`` in the tier
k with ``cap_{k-1} <= N < cap_k`` (continuous across tiers). On Binance
(``maintenance_at="level"``) it is taken at the price, so the liquidation price is the
tier-k level ``(entry * (1 - 1/L) - amount_k / |qty|) / (1 - mmr_k)`` (long; ``(entry *
(1 + 1/L) + amount_k / |qty|) / (1 + mmr_k)`` short) of the one tier whose range holds
``|qty| * level`` (a long's tier falls as the price does, a short's rises). On Bybit
(``maintenance_at="entry"``) it is taken on the position value at the entry, in the
entry notional's tier, and the level is ``entry -/+ (initial margin - maintenance) /
|qty|``, i.e. ``entry * (1 - 1/L + mmr_k) - amount_k / |qty|`` long and ``entry * (1 +
1/L - mmr_k) + amount_k / |qty|`` short. Either is fixed at the fill like the single-rate
level, which is the one-tier case (``amount = 0``). An order that opens, increases or
reverses a position whose ``|qty| * fill`` exceeds the cap of the last tier allowing the
leverage setting is refused (``leverage_bracket``).

Risk manager (``RiskLimits``, pre-trade; off by default). For an order that opens,
increases or reverses a position, after the venue's refusals above and before the margin
check, in this order: ``daily_loss`` while halted (the equity at an open or a close has
fallen ``daily_loss_cap`` below the equity at the first open of its UTC day; a new UTC day
resets the reference and lifts the halt); ``max_position`` when ``|qty| * fill`` exceeds
the position limit; ``max_total`` when that plus every other symbol's ``|qty| * price`` at
this open (the last close without a bar; the symbols before it have already filled)
exceeds the total limit; ``max_leverage`` when that total exceeds the limit times the
equity the open sizes from. A refused order is counted, never resized.

Blown account. If the equity at an open (after funding and exits) or at a close is <= 0,
every position is closed at that price (market order: slippage and fee), and no order is
filled afterwards (each one is counted as rejected ``blown``).

Order of events in bar t: funding (on the mark open); open-time exits (liquidation on the
mark, stop, take-profit, time stop); blown check at the open; the daily loss cap's check at
the open; orders decided at t-1 (market orders fill, limits are placed) and the working
rests of earlier ones; resting limits the bar trades through; intrabar liquidation (on the
mark's extreme), then stop, then take-profit; blown check at the close; the daily loss
cap's check at the close.

Paths. Without exit rules, lot rounding, limit orders, liquidity rules or a risk manager,
every step is linear in the state (cash,
positions) given the side of each fill, so the trade bars are accounted in closed form: one
(S+1)x(S+1) matrix per fill bar, multiplied by a prefix scan, and the bars in between are
gathered. The result is then verified (sides as assumed, no order under the min notional,
every initial margin clearly within the available balance, no liquidation price touched,
equity > 0). A compiled (numba) bar loop runs everything else, and is the default
(``path="auto"``) because it measured faster: stops and liquidations depend on the path
within each trade, lot rounding makes each quantity a non-linear function of the equity,
and a failed verification means one of them (or a rejected order or a blown account)
happened (an initial margin within 1e-9 of the available balance also falls back, so the
loop decides the orders at the edge). ``path="closed_form"`` takes the closed form where it
applies; the parity tests hold it to the reference loop as an independent check of the
compiled one.
Trades still open at the last bar are marked at its close with ``exit_reason`` "open".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numba
import numpy as np
import polars as pl

from backtest_assets.engine.memory import aligned
from backtest_assets.engine.venue import ExitRules, Instrument, LimitOrders, RiskLimits

EXIT_REASONS = ("signal", "stop_loss", "take_profit", "time_stop", "liquidation", "blown",
                "open")
REJECT_REASONS = ("zero_qty", "min_notional", "insufficient_margin", "blown",
                  "leverage_bracket", "daily_loss", "max_position", "max_total",
                  "max_leverage", "no_volume")
(REJ_ZERO_QTY, REJ_MIN_NOTIONAL, REJ_MARGIN, REJ_BLOWN, REJ_BRACKET, REJ_DAILY, REJ_MAXPOS,
 REJ_MAXTOT, REJ_MAXLEV, REJ_NO_VOLUME) = range(len(REJECT_REASONS))
# What became of the limit orders (each placed order ends filled, expired, cancelled,
# refused (counted in REJECT_REASONS) or still open at the last bar), and the fills the
# participation cap cut short.
ORDER_EVENTS = ("limit_placed", "limit_filled", "limit_expired", "limit_cancelled",
                "limit_open", "partial_fills")
EV_PLACED, EV_FILLED, EV_EXPIRED, EV_CANCELLED, EV_OPEN, EV_PARTIAL = range(len(ORDER_EVENTS))
# An initial margin above the available balance by at most this fraction of the equity
# passes: a target of exactly L x equity without slippage must not fail by float noise.
MARGIN_TOL = 1e-12
# Prices and quantities within this many ticks/lots of the grid count as on it: float noise
# (100.0 / 0.1 = 1000.0000000000001) must not move a fill by a whole tick.
GRID_TOL = 1e-9
# Columns of the per-symbol rules array (see _rules).
(TAKER, SLIP, LOT, TICK, MINN, MMR, LIQFEE, LEV, MAXN, MAKER, PART, IMPACT,
 MM_ENTRY) = range(13)
# Margin tiers follow in the rules row: tier k at TIER0 + 4k (cap, max leverage, maintenance
# margin rate, maintenance amount), NaN after a symbol's last tier.
TIER0, TIER_W = 13, 4
TCAP, TLEV, TMMR, TCUM = range(TIER_W)
TRADES_SCHEMA = {"symbol": pl.String, "entry_bar": pl.Int64, "exit_bar": pl.Int64,
                 "side": pl.String, "qty": pl.Float64, "entry_price": pl.Float64,
                 "exit_price": pl.Float64, "fees": pl.Float64, "funding": pl.Float64,
                 "insurance": pl.Float64, "pnl": pl.Float64, "exit_reason": pl.String}


@dataclass(frozen=True)
class Result:
    """Outcome of a backtest.

    Attributes
    ----------
    equity, cash : (T,) float64
        At each bar's close, after everything that happened in the bar.
    position : (T, S) float64
        Signed quantity held at each close.
    exposure : (T,) float64
        Gross notional at the close / equity (0 when flat).
    fees, slippage, funding : (T, S) float64
        Paid in each bar and symbol (funding < 0 is received); ``fees`` include the
        liquidation clearance fees.
    liquidation_fees : (T, S) float64
        The clearance fees of the liquidations in each bar and symbol (part of ``fees``).
    insurance : (T, S) float64
        The rest of a liquidated position's margin, forfeited to the insurance fund (not
        part of ``fees``).
    trades : polars.DataFrame
        One row per trade (constant quantity): symbol, entry_bar, exit_bar (null while
        open), side ("long"/"short"), qty (> 0), entry_price, exit_price (last close while
        open), fees (the clearance fee included), funding, insurance, pnl (``side * qty *
        (exit - entry) - fees - funding - insurance``), exit_reason (one of
        ``EXIT_REASONS``); sorted by entry_bar, then symbol order.
    rejected : dict[str, int]
        Rejected orders per reason in ``REJECT_REASONS``.
    orders : dict[str, int]
        Limit orders placed, filled, expired, cancelled and still open at the last bar, and
        the fills the participation cap cut short (``ORDER_EVENTS``).
    blown_bar : int or None
        Bar at which the account was blown.
    path : str
        "closed_form", "compiled" or "reference".
    """

    equity: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    exposure: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    funding: np.ndarray
    liquidation_fees: np.ndarray
    insurance: np.ndarray
    trades: pl.DataFrame
    rejected: dict[str, int]
    blown_bar: int | None
    path: str
    orders: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(ORDER_EVENTS, 0))


class Inputs(NamedTuple):
    """Checked inputs: (T, S) float64 arrays and per-symbol rules."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    target: np.ndarray
    funding: np.ndarray | None
    instruments: tuple[Instrument, ...]
    exits: ExitRules
    init_cash: float
    weights: np.ndarray  # (T, S) target in force after bar t (forward-filled, 0 before)
    changed: np.ndarray  # (T, S) bool: the target changed at bar t (order at t+1)
    gaps: bool  # some symbol lacks some bar
    risk: RiskLimits = RiskLimits()  # pre-trade limits (none by default)
    day: np.ndarray | None = None  # (T,) int64 UTC day of each bar (daily loss cap)
    # Mark prices (liquidation and funding); open/high/low themselves when none were given.
    mark_open: np.ndarray | None = None
    mark_high: np.ndarray | None = None
    mark_low: np.ndarray | None = None
    volume: np.ndarray | None = None  # (T, S) base volume (participation cap, impact)
    limits: LimitOrders | None = None  # signal orders as limit orders (None: market)

    @property
    def marks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mark open, high and low: the given marks, or the bars' own prices."""
        if self.mark_open is None:
            return self.open, self.high, self.low
        return self.mark_open, self.mark_high, self.mark_low

    @property
    def plain(self) -> bool:
        """No limit orders and no liquidity rules: every signal is one market order at fixed
        slippage (what the closed form and ``long_sizing="cash"`` assume)."""
        return self.limits is None and not any(i.needs_volume for i in self.instruments)


def _as_2d(name: str, a: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a (T, S) array, got {arr.ndim} dimensions")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name}: shape {arr.shape} differs from open's {shape}")
    return arr


def forward_fill(a: np.ndarray, first: float = 0.0) -> np.ndarray:
    """Replace NaN by the last non-NaN value above it (``first`` before any), column-wise."""
    nan = np.isnan(a)
    if not nan.any():
        return a
    rows = np.where(nan, 0, np.arange(1, a.shape[0] + 1)[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    padded = np.vstack([np.full((1, a.shape[1]), first), a])
    return np.take_along_axis(padded, rows, axis=0)


def row_sum(a: np.ndarray) -> np.ndarray:
    """Sum over symbols; one symbol is returned as a view (an axis-1 reduction of a (T, 1)
    array costs as much as a pass over T x 8 values)."""
    return a[:, 0] if a.shape[1] == 1 else a.sum(axis=1)


# Problems the input scan finds, in the order they are reported (the first kind found wins,
# and within a kind the first bar, then the first symbol).
BAD_BAR, BAD_TARGET, NO_PRICE_FILL, OVER_LEVERAGE, BAD_RATE, UNTRADED_RATE, RATE_NO_BAR = \
    range(7)


def check_inputs(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                 target: np.ndarray, instruments: Instrument | Sequence[Instrument], *,
                 funding: np.ndarray | None = None, exits: ExitRules | None = None,
                 init_cash: float = 1_000_000.0, risk: RiskLimits | None = None,
                 day: np.ndarray | None = None, mark_open: np.ndarray | None = None,
                 mark_high: np.ndarray | None = None, mark_low: np.ndarray | None = None,
                 volume: np.ndarray | None = None,
                 limits: LimitOrders | None = None) -> Inputs:
    """Validate and normalize the engine inputs (see the module docstring).

    Raises
    ------
    ValueError
        No bars or no symbols; naming the symbol and bar: shapes that differ, a malformed
        bar, a non-finite target or rate, an order that would fill on a bar without a
        price, funding for a symbol that is never given a target or on a bar without a
        price, a target above a symbol's max leverage, a bar with a price but no valid mark
        (when marks are given) or no valid volume (when the liquidity rules need it), or an
        invalid instrument / exit rule / limit rule / initial cash.
    """
    o = _as_2d("open", open_, None)
    shape = o.shape
    if not shape[0]:
        raise ValueError(f"no bars: open has shape {shape}; a backtest needs at least one "
                         "bar (an empty window or a filter that left nothing?)")
    if not shape[1]:
        raise ValueError(f"no symbols: open has shape {shape}; a backtest needs at least "
                         "one column")
    h, lo, c = (_as_2d(n, a, shape) for n, a in (("high", high), ("low", low),
                                                 ("close", close)))
    tgt = _as_2d("target", target, shape)
    fund = None if funding is None else _as_2d("funding", funding, shape)
    insts = (instruments,) if isinstance(instruments, Instrument) else tuple(instruments)
    if len(insts) != shape[1]:
        raise ValueError(f"instruments: {len(insts)} given for {shape[1]} symbols")
    for inst in insts:
        inst.validate()
    exits = exits if exits is not None else ExitRules()
    exits.validate()
    if not (np.isfinite(init_cash) and init_cash > 0):
        raise ValueError(f"init_cash: {init_cash} is not a finite number > 0")
    risk = risk if risk is not None else RiskLimits()
    risk.validate()
    days = None
    if day is not None:
        days = np.asarray(day, dtype=np.int64).reshape(-1)
        if days.shape[0] != shape[0] or (np.diff(days) < 0).any():
            raise ValueError(f"day: {days.shape[0]} non-decreasing UTC days are needed, one "
                             f"per bar ({shape[0]})")
    elif risk.daily_loss_cap is not None:
        raise ValueError("risk.daily_loss_cap: the bars' UTC days are needed (day=...)")
    if limits is not None:
        limits.validate()
    weights, changed, gaps = _scan_checked(o, h, lo, c, tgt, fund, insts, check_bars=True)
    marks = _check_marks(o, (mark_open, mark_high, mark_low), insts)
    vol = None
    if volume is not None or any(i.needs_volume for i in insts):
        vol = _check_volume(o, volume, insts)
    return Inputs(o, h, lo, c, tgt, fund, insts, exits, float(init_cash), weights, changed,
                  gaps, risk, days, *marks, vol, limits)


def _first_bad(bad: np.ndarray) -> tuple[int, int]:
    t, s = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return int(t), int(s)


def _check_marks(o: np.ndarray, marks: tuple, insts: Sequence[Instrument]
                 ) -> tuple[np.ndarray | None, ...]:
    """The mark open/high/low as (T, S) arrays (all None when none given): where the bar has
    a price, finite with ``0 < low <= open <= high``; elsewhere ignored (NaN)."""
    given = [m is not None for m in marks]
    if not any(given):
        return (None, None, None)
    if not all(given):
        raise ValueError("mark_open, mark_high, mark_low: give all three or none")
    mo, mh, ml = (_as_2d(n, a, o.shape) for n, a in zip(
        ("mark_open", "mark_high", "mark_low"), marks, strict=True))
    priced = ~np.isnan(o)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(mo) & np.isfinite(mh) & np.isfinite(ml) & (ml > 0) & (ml <= mo) \
            & (mo <= mh)
    bad = priced & ~ok
    if bad.any():
        t, s = _first_bad(bad)
        raise ValueError(f"{insts[s].symbol} bar {t}: mark open/high/low "
                         f"{(mo[t, s], mh[t, s], ml[t, s])} is not a mark bar (all finite, "
                         "0 < low <= open <= high) on a bar with a price (missing marks: "
                         "apply the study's policy before the engine)")
    return mo, mh, ml


def _check_volume(o: np.ndarray, volume: np.ndarray | None,
                  insts: Sequence[Instrument]) -> np.ndarray:
    """The bars' base volume as a (T, S) array: finite and >= 0 where the bar has a price."""
    if volume is None:
        names = [i.symbol for i in insts if i.needs_volume]
        raise ValueError(f"volume: {', '.join(names)} cap participation or model impact, "
                         "which needs the bars' volume (volume=...)")
    vol = _as_2d("volume", volume, o.shape)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(o) & ~(np.isfinite(vol) & (vol >= 0))
    if bad.any():
        t, s = _first_bad(bad)
        raise ValueError(f"{insts[s].symbol} bar {t}: volume {vol[t, s]} is not a finite "
                         "number >= 0")
    return vol


def check_target(tgt: np.ndarray, bars: Inputs, *, weights: np.ndarray | None = None,
                 changed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights in force after each bar and the bars whose target changed, for another (T, S)
    target on bars already checked (``bars``, from :func:`check_inputs`): the same checks
    as ``check_inputs`` makes of a target (optionally into ``weights`` / ``changed``).

    Raises
    ------
    ValueError
        An infinite target, an order that would fill on a bar without a price, or a gross
        leverage above a symbol's cap, naming the symbol and bar.
    """
    weights, changed, _ = _scan_checked(bars.open, bars.high, bars.low, bars.close,
                                        np.asarray(tgt, dtype=np.float64).reshape(
                                            bars.open.shape), None, bars.instruments,
                                        check_bars=False, weights=weights, changed=changed)
    return weights, changed


def _scan_checked(o, h, lo, c, tgt, fund, insts, *, check_bars, weights=None, changed=None):
    """Run the compiled scan and raise the first problem it found, in words."""
    shape = o.shape
    fill = True
    if weights is None:  # a target without NaN is its own weights: no copy to fault in
        tgt = np.ascontiguousarray(tgt)
        fill = _has_nan(tgt)
        weights = aligned(shape) if fill else tgt
    changed = np.empty(shape, dtype=bool) if changed is None else changed
    o, h, lo, c = (np.ascontiguousarray(a) for a in (o, h, lo, c))
    cap = np.array([inst.max_leverage for inst in insts], dtype=np.float64)
    first = np.full((7, 2), -1, dtype=np.int64)
    rates = np.empty((0, shape[1])) if fund is None else fund
    gaps, clean = _scan_clean(o, h, lo, c, tgt, rates, cap, check_bars, weights, fill,
                              changed)
    if not clean:  # the slow scan names the first problem of each kind
        gaps = _scan(o, h, lo, c, tgt, rates, cap, check_bars, weights, fill, changed, first)
    found = np.flatnonzero(first[:, 0] >= 0)
    if found.size:
        kind = int(found[0])
        t, s = (int(x) for x in first[kind])
        name = insts[s].symbol
        if kind == BAD_BAR:
            ohlc = (o[t, s], h[t, s], lo[t, s], c[t, s])
            raise ValueError(f"{name} bar {t}: open/high/low/close {ohlc} is not a bar "
                             "(all finite, low > 0, low <= open, close <= high) nor all NaN")
        if kind == BAD_TARGET:
            raise ValueError(f"{name} bar {t}: target {tgt[t, s]} is not finite")
        if kind == NO_PRICE_FILL:
            raise ValueError(f"{name} bar {t + 1}: the order decided at bar {t} would fill "
                             "at this bar's open, which has no price")
        if kind == OVER_LEVERAGE:
            gross = float(np.abs(weights[t]).sum())
            raise ValueError(f"{name} bar {t}: target gross leverage {gross:g} exceeds the "
                             f"max leverage {cap[s]:g}")
        if kind == BAD_RATE:
            raise ValueError(f"{name} bar {t}: funding rate {fund[t, s]} is not finite")
        if kind == UNTRADED_RATE:
            raise ValueError(f"{name} bar {t}: funding given for a symbol that is never "
                             "given a target (misaligned columns?)")
        raise ValueError(f"{name} bar {t}: funding rate given on a bar without a price")
    return weights, changed, gaps


@numba.njit(cache=True)
def _has_nan(a):  # pragma: no cover (compiled)
    for x in a.flat:  # noqa: SIM110 (numba compiles no generator in any())
        if np.isnan(x):
            return True
    return False


@numba.njit(cache=True)
def _scan_clean(o, h, lo, c, tgt, fund, cap, check_bars, weights, fill,  # noqa: C901
                changed):
    """``_scan``'s weights, changes and gaps, and whether it would find no problem at all
    (then ``first`` is not needed: nearly every run). Each check is its own pass over the
    arrays as flat C-order vectors (symbol s of bar t at ``t * S + s``) folded without
    branches, which the compiler vectorizes: 2.7 ms at 1M bars against ``_scan``'s 8.3 ms.
    Returns (gaps, clean)."""  # pragma: no cover (compiled)
    t_n, s_n = o.shape
    n = t_n * s_n
    of, hf, lf, cf = o.ravel(), h.ravel(), lo.ravel(), c.ravel()
    xf, wf, chf = tgt.ravel(), weights.ravel(), changed.ravel()
    gaps, bad = False, False
    for i in range(n):
        gaps |= np.isnan(of[i])
    if check_bars:  # a bar, or (gaps only) all four NaN
        for i in range(n):
            op, hi, low, cl = of[i], hf[i], lf[i], cf[i]
            bad |= (np.isfinite(hi) & (low > 0) & (low <= op) & (low <= cl) & (hi >= op)
                    & (hi >= cl)) ^ True
        if bad and gaps:
            bad = False
            for i in range(n):
                op, hi, low, cl = of[i], hf[i], lf[i], cf[i]
                ok = (np.isfinite(hi) & (low > 0) & (low <= op) & (low <= cl) & (hi >= op)
                      & (hi >= cl))
                empty = np.isnan(op) & np.isnan(hi) & np.isnan(low) & np.isnan(cl)
                bad |= (ok | empty) ^ True
    for i in range(n):
        bad |= np.isinf(xf[i])
    if fill:  # NaN keeps the symbol's weight
        for i in range(n):
            x = xf[i]
            wf[i] = (wf[i - s_n] if i >= s_n else 0.0) if np.isnan(x) else x
    for i in range(s_n):
        chf[i] = wf[i] != 0.0
    for i in range(s_n, n):
        chf[i] = wf[i] != wf[i - s_n]
    if gaps:  # an order decided at bar t fills at the open of t + 1
        for i in range(s_n, n):
            bad |= chf[i - s_n] & np.isnan(of[i])
    if s_n == 1:  # gross leverage within the held symbols' caps
        top = cap[0] * (1 + 1e-12)
        for i in range(n):
            bad |= abs(wf[i]) > top
    else:
        for t in range(t_n):
            gross = 0.0
            for s in range(s_n):
                gross += abs(weights[t, s])
            for s in range(s_n):
                bad |= (weights[t, s] != 0.0) & (gross > cap[s] * (1 + 1e-12))
    if fund.shape[0] > 0:  # rates: finite, on bars with a price, of targeted symbols
        for s in range(s_n):
            targeted, funded = False, False
            for t in range(t_n):
                on = np.isnan(fund[t, s]) ^ True
                funded |= on
                targeted |= np.isnan(tgt[t, s]) ^ True
                bad |= np.isinf(fund[t, s]) | (on & np.isnan(o[t, s]))
            bad |= funded & (targeted ^ True)
    return gaps, not bad


@numba.njit(cache=True)
def _scan(o, h, lo, c, tgt, fund, cap, check_bars, weights, fill, changed,  # noqa: C901
          first):
    """One pass over the bars: forward-filled weights (written only if ``fill``: else
    ``weights`` is ``tgt``, which has no NaN), changes of target, and the first (bar,
    symbol) of each problem kind in ``first``. Returns whether any bar lacks a price.
    """
    t_n, s_n = o.shape
    has_fund = fund.shape[0] > 0
    targeted = np.zeros(s_n, dtype=np.bool_)
    untraded_at = np.full(s_n, -1, dtype=np.int64)
    gaps = False
    for t in range(t_n):
        gross = 0.0
        for s in range(s_n):
            no_bar = np.isnan(o[t, s])
            gaps |= no_bar
            if check_bars and first[BAD_BAR, 0] < 0:
                ok = (np.isfinite(h[t, s]) and lo[t, s] > 0 and lo[t, s] <= o[t, s]
                      and lo[t, s] <= c[t, s] and h[t, s] >= o[t, s] and h[t, s] >= c[t, s])
                if not ok and not (no_bar and np.isnan(h[t, s]) and np.isnan(lo[t, s])
                                   and np.isnan(c[t, s])):
                    first[BAD_BAR, 0], first[BAD_BAR, 1] = t, s
            x = tgt[t, s]
            prev = weights[t - 1, s] if t > 0 else 0.0
            if np.isnan(x):
                w = prev
            else:
                targeted[s] = True
                w = x
                if np.isinf(x) and first[BAD_TARGET, 0] < 0:
                    first[BAD_TARGET, 0], first[BAD_TARGET, 1] = t, s
            if fill:
                weights[t, s] = w
            changed[t, s] = w != prev
            if (t > 0 and changed[t - 1, s] and no_bar
                    and first[NO_PRICE_FILL, 0] < 0):
                first[NO_PRICE_FILL, 0], first[NO_PRICE_FILL, 1] = t - 1, s
            gross += abs(w)
            if has_fund and not np.isnan(fund[t, s]):
                if np.isinf(fund[t, s]) and first[BAD_RATE, 0] < 0:
                    first[BAD_RATE, 0], first[BAD_RATE, 1] = t, s
                if untraded_at[s] < 0:
                    untraded_at[s] = t
                if no_bar and first[RATE_NO_BAR, 0] < 0:
                    first[RATE_NO_BAR, 0], first[RATE_NO_BAR, 1] = t, s
        if first[OVER_LEVERAGE, 0] < 0:
            for s in range(s_n):
                # 1e-12: weights like 0.7 + 0.3 must not fail a cap of exactly 1 by noise.
                if weights[t, s] != 0.0 and gross > cap[s] * (1 + 1e-12):
                    first[OVER_LEVERAGE, 0], first[OVER_LEVERAGE, 1] = t, s
                    break
    for s in range(s_n):  # funding for a symbol never given a target: first such symbol
        if untraded_at[s] >= 0 and not targeted[s]:
            first[UNTRADED_RATE, 0], first[UNTRADED_RATE, 1] = untraded_at[s], s
            break
    return gaps


def trades_frame(symbols: Sequence[str], sym: np.ndarray, entry_bar: np.ndarray,
                 exit_bar: np.ndarray, side: np.ndarray, qty: np.ndarray,
                 entry_price: np.ndarray, exit_price: np.ndarray, fees: np.ndarray,
                 funding: np.ndarray, insurance: np.ndarray, pnl: np.ndarray,
                 reason: np.ndarray) -> pl.DataFrame:
    """Trades table of ``Result`` from per-trade columns (exit_bar < 0 = still open).

    ``sym`` indexes ``symbols``, ``side`` is +1/-1, ``reason`` indexes ``EXIT_REASONS``.
    """
    order = np.lexsort((sym, entry_bar))
    frame = pl.DataFrame({
        "symbol": pl.Series(list(symbols), dtype=pl.String).gather(sym[order]),
        "entry_bar": entry_bar[order], "exit_bar": exit_bar[order],
        "side": pl.Series(["short", "long"]).gather((side[order] > 0).astype(np.int64)),
        "qty": qty[order], "entry_price": entry_price[order], "exit_price": exit_price[order],
        "fees": fees[order], "funding": funding[order], "insurance": insurance[order],
        "pnl": pnl[order],
        "exit_reason": pl.Series(EXIT_REASONS).gather(reason[order]),
    }, schema=TRADES_SCHEMA)
    return frame.with_columns(pl.when(pl.col("exit_bar") >= 0).then(pl.col("exit_bar"))
                              .alias("exit_bar"))


# ---- entry point ------------------------------------------------------------------------

def backtest(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             target: np.ndarray, instruments: Instrument | Sequence[Instrument], *,
             funding: np.ndarray | None = None, exits: ExitRules | None = None,
             init_cash: float = 1_000_000.0,
             path: Literal["auto", "compiled", "closed_form"] = "auto",
             long_sizing: Literal["equity", "cash"] = "equity",
             risk: RiskLimits | None = None, day: np.ndarray | None = None,
             mark_open: np.ndarray | None = None, mark_high: np.ndarray | None = None,
             mark_low: np.ndarray | None = None, volume: np.ndarray | None = None,
             limits: LimitOrders | None = None) -> Result:
    """Backtest target weights on OHLC bars (array contract and rules: module docstring).

    Parameters
    ----------
    open_, high, low, close : np.ndarray
        (T, S) or (T,) prices; all-NaN rows of a column mark bars the symbol lacks.
    target : np.ndarray
        (T, S) target position as a fraction of equity decided at each close; NaN = keep.
    instruments : Instrument or sequence of Instrument
        One per symbol, in column order.
    funding : np.ndarray, optional
        (T, S) funding rates exchanged at each open; NaN where none.
    exits : ExitRules, optional
        Stop-loss / take-profit / time stop for every position.
    init_cash : float
        Starting cash.
    path : {"auto", "compiled", "closed_form"}
        "auto" and "compiled" run the compiled bar loop; "closed_form" tries the closed form
        first (module docstring, Paths) and falls back to the loop where it does not apply.
        The loop is the default because it measured faster at every shape tried (1M bars x
        1 symbol: 39 vs 46 ms; 300k x 3: 46 vs 91 ms; 100k x 10: 40 vs 84 ms, with funding);
        the closed form stays as an independent check of it in the parity tests.
    long_sizing : {"equity", "cash"}
        "equity" sizes every order as ``target * E / open``; "cash" also caps each buy by
        the cash available at its fill (vectorbt's ``size_type="targetpercent"``; module
        docstring, Long sizing). "cash" always runs the compiled loop.
    risk : RiskLimits, optional
        Pre-trade limits (daily loss cap, position, total and leverage limits); a run with
        any always takes the compiled loop.
    day : np.ndarray, optional
        (T,) UTC day number of each bar (``datetime64[D]`` as int), for the daily loss cap.
    mark_open, mark_high, mark_low : np.ndarray, optional
        (T, S) mark prices (all three or none): liquidations trigger on them and funding is
        settled on the mark open (module docstring, Mark prices); none: the bars' own.
    volume : np.ndarray, optional
        (T, S) base volume of each bar, needed by the participation cap and the impact
        model (``Instrument.participation``, ``Instrument.impact_coef``).
    limits : LimitOrders, optional
        Signal orders as limit orders (module docstring, Limit orders); none: market.

    Returns
    -------
    Result

    Raises
    ------
    ValueError
        On bad input, before any simulation (see :func:`check_inputs`).
    """
    inp = check_inputs(open_, high, low, close, target, instruments, funding=funding,
                       exits=exits, init_cash=init_cash, risk=risk, day=day,
                       mark_open=mark_open, mark_high=mark_high, mark_low=mark_low,
                       volume=volume, limits=limits)
    check_sizing(long_sizing, inp)
    return simulate(inp, long_sizing, path)


def simulate(inp: Inputs, long_sizing: Literal["equity", "cash"] = "equity",
             path: Literal["auto", "compiled", "closed_form"] = "auto") -> Result:
    """The backtest of checked inputs (:func:`check_inputs`; ``path`` as for
    :func:`backtest`): the compiled loop, or the closed form where asked and it applies."""
    if (path == "closed_form" and long_sizing == "equity" and not inp.exits.any and inp.plain
            and not inp.risk.any and all(i.lot_size == 0 for i in inp.instruments)):
        result = _closed_form(inp)
        if result is not None:
            return result
    return _compiled(inp, long_sizing)


def check_sizing(long_sizing: str, inp: Inputs) -> None:
    """Refuse an unknown ``long_sizing``, and ``"cash"`` (vectorbt's comparison mode, market
    orders at fixed slippage) with limit orders or liquidity rules."""
    if long_sizing not in ("equity", "cash"):
        raise ValueError(f"long_sizing: {long_sizing!r} is not 'equity' or 'cash'")
    if long_sizing == "cash" and not inp.plain:
        raise ValueError("long_sizing='cash' sizes market orders at fixed slippage (vectorbt's "
                         "targetpercent); it does not combine with limit orders, a "
                         "participation cap or impact")


def _rules(insts: Sequence[Instrument]) -> np.ndarray:
    """(S, 13 + 4K) float64 rules: TAKER .. MM_ENTRY (NaN mmr = no isolated margin, NaN
    participation = no cap, MM_ENTRY 1 = maintenance valued at the entry), then each
    symbol's margin tiers (``Instrument.tiers``; K the most tiers of any symbol)."""
    k_n = max([len(i.tiers) for i in insts] + [1])
    rules = np.full((len(insts), TIER0 + TIER_W * k_n), np.nan)
    for s, i in enumerate(insts):
        rules[s, :TIER0] = [i.taker, i.slippage, i.lot_size, i.tick_size, i.min_notional,
                            np.nan if i.maintenance_margin_rate is None
                            else i.maintenance_margin_rate,
                            i.liquidation_fee_rate, i.max_leverage, i.max_notional, i.maker,
                            np.nan if i.participation is None else i.participation,
                            i.impact_coef, float(i.maintenance_at == "entry")]
        for k, b in enumerate(i.tiers):
            rules[s, TIER0 + TIER_W * k:TIER0 + TIER_W * (k + 1)] = (
                b.cap, b.max_leverage, b.mmr, b.maint_amount)
    return rules


# ---- closed form ------------------------------------------------------------------------

def _buy_price(price: np.ndarray, slip: np.ndarray, tick: np.ndarray) -> np.ndarray:
    px = price * (1 + slip)
    return np.where(tick > 0, np.ceil(px / np.where(tick > 0, tick, 1) - GRID_TOL) * tick, px)


def _sell_price(price: np.ndarray, slip: np.ndarray, tick: np.ndarray) -> np.ndarray:
    px = price * (1 - slip)
    return np.where(tick > 0, np.floor(px / np.where(tick > 0, tick, 1) + GRID_TOL) * tick, px)


def _prefix_products(b: np.ndarray) -> np.ndarray:
    """P[k] = b[k] @ b[k-1] @ ... @ b[0] for a (K, D, D) stack (Hillis-Steele scan)."""
    p = b.copy()
    step = 1
    while step < len(p):
        p[step:] = p[step:] @ p[:-step]
        step *= 2
    return p


class _Fills(NamedTuple):
    """State after each fill bar of the closed form."""

    cash: np.ndarray  # (K,)
    qty: np.ndarray  # (K, S)
    delta: np.ndarray  # (K, S), 0 where no order
    price: np.ndarray  # (K, S) fill price, 0 where no order


def _solve_fills(init_cash: float, traded: np.ndarray, w: np.ndarray, w_before: np.ndarray,
                 opens: np.ndarray, marks: np.ndarray, fund: np.ndarray,
                 rules: np.ndarray) -> _Fills | None:
    """Cash and positions after each fill bar, or None if a fill's side is not resolvable.

    Each fill bar k maps the state x = (cash, q_1..q_S) linearly once the side of every
    order is known: funding ``cash -= sum(q * F_k)``, then with ``E = cash + sum(q * m_k)``
    each traded symbol gets ``q_s = w_s * E / open_s`` and ``cash -= kappa_s * delta_s``
    where ``kappa = fill * (1 + side * fee)``. The side is first guessed from the change
    of target, then corrected from the solved quantities until consistent.
    """
    k_n, s_n = w.shape
    taker, slip, tick = rules[:, TAKER], rules[:, SLIP], rules[:, TICK]
    a = np.where(traded, w / np.where(traded, opens, 1.0), 0.0)  # q_s = a_s * E
    side = np.where(w > w_before, 1.0, -1.0)
    eye = np.eye(s_n + 1)
    for _ in range(4):
        price = np.where(traded, np.where(side > 0, _buy_price(opens, slip, tick),
                                          _sell_price(opens, slip, tick)), 0.0)
        kappa = price * (1 + side * taker)
        e = np.concatenate([np.ones((k_n, 1)), marks - fund], axis=1)  # E as a row on x
        b = np.broadcast_to(eye, (k_n, s_n + 1, s_n + 1)).copy()
        b[:, 1:, :] = np.where(traded[:, :, None], a[:, :, None] * e[:, None, :], b[:, 1:, :])
        b[:, 0, 1:] += kappa - fund
        b[:, 0, :] -= (kappa * a).sum(axis=1)[:, None] * e
        x = init_cash * _prefix_products(b)[:, :, 0]
        qty = x[:, 1:]
        delta = np.where(traded, qty - np.vstack([np.zeros((1, s_n)), qty[:-1]]), 0.0)
        wrong = traded & (np.sign(delta) != side)
        if not wrong.any():
            return _Fills(x[:, 0], qty, delta, price)
        if (traded & (delta == 0)).any():
            return None
        side = np.where(wrong, np.sign(delta), side)
    return None


def _closed_form(inp: Inputs) -> Result | None:
    """Closed-form accounting of a run without exits or lot rounding; None if it does not
    apply (a rejected order, an initial margin at the edge of the available balance, a
    touched liquidation price or a blown account)."""
    o, weights, init = inp.open, inp.weights, inp.init_cash
    t_n, s_n = o.shape
    rules = _rules(inp.instruments)
    decided = np.flatnonzero(inp.changed[:-1, 0] if s_n == 1
                             else inp.changed[:-1].any(axis=1))  # decision bars
    bars = decided + 1  # fill bars
    traded = inp.changed[decided]
    marked = forward_fill(inp.close, 0.0)  # last close, 0 before the first bar
    marks = np.where(np.isnan(o[bars]), marked[decided], o[bars])
    zero_row = np.zeros((1, s_n))
    # cum_pay[t + 1] = funding paid per unit held through the opens of bars 0..t
    cum_pay = np.zeros((t_n + 1, s_n))
    if inp.funding is not None:  # settled on the mark; NaN rate: nothing paid
        pay_unit = np.nan_to_num(inp.marks[0] * inp.funding, copy=False)
        np.cumsum(pay_unit, axis=0, out=cum_pay[1:])
    since = cum_pay[bars + 1] - cum_pay[np.concatenate([[0], bars[:-1] + 1])]
    fills = _solve_fills(init, traded, weights[decided],
                         np.vstack([zero_row, weights])[decided],
                         np.where(traded, o[bars], 1.0), marks, since, rules)
    if fills is None:
        return None
    notional = np.abs(fills.delta) * fills.price
    if (traded & (weights[decided] != 0) & (notional < rules[:, MINN])).any():
        return None

    # Bars between fills are gathered from the fill before them (segment 0: no fill yet).
    # In-place arithmetic on one scratch array: at 1M bars every fresh temporary costs
    # about as much in page faults as the arithmetic itself.
    seg = np.zeros(t_n, dtype=np.int64)
    seg[bars] = 1
    np.cumsum(seg, out=seg)
    position = np.vstack([zero_row, fills.qty])[seg]
    cash = np.concatenate([[init], fills.cash])[seg]
    scratch = np.empty_like(o)
    funding = np.zeros(o.shape)
    if inp.funding is not None:
        start = np.concatenate([[0], bars + 1])  # cum_pay row where each segment starts
        np.subtract(cum_pay[1:], cum_pay[start][seg], out=scratch)
        scratch *= position
        cash -= row_sum(scratch)
        np.multiply(position[:-1], pay_unit[1:], out=funding[1:])
    np.multiply(position, marked, out=scratch)
    equity = cash + row_sum(scratch)
    np.abs(scratch, out=scratch)
    gross = row_sum(scratch)
    exposure = np.divide(gross, equity, out=np.zeros(t_n), where=gross != 0)
    # Equity at each open before its fills (t >= 1; bar 0 opens with the initial cash).
    opens = o[1:] if not inp.gaps else np.where(np.isnan(o[1:]), marked[:-1], o[1:])
    np.multiply(position[:-1], opens, out=scratch[1:])
    open_equity = cash[:-1] - row_sum(funding[1:]) + row_sum(scratch[1:])
    if equity.min() <= 0 or open_equity.min() <= 0:
        return None
    if _margin_at_edge(rules, fills, traded, open_equity[bars - 1]):
        return None
    if _bracket_at_edge(rules, fills, traded):
        return None
    if _liquidation_touched(inp, rules, fills, traded, decided, seg, position):
        return None

    fees = np.zeros(o.shape)  # calloc: untouched zero pages cost nothing
    fees[bars] = rules[:, TAKER] * notional
    slippage = np.zeros(o.shape)
    slippage[bars] = np.where(traded, fills.delta * (fills.price - marks), 0.0)
    return Result(equity=equity, cash=cash, position=position, exposure=exposure,
                  fees=fees, slippage=slippage, funding=funding,
                  liquidation_fees=np.zeros(o.shape), insurance=np.zeros(o.shape),
                  trades=_closed_form_trades(inp, fills, traded, bars, cum_pay, marked[-1],
                                             rules),
                  rejected=dict.fromkeys(REJECT_REASONS, 0), blown_bar=None,
                  path="closed_form")


def liquidation_price(entry, leverage, mmr, side, amount_per_unit=0.0):
    """Isolated-margin liquidation price of a position filled at ``entry`` with leverage
    ``leverage`` (side +1 long, -1 short) in a tier of rate ``mmr`` and maintenance amount
    ``amount_per_unit * |qty|``: where ``margin + unrealized PnL = mmr * notional - amount``,
    i.e. ``(entry * (1 - 1/L) - amount/|qty|) / (1 - mmr)`` long and ``(entry * (1 + 1/L) +
    amount/|qty|) / (1 + mmr)`` short. Scalars or arrays; a NaN ``mmr`` (no margin rules)
    gives a NaN level, never reached."""
    return (entry * (1 - side / leverage) - side * amount_per_unit) / (1 - side * mmr)


_liquidation_price = numba.njit(cache=True)(liquidation_price)  # for the compiled loop

# A tier holds notional N when cap_{k-1} <= N < cap_k; at a cap both tiers give the same
# level (the maintenance margin is continuous), so float noise there may pick either.
TIER_TOL = 1e-12


@numba.njit(cache=True)
def _tier_liquidation(rules, s, px, qty):
    """Liquidation price of ``qty`` filled at ``px`` under symbol s's margin tiers: the
    level of the tier that holds the position's notional at that level (the maintenance
    margin is taken at the mark, so its tier follows the price; the root is unique because
    equity less maintenance is monotone in the price), or with MM_ENTRY the level of the
    entry notional's tier with the maintenance valued at the entry. NaN without margin
    rules, or when no positive level exists (a long at 1x)."""
    side = 1.0 if qty > 0 else -1.0
    units = abs(qty)
    floor = 0.0
    at_entry = rules[s, MM_ENTRY] > 0
    for k in range(TIER0, rules.shape[1], TIER_W):
        cap = rules[s, k + TCAP]
        if np.isnan(cap):
            break
        if at_entry:  # Bybit: the entry value's tier; entry - side * (IM - MM) / units
            lp = px * (1 - side * (1 / rules[s, LEV] - rules[s, k + TMMR])) \
                - side * rules[s, k + TCUM] / units
            n = units * px
        else:
            lp = _liquidation_price(px, rules[s, LEV], rules[s, k + TMMR], side,
                                    rules[s, k + TCUM] / units)
            n = units * lp
        if n >= floor * (1 - TIER_TOL) and n <= cap * (1 + TIER_TOL):
            return lp if lp > 0 else np.nan
        floor = cap
    return np.nan


@numba.njit(cache=True)
def tier_liquidation_price(rules: np.ndarray, entry: np.ndarray, qty: np.ndarray
                           ) -> np.ndarray:
    """:func:`_tier_liquidation` of every (fill, symbol) of (K, S) arrays (the closed form's
    check), by the same arithmetic; NaN where ``qty`` is 0."""
    out = np.full(qty.shape, np.nan)
    for j in range(qty.shape[0]):
        for s in range(qty.shape[1]):
            if qty[j, s] != 0.0:
                out[j, s] = _tier_liquidation(rules, s, entry[j, s], qty[j, s])
    return out


# The closed form leaves to the loop every order whose initial margin is within this fraction
# of the equity of the available balance: its equity differs from the loop's by float noise,
# and it must not pass an order the loop rejects (or the reverse).
MARGIN_EDGE = 1e-9


def _margin_at_edge(rules: np.ndarray, fills: _Fills, traded: np.ndarray,
                    equity: np.ndarray) -> bool:
    """Whether an order of the solved path that opens, increases or reverses an isolated
    position has an initial margin above, or within ``MARGIN_EDGE`` of, the available
    balance (``equity``: (K,) at each fill bar's open, the equity its orders are sized from).
    """
    margined = ~np.isnan(rules[:, MMR])
    if not margined.any():
        return False
    qty = fills.qty
    zero_row = np.zeros((1, qty.shape[1]))
    posts = traded & margined
    im = np.where(posts, np.abs(qty) * fills.price / rules[:, LEV], 0.0)
    # Margin held after each fill bar: a symbol not traded keeps the margin of its last fill.
    rows = np.where(posts, np.arange(1, len(qty) + 1)[:, None], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    after = np.take_along_axis(np.vstack([zero_row, im]), rows, 0)
    before = np.vstack([zero_row, after[:-1]])
    # Symbol order: the symbols before s have filled at this open, those after have not.
    others = (np.cumsum(after, axis=1) - after
              + before.sum(axis=1, keepdims=True) - np.cumsum(before, axis=1))
    q_before = np.vstack([zero_row, qty[:-1]])
    adds = posts & (qty != 0) & ((q_before * qty <= 0) | (np.abs(qty) > np.abs(q_before)))
    cost = im + rules[:, TAKER] * np.abs(fills.delta) * fills.price  # margin + the order's fee
    short = cost - (equity[:, None] - others) > -MARGIN_EDGE * equity[:, None]
    return bool((adds & short).any())


def _bracket_at_edge(rules: np.ndarray, fills: _Fills, traded: np.ndarray) -> bool:
    """Whether an order of the solved path that opens, increases or reverses a position
    takes its notional above, or within ``MARGIN_EDGE`` of, the largest the leverage setting
    allows (the loop refuses it: ``leverage_bracket``)."""
    cap = rules[:, MAXN]
    if np.isinf(cap).all():
        return False
    qty = fills.qty
    q_before = np.vstack([np.zeros((1, qty.shape[1])), qty[:-1]])
    adds = traded & (qty != 0) & ((q_before * qty <= 0) | (np.abs(qty) > np.abs(q_before)))
    return bool((adds & (np.abs(qty) * fills.price > cap * (1 - MARGIN_EDGE))).any())


def _liquidation_touched(inp: Inputs, rules: np.ndarray, fills: _Fills, traded: np.ndarray,
                         decided: np.ndarray, seg: np.ndarray, position: np.ndarray) -> bool:
    """Whether any position of the solved path reaches its liquidation price."""
    mmr = rules[:, MMR]
    if np.isnan(mmr).all():
        return False
    qty = fills.qty
    liq = tier_liquidation_price(rules, fills.price, np.where(traded, qty, 0.0))
    # Untraded symbols keep the level of their last fill.
    rows = np.where(traded, np.arange(1, len(qty) + 1)[:, None], 0)
    np.maximum.accumulate(rows, axis=0, out=rows)
    liq = np.take_along_axis(np.vstack([np.full((1, liq.shape[1]), np.nan), liq]), rows, 0)
    liq_pad = np.vstack([np.full((1, liq.shape[1]), np.nan), liq])
    level = liq_pad[seg]
    m_open, m_high, m_low = inp.marks  # liquidation triggers on the mark
    hit = ((position > 0) & (m_low <= level)) | ((position < 0) & (m_high >= level))
    # At a fill bar the previous position is live at the open, before the order.
    before = liq_pad[:-1]
    qty_before = np.vstack([np.zeros((1, qty.shape[1])), qty[:-1]])
    o_fill = m_open[decided + 1]
    gap = ((qty_before > 0) & (o_fill <= before)) | ((qty_before < 0) & (o_fill >= before))
    return bool(hit.any() or gap.any())


def _closed_form_trades(inp: Inputs, fills: _Fills, traded: np.ndarray, bars: np.ndarray,
                        cum_pay: np.ndarray, last_close: np.ndarray,
                        rules: np.ndarray) -> pl.DataFrame:
    """Trades of the closed form: each fill of a symbol ends its trade and starts the next."""
    t_n = inp.open.shape[0]
    parts: list[tuple[np.ndarray, ...]] = []
    q_before = np.vstack([np.zeros((1, fills.qty.shape[1])), fills.qty[:-1]])
    for s in range(inp.open.shape[1]):
        k = np.flatnonzero(traded[:, s])
        old, new, d, px = q_before[k, s], fills.qty[k, s], fills.delta[k, s], fills.price[k, s]
        fee = rules[s, TAKER] * np.abs(d) * px
        reducing = np.where(old * d < 0, np.minimum(np.abs(d), np.abs(old)), 0.0)
        fee_out = fee * reducing / np.abs(d)
        opened = np.flatnonzero(new != 0)
        closed = opened + 1 < len(k)  # else still open at the end
        nxt = np.minimum(opened + 1, len(k) - 1)
        entry_bar = bars[k[opened]]
        exit_bar = np.where(closed, bars[k[nxt]], -1)
        exit_px = np.where(closed, px[nxt], last_close[s])
        qty = new[opened]
        fees = fee[opened] - fee_out[opened] + np.where(closed, fee_out[nxt], 0.0)
        paid_to = np.where(closed, exit_bar, t_n - 1) + 1
        funding = qty * (cum_pay[paid_to, s] - cum_pay[entry_bar + 1, s])
        pnl = qty * (exit_px - px[opened]) - fees - funding
        reason = np.where(closed, EXIT_REASONS.index("signal"), EXIT_REASONS.index("open"))
        parts.append((np.full(len(opened), s), entry_bar, exit_bar, np.sign(qty), np.abs(qty),
                      px[opened], exit_px, fees, funding, np.zeros(len(opened)), pnl, reason))
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return trades_frame([i.symbol for i in inp.instruments], *cols)


# ---- compiled bar loop ------------------------------------------------------------------
# The loop keeps its state in arrays: per-symbol columns of ``st``, scalar slots of ``acc``
# (cash, trade count, blown bar, exit rules, sizing, risk limits, limit rule), and writes the
# per-bar outputs in place; the rare events (fills, liquidations, a blown account) are njit
# functions of these arrays.
(Q, ENTRY, EBAR, LIQ, STOP, TAKE, TFEES, TFUND, TFLOW, LASTC, MARGIN, TINS, LPX, LEXP, LBUY,
 WORK, VOL) = range(17)
ST_W = 17
(CASH, NTRADES, BLOWN_BAR, SL, TP, TIME_STOP, LONG_CASH, DLCAP, MAXPOS, MAXTOT, MAXLEV,
 DAY_CUR, DAY_EQ, HALTED, LIM_OFF, LIM_N, LIM_ENT, LIM_EXIT, EXIT_CANCELS) = range(19)
R_SIGNAL, R_STOP, R_TAKE, R_TIME, R_LIQ, R_BLOWN, R_OPEN = range(len(EXIT_REASONS))
TRADE_COLS = 11  # symbol, entry bar, exit bar, qty, entry, exit, fees, funding, pnl,
# reason, insurance
# What an order attempt left: nothing to do, a working rest (participation cap, no volume
# yet), a refusal (counted), a limit order no longer needed (its side changed).
DONE, WAIT, REFUSED, CANCEL = range(4)


class _Out(NamedTuple):
    """Per-bar outputs and trade records the compiled loop writes into."""

    equity: np.ndarray
    cash: np.ndarray
    exposure: np.ndarray
    position: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    funding: np.ndarray
    liquidation_fees: np.ndarray
    insurance: np.ndarray
    trades: np.ndarray  # (capacity, TRADE_COLS)
    rejected: np.ndarray  # counts in REJECT_REASONS order
    events: np.ndarray  # counts in ORDER_EVENTS order


def loop_state(init_cash: float, exits: ExitRules, long_sizing: str,
               risk: RiskLimits | None = None, limits: LimitOrders | None = None
               ) -> np.ndarray:
    """The compiled loop's scalar slots (``acc``) at the start of a run."""
    risk = risk or RiskLimits()

    def off(v: float | None) -> float:
        return np.nan if v is None else v

    lim = (np.nan, 0.0, 0.0, 0.0) if limits is None else (
        limits.offset_bps / 1e4, limits.valid_bars, float(limits.entries), float(limits.exits))
    return np.array([init_cash, 0.0, -1.0,
                     np.nan if exits.stop_loss is None else exits.stop_loss,
                     np.nan if exits.take_profit is None else exits.take_profit,
                     0.0 if exits.time_stop is None else exits.time_stop,
                     1.0 if long_sizing == "cash" else 0.0,
                     off(risk.daily_loss_cap), off(risk.max_position_notional),
                     off(risk.max_total_notional), off(risk.max_leverage),
                     np.nan, np.nan, 0.0, *lim, 0.0])


def bar_days(inp: Inputs) -> np.ndarray:
    """The bars' UTC days for the loop (zeros when none were given: no daily cap)."""
    if inp.day is None:
        return np.zeros(inp.open.shape[0], dtype=np.int64)
    return np.ascontiguousarray(inp.day)


def loop_arrays(inp: Inputs) -> tuple[np.ndarray, ...]:
    """The loop's market inputs: open, high, low, close, mark open/high/low, volume (no rows
    when none) and funding rates (no rows when none), contiguous."""
    s_n = inp.open.shape[1]
    vol = np.empty((0, s_n)) if inp.volume is None else inp.volume
    rate = np.full((0, s_n), np.nan) if inp.funding is None else inp.funding
    return tuple(np.ascontiguousarray(a) for a in (inp.open, inp.high, inp.low, inp.close,
                                                   *inp.marks, vol, rate))


def trade_capacity(inp: Inputs, changed: np.ndarray) -> int:
    """Rows the trade records need: every trade is opened by a filled signal order, one per
    change of target, or one per bar and symbol when the participation cap splits fills."""
    if any(i.participation is not None for i in inp.instruments):
        return int(changed.sum()) + changed.size
    return int(changed.sum())


def _compiled(inp: Inputs, long_sizing: str = "equity") -> Result:
    t_n, s_n = inp.open.shape
    acc = loop_state(inp.init_cash, inp.exits, long_sizing, inp.risk, inp.limits)
    # Written at every bar (fees and slippage at every fill): on huge pages where the kernel
    # gives them (memory.py); funding and liquidations are rare, left to untouched zeros.
    out = _Out(*(aligned(t_n) for _ in range(3)), aligned((t_n, s_n)),
               aligned((t_n, s_n), zero=True), aligned((t_n, s_n), zero=True),
               aligned((t_n, s_n), zero=True) if inp.funding is not None
               else np.zeros((t_n, s_n)), np.zeros((t_n, s_n)), np.zeros((t_n, s_n)),
               np.empty((trade_capacity(inp, inp.changed), TRADE_COLS)),
               np.zeros(len(REJECT_REASONS), dtype=np.int64),
               np.zeros(len(ORDER_EVENTS), dtype=np.int64))
    rules = _rules(inp.instruments)
    loop = _plain_loop if plain_loop(inp, rules) else _loop
    loop(*loop_arrays(inp), np.ascontiguousarray(inp.changed),
         np.ascontiguousarray(inp.weights), bar_days(inp), rules, acc, *out)
    tr = out.trades[:int(acc[NTRADES])]
    frame = trades_frame([i.symbol for i in inp.instruments], tr[:, 0].astype(np.int64),
                         tr[:, 1].astype(np.int64), tr[:, 2].astype(np.int64),
                         np.sign(tr[:, 3]), np.abs(tr[:, 3]), tr[:, 4], tr[:, 5], tr[:, 6],
                         tr[:, 7], tr[:, 10], tr[:, 8], tr[:, 9].astype(np.int64))
    blown = int(acc[BLOWN_BAR])
    return Result(equity=out.equity, cash=out.cash, position=out.position,
                  exposure=out.exposure, fees=out.fees, slippage=out.slippage,
                  funding=out.funding, liquidation_fees=out.liquidation_fees,
                  insurance=out.insurance, trades=frame,
                  rejected=dict(zip(REJECT_REASONS, out.rejected.tolist(), strict=True)),
                  blown_bar=None if blown < 0 else blown, path="compiled",
                  orders=dict(zip(ORDER_EVENTS, out.events.tolist(), strict=True)))


# ``cash``, ``position``, ``fees``, ``slippage``, ``funding``, ``liquidation_fees`` and
# ``insurance`` may have a single row instead of T: the loop then accumulates into it (what
# a sweep needs), and writes per bar otherwise.
# The per-bar phases are written inline: a call per bar to an njit helper taking the state
# arrays costs more (array arguments are reference counted) than the phase itself, and made
# this loop 5x slower. Only the rare events (fills, liquidations) are functions.
@numba.njit(cache=True)
def _loop(o, h, lo, c, mo, mh, ml, vol, rate, changed, weights, day, rules,  # noqa: C901
          acc, equity, cash, exposure, position, fees, slippage, funding, liquidation_fees,
          insurance, trades, rejected, events):
    t_n, s_n = o.shape
    st = np.zeros((s_n, ST_W))
    st[:, LASTC] = np.nan
    st[:, LPX] = np.nan
    st[:, VOL] = np.nan
    has_vol = vol.shape[0] > 0
    limits = not np.isnan(acc[LIM_OFF])
    for t in range(t_n):
        if has_vol:
            for s in range(s_n):
                st[s, VOL] = vol[t, s]
        for s in range(s_n):  # funding on the position held into the open, at the mark
            if rate.shape[0] and st[s, Q] != 0.0 and not np.isnan(rate[t, s]):
                pay = st[s, Q] * mo[t, s] * rate[t, s]
                acc[CASH] -= pay
                funding[min(t, funding.shape[0] - 1), s] += pay
                st[s, TFUND] += pay
                st[s, TFLOW] -= pay
        for s in range(s_n):  # exits judged at the open (NaN level = rule off: False)
            q, px = st[s, Q], o[t, s]
            if q == 0.0 or np.isnan(px):
                continue
            if mo[t, s] <= st[s, LIQ] if q > 0 else mo[t, s] >= st[s, LIQ]:
                _liquidate(t, s, st, rules, acc, fees, liquidation_fees, insurance, trades)
            elif px <= st[s, STOP] if q > 0 else px >= st[s, STOP]:
                _fill(t, s, 0.0, px, R_STOP, False, st, rules, acc, fees, slippage, trades)
            elif px >= st[s, TAKE] if q > 0 else px <= st[s, TAKE]:
                _fill(t, s, 0.0, px, R_TAKE, False, st, rules, acc, fees, slippage, trades)
            elif acc[TIME_STOP] > 0 and t - st[s, EBAR] >= acc[TIME_STOP]:
                _fill(t, s, 0.0, px, R_TIME, False, st, rules, acc, fees, slippage, trades)
        held = 0.0  # equity at the open = cash + held: sizes every order of this open
        for s in range(s_n):
            if st[s, Q] != 0.0:
                held += st[s, Q] * (st[s, LASTC] if np.isnan(o[t, s]) else o[t, s])
        eq = acc[CASH] + held
        if acc[BLOWN_BAR] < 0 and eq <= 0:
            marks = np.where(np.isnan(o[t]), st[:, LASTC], o[t])
            _blow(t, marks, st, rules, acc, fees, slippage, trades, events)
        if not np.isnan(acc[DLCAP]):  # the daily loss cap: a new UTC day starts afresh
            if day[t] != acc[DAY_CUR]:
                acc[DAY_CUR], acc[DAY_EQ], acc[HALTED] = day[t], eq, 0.0
            elif eq <= acc[DAY_EQ] * (1 - acc[DLCAP]):
                acc[HALTED] = 1.0
        for s in range(s_n):  # orders decided at the close of t-1, and working rests
            if t > 0 and changed[t - 1, s]:
                if not np.isnan(st[s, LPX]):  # a new target replaces a resting limit
                    events[EV_CANCELLED] += 1
                    st[s, LPX] = np.nan
                st[s, WORK] = 0.0
                w = weights[t - 1, s]
                if acc[BLOWN_BAR] >= 0:
                    rejected[REJ_BLOWN] += 1
                elif limits and _is_limit(w, weights[t - 2, s] if t > 1 else 0.0, acc):
                    _place_limit(t, s, w, eq, o[t, s], st, rules, acc, rejected, events)
                elif _order(t, s, w, eq, o[t], True, False, st, rules, acc, fees, slippage,
                            trades, rejected, events) == WAIT:
                    st[s, WORK] = 1.0
            elif (st[s, WORK] > 0.0 and not np.isnan(o[t, s])
                  and _order(t, s, weights[t - 1, s], eq, o[t], False, False, st, rules, acc,
                             fees, slippage, trades, rejected, events) != WAIT):
                st[s, WORK] = 0.0
        if limits:  # resting limits: filled when the bar trades through, else expire
            for s in range(s_n):
                lp = st[s, LPX]
                if np.isnan(lp):
                    continue
                if (not np.isnan(o[t, s])
                        and (lo[t, s] < lp if st[s, LBUY] > 0 else h[t, s] > lp)):
                    done = _order(t, s, weights[t - 1, s], eq, o[t], False, True, st, rules,
                                  acc, fees, slippage, trades, rejected, events)
                    if done != WAIT:
                        st[s, LPX] = np.nan
                        if done == DONE:
                            events[EV_FILLED] += 1
                        elif done == CANCEL:
                            events[EV_CANCELLED] += 1
                if not np.isnan(st[s, LPX]) and t >= st[s, LEXP]:
                    events[EV_EXPIRED] += 1
                    st[s, LPX] = np.nan
        for s in range(s_n):  # intrabar: liquidation (on the mark), stop, take-profit
            q, op = st[s, Q], o[t, s]
            if q == 0.0 or np.isnan(op):
                continue
            if q > 0:
                if ml[t, s] <= st[s, LIQ]:
                    _liquidate(t, s, st, rules, acc, fees, liquidation_fees, insurance,
                               trades)
                elif lo[t, s] <= st[s, STOP]:
                    _fill(t, s, 0.0, min(op, st[s, STOP]), R_STOP, False, st, rules, acc,
                          fees, slippage, trades)
                elif h[t, s] >= st[s, TAKE]:
                    _fill(t, s, 0.0, max(op, st[s, TAKE]), R_TAKE, False, st, rules, acc,
                          fees, slippage, trades)
            elif mh[t, s] >= st[s, LIQ]:
                _liquidate(t, s, st, rules, acc, fees, liquidation_fees, insurance, trades)
            elif h[t, s] >= st[s, STOP]:
                _fill(t, s, 0.0, max(op, st[s, STOP]), R_STOP, False, st, rules, acc, fees,
                      slippage, trades)
            elif lo[t, s] <= st[s, TAKE]:
                _fill(t, s, 0.0, min(op, st[s, TAKE]), R_TAKE, False, st, rules, acc, fees,
                      slippage, trades)
        held = 0.0
        for s in range(s_n):  # marks at the close
            if not np.isnan(c[t, s]):
                st[s, LASTC] = c[t, s]
            if st[s, Q] != 0.0:
                held += st[s, Q] * st[s, LASTC]
        if acc[BLOWN_BAR] < 0 and acc[CASH] + held <= 0:
            _blow(t, st[:, LASTC].copy(), st, rules, acc, fees, slippage, trades, events)
            held = 0.0
        if acc[CASH] + held <= acc[DAY_EQ] * (1 - acc[DLCAP]):  # NaN: never
            acc[HALTED] = 1.0
        gross = 0.0
        for s in range(s_n):
            q = st[s, Q]
            position[min(t, position.shape[0] - 1), s] = q
            if q != 0.0:
                gross += abs(q * st[s, LASTC])
        equity[t] = acc[CASH] + held
        cash[min(t, cash.shape[0] - 1)] = acc[CASH]
        exposure[t] = gross / equity[t] if gross != 0.0 else 0.0
    events[EV_CANCELLED] += int(acc[EXIT_CANCELS])
    for s in range(s_n):  # trades still open, marked at the last close
        if not np.isnan(st[s, LPX]):
            events[EV_OPEN] += 1
        if st[s, Q] != 0.0:
            st[s, TFLOW] += st[s, Q] * st[s, LASTC]
            _close_trade(-1, s, st[s, LASTC], R_OPEN, st, acc, trades)


def plain_loop(inp: Inputs, rules: np.ndarray) -> bool:
    """Whether ``_plain_loop`` gives ``_loop``'s result: market orders at fixed slippage, no
    exit rules, funding, risk limits or daily cap, and no liquidation (no margin rules)."""
    return (inp.plain and not inp.exits.any and inp.funding is None and not inp.risk.any
            and bool(np.isnan(rules[:, MMR]).all()) and bool(np.isnan(rules[:, TIER0]).all()))


# The loop for the runs ``plain_loop`` admits: ``_loop`` with the phases that cannot act left
# out (funding, exits at the open, limits, intrabar exits, the daily cap), the same arithmetic
# in the same order on what is left (bit-identical results; tests/unit/test_engine_plain.py).
# Quantities and last closes are kept in local arrays between orders, the bars with orders
# are listed first (one comparison a bar finds them), and the close is marked and recorded in
# one pass, so the per-bar work is a few loads and stores per symbol (the peers' 1,051,200
# bars on the 2-core VM: 15.5 ms with prefaulted outputs, 7.7 ms of it without the 14,443
# orders; the full loop 25 ms).
@numba.njit(cache=True)
def _plain_loop(o, h, lo, c, mo, mh, ml, vol, rate, changed, weights, day, rules,  # noqa: C901
                acc, equity, cash, exposure, position, fees, slippage, funding,
                liquidation_fees, insurance, trades, rejected, events):
    t_n, s_n = o.shape
    st = np.zeros((s_n, ST_W))
    st[:, LASTC] = np.nan
    st[:, LPX] = np.nan
    st[:, VOL] = np.nan
    q = np.zeros(s_n)
    last = np.full(s_n, np.nan)
    one_cash = cash.shape[0] == 1
    one_pos = position.shape[0] == 1
    # The bars with a change of target (decided at their close): the per-bar test is one
    # comparison with the next of them, not a pass over the symbols' changes.
    decided = np.empty(t_n, dtype=np.int64)  # only the pages written are ever backed
    n_dec = 0
    flat = changed.ravel()
    for i in range((t_n - 1) * s_n):
        if flat[i] and (n_dec == 0 or decided[n_dec - 1] != i // s_n):
            decided[n_dec] = i // s_n
            n_dec += 1
    decided = decided[:n_dec]
    k = 0
    fill_bar = decided[0] + 1 if n_dec else t_n
    for t in range(t_n):
        held = 0.0  # equity at the open = cash + held: sizes every order of this open
        for s in range(s_n):
            if q[s] != 0.0:
                px = o[t, s]
                held += q[s] * (last[s] if np.isnan(px) else px)
        eq = acc[CASH] + held
        if acc[BLOWN_BAR] < 0 and eq <= 0:
            marks = np.where(np.isnan(o[t]), last, o[t])
            _blow(t, marks, st, rules, acc, fees, slippage, trades, events)
            for s in range(s_n):
                q[s] = st[s, Q]
        if t == fill_bar:  # orders decided at the close of t-1
            for s in range(s_n):
                if changed[t - 1, s]:
                    if acc[BLOWN_BAR] >= 0:
                        rejected[REJ_BLOWN] += 1
                    else:
                        _order(t, s, weights[t - 1, s], eq, o[t], True, False, st, rules, acc,
                               fees, slippage, trades, rejected, events)
                        q[s] = st[s, Q]
            k += 1
            fill_bar = decided[k] + 1 if k < decided.size else t_n
        held = 0.0
        gross = 0.0
        row = 0 if one_pos else t
        for s in range(s_n):  # marks at the close
            px = c[t, s]
            if not np.isnan(px):
                last[s] = px
            position[row, s] = q[s]
            if q[s] != 0.0:
                value = q[s] * last[s]
                held += value
                gross += abs(value)
        if acc[BLOWN_BAR] < 0 and acc[CASH] + held <= 0:
            for s in range(s_n):
                st[s, LASTC] = last[s]
            _blow(t, last.copy(), st, rules, acc, fees, slippage, trades, events)
            held = 0.0
            gross = 0.0
            for s in range(s_n):
                q[s] = st[s, Q]
                position[row, s] = q[s]
                if q[s] != 0.0:
                    gross += abs(q[s] * last[s])
        e = acc[CASH] + held
        equity[t] = e
        cash[0 if one_cash else t] = acc[CASH]
        exposure[t] = gross / e if gross != 0.0 else 0.0
    for s in range(s_n):  # trades still open, marked at the last close
        st[s, LASTC] = last[s]
        if st[s, Q] != 0.0:
            st[s, TFLOW] += st[s, Q] * st[s, LASTC]
            _close_trade(-1, s, st[s, LASTC], R_OPEN, st, acc, trades)


@numba.njit(cache=True)
def _is_limit(w, w_before, acc):
    """Whether the order for a change of target from ``w_before`` to ``w`` is a limit: an
    exit (to 0, or smaller on the same side) when exits are, an entry when entries are."""
    exit_ = w == 0.0 or (w * w_before > 0 and abs(w) < abs(w_before))
    return acc[LIM_EXIT] > 0 if exit_ else acc[LIM_ENT] > 0


@numba.njit(cache=True)
def _place_limit(t, s, w, eq, op, st, rules, acc, rejected, events):
    """Rest a limit order for target ``w`` from bar t: its side is that of the quantity the
    target asks for at this open; its price the last close known at the decision (this
    open without one) moved ``offset`` to the passive side, on the tick grid."""
    lot = rules[s, LOT]
    qty = w * eq / op
    if lot > 0:
        qty = np.trunc(qty / lot + np.copysign(GRID_TOL, qty)) * lot
    old = st[s, Q]
    if qty == old:
        if w != 0:
            rejected[REJ_ZERO_QTY] += 1
        return
    ref = op if np.isnan(st[s, LASTC]) else st[s, LASTC]
    tick = rules[s, TICK]
    if qty > old:
        lp = ref * (1 - acc[LIM_OFF])
        lp = np.floor(lp / tick + GRID_TOL) * tick if tick > 0 else lp
    else:
        lp = ref * (1 + acc[LIM_OFF])
        lp = np.ceil(lp / tick - GRID_TOL) * tick if tick > 0 else lp
    st[s, LPX], st[s, LBUY], st[s, LEXP] = lp, 1.0 if qty > old else -1.0, t + acc[LIM_N] - 1
    events[EV_PLACED] += 1


@numba.njit(cache=True)
def _order(t, s, w, eq, orow, first, limit, st, rules, acc, fees, slippage,  # noqa: C901
           trades, rejected, events):
    """Order for target ``w`` sized from the equity ``eq`` at this open (``orow``: every
    symbol's open of bar t): a market order at the open (``first``: a new one, else a
    working rest) or the resting limit order of symbol s at its price (``limit``). Returns
    DONE, WAIT (a rest remains: participation cap), REFUSED or CANCEL (a limit whose side no
    longer moves the position toward the target)."""
    op = orow[s]
    lot = rules[s, LOT]
    ref = st[s, LPX] if limit else op
    qty = w * eq / ref
    if lot > 0:
        qty = np.trunc(qty / lot + np.copysign(GRID_TOL, qty)) * lot
    old = st[s, Q]
    if limit:
        if qty == old or (qty > old) != (st[s, LBUY] > 0):
            return CANCEL
    elif acc[LONG_CASH] > 0 and qty > old:  # long_sizing="cash": a buy is capped by the cash
        cap = max(acc[CASH], 0.0) / (_fill_price(rules, s, op, True, 0.0, np.nan)
                                     * (1 + rules[s, TAKER]))
        if lot > 0:
            cap = np.floor(cap / lot) * lot
        if qty - old > cap:
            qty = old + cap
    if qty == old:
        if first and w != 0:
            rejected[REJ_ZERO_QTY] += 1
            return REFUSED
        return DONE
    partial = False
    if not np.isnan(rules[s, PART]):  # participation cap: the rest stays working
        room = rules[s, PART] * st[s, VOL] if st[s, VOL] > 0 else 0.0
        if lot > 0:
            room = np.floor(room / lot + GRID_TOL) * lot
        if abs(qty - old) > room:
            if room <= 0:
                return WAIT
            qty = old + np.copysign(room, qty - old)
            partial = True
    if limit:
        px, fee_rate = st[s, LPX], rules[s, MAKER]
    else:
        if rules[s, IMPACT] > 0 and not st[s, VOL] > 0:
            rejected[REJ_NO_VOLUME] += 1
            return REFUSED
        px = _fill_price(rules, s, op, qty > old, abs(qty - old), st[s, VOL])
        fee_rate = rules[s, TAKER]
    adds = qty != 0 and (qty * old <= 0 or abs(qty) > abs(old))
    if qty != 0 and abs(qty - old) * px < rules[s, MINN]:
        rejected[REJ_MIN_NOTIONAL] += 1
        return REFUSED
    if adds and abs(qty) * px > rules[s, MAXN]:
        rejected[REJ_BRACKET] += 1
        return REFUSED
    if adds and _risk_refusal(s, qty, px, eq, orow, st, acc, rejected):
        return REFUSED
    if (adds and not np.isnan(rules[s, MMR])
            and abs(qty) * px / rules[s, LEV] + fee_rate * abs(qty - old) * px
            > _available(s, eq, st) + MARGIN_TOL * eq):
        rejected[REJ_MARGIN] += 1
        return REFUSED
    _fill(t, s, qty, st[s, LPX] if limit else op, R_SIGNAL, limit, st, rules, acc, fees,
          slippage, trades)
    if partial:
        events[EV_PARTIAL] += 1
        return WAIT
    return DONE


@numba.njit(cache=True)
def _risk_refusal(s, qty, px, eq, orow, st, acc, rejected):
    """Count and report the first limit of the risk manager an order adding risk breaks
    (``RiskLimits``; NaN limits are off)."""
    if acc[HALTED] > 0:
        rejected[REJ_DAILY] += 1
        return True
    notional = abs(qty) * px
    if notional > acc[MAXPOS]:
        rejected[REJ_MAXPOS] += 1
        return True
    if np.isnan(acc[MAXTOT]) and np.isnan(acc[MAXLEV]):
        return False
    total = notional
    for i in range(st.shape[0]):
        if i != s and st[i, Q] != 0.0:
            total += abs(st[i, Q]) * (st[i, LASTC] if np.isnan(orow[i]) else orow[i])
    if total > acc[MAXTOT]:
        rejected[REJ_MAXTOT] += 1
        return True
    if total > acc[MAXLEV] * eq:
        rejected[REJ_MAXLEV] += 1
        return True
    return False


@numba.njit(cache=True)
def _available(s, eq, st):
    """Available balance for symbol s: ``eq`` less the margin the other symbols posted."""
    posted = 0.0
    for i in range(st.shape[0]):
        if i != s:
            posted += st[i, MARGIN]
    return eq - posted


@numba.njit(cache=True)
def _fill_price(rules, s, price, buy, units, vol):
    """Market fill of ``units`` at ``price`` before slippage: the slippage (plus the impact
    ``k * sqrt(units / vol)``, ``k`` when the bar has no volume) against the trader, on the
    tick grid."""
    slip = rules[s, SLIP]
    if rules[s, IMPACT] > 0:
        slip += rules[s, IMPACT] * (np.sqrt(units / vol) if vol > 0 else 1.0)
    tick = rules[s, TICK]
    if buy:
        px = price * (1 + slip)
        return np.ceil(px / tick - GRID_TOL) * tick if tick > 0 else px
    px = price * (1 - slip)
    return np.floor(px / tick + GRID_TOL) * tick if tick > 0 else px


@numba.njit(cache=True)
def _fill(t, s, new_qty, price, reason, maker, st, rules, acc, fees, slippage, trades):
    """Order taking symbol s to new_qty: a market order at ``price`` before slippage, or
    (``maker``) a limit order at ``price``, its limit, with the maker fee."""
    old = st[s, Q]
    delta = new_qty - old
    if maker:
        px, fee = price, rules[s, MAKER] * abs(delta) * price
    else:
        px = _fill_price(rules, s, price, delta > 0, abs(delta), st[s, VOL])
        fee = rules[s, TAKER] * abs(delta) * px
    acc[CASH] -= delta * px + fee
    fees[min(t, fees.shape[0] - 1), s] += fee
    slippage[min(t, slippage.shape[0] - 1), s] += delta * (px - price)
    # The part of the order that reduces the old position is the old trade's exit.
    reducing = min(abs(delta), abs(old)) if old * delta < 0 else 0.0
    fee_out = fee * reducing / abs(delta)
    if old != 0.0:
        st[s, TFEES] += fee_out
        st[s, TFLOW] += old * px - fee_out
        _close_trade(t, s, px, reason, st, acc, trades)
    if new_qty != 0.0:
        mmr = rules[s, MMR]
        st[s, Q], st[s, ENTRY], st[s, EBAR] = new_qty, px, t
        st[s, LIQ] = _tier_liquidation(rules, s, px, new_qty)
        st[s, MARGIN] = 0.0 if np.isnan(mmr) else abs(new_qty) * px / rules[s, LEV]
        if new_qty > 0:
            st[s, STOP], st[s, TAKE] = px * (1 - acc[SL]), px * (1 + acc[TP])
        else:
            st[s, STOP], st[s, TAKE] = px * (1 + acc[SL]), px * (1 - acc[TP])
        st[s, TFEES] = fee - fee_out
        st[s, TFUND] = 0.0
        st[s, TFLOW] = -new_qty * px
        st[s, TFLOW] -= fee - fee_out


@numba.njit(cache=True)
def _liquidate(t, s, st, rules, acc, fees, liquidation_fees, insurance, trades):
    """Close at the liquidation price: the trader loses exactly the posted margin; what is
    left of it there is the clearance fee, then the insurance fund's (module docstring)."""
    q, px, margin = st[s, Q], st[s, LIQ], st[s, MARGIN]
    remaining = min(max(margin + q * (px - st[s, ENTRY]), 0.0), margin)
    clearance = min(rules[s, LIQFEE] * abs(q) * px, remaining)
    back = q * st[s, ENTRY] - margin
    acc[CASH] += back
    fees[min(t, fees.shape[0] - 1), s] += clearance
    liquidation_fees[min(t, liquidation_fees.shape[0] - 1), s] += clearance
    insurance[min(t, insurance.shape[0] - 1), s] += remaining - clearance
    st[s, TFEES] += clearance
    st[s, TINS] = remaining - clearance
    st[s, TFLOW] += back
    _close_trade(t, s, px, R_LIQ, st, acc, trades)


@numba.njit(cache=True)
def _blow(t, marks, st, rules, acc, fees, slippage, trades, events):
    """Close every position at ``marks`` (market orders) and cancel every working order."""
    acc[BLOWN_BAR] = t
    for s in range(st.shape[0]):
        if not np.isnan(st[s, LPX]):
            events[EV_CANCELLED] += 1
            st[s, LPX] = np.nan
        st[s, WORK] = 0.0
        if st[s, Q] != 0.0:
            _fill(t, s, 0.0, marks[s], R_BLOWN, False, st, rules, acc, fees, slippage,
                  trades)


@numba.njit(cache=True)
def _close_trade(t, s, px, reason, st, acc, trades):
    n = int(acc[NTRADES])
    trades[n, 0], trades[n, 1], trades[n, 2] = s, st[s, EBAR], t
    trades[n, 3], trades[n, 4], trades[n, 5] = st[s, Q], st[s, ENTRY], px
    trades[n, 6], trades[n, 7], trades[n, 8] = st[s, TFEES], st[s, TFUND], st[s, TFLOW]
    trades[n, 9], trades[n, 10] = reason, st[s, TINS]
    acc[NTRADES] = n + 1
    st[s, Q], st[s, MARGIN], st[s, TINS] = 0.0, 0.0, 0.0
    if reason != R_SIGNAL and reason != R_OPEN:  # an exit: flat until the target changes
        if not np.isnan(st[s, LPX]):
            acc[EXIT_CANCELS] += 1
            st[s, LPX] = np.nan
        st[s, WORK] = 0.0
