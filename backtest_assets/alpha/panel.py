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

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

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


def panel_from_frames(bars: pl.DataFrame, funding: pl.DataFrame | None,
                      symbols: Sequence[str], start: dt.datetime, end: dt.datetime,
                      interval_minutes: int) -> UniversePanel:
    """The panel of long-format bars on the grid ``start, start + interval, ... < end``.

    Parameters
    ----------
    bars : pl.DataFrame
        ``symbol``, ``ts_open`` (naive UTC), ``open``, ``high``, ``low``, ``close``,
        ``quote_volume``, ``taker_buy_quote_volume`` (one market: the caller filters);
        rows off the window or of other symbols are dropped.
    funding : pl.DataFrame or None
        ``symbol``, ``ts`` (the print's time), ``funding_rate``; a bar knows the prints at
        or before its close (``ts_open + interval``).
    symbols : sequence of str
        The columns, in order (a symbol without any bar is all NaN: not listed yet).

    Raises
    ------
    ValueError
        A duplicated (symbol, ts_open) or a ts_open off the grid, naming both.
    """
    step = np.timedelta64(interval_minutes, "m")
    n = int((np.datetime64(end, "us") - np.datetime64(start, "us")) // step)
    ts = np.datetime64(start, "us") + np.arange(n) * step
    cols = {s: k for k, s in enumerate(symbols)}
    fields = {f: np.full((n, len(symbols)), np.nan) for f in FIELDS}
    f = bars.filter(pl.col("symbol").is_in(list(symbols))
                    & (pl.col("ts_open") >= start) & (pl.col("ts_open") < end))
    dup = f.filter(pl.struct("symbol", "ts_open").is_duplicated())
    if dup.height:
        raise ValueError(f"bars: duplicated (symbol, ts_open) {dup['symbol'][0]} "
                         f"{dup['ts_open'][0]}")
    offset = (f["ts_open"].cast(pl.Datetime("us")).to_numpy() - ts[0]) // np.timedelta64(1, "us")
    off_grid = offset % (interval_minutes * 60_000_000) != 0
    if off_grid.any():
        k = int(np.argmax(off_grid))
        raise ValueError(f"bars: {f['symbol'][k]} ts_open {f['ts_open'][k]} is not on the "
                         f"{interval_minutes}-minute grid from {start}")
    rows = offset // (interval_minutes * 60_000_000)
    col = np.array([cols[s] for s in f["symbol"].to_list()], dtype=np.int64)
    for name in FIELDS[:-1]:
        fields[name][rows, col] = f[name].cast(pl.Float64).to_numpy()
    if funding is not None and funding.height:
        closes = ts + step
        for s, k in cols.items():
            own = funding.filter(pl.col("symbol") == s).sort("ts")
            if not own.height:
                continue
            at = own["ts"].cast(pl.Datetime("us")).to_numpy()
            last = np.searchsorted(at, closes, side="right") - 1
            rate = own["funding_rate"].cast(pl.Float64).to_numpy()
            fields["funding_rate"][:, k] = np.where(last >= 0, rate[np.maximum(last, 0)],
                                                    np.nan)
    return UniversePanel(ts, tuple(symbols), interval_minutes,
                         *(fields[name] for name in FIELDS))
