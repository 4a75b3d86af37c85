"""The universe spec's generated symbols served like any market-data source (no Dagster).

:class:`GeneratedUniverseSource` answers ``(dataset, symbol, day)`` for the symbols of
``specs/universe.yaml``'s ``generated`` block from one draw of
:func:`~backtest_assets.sources.synthetic_universe.generate_universe` at 1m over the block's
window (from the universe's ``start_date``), and hands every other symbol to the source it
wraps. What it serves:

- **perp 1m klines**: the generator's bars of the day where the symbol has data (none before
  its listing bar, none from its delisting bar on, none in its gaps: minutes missing as on the
  real archive). ``volume`` and ``taker_buy_volume`` are the quote volumes over the bar's
  ``(open + high + low + close) / 4``; ``trade_count`` is ``ceil(quote_volume / 2,000)``.
  A day without one bar is ``missing``, like a 404 on the archive.
- **funding**: the generator's 8-hourly prints fixed during the day (00:00, 08:00, 16:00
  UTC) while the symbol trades (after its listing bar, before its delisting bar), with
  ``mark_price`` the open of the bar at the print (null in a gap).
- **mark price and premium index klines** (perp): at the minutes the symbol has last-price
  bars, from them as :func:`~backtest_assets.sources.synthetic.mark_and_premium` makes them
  for the synthetic source (the mark: last less a mean-reverting 1 bp deviation, half the
  wicks), seeded by the block's seed, the symbol and the day. Without spot, the index is the
  last price itself: the premium index is ``mark / last − 1``.
- **no spot, no open interest**: both ``missing`` (the generator draws neither).

The generator's market symbol (its index 0) drives the generated symbols' common factor and
ranks among them for the planted reversal, but is not served (``BTCUSDT`` is the wrapped
source's). The window is drawn once per instance (~0.5 s and ~0.4 GB a 120-day draw of 24
symbols at 1m), on the first call that needs it, and kept for the process's next
sources (the last window drawn).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading

import numpy as np
import polars as pl

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA
from backtest_assets.core.keys import validate_date
from backtest_assets.sources.base import Market, MarketDataSource, SourceBatch
from backtest_assets.sources.synthetic import generated_batch as _batch
from backtest_assets.sources.synthetic import mark_and_premium, mark_deviation
from backtest_assets.sources.synthetic import missing_batch as _missing
from backtest_assets.sources.synthetic_universe import (
    SyntheticUniverse,
    generate_universe,
    universe_spans,
)
from backtest_assets.specs.models import GeneratedSymbolsSpec

_MINUTES_PER_DAY = 1440
_FUNDING_HOURS = 8
_TRADE_SIZE_USD = 2_000.0


@functools.lru_cache(maxsize=1)
def _draw(spec: GeneratedSymbolsSpec, start: dt.date) -> SyntheticUniverse:
    """One draw per process (the ingest assets of a run each make a source)."""
    return generate_universe(spec.seed, symbols=spec.symbols + 1, days=spec.days,
                             interval_minutes=1, start=start, xs_effect=spec.xs_effect)


def generated_spans(spec: GeneratedSymbolsSpec, start: dt.date
                    ) -> dict[str, tuple[dt.date, dt.date]]:
    """Each generated symbol's first and last UTC day with data (its listing calendar),
    without drawing the bars."""
    listing, delisting = universe_spans(spec.seed, symbols=spec.symbols + 1, days=spec.days,
                                        interval_minutes=1)
    return {name: (start + dt.timedelta(days=int(listing[i]) // _MINUTES_PER_DAY),
                   start + dt.timedelta(days=(int(delisting[i]) - 1) // _MINUTES_PER_DAY))
            for i, name in enumerate(spec.names, start=1)}


class GeneratedUniverseSource:
    """The generated symbols of ``spec`` (window from ``start``); the rest from ``other``."""

    def __init__(self, spec: GeneratedSymbolsSpec, start: dt.date, *,
                 other: MarketDataSource) -> None:
        self.spec, self.start, self.other = spec, start, other
        self._index = {name: i for i, name in enumerate(spec.names, start=1)}
        self._drawn: SyntheticUniverse | None = None
        self._lock = threading.Lock()

    def klines_1m(self, market: Market, symbol: str, day: dt.date) -> SourceBatch:
        if symbol not in self._index:
            return self.other.klines_1m(market, symbol, day)
        day = validate_date(day)
        url = self._url(market, "klines_1m", symbol, day)
        t = self._bar_rows(symbol, day) if market == "perp" else None
        if t is None:
            return _missing(url, KLINE_SCHEMA)
        p, s = self._universe().panel, self._index[symbol]
        o, h, lo, c = p.open[t, s], p.high[t, s], p.low[t, s], p.close[t, s]
        qv, taker = p.quote_volume[t, s], p.taker_buy_quote_volume[t, s]
        typical = (o + h + lo + c) / 4
        frame = pl.DataFrame({
            "ts_open": p.ts[t], "open": o, "high": h, "low": lo, "close": c,
            "volume": qv / typical, "quote_volume": qv,
            "trade_count": np.maximum(1, np.ceil(qv / _TRADE_SIZE_USD)).astype(np.int64),
            "taker_buy_volume": taker / typical, "taker_buy_quote_volume": taker})
        return _batch(url, frame, symbol, KLINE_SCHEMA)

    def mark_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        if symbol not in self._index:
            return self.other.mark_klines_1m(symbol, day)
        return self._index_klines("mark_klines_1m", symbol, validate_date(day))

    def premium_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        if symbol not in self._index:
            return self.other.premium_klines_1m(symbol, day)
        return self._index_klines("premium_klines_1m", symbol, validate_date(day))

    def _index_klines(self, dataset: str, symbol: str, day: dt.date) -> SourceBatch:
        url = self._url("perp", dataset, symbol, day)
        t = self._bar_rows(symbol, day)
        if t is None:
            return _missing(url, KLINE_SCHEMA)
        p, s = self._universe().panel, self._index[symbol]
        last = {"open": p.open[t, s], "high": p.high[t, s], "low": p.low[t, s],
                "close": p.close[t, s]}
        minute = t - (day - self.start).days * _MINUTES_PER_DAY
        e = mark_deviation(self.spec.seed, symbol, day)
        mark, premium = mark_and_premium(last, (e[minute], e[minute + 1]),
                                         (last["open"], last["close"]))
        bars = mark if dataset == "mark_klines_1m" else premium
        return _batch(url, pl.DataFrame({"ts_open": p.ts[t], **bars}), symbol, KLINE_SCHEMA)

    def _bar_rows(self, symbol: str, day: dt.date) -> np.ndarray | None:
        """The panel rows of ``day`` where ``symbol`` has a bar; None when it has none."""
        rows = self._day_rows(day)
        if rows is None:
            return None
        have = np.isfinite(self._universe().panel.close[rows, self._index[symbol]])
        if not have.any():
            return None
        return np.arange(rows.start, rows.stop)[have]

    def funding_rates(self, symbol: str, day: dt.date) -> SourceBatch:
        if symbol not in self._index:
            return self.other.funding_rates(symbol, day)
        day = validate_date(day)
        url = self._url("perp", "funding_rates", symbol, day)
        rows = self._day_rows(day)
        if rows is None:
            return _missing(url, FUNDING_SCHEMA)
        u, s = self._universe(), self._index[symbol]
        delisting = u.truth.delisting_bar[s]
        per_day = 24 // _FUNDING_HOURS
        first = (day - self.start).days * per_day
        ks = [k for k in range(first, first + per_day)
              if np.isfinite(u.funding_prints[k, s])
              and (delisting is None or k * _FUNDING_HOURS * 60 < delisting)]
        if not ks:
            return _missing(url, FUNDING_SCHEMA)
        bars = [k * _FUNDING_HOURS * 60 for k in ks]
        frame = pl.DataFrame({
            "ts": u.panel.ts[bars],
            "funding_interval_hours": np.full(len(ks), _FUNDING_HOURS),
            "funding_rate": u.funding_prints[ks, s],
            "mark_price": [None if np.isnan(v) else float(v) for v in u.panel.open[bars, s]]})
        return _batch(url, frame, symbol, FUNDING_SCHEMA)

    def open_interest(self, symbol: str, day: dt.date) -> SourceBatch:
        if symbol not in self._index:
            return self.other.open_interest(symbol, day)
        return _missing(self._url("perp", "open_interest", symbol, validate_date(day)),
                        OPEN_INTEREST_SCHEMA)

    def _day_rows(self, day: dt.date) -> slice | None:
        """The day's 1m rows in the drawn window, None outside it."""
        i = (day - self.start).days
        if not 0 <= i < self.spec.days:
            return None
        return slice(i * _MINUTES_PER_DAY, (i + 1) * _MINUTES_PER_DAY)

    def _universe(self) -> SyntheticUniverse:
        with self._lock:
            if self._drawn is None:
                self._drawn = _draw(self.spec, self.start)
            return self._drawn

    def _url(self, market: str, dataset: str, symbol: str, day: dt.date) -> str:
        g = self.spec
        return (f"synthetic://generated/seed={g.seed},days={g.days},xs={g.xs_effect}/"
                f"{market}/{dataset}/{symbol}/{day.isoformat()}")

