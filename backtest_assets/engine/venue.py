"""Per-symbol instrument rules and per-position exit rules for the backtest engine.

Both are frozen, keyword-only dataclasses; ``validate`` raises ``ValueError`` naming the
field (and the symbol for an :class:`Instrument`). The engines call ``validate`` before
simulating, so a bad rule never reaches the accounting.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from backtest_assets.specs.models import VenueSpec


@dataclass(frozen=True, kw_only=True)
class Bracket:
    """One notional tier of a venue's margin table (Binance's leverage brackets, Bybit's risk
    limits): positions of notional below ``cap`` (and at or above the previous tier's cap)
    may use leverage up to ``max_leverage`` and keep a maintenance margin of
    ``notional * mmr - maint_amount``."""

    cap: float
    max_leverage: float
    mmr: float
    maint_amount: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Instrument:
    """Trading rules of one symbol on its venue.

    Parameters
    ----------
    symbol : str
        Name used in errors and in the trades table.
    taker_bps, slippage_bps : float
        Taker fee and slippage per side, in bps of notional (``specs/fees.yaml``), paid by
        market orders (signals without ``LimitOrders``, and every exit).
    maker_bps : float
        Maker fee in bps of notional, paid by limit orders (``LimitOrders``), which fill at
        their limit price without slippage.
    lot_size : float
        Quantity step; order quantities are rounded toward zero to it. 0 = continuous.
    tick_size : float
        Price step; fill prices are rounded against the trader (buys up, sells down).
        0 = no rounding.
    min_notional : float
        Orders with ``|qty * fill price|`` below it are rejected (closing orders are exempt).
    max_leverage : float
        The symbol's leverage setting L: the largest gross exposure / equity a target may
        ask for while this symbol is held and, with a maintenance margin rate, the leverage
        its isolated positions post margin at (``notional / L``; the target only sets the
        notional). ``from_venue`` takes the venue's cap unless given (Binance's default
        setting is 20x); a setting above the target's gross leaves headroom for slippage
        and fees, which the initial margin check would otherwise refuse.
    maintenance_margin_rate : float or None
        Isolated-margin maintenance rate; None means the position posts no margin and is
        never liquidated (spot, or a study that ignores margin). Must be below
        ``1 / max_leverage`` (the venues cap a tier's leverage so).
    liquidation_fee_rate : float
        Clearance fee on liquidation, as a fraction of the notional at the liquidation
        price; it is paid from what is left of the margin, never more.
    participation : float or None
        In (0, 1]: a signal order (market or limit) fills at most this fraction of its fill
        bar's volume (rounded down to the lot); the rest stays working (engine docstring,
        Liquidity). None: no cap. Needs the bars' volume.
    maintenance_at : {"level", "entry"}
        Where the maintenance margin is valued: ``"level"`` (Binance USD-M) on the notional
        at the liquidation price, in the tier holding that notional; ``"entry"`` (Bybit USDT
        perpetuals: ``MM = position value x MMR - deduction``, the value at the entry price)
        on the entry notional and its tier (engine docstring, Margin tiers).
    impact_coef : float
        Square-root impact: a market fill of ``q`` units in a bar of volume ``V`` pays
        slippage ``slippage + impact_coef * sqrt(q / V)`` (a fraction of the price) instead
        of ``slippage``. 0: fixed slippage only. Needs the bars' volume.
    brackets : tuple of Bracket
        The venue's notional tiers, by increasing cap (empty: one tier, ``mmr`` at any
        notional). The maintenance margin of a position of notional N is ``N * mmr_k -
        maint_amount_k`` in the tier k holding N, continuous across tiers (``maint_amount_k
        = maint_amount_{k-1} + cap_{k-1} * (mmr_k - mmr_{k-1})``, checked); the first tier's
        rate is ``maintenance_margin_rate``. The leverage setting must be allowed by the
        first tier, and an order taking a position's notional above the largest cap whose
        tier allows that leverage is refused (``leverage_bracket``).
    """

    symbol: str
    taker_bps: float = 0.0
    slippage_bps: float = 0.0
    lot_size: float = 0.0
    tick_size: float = 0.0
    min_notional: float = 0.0
    max_leverage: float = 1.0
    maintenance_margin_rate: float | None = None
    liquidation_fee_rate: float = 0.0
    maker_bps: float = 0.0
    participation: float | None = None
    impact_coef: float = 0.0
    maintenance_at: str = "level"
    brackets: tuple[Bracket, ...] = ()

    @classmethod
    def from_venue(cls, symbol: str, venue: VenueSpec, **rules: float | None) -> Instrument:
        """Instrument with the venue's fees, slippage, leverage cap, margin rules and the
        symbol's order filters (``specs/fees.yaml``), any of them replaced by ``rules``.

        Parameters
        ----------
        symbol : str
            Symbol name.
        venue : VenueSpec
            A venue of ``specs/fees.yaml``.
        **rules
            Any field of :class:`Instrument` to use instead of the venue's.

        Returns
        -------
        Instrument
        """
        filters = venue.rules(symbol)
        brackets = tuple(Bracket(cap=b[0], max_leverage=b[1], mmr=b[2], maint_amount=b[3])
                         for b in filters.brackets) if venue.maintenance_margin_rate else ()
        fields = dict(taker_bps=venue.taker_bps, slippage_bps=venue.slippage_bps,
                      maker_bps=venue.maker_bps, impact_coef=venue.impact_coef,
                      maintenance_at=venue.maintenance_at,
                      lot_size=filters.lot_size, tick_size=filters.tick_size,
                      min_notional=filters.min_notional, max_leverage=venue.max_leverage,
                      maintenance_margin_rate=brackets[0].mmr if brackets
                      else venue.maintenance_margin_rate,
                      liquidation_fee_rate=venue.liquidation_fee_rate, brackets=brackets)
        return cls(symbol=symbol, **{**fields, **rules})

    @property
    def tiers(self) -> tuple[Bracket, ...]:
        """The margin tiers the engines use: ``brackets``, or one unbounded tier at
        ``maintenance_margin_rate`` (none without margin rules)."""
        if self.brackets or self.maintenance_margin_rate is None:
            return self.brackets
        return (Bracket(cap=math.inf, max_leverage=self.max_leverage,
                        mmr=self.maintenance_margin_rate),)

    @property
    def max_notional(self) -> float:
        """The largest position notional the leverage setting allows: the cap of the last
        tier whose max leverage is at least the setting (unbounded without brackets)."""
        caps = [b.cap for b in self.brackets if b.max_leverage >= self.max_leverage]
        return caps[-1] if caps else math.inf

    @property
    def taker(self) -> float:
        """Taker fee as a fraction of notional."""
        return self.taker_bps / 1e4

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of price."""
        return self.slippage_bps / 1e4

    @property
    def maker(self) -> float:
        """Maker fee as a fraction of notional."""
        return self.maker_bps / 1e4

    @property
    def needs_volume(self) -> bool:
        """Whether the liquidity rules (participation cap, impact) need the bars' volume."""
        return self.participation is not None or self.impact_coef > 0

    def validate(self) -> None:
        """Raise ``ValueError('<symbol>: <field>: problem')`` on an impossible rule."""
        def bad(field: str, problem: str) -> ValueError:
            return ValueError(f"{self.symbol}: {field}: {getattr(self, field)} {problem}")

        for field in ("taker_bps", "slippage_bps", "maker_bps"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 <= value <= 1000):
                raise bad(field, "is out of range [0, 1000]")
        self._validate_execution(bad)
        for field in ("lot_size", "tick_size", "min_notional", "liquidation_fee_rate"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise bad(field, "is not a finite number >= 0")
        if not (math.isfinite(self.max_leverage) and self.max_leverage >= 1):
            raise bad("max_leverage", "is not a finite number >= 1")
        mmr = self.maintenance_margin_rate
        if mmr is not None and not (math.isfinite(mmr) and 0 <= mmr < 1):
            raise bad("maintenance_margin_rate", "is out of range [0, 1)")
        if mmr is not None and mmr * self.max_leverage >= 1:
            raise bad("maintenance_margin_rate", f"is not below 1 / max_leverage "
                      f"({self.max_leverage:g}): the position would be liquidated at entry")
        if self.brackets:
            self._validate_brackets(bad)

    def _validate_execution(self, bad) -> None:
        part = self.participation
        if part is not None and not (math.isfinite(part) and 0 < part <= 1):
            raise bad("participation", "is out of range (0, 1]")
        if not (math.isfinite(self.impact_coef) and 0 <= self.impact_coef <= 1):
            raise bad("impact_coef", "is out of range [0, 1]")
        if self.maintenance_at not in ("level", "entry"):
            raise bad("maintenance_at", "is not 'level' or 'entry'")

    def _validate_brackets(self, bad) -> None:
        b = self.brackets
        if self.maintenance_margin_rate != b[0].mmr:
            raise bad("maintenance_margin_rate", f"is not the first bracket's rate {b[0].mmr}")
        if self.max_leverage > b[0].max_leverage:
            raise bad("max_leverage", f"is above the first bracket's {b[0].max_leverage:g}")
        floor, prev = 0.0, None
        for k, x in enumerate(b):
            where = f"brackets[{k}]"
            if not (x.cap > floor and (math.isfinite(x.cap) or k == len(b) - 1)):
                raise ValueError(f"{self.symbol}: {where}.cap: {x.cap} is not above the "
                                 f"previous cap {floor} (and finite but for the last)")
            if not (0 <= x.mmr < 1 and x.mmr * x.max_leverage < 1 and x.max_leverage >= 1):
                raise ValueError(f"{self.symbol}: {where}: mmr {x.mmr} and max_leverage "
                                 f"{x.max_leverage} leave no room (need mmr x leverage < 1)")
            expected = 0.0 if prev is None else prev.maint_amount + floor * (x.mmr - prev.mmr)
            if abs(x.maint_amount - expected) > 1e-9 * max(1.0, floor * x.mmr):
                raise ValueError(f"{self.symbol}: {where}.maint_amount: {x.maint_amount} is "
                                 f"not {expected:g} (the maintenance margin must be "
                                 "continuous at the tier's floor)")
            if prev is not None and (x.mmr < prev.mmr or x.max_leverage > prev.max_leverage):
                raise ValueError(f"{self.symbol}: {where}: the rate must not fall nor the "
                                 "leverage rise as the notional grows")
            floor, prev = x.cap, x


@dataclass(frozen=True, kw_only=True)
class ExitRules:
    """Exits attached to every position; None disables a rule.

    Parameters
    ----------
    stop_loss : float or None
        Fraction of the entry price: a long stops at ``entry * (1 - stop_loss)``, a short at
        ``entry * (1 + stop_loss)``. In (0, 1).
    take_profit : float or None
        Fraction of the entry price: a long takes profit at ``entry * (1 + take_profit)``, a
        short at ``entry * (1 - take_profit)``. In (0, 1).
    time_stop : int or None
        Bars after the entry bar at whose open the position is closed. At least 1.
    """

    stop_loss: float | None = None
    take_profit: float | None = None
    time_stop: int | None = None

    @property
    def any(self) -> bool:
        """Whether any exit rule is set."""
        return not (self.stop_loss is None and self.take_profit is None
                    and self.time_stop is None)

    def validate(self) -> None:
        """Raise ``ValueError('<field>: problem')`` on an impossible rule."""
        for field in ("stop_loss", "take_profit"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and 0 < value < 1):
                raise ValueError(f"{field}: {value} is out of range (0, 1)")
        ts = self.time_stop
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, numbers.Integral)
                               or ts < 1):
            raise ValueError(f"time_stop: {self.time_stop} is not an integer >= 1")


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Pre-trade limits of the account (a risk manager in front of the venue); None disables
    a limit. Each applies to an order that opens, increases or reverses a position (orders
    that only reduce one always pass), at its fill price, after the venue's own refusals and
    before the margin check:

    Parameters
    ----------
    daily_loss_cap : float or None
        In (0, 1): once the equity at an open or a close has fallen this fraction below the
        equity at the first open of its UTC day, no new risk until the next UTC day
        (``daily_loss``); needs the bars' UTC days.
    max_position_notional : float or None
        The largest ``|qty| * price`` one symbol may hold (``max_position``).
    max_total_notional : float or None
        The largest sum of ``|qty| * price`` over the symbols, the others at this open's
        prices, the order's symbol at its fill (``max_total``).
    max_leverage : float or None
        The largest total notional (as above) over the equity this open sizes from
        (``max_leverage``).
    """

    daily_loss_cap: float | None = None
    max_position_notional: float | None = None
    max_total_notional: float | None = None
    max_leverage: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.daily_loss_cap, self.max_position_notional,
                                           self.max_total_notional, self.max_leverage))

    def validate(self) -> None:
        cap = self.daily_loss_cap
        if cap is not None and not (math.isfinite(cap) and 0 < cap < 1):
            raise ValueError(f"daily_loss_cap: {cap} is out of range (0, 1)")
        for field in ("max_position_notional", "max_total_notional", "max_leverage"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field}: {value} is not a finite number > 0")


@dataclass(frozen=True, kw_only=True)
class LimitOrders:
    """Signal orders as limit orders (the engine docstring's Limit orders): placed at the
    decision bar's close, resting for ``valid_bars`` bars from the next, filled only when a
    bar trades through the limit, at the limit price, paying the maker fee.

    Parameters
    ----------
    offset_bps : float
        The limit's distance from the reference price (the decision bar's close) in bps:
        a buy at ``close * (1 - offset)`` rounded down to the tick, a sell at ``close * (1 +
        offset)`` rounded up. At least 0 (a limit on the passive side).
    valid_bars : int
        Bars the order rests, from the bar after the decision; unfilled after them, it
        expires. At least 1.
    entries, exits : bool
        Which signal orders are limits: entries (open, increase or reverse a target) and
        exits (a target of 0, or a smaller one of the same sign). The other kind stays a
        market order; stops, take-profits, time stops and liquidations are always market.
    """

    offset_bps: float = 0.0
    valid_bars: int = 1
    entries: bool = True
    exits: bool = True

    def validate(self) -> None:
        """Raise ``ValueError('<field>: problem')`` on an impossible rule."""
        if not (math.isfinite(self.offset_bps) and 0 <= self.offset_bps < 1e4):
            raise ValueError(f"offset_bps: {self.offset_bps} is out of range [0, 10000)")
        n = self.valid_bars
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"valid_bars: {n} is not an integer >= 1")
        if not (self.entries or self.exits):
            raise ValueError("entries, exits: a limit rule must apply to at least one")
