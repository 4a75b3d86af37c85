"""Which symbols trade when: the universe's listing calendar (no Dagster).

The symbol dimension is dynamic: a symbol becomes a partition once its first day has come and
stays one after it delists, so its history is kept and can be recomputed. A listing comes from
``specs/universe.yaml`` (``listed`` / ``delisted`` of each symbol; the binance source reads
its candidate symbols there) and, with the synthetic source, from the generated cross-section
(its calendar is drawn with the data, :func:`~backtest_assets.sources.generated.generated_spans`).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from backtest_assets.specs.models import UniverseSpec


@dataclass(frozen=True)
class Listing:
    """A symbol's span: its first and last UTC day with data (None: still trading)."""

    symbol: str
    markets: tuple[str, ...]
    first_day: dt.date
    last_day: dt.date | None = None

    def trades_on(self, day: dt.date) -> bool:
        return self.first_day <= day and (self.last_day is None or day <= self.last_day)


def listings(universe: UniverseSpec, source: str) -> tuple[Listing, ...]:
    """Every listing of ``universe`` that ``source`` (``synthetic`` or ``binance``) serves,
    in the universe's order: the listed symbols, then (synthetic only) the generated ones."""
    return _listings(universe, source)


@functools.cache
def _listings(universe: UniverseSpec, source: str) -> tuple[Listing, ...]:
    out = [Listing(s.symbol, tuple(s.markets), s.listed or universe.start_date, s.delisted)
           for s in universe.symbols]
    if universe.generated is not None and source == "synthetic":
        from backtest_assets.sources.generated import generated_spans

        spans = generated_spans(universe.generated, universe.start_date)
        out += [Listing(name, ("perp",), first, last) for name, (first, last) in spans.items()]
    return tuple(out)


def listed_by(calendar: Iterable[Listing], day: dt.date) -> list[str]:
    """The symbols whose first day is ``day`` or earlier (delisted ones included)."""
    return [x.symbol for x in calendar if x.first_day <= day]


def trading_keys(calendar: Iterable[Listing], start: dt.date, end: dt.date,
                 symbols: Iterable[str] | None = None) -> list[tuple[dt.date, str]]:
    """The (day, symbol) keys of ``[start, end]`` on which each symbol (of ``symbols``, or
    every one) trades: nothing before a listing or after a delisting."""
    wanted = None if symbols is None else set(symbols)
    out = []
    for x in calendar:
        if wanted is not None and x.symbol not in wanted:
            continue
        day = max(start, x.first_day)
        last = end if x.last_day is None else min(end, x.last_day)
        while day <= last:
            out.append((day, x.symbol))
            day += dt.timedelta(days=1)
    return out
