"""The array contract of the alpha package (pure numpy; no Dagster).

A :class:`UniversePanel` holds the bars of S symbols on a regular grid of T bar open times:
every field is (T, S) float64, NaN where a symbol has no bar (before it lists, after it
delists, or a gap). Bar t is known at its close, ``ts[t] + interval``; a value computed "at
t" may read bars ``<= t`` only (point in time). A position decided at t is entered at the open
of t + 1 (the platform's convention): the label of bar t over h bars is
``ln(open[t + 1 + h] / open[t + 1])`` (:func:`forward_log_returns`).

``funding_rate`` is the last funding print known at each bar's close (NaN before the first);
``quote_volume`` and ``taker_buy_quote_volume`` are in the quote asset (USDT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIELDS = ("open", "high", "low", "close", "quote_volume", "taker_buy_quote_volume",
          "funding_rate")


@dataclass(frozen=True)
class UniversePanel:
    ts: np.ndarray  # (T,) datetime64[us] bar open times, regular
    symbols: tuple[str, ...]
    interval_minutes: int
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    quote_volume: np.ndarray
    taker_buy_quote_volume: np.ndarray
    funding_rate: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.ts), len(self.symbols))
        if not shape[0] or not shape[1]:
            raise ValueError(f"universe panel: needs bars and symbols, got {shape}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"universe panel: duplicated symbol in {list(self.symbols)}")
        for name in FIELDS:
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"universe panel: {name} has shape "
                                 f"{np.shape(getattr(self, name))}, expected {shape}")

    @property
    def bars_per_day(self) -> int:
        return 24 * 60 // self.interval_minutes

    def rows(self, start: int, end: int) -> UniversePanel:
        """Bars ``start .. end - 1`` as a panel of their own."""
        return UniversePanel(self.ts[start:end], self.symbols, self.interval_minutes,
                             *(getattr(self, f)[start:end] for f in FIELDS))


def forward_log_returns(open_: np.ndarray, h: int) -> np.ndarray:
    """(T, S) label of each bar: ``ln(open[t + 1 + h] / open[t + 1])``, NaN where either
    open is missing or beyond the data."""
    o = np.asarray(open_, float)
    out = np.full(o.shape, np.nan)
    if h >= 1 and o.shape[0] > h + 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:-(h + 1)] = np.log(o[1 + h:] / o[1:-h])
    return out
