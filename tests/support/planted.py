"""A market with one planted, documented edge, for out-of-sample tests of the portfolio
layer (written for the tests; the synthetic source plants its own drift the same way).

Bars: ``interval`` minutes, ``n_symbols`` symbols. Each symbol's bar log return is
GARCH(1,1)-clustered (alpha 0.06, beta 0.92) with Student-t(3) innovations (unit variance),
bar sigma ``sigma``. Shock events arrive per symbol as a self-exciting (Hawkes) process
(base rate ``rate_per_day``, branching 0.5, children ~ 6 bars after their parent). At a
shock's bar the price jumps ``J = d * 4 sigma`` (d = +1 / -1 at random, kept by a child with
probability 0.8) and then drifts ``kappa * J / H`` on each of the next ``H`` bars: the planted
truth is **continuation after a shock, for H bars, of kappa * 4 sigma in total** (0.3 * 4 *
0.3 % = 0.36 % by default, about 2.4x a taker round trip with slippage). Everything else is
a null: a fade of the shock loses the drift and the costs, the ``coin`` feature is noise.

Features (point in time, known at each bar's close): ``ret_16`` (log return over the last 16
bars), ``coin`` (i.i.d. standard normal), ``funding_rate`` (the last 8-hourly print).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.strategies import Panel

T0 = dt.datetime(2024, 1, 1)
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")


@dataclass(frozen=True)
class Planted:
    panel: Panel
    events: pl.DataFrame  # event_type "shock", symbol, ts (the bar's open), direction
    features: dict[str, np.ndarray]
    funding: pl.DataFrame  # symbol, ts, funding_rate
    hold: int  # H


def _hawkes(rng: np.random.Generator, n: int, rate: float, keep: float
            ) -> list[tuple[int, int]]:
    """(bar, direction) of a Hawkes process on n bars, children inheriting direction."""
    out = [(int(t), int(rng.choice([-1, 1]))) for t in
           np.flatnonzero(rng.random(n) < rate)]
    queue = list(out)
    while queue:
        t, d = queue.pop()
        for _ in range(rng.poisson(0.5)):
            c = t + 1 + int(rng.exponential(6))
            if c < n:
                child = (c, d if rng.random() < keep else -d)
                out.append(child)
                queue.append(child)
    return sorted(dict(out).items())


def planted_market(seed: int, *, days: int = 112, interval: int = 15, n_symbols: int = 3,
                   sigma: float = 0.003, rate_per_day: float = 3.0, kappa: float = 0.3,
                   hold: int = 8, child_keeps: float = 0.5) -> Planted:
    rng = np.random.default_rng(seed)
    per_day = 24 * 60 // interval
    n = days * per_day
    symbols = SYMBOLS[:n_symbols]
    z = rng.standard_t(3, (n, n_symbols)) / np.sqrt(3.0)
    logret = np.empty((n, n_symbols))
    var = np.full(n_symbols, sigma ** 2)
    omega = sigma ** 2 * (1 - 0.06 - 0.92)
    for t in range(n):
        logret[t] = np.sqrt(var) * z[t]
        var = omega + 0.06 * logret[t] ** 2 + 0.92 * var
    rows = []
    for s, sym in enumerate(symbols):
        for t, d in _hawkes(rng, n, rate_per_day / per_day, child_keeps):
            jump = d * 4 * sigma
            logret[t, s] += jump
            logret[t + 1:t + 1 + hold, s] += kappa * jump / hold
            rows.append((sym, t, d))
    close = 100.0 * np.exp(np.cumsum(logret, axis=0))
    open_ = np.vstack([np.full((1, n_symbols), 100.0), close[:-1]])
    wick = np.abs(rng.normal(0, sigma / 3, (2, n, n_symbols)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    ts = np.datetime64(T0, "us") + np.arange(n) * np.timedelta64(interval, "m")
    panel = Panel(ts, symbols, open_, high, low, close, interval_minutes=interval)
    events = pl.DataFrame({"event_type": "shock", "symbol": [r[0] for r in rows],
                           "ts": ts[[r[1] for r in rows]], "direction": [r[2] for r in rows]},
                          schema={"event_type": pl.String, "symbol": pl.String,
                                  "ts": pl.Datetime("us"), "direction": pl.Int64})
    ret16 = np.full((n, n_symbols), np.nan)
    lc = np.log(close)
    ret16[16:] = lc[16:] - lc[:-16]
    prints = np.arange(0, n, 8 * 60 // interval)
    rates = rng.normal(1e-4, 1.5e-4, (len(prints), n_symbols))
    funding_rate = rates[np.searchsorted(prints, np.arange(n), side="right") - 1]
    funding = pl.DataFrame({
        "symbol": np.repeat(np.array(symbols), len(prints)),
        "ts": np.tile(ts[prints], n_symbols), "funding_rate": rates.T.ravel()})
    features = {"ret_16": ret16, "coin": rng.standard_normal((n, n_symbols)),
                "funding_rate": funding_rate}
    return Planted(panel, events, features, funding, hold)
