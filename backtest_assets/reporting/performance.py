"""The numbers of a tear sheet (pure numpy/polars; no Dagster, no plotting).

Array contract
--------------
``ts`` is a 1-D ``datetime64[us]`` array (naive UTC, strictly increasing; gaps allowed),
``equity`` a 1-D float64 array of the same length: the equity at the close of each bar, as
in ``backtest_equity`` (``ts`` is the bar's close). ``init_cash`` is the equity before the
first bar: the first peak and the base of the first return, as in
:mod:`backtest_assets.engine.metrics`. Returns are simple fractions (``-0.1`` is -10%);
drawdowns are ``<= 0``. A ratio whose denominator is zero is NaN (never inf), and every
function accepts empty input.

Definitions
-----------
- bar returns, drawdown path: :func:`backtest_assets.engine.metrics.bar_returns` and
  :func:`~backtest_assets.engine.metrics.drawdown_path` (the same numbers as the warehouse's
  metrics);
- underwater duration at a bar: the time since the running peak was last set (0 at a new
  peak); the longest underwater stretch in bars equals the engine's ``max_drawdown_bars``;
- period return (day, week from Monday, month): ``E(last close in the period) /
  E(last close before it) - 1``, ``init_cash`` before the first bar; a period without a bar
  has no row;
- rolling Sharpe and volatility over ``window`` bar returns, annualized by
  ``sqrt(bars_per_year)``; NaN until the window is full and where the window is flat;
- historical VaR and CVaR at level ``a`` of a sample of returns: ``q`` the empirical
  ``1 - a`` quantile (``inverted_cdf``: an observed return), ``VaR = -q``, ``CVaR =
  -mean(r[r <= q])``: losses as positive fractions.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.engine.metrics import bar_returns, drawdown_path

MS = np.timedelta64(1, "ms")


@dataclass(frozen=True)
class Underwater:
    """Drawdown path and time under water at each bar, and the worst of each."""

    drawdown: np.ndarray  # (T,) <= 0
    duration: np.ndarray  # (T,) timedelta64[us] since the last peak (0 at a peak)
    max_drawdown: float  # min(drawdown), 0.0 without bars
    longest_bars: int  # longest run of bars below the running peak
    longest: dt.timedelta  # longest time below it (from the peak to the last bar under)


def underwater(ts: np.ndarray, equity: np.ndarray, init_cash: float) -> Underwater:
    """The drawdown and the time since the last peak at each bar (module docstring).

    The peak before the first bar is ``init_cash`` at the first bar's time less one bar
    spacing (the median spacing; a single bar counts no time under water before it).
    """
    ts = np.asarray(ts, dtype="datetime64[us]")
    eq = np.asarray(equity, dtype=np.float64)
    dd = drawdown_path(eq, init_cash) if eq.size else np.empty(0)
    if not eq.size:
        return Underwater(dd, np.empty(0, dtype="timedelta64[us]"), 0.0, 0, dt.timedelta(0))
    below = dd < 0
    step = np.median(np.diff(ts)) if ts.size > 1 else np.timedelta64(0, "us")
    # index of the bar that set the running peak (-1: the starting cash)
    at_peak = np.where(~below, np.arange(eq.size), -1)
    peak_idx = np.maximum.accumulate(at_peak)
    start = np.where(peak_idx >= 0, ts[np.maximum(peak_idx, 0)], ts[0] - step)
    duration = np.where(below, ts - start, np.timedelta64(0, "us"))
    run_id = np.cumsum(~below)  # constant along a run of bars below the peak
    runs = np.bincount(run_id[below]) if below.any() else np.zeros(1, dtype=np.int64)
    return Underwater(drawdown=dd, duration=duration.astype("timedelta64[us]"),
                      max_drawdown=float(dd.min()), longest_bars=int(runs.max()),
                      longest=dt.timedelta(microseconds=int(duration.max().astype(np.int64))))


def drawdown_episodes(ts: np.ndarray, equity: np.ndarray, init_cash: float,
                      top: int = 5) -> pl.DataFrame:
    """The ``top`` deepest drawdowns: ``peak`` (time of the peak; null for the starting cash
    before the first bar), ``trough``, ``recovered`` (first close back at the peak; null if
    never), ``depth`` (<= 0), ``bars`` (bars below the peak), deepest first."""
    schema = {"peak": pl.Datetime("us"), "trough": pl.Datetime("us"),
              "recovered": pl.Datetime("us"), "depth": pl.Float64, "bars": pl.Int64}
    ts = np.asarray(ts, dtype="datetime64[us]")
    eq = np.asarray(equity, dtype=np.float64)
    if not eq.size:
        return pl.DataFrame(schema=schema)
    dd = drawdown_path(eq, init_cash)
    below = dd < 0
    rows = []
    i = 0
    while i < eq.size:  # one pass; episodes are few
        if not below[i]:
            i += 1
            continue
        j = i
        while j < eq.size and below[j]:
            j += 1
        trough = i + int(np.argmin(dd[i:j]))
        rows.append({"peak": ts[i - 1].item() if i > 0 else None, "trough": ts[trough].item(),
                     "recovered": ts[j].item() if j < eq.size else None,
                     "depth": float(dd[trough]), "bars": j - i})
        i = j
    frame = pl.DataFrame(rows, schema=schema)
    return frame.sort("depth", "trough").head(top)


def period_returns(ts: np.ndarray, equity: np.ndarray, init_cash: float,
                   every: str) -> pl.DataFrame:
    """``period`` (its start: a day, a Monday, the 1st of a month), ``ret``: each period's
    compounded return (module docstring); ``every`` is ``"1d"``, ``"1w"`` or ``"1mo"``.

    A bar's close at exactly midnight belongs to the day before (it closes that day), so a
    bar is bucketed by ``ts - 1 us``.
    """
    if every not in ("1d", "1w", "1mo"):
        raise ValueError(f"every: {every!r} is not one of '1d', '1w', '1mo'")
    frame = pl.DataFrame({"ts": np.asarray(ts, dtype="datetime64[us]"),
                          "equity": np.asarray(equity, dtype=np.float64)},
                         schema={"ts": pl.Datetime("us"), "equity": pl.Float64})
    if frame.is_empty():
        return pl.DataFrame(schema={"period": pl.Date, "ret": pl.Float64})
    last = (frame.with_columns(period=(pl.col("ts") - pl.duration(microseconds=1))
                               .dt.truncate(every).dt.date())
            .group_by("period").agg(pl.col("equity").last()).sort("period"))
    prev = pl.col("equity").shift(1, fill_value=init_cash)
    # a period after a blown account (no equity left) has no return
    return last.select("period", ret=pl.when(prev > 0).then(pl.col("equity") / prev - 1))


def heatmap_period(first: dt.date, last: dt.date) -> str:
    """``"1mo"`` for a study of three months or more, else ``"1w"``: a monthly grid of a
    one-month study is a single cell."""
    return "1mo" if (last - first).days + 1 >= 90 else "1w"


def rolling_sharpe_vol(returns: np.ndarray, window: int, bars_per_year: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Rolling annualized Sharpe and volatility of ``window`` bar returns (NaN before the
    window is full and where it is flat)."""
    r = pl.Series(np.asarray(returns, dtype=np.float64))
    n = r.len()
    if window < 2 or n < window:
        nan = np.full(n, np.nan)
        return nan, nan.copy()
    mean = r.rolling_mean(window).to_numpy()
    sd = r.rolling_std(window, ddof=1).to_numpy()
    # a flat window's std rounds to ~1e-19 rather than 0 in the rolling sums: flat is flat
    flat = ~(sd > 1e-12 * np.maximum(np.abs(mean), 1e-300)) | ~(sd > 0)
    ann = math.sqrt(bars_per_year)
    sharpe = np.where(flat, np.nan, mean / np.where(flat, 1.0, sd) * ann)
    vol = np.where(np.isnan(sd), np.nan, np.where(flat, 0.0, sd) * ann)
    return sharpe, vol


