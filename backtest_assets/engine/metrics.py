"""Performance metrics of a backtest (pure numpy/polars/numba; no Dagster).

Input contract: a :class:`~backtest_assets.engine.core.Result` (per-bar ``equity``,
``exposure``, ``position`` (T, S), ``fees``/``slippage``/``funding``/``liquidation_fees``/
``insurance`` (T, S) and ``trades``; at least one bar), the close prices used to run it, the
starting cash, and the number of bars in a year (crypto trades 24/7: 525,600 one-minute
bars, DESIGN.md).

Definitions (``E_t`` equity at the close of bar t, ``E_{-1}`` the starting cash,
``r_t = E_t / E_{t-1} - 1``, ``B`` bars per year, ``T`` bars):

- total return ``E_{T-1} / E_{-1} - 1``; annualized ``(E_{T-1} / E_{-1})^(B / T) - 1``
  (-1 once equity is not positive);
- volatility ``std(r, ddof=1) * sqrt(B)``; Sharpe ``mean(r) / std(r) * sqrt(B)`` (no risk-free
  rate); Sortino ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(B)``; Calmar annualized return /
  |max drawdown|;
- max drawdown ``min(E_t / max_{u <= t} E_u - 1)`` with the starting cash as the first peak;
  its duration is the longest run of bars below the running peak;
- trades (closed ones only): win rate, profit factor (gross profit / gross loss), expectancy
  (mean P&L per trade, in cash), average holding time in bars;
- turnover: traded notional (``|change of position| * close``, summed over symbols and bars)
  over mean equity, per year; exposure: mean gross exposure and the share of bars with any
  position; fee drag, slippage drag and funding P&L as fractions of the starting cash
  (funding P&L is what was received minus what was paid);
- liquidations: the number of liquidated trades; liquidation fee drag (the clearance fees,
  also counted in the fee drag) and insurance drag (the rest of the liquidated margins,
  forfeited to the insurance fund) as fractions of the starting cash.

Margin (instruments with a maintenance margin rate, given ``instruments``): each trade posts
``qty * entry / L`` with ``L`` the symbol's leverage setting (``Instrument.max_leverage``),
and its liquidation price is the engine's (core.py, Isolated margin). At each close with
such a position held: margin usage = posted margin / equity (mean and max over those bars)
and distance to liquidation = ``(close - liq) / close`` for a long, ``(liq - close) / close``
for a short (the minimum over symbols and bars). NaN when no margined position is ever held
at a close.

A ratio whose denominator is zero is NaN (e.g. Sharpe of a flat curve, profit factor without
a losing trade).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import polars as pl

from backtest_assets.engine.core import Result, forward_fill, liquidation_price
from backtest_assets.engine.memory import aligned
from backtest_assets.engine.venue import Instrument

BARS_PER_YEAR_1M = 525_600


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def headline(equity: np.ndarray, init_cash: float,
             bars_per_year: float = BARS_PER_YEAR_1M) -> dict[str, float]:
    """Total return, volatility, Sharpe, Sortino and max drawdown of an equity curve (the
    definitions of :func:`metrics`) in two compiled passes with no temporaries: what a
    parameter search or a benchmark needs from a run, without the trade and margin figures.
    Sums are taken in bar order (numpy's are pairwise), so the ratios agree with
    :func:`metrics` to float rounding (about 1e-12 relative at a million bars)."""
    eq = np.ascontiguousarray(equity, dtype=np.float64)
    if not eq.size:
        raise ValueError("no bars: the result has an empty equity curve")
    mean, sd, downside, mdd = curve_stats(eq, float(init_cash), aligned(eq.size))
    ann = math.sqrt(bars_per_year)
    return {"total_return": float(eq[-1] / init_cash - 1.0), "volatility": sd * ann,
            "sharpe": _ratio(mean, sd) * ann, "sortino": _ratio(mean, downside) * ann,
            "max_drawdown": mdd}


@numba.njit(cache=True)
def curve_stats(equity, init, ret):  # pragma: no cover (compiled)
    """(mean, sd (ddof 1), downside deviation, max drawdown) of the bar returns of
    ``equity`` (``bar_returns``' definition, sums in bar order); each bar's return is also
    written into ``ret`` when it has T elements (it may alias an input read no further)."""
    t_n = equity.size
    keep = ret.size == t_n
    prev, peak = init, init
    mean, mdd = 0.0, 0.0
    for t in range(t_n):
        r = equity[t] / prev - 1.0 if prev > 0 else 0.0
        if keep:
            ret[t] = r
        mean += r
        prev = equity[t]
        peak = max(peak, equity[t])
        mdd = min(mdd, equity[t] / peak - 1.0)
    mean /= t_n
    ss, down = 0.0, 0.0
    prev = init
    for t in range(t_n):  # second pass: variance about the mean (as numpy's std)
        if keep:  # the same value, without a second division
            r = ret[t]
        else:
            r = equity[t] / prev - 1.0 if prev > 0 else 0.0
            prev = equity[t]
        ss += (r - mean) ** 2
        down += min(r, 0.0) ** 2
    sd = math.sqrt(ss / (t_n - 1)) if t_n > 1 else np.nan
    return mean, sd, math.sqrt(down / t_n), mdd


def bar_returns(equity: np.ndarray, init_cash: float) -> np.ndarray:
    """Each bar's return ``equity[t] / equity[t - 1] - 1`` (the starting cash before bar 0);
    0 after a bar that ended with no equity (a blown account earns nothing more)."""
    eq = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate(([init_cash], eq[:-1]))
    return np.where(prev > 0, eq / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)


def drawdown_path(equity: np.ndarray, init_cash: float) -> np.ndarray:
    """``equity / running peak - 1`` at each bar (<= 0); the starting cash is the first peak."""
    eq = np.asarray(equity, dtype=np.float64)
    return eq / np.maximum.accumulate(np.concatenate(([init_cash], eq)))[1:] - 1.0


def _drawdown(equity: np.ndarray, init_cash: float) -> tuple[float, int]:
    """Max drawdown (<= 0) and the longest stretch of bars below the running peak."""
    depth = drawdown_path(equity, init_cash)
    below = depth < 0
    longest = run = 0
    for flag in below:  # one pass over T booleans; a vectorized run length is no clearer
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return (float(depth.min()) if depth.size else 0.0), longest


def margin_path(trades: pl.DataFrame, instruments: Sequence[Instrument],
                bars: int) -> tuple[np.ndarray, np.ndarray]:
    """Posted margin and liquidation price of the position held at each close.

    Parameters
    ----------
    trades : polars.DataFrame
        ``Result.trades``.
    instruments : sequence of Instrument
        One per column; ``max_leverage`` is the leverage setting the margin is posted at.
    bars : int
        T, the number of bars of the run.

    Returns
    -------
    margin, liquidation : (T, S) float64
        0 / NaN where no margined position is held at the close.
    """
    s_n = len(instruments)
    margin = np.zeros((bars, s_n))
    level = np.full((bars, s_n), np.nan)
    index = {inst.symbol: s for s, inst in enumerate(instruments)}
    mmr = np.array([np.nan if i.maintenance_margin_rate is None else i.maintenance_margin_rate
                    for i in instruments])
    if trades.is_empty() or np.isnan(mmr).all():
        return margin, level
    # One slice per trade: trades are few next to bars, and a symbol holds one at a time.
    for sym, entry, exit_, side, qty, px in trades.select(
            "symbol", "entry_bar", pl.col("exit_bar").fill_null(bars), "side", "qty",
            "entry_price").iter_rows():
        s, m = index[sym], mmr[index[sym]]
        if np.isnan(m) or exit_ <= entry:  # no margin, or not held at any close
            continue
        lev = instruments[s].max_leverage
        margin[entry:exit_, s] = qty * px / lev
        level[entry:exit_, s] = liquidation_price(px, lev, m, 1.0 if side == "long" else -1.0)
    return margin, level


def metrics(result: Result, close: np.ndarray, *, init_cash: float,
            bars_per_year: float = BARS_PER_YEAR_1M,
            instruments: Sequence[Instrument] | None = None) -> dict[str, float]:
    """Headline metrics of ``result`` (definitions in the module docstring).

    Parameters
    ----------
    result : Result
        The backtest's outcome.
    close : np.ndarray
        (T,) or (T, S) close prices it ran on (NaN where a symbol had no bar).
    init_cash : float
        Starting cash.
    bars_per_year : float
        Bars in a year at the run's interval (525,600 for 1-minute bars).
    instruments : sequence of Instrument, optional
        The run's instruments: adds the margin metrics.

    Returns
    -------
    dict[str, float]
        Every metric by name; NaN where a ratio is undefined.

    Raises
    ------
    ValueError
        A result without bars (the engine refuses to run on none).
    """
    eq = np.asarray(result.equity, dtype=np.float64)
    n = eq.size
    if not n:
        raise ValueError("no bars: the result has an empty equity curve")
    r = bar_returns(eq, init_cash)
    growth = eq[-1] / init_cash
    total = growth - 1.0
    if growth > 0:  # via logs: a short, lucky run's annualized growth is inf, not an error
        log_annual = math.log(growth) * bars_per_year / n
        annual = math.expm1(log_annual) if log_annual < 700 else math.inf
    else:
        annual = -1.0
    sd = float(r.std(ddof=1)) if n > 1 else float("nan")
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    mdd, mdd_bars = _drawdown(eq, init_cash)

    closed = result.trades.filter(pl.col("exit_reason") != "open")
    pnl = closed["pnl"].to_numpy() if closed.height else np.empty(0)
    gains, losses = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    holding = (closed["exit_bar"] - closed["entry_bar"]).to_numpy() if closed.height \
        else np.empty(0)

    position = np.asarray(result.position, dtype=np.float64).reshape(n, -1)
    prices = np.nan_to_num(np.asarray(close, dtype=np.float64).reshape(n, -1))
    traded = np.abs(np.diff(position, axis=0, prepend=0.0)) * prices
    mean_equity = float(eq.mean())
    margin_metrics = {}
    if instruments is not None:
        margin, liq = margin_path(result.trades, instruments, n)
        posted = margin.sum(axis=1)
        on = posted > 0
        usage = posted[on] / np.where(eq[on] > 0, eq[on], np.nan)
        # Marked at the last close, as the engine marks a symbol without a bar.
        marks = forward_fill(np.asarray(close, dtype=np.float64).reshape(n, -1), np.nan)
        held = ~np.isnan(liq)
        dist = np.full(liq.shape, np.nan)  # (mark - liq) / mark, signed by the side
        dist[held] = np.sign(position[held]) * (marks[held] - liq[held]) / marks[held]
        margin_metrics = {
            "margin_usage_mean": float(np.nanmean(usage)) if on.any() else float("nan"),
            "margin_usage_max": float(np.nanmax(usage)) if on.any() else float("nan"),
            "min_liquidation_distance": float(np.nanmin(dist)) if on.any() else float("nan"),
        }
    return margin_metrics | {
        "total_return": float(total),
        "annualized_return": float(annual),
        "volatility": sd * math.sqrt(bars_per_year),
        "sharpe": _ratio(float(r.mean()), sd) * math.sqrt(bars_per_year),
        "sortino": _ratio(float(r.mean()), downside) * math.sqrt(bars_per_year),
        "max_drawdown": mdd,
        "max_drawdown_bars": float(mdd_bars),
        "calmar": _ratio(float(annual), abs(mdd)),
        "trades": float(closed.height),
        "win_rate": _ratio(float((pnl > 0).sum()), float(pnl.size)),
        "profit_factor": _ratio(gains, losses),
        "expectancy": float(pnl.mean()) if pnl.size else float("nan"),
        "avg_holding_bars": float(holding.mean()) if holding.size else float("nan"),
        "turnover_per_year": _ratio(float(traded.sum()), mean_equity) * bars_per_year / n,
        "exposure": float(np.mean(result.exposure)),
        "time_in_market": float(np.mean(np.any(position != 0, axis=1))),
        "fee_drag": float(np.sum(result.fees)) / init_cash,
        "slippage_drag": float(np.sum(result.slippage)) / init_cash,
        "funding_pnl": -float(np.sum(result.funding)) / init_cash,
        "liquidations": float((result.trades["exit_reason"] == "liquidation").sum()),
        "liquidation_fee_drag": float(np.sum(result.liquidation_fees)) / init_cash,
        "insurance_drag": float(np.sum(result.insurance)) / init_cash,
    }
