"""Frozen, keyword-only spec objects. Each ``validate`` raises ``ValueError('field: problem')``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from backtest_assets.core.keys import InvalidKeyError, validate_symbol

Interval = Literal["1m", "5m", "15m", "1h"]
INTERVALS: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


def interval_minutes(interval: str) -> int:
    """Minutes in a bar interval such as ``"5m"``."""
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r} (known: {list(INTERVALS)})") from None


@dataclass(frozen=True, kw_only=True)
class SymbolSpec:
    symbol: str
    markets: tuple[Literal["perp", "spot"], ...]

    def validate(self) -> None:
        try:
            validate_symbol(self.symbol)
        except InvalidKeyError as exc:
            raise ValueError(f"symbol: {exc}") from None
        if not self.markets:
            raise ValueError("markets: at least one of perp, spot")
        if len(set(self.markets)) != len(self.markets):
            raise ValueError(f"markets: duplicated market in {list(self.markets)}")


@dataclass(frozen=True, kw_only=True)
class UniverseSpec:
    name: str
    start_date: dt.date
    end_date: dt.date | None = None
    base_interval: Interval
    bar_intervals: tuple[Interval, ...]
    symbols: tuple[SymbolSpec, ...]

    def validate(self) -> None:
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is required")
        names = [s.symbol for s in self.symbols]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"symbols: duplicated symbol {dupes[0]}")
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date: before start_date")
        if "1m" not in self.bar_intervals:
            raise ValueError("bar_intervals: must include 1m (every bar is built from 1m klines)")
        if self.base_interval not in self.bar_intervals:
            raise ValueError(f"base_interval: {self.base_interval} is not in bar_intervals")

    @property
    def symbol_names(self) -> list[str]:
        return [s.symbol for s in self.symbols]

    def markets_of(self, symbol: str) -> tuple[str, ...]:
        for s in self.symbols:
            if s.symbol == symbol:
                return s.markets
        raise KeyError(symbol)