def var_cvar(returns: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Historical VaR and CVaR at ``level`` (module docstring); NaN for no finite return."""
    if not 0 < level < 1:
        raise ValueError(f"level: {level} is not in (0, 1)")
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not r.size:
        return float("nan"), float("nan")
    q = float(np.quantile(r, 1 - level, method="inverted_cdf"))
    return -q, -float(r[r <= q].mean())


def histogram(values: np.ndarray, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of the finite ``values``: ``bins`` equal bins over their range,
    one bin of width 1 around a constant sample, none for an empty one."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return np.empty(0), np.empty(0, dtype=np.int64)
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return np.array([lo - 0.5, lo + 0.5]), np.array([v.size])
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return edges, counts


def downsample(x: np.ndarray, y: np.ndarray, buckets: int) -> np.ndarray:
    """Indices of a min/max downsampling of the line ``(x, y)``: the first and last point
    and, in each of ``buckets`` equal runs of points, the points of its lowest and highest
    ``y`` (so every peak and trough of the full line is kept). All indices when the line is
    short enough; NaN ``y`` never chosen as an extreme unless a bucket is all NaN."""
    n = len(x)
    if n <= 2 * buckets + 2:
        return np.arange(n)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    yy = np.asarray(y, dtype=np.float64)
    lo_y = np.where(np.isnan(yy), np.inf, yy)
    hi_y = np.where(np.isnan(yy), -np.inf, yy)
    starts = edges[:-1]
    lo = np.minimum.reduceat(lo_y, starts)
    hi = np.maximum.reduceat(hi_y, starts)
    bucket = np.repeat(np.arange(buckets), np.diff(edges))
    first_lo = np.full(buckets, n)
    first_hi = np.full(buckets, n)
    idx = np.arange(n)
    np.minimum.at(first_lo, bucket[lo_y == lo[bucket]], idx[lo_y == lo[bucket]])
    np.minimum.at(first_hi, bucket[hi_y == hi[bucket]], idx[hi_y == hi[bucket]])
    keep = np.concatenate(([0, n - 1], first_lo, first_hi, starts))
    return np.unique(keep[keep < n])


def coarsen_bars(bars: pl.DataFrame, k: int) -> pl.DataFrame:
    """Candles of ``k`` consecutive rows of one symbol's bars (``ts_open``, ``open``,
    ``high``, ``low``, ``close``, in time order): buckets ``[j*k, (j+1)*k)`` of the row index,
    each stamped with its first bar's ``ts_open`` (a gap inside a bucket stays inside it).
    ``k <= 1`` returns ``bars`` unchanged."""
    if k <= 1 or bars.is_empty():
        return bars
    return (bars.with_row_index("_i").group_by(pl.col("_i") // k, maintain_order=True)
            .agg(pl.col("ts_open").first(), pl.col("open").first(), pl.col("high").max(),
                 pl.col("low").min(), pl.col("close").last())
            .drop("_i"))


def buy_and_hold(close: np.ndarray, init_cash: float) -> np.ndarray:
    """Equity of ``init_cash`` split equally over the columns of ``close`` (T, S) at each
    symbol's first price and held: ``sum_s (init_cash / S) * close[t, s] / close[first, s]``,
    a symbol's last price carried over its gaps and ``init_cash / S`` before its first."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    t_n, s_n = c.shape
    if not t_n or not s_n:
        return np.empty(t_n)
    ok = np.isfinite(c) & (c > 0)
    # forward fill along time: the index of the last valid row at or before each row
    last = np.maximum.accumulate(np.where(ok, np.arange(t_n)[:, None], -1), axis=0)
    filled = np.take_along_axis(c, np.maximum(last, 0), axis=0)
    first_row = np.argmax(ok, axis=0)
    base = c[first_row, np.arange(s_n)]
    growth = np.where(last >= 0, filled / np.where(ok.any(axis=0), base, 1.0), 1.0)
    return (init_cash / s_n) * growth.sum(axis=1)


