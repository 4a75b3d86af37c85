"""Random-walk bars for engine and blueprint tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl


def random_walk_frame(rng: np.random.Generator, symbol: str, ts: Sequence[dt.datetime],
                      start: float, sigma: float = 0.004) -> pl.DataFrame:
    """Bars of one symbol (``symbol, ts_open, open, high, low, close``): a geometric random
    walk of closes from ``start``, each bar opening at the previous close, high and low 0.1 %
    beyond them."""
    close = start * np.exp(np.cumsum(rng.normal(0, sigma, len(ts))))
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pl.DataFrame({"symbol": symbol, "ts_open": ts, "open": open_,
                         "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close})
