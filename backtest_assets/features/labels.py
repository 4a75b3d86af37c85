"""Forward-return labels of perp bars (pure polars).

Frame contract
--------------
Input ``perp``: ``BAR_SCHEMA`` rows of one interval (``ts_close - ts_open`` constant), one or
several symbols, unique ``(symbol, ts_open)``, possibly with gaps.

Output: one row per input bar, sorted by ``(symbol, ts_open)``: ``LABEL_KEYS`` then one
``Float64`` column per horizon, in the given order.

Formula (DESIGN.md, Labels and entries): an event at bar t is acted on at the open of bar
t+1, so the label of horizon ``h`` bars is ``ln(open[t+1+h] / open[t+1])`` on the symbol's
regular time grid. It is null when bar t+1 or t+1+h is missing or beyond the data (a missing
bar is not skipped over) or when either open is not positive. Labels look ahead by design and
must never enter features.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from backtest_assets.core.frames import TS
from backtest_assets.features.compute import PRESENT, regular_grid

LABEL_KEYS = ["symbol", "ts_open"]


def compute_labels(perp: pl.DataFrame, horizons: Mapping[str, int]) -> pl.DataFrame:
    """Forward log returns from the next bar's open (formula in the module docstring).

    Parameters
    ----------
    perp : pl.DataFrame
        Perp bars (``symbol``, ``ts_open``, ``ts_close``, ``open``) of one interval.
    horizons : mapping of str to int
        Label column name -> horizon in bars (>= 1), e.g. ``{"fwd_ret_15m": 3}`` on 5m bars
        (``SpecRegistry.label_bars()``).

    Returns
    -------
    pl.DataFrame
        ``LABEL_KEYS`` then one Float64 column per horizon; one row per perp bar, sorted by
        ``(symbol, ts_open)``.

    Raises
    ------
    ValueError
        On a horizon below 1, a label named like a key column, a non-constant interval, or
        duplicated / off-grid bars.
    """
    for name, h in horizons.items():
        if name in LABEL_KEYS or h < 1:
            raise ValueError(f"label {name!r}: horizon {h} must be >= 1 and the name not a key")
    intervals = (perp["ts_close"] - perp["ts_open"]).unique()
    if intervals.len() > 1:
        raise ValueError(f"perp: the bar interval is not constant ({intervals.to_list()})")
    if perp.is_empty():
        return pl.DataFrame(schema={"symbol": pl.String, "ts_open": TS,
                                    **dict.fromkeys(horizons, pl.Float64)})
    grid = regular_grid(perp, interval=intervals.item(), columns=["open"])
    entry = pl.col("open").shift(-1)
    labels = [
        pl.when((entry > 0) & (pl.col("open").shift(-1 - h) > 0))
        .then((pl.col("open").shift(-1 - h) / entry).log())
        .over("symbol").cast(pl.Float64).alias(name)
        for name, h in horizons.items()
    ]
    return grid.with_columns(labels).filter(pl.col(PRESENT)).select(*LABEL_KEYS, *horizons)