def net_exposure(trades: pl.DataFrame, close: np.ndarray, symbols: list[str],
                 equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gross and net exposure (``sum |notional|`` and ``sum signed notional``, over
    equity) at each close, rebuilt from the trades: a trade is held at the close of bars
    ``entry_bar <= t < exit_bar`` (the engine fills at the open of ``exit_bar``, or inside
    it); an open trade (null ``exit_bar``) to the end. ``close`` is (T, S) in ``symbols``
    order, NaN carried from the last price."""
    c = np.asarray(close, dtype=np.float64).reshape(len(equity), -1)
    t_n = c.shape[0]
    held = np.zeros_like(c)  # signed quantity held at each close
    if trades.height:
        col = {s: i for i, s in enumerate(symbols)}
        delta = np.zeros((t_n + 1, c.shape[1]))
        for sym, side, qty, entry, exit_ in trades.select(
                "symbol", "side", "qty", "entry_bar",
                pl.col("exit_bar").fill_null(t_n)).iter_rows():
            signed = qty if side == "long" else -qty
            delta[min(entry, t_n), col[sym]] += signed
            delta[min(exit_, t_n), col[sym]] -= signed
        held = np.cumsum(delta[:-1], axis=0)
    valid = np.isfinite(c)
    last = np.maximum.accumulate(np.where(valid, np.arange(t_n)[:, None], 0), axis=0)
    marks = np.nan_to_num(np.take_along_axis(c, last, axis=0))
    notional = held * marks
    eq = np.asarray(equity, dtype=np.float64)
    safe = np.where(eq > 0, eq, np.nan)
    return np.abs(notional).sum(axis=1) / safe, notional.sum(axis=1) / safe


def trade_summary(trades: pl.DataFrame, interval_minutes: int) -> pl.DataFrame:
    """The closed trades (``exit_reason`` other than ``open``) with ``holding_bars`` and
    ``holding_hours``: what the P&L and holding-time histograms draw."""
    if trades.is_empty():
        return trades.with_columns(holding_bars=pl.lit(None, pl.Int64),
                                   holding_hours=pl.lit(None, pl.Float64))
    closed = trades.filter(pl.col("exit_reason") != "open")
    bars = pl.col("exit_bar") - pl.col("entry_bar")
    return closed.with_columns(holding_bars=bars,
                               holding_hours=bars.cast(pl.Float64) * interval_minutes / 60)


def cost_attribution(equity: pl.DataFrame, metrics: dict, init_cash: float) -> pl.DataFrame:
    """``cost``, ``cash`` (paid: > 0 is a cost), ``of_capital``: the run's fees (liquidation
    clearance fees included, as the engine counts them), slippage, funding paid (net of
    funding received) and liquidation forfeits (margin lost to the insurance fund), from
    the per-bar columns of ``backtest_equity`` and the metrics row (forfeits are only
    there)."""
    def total(name: str) -> float:
        return float(equity[name].sum()) if name in equity.columns and equity.height else 0.0

    liquidation = float(metrics.get("insurance_drag") or 0.0) * init_cash
    clearance = float(metrics.get("liquidation_fee_drag") or 0.0) * init_cash
    rows = [("fees", total("fees")), ("of which liquidation fees", clearance),
            ("slippage", total("slippage")), ("funding", total("funding")),
            ("liquidation forfeits", liquidation)]
    return pl.DataFrame({"cost": [r[0] for r in rows], "cash": [r[1] for r in rows],
                         "of_capital": [r[1] / init_cash if init_cash else float("nan")
                                        for r in rows]})


def cumulative_costs(equity: pl.DataFrame) -> pl.DataFrame:
    """``ts`` and the running total of ``fees``, ``slippage`` and ``funding`` (cash)."""
    cols = [c for c in ("fees", "slippage", "funding") if c in equity.columns]
    return equity.select("ts", *[pl.col(c).cum_sum() for c in cols])


def bars_per_year(interval_minutes: float) -> float:
    """Bars in a year at ``interval_minutes`` (crypto trades 24/7: DESIGN.md)."""
    return 525_600 / interval_minutes


def returns(equity: np.ndarray, init_cash: float) -> np.ndarray:
    """Bar returns (:func:`backtest_assets.engine.metrics.bar_returns`)."""
    return bar_returns(np.asarray(equity, dtype=np.float64), init_cash) if len(equity) \
        else np.empty(0)


def sharpe(returns_: np.ndarray, bars_per_year_: float) -> float:
    """Annualized Sharpe of bar returns as the engine defines it (NaN when flat)."""
    r = np.asarray(returns_, dtype=np.float64)
    if r.size < 2:
        return float("nan")
    sd = float(r.std(ddof=1))
    return float(r.mean()) / sd * math.sqrt(bars_per_year_) if sd else float("nan")
