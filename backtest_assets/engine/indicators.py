"""Compiled indicators for array-level strategies (pure numba/numpy; no Dagster).

The engine takes target weights; these build the common ones from prices in one pass each,
without the temporaries of their numpy spellings (at a million bars every fresh array is
about 2 ms of page faults before any arithmetic):

- :func:`sma`: the trailing simple moving average, NaN for the first ``window - 1`` bars,
  computed as the difference of a sequential running sum, so it is bit-identical to
  ``(cumsum[w:] - cumsum[:-w]) / w`` and to vectorbt's ``rolling_mean_nb``;
- :func:`crossover_target`: the target of a moving-average crossover as the engine reads it
  (decided at each close, filled at the next open): ``sign(fast - slow)`` scaled by
  ``size``, 0 where either average is NaN (the warm-up).

Inputs are 1-D float64 arrays; NaN inside the series propagates as in the numpy spelling
(the running sum stays NaN from there on), so fill or drop gaps first.
"""

from __future__ import annotations

import numba
import numpy as np

from backtest_assets.engine.memory import aligned


def sma(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of the last ``window`` values (NaN before ``window`` values exist)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"sma: a 1-D series is needed, got shape {x.shape}")
    if window < 1:
        raise ValueError(f"sma: window {window} is not >= 1")
    return _sma(x, int(window), aligned(x.size))


@numba.njit(cache=True)
def _sma(x, w, out):  # pragma: no cover (compiled)
    ring = np.empty(w)  # the running sums of the last w bars; j: the oldest
    cs = 0.0
    j = 0
    for t in range(x.size):
        cs += x[t]
        if t < w - 1:
            out[t] = np.nan
        elif t == w - 1:
            out[t] = cs / w
        else:
            out[t] = (cs - ring[j]) / w
        ring[j] = cs
        j = j + 1 if j + 1 < w else 0
    return out


def crossover_target(fast: np.ndarray, slow: np.ndarray, size: float = 1.0) -> np.ndarray:
    """``size * sign(fast - slow)`` at each bar, 0 where either is NaN."""
    fast = np.ascontiguousarray(fast, dtype=np.float64)
    slow = np.ascontiguousarray(slow, dtype=np.float64)
    if fast.shape != slow.shape or fast.ndim != 1:
        raise ValueError(f"crossover_target: two 1-D series of one length are needed, got "
                         f"{fast.shape} and {slow.shape}")
    return _crossover(fast, slow, float(size), aligned(fast.size))


@numba.njit(cache=True)
def _crossover(fast, slow, size, out):  # pragma: no cover (compiled)
    for t in range(fast.size):
        d = fast[t] - slow[t]
        out[t] = size if d > 0 else (-size if d < 0 else 0.0)  # NaN: neither
    return out
