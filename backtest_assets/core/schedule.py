"""Which date x symbol keys a run should cover, as few single runs over ranges (no Dagster).

A backfill, the daily schedule and the archive sensor all want "these (day, symbol) keys" as
runs over contiguous ranges: one run per rectangle of consecutive days x symbols adjacent in
the universe (a range run cannot skip a day or a symbol in between).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Rectangle:
    """Days ``start..end`` (inclusive) x ``symbols`` (adjacent in the universe)."""

    start: dt.date
    end: dt.date
    symbols: tuple[str, ...]

    @property
    def tags(self) -> dict[str, str]:
        """The run tags that make a run cover exactly this rectangle."""
        return range_tags(self.start, self.end, self.symbols)

    @property
    def label(self) -> str:
        days = str(self.start) if self.start == self.end else f"{self.start}..{self.end}"
        return f"{days} x {','.join(self.symbols)}"

    def pairs(self) -> list[tuple[dt.date, str]]:
        n = (self.end - self.start).days + 1
        return [(self.start + dt.timedelta(days=i), s) for i in range(n) for s in self.symbols]


def range_tags(start: dt.date, end: dt.date, symbols: Sequence[str]) -> dict[str, str]:
    """Run tags for ``[start, end] x symbols`` (``symbols`` adjacent in the universe)."""
    return {RANGE_START_TAG: f"{start.isoformat()}|{symbols[0]}",
            RANGE_END_TAG: f"{end.isoformat()}|{symbols[-1]}"}


def rectangles(keys: Iterable[tuple[dt.date, str]], universe: Sequence[str]) -> list[Rectangle]:
    """Cover ``keys`` exactly with few rectangles.

    Each symbol's days split into runs of consecutive days; symbols adjacent in ``universe``
    with the same run of days share a rectangle. Sorted by start day, then universe order.
    Raises ``ValueError`` for a symbol not in ``universe``.
    """
    order = {s: i for i, s in enumerate(universe)}
    by_symbol: dict[str, list[dt.date]] = {}
    for day, symbol in set(keys):
        if symbol not in order:
            raise ValueError(f"symbol {symbol!r} is not in the universe {list(universe)}")
        by_symbol.setdefault(symbol, []).append(day)
    spans: dict[tuple[dt.date, dt.date], list[str]] = {}
    for symbol, days in by_symbol.items():
        days.sort()
        first = prev = days[0]
        for day in days[1:]:
            if (day - prev).days > 1:
                spans.setdefault((first, prev), []).append(symbol)
                first = day
            prev = day
        spans.setdefault((first, prev), []).append(symbol)
    out = []
    for (start, end), symbols in spans.items():
        symbols.sort(key=order.__getitem__)
        block = [symbols[0]]
        for symbol in symbols[1:]:
            if order[symbol] == order[block[-1]] + 1:
                block.append(symbol)
            else:
                out.append(Rectangle(start, end, tuple(block)))
                block = [symbol]
        out.append(Rectangle(start, end, tuple(block)))
    return sorted(out, key=lambda r: (r.start, order[r.symbols[0]], r.end))


def keys_of_tags(tags: dict[str, str], universe: Sequence[str]) -> list[tuple[dt.date, str]]:
    """The (day, symbol) keys a run with these tags covers (a range, one key, or none)."""
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        d0, s0 = tags[RANGE_START_TAG].split("|", 1)
        d1, s1 = tags[RANGE_END_TAG].split("|", 1)
        if s0 not in universe or s1 not in universe:
            return []
        symbols = universe[universe.index(s0):universe.index(s1) + 1]
        return Rectangle(dt.date.fromisoformat(d0), dt.date.fromisoformat(d1),
                         tuple(symbols)).pairs()
    key = tags.get("dagster/partition", "")
    if "|" in key:
        day, symbol = key.split("|", 1)
        return [(dt.date.fromisoformat(day), symbol)]
    return []
