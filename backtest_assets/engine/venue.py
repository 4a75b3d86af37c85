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
class Instrument:
    """Trading rules of one symbol on its venue.

    Parameters
    ----------
    symbol : str
        Name used in errors and in the trades table.
    taker_bps, slippage_bps : float
        Taker fee and slippage per side, in bps of notional (``specs/fees.yaml``). Every
        engine order is a market order, so the maker fee never applies.
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
        fields = dict(taker_bps=venue.taker_bps, slippage_bps=venue.slippage_bps,
                      lot_size=filters.lot_size, tick_size=filters.tick_size,
                      min_notional=filters.min_notional, max_leverage=venue.max_leverage,
                      maintenance_margin_rate=venue.maintenance_margin_rate,
                      liquidation_fee_rate=venue.liquidation_fee_rate)
        return cls(symbol=symbol, **{**fields, **rules})

    @property
    def taker(self) -> float:
        """Taker fee as a fraction of notional."""
        return self.taker_bps / 1e4

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of price."""
        return self.slippage_bps / 1e4

    def validate(self) -> None:
        """Raise ``ValueError('<symbol>: <field>: problem')`` on an impossible rule."""
        def bad(field: str, problem: str) -> ValueError:
            return ValueError(f"{self.symbol}: {field}: {getattr(self, field)} {problem}")

        for field in ("taker_bps", "slippage_bps"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 <= value <= 1000):
                raise bad(field, "is out of range [0, 1000]")
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
