"""Synthetic tear-sheet inputs of any size (the unit and browser tests, bench/tearsheet.py).

The frames follow the warehouse's contracts (``backtest_trades``, ``backtest_equity`` and
``backtest_metrics`` of one blueprint, its walk-forward and Phase-2 rows); the equity is the
starting cash plus the P&L of the trades closed so far, and the metrics are the engine's
definitions of that curve, so a page's numbers can be checked against them.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl

from backtest_assets.engine.metrics import _drawdown, drawdown_path
from backtest_assets.reporting import performance as P
from backtest_assets.reporting.event_study import event_study
from backtest_assets.reporting.tearsheet import BlueprintInputs, PortfolioInputs, Provenance

T0 = dt.datetime(2024, 1, 1)
REASONS = ("signal", "stop_loss", "take_profit", "time_stop", "liquidation")
HASHES = {"spec": "5" * 64, "data": "d" * 64, "code": "c" * 40}


def _bars(symbols, n: int, interval: int, rng, gap: tuple[int, int] | None) -> pl.DataFrame:
    idx = np.arange(n)
    if gap is not None:
        idx = np.concatenate([idx[:gap[0]], idx[gap[1]:]])
    ts = [T0 + dt.timedelta(minutes=interval * int(i)) for i in idx]
    parts = []
    for k, sym in enumerate(symbols):
        close = (100.0 * (k + 1)) * np.exp(np.cumsum(rng.standard_t(4, idx.size) * 0.002))
        open_ = np.concatenate([[close[0]], close[:-1]])
        wick = np.abs(rng.normal(0, 0.001, (2, idx.size)))
        parts.append(pl.DataFrame({
            "symbol": sym, "ts_open": ts, "open": open_, "close": close,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1])}))
    return pl.concat(parts).select("symbol", "ts_open", "open", "high", "low", "close")


def _trades(bars: pl.DataFrame, symbols, n_trades: int, cash: float, rng) -> pl.DataFrame:
    rows = []
    per = -(-n_trades // len(symbols))
    for sym in symbols:
        own = bars.filter(pl.col("symbol") == sym)
        opens, ts = own["open"].to_numpy(), own["ts_open"].to_list()
        span = len(own) // max(per, 1)
        for j in range(min(per, n_trades - len(rows))):
            entry = j * span + int(rng.integers(1, max(2, span // 3)))
            hold = int(rng.integers(1, max(2, span // 2)))
            exit_ = min(entry + hold, len(own) - 1)
            side = "long" if rng.random() < 0.6 else "short"
            qty = 0.2 * cash / opens[entry]
            fees = 0.0005 * qty * (opens[entry] + opens[exit_])
            funding = float(rng.normal(0, 0.2))
            sign = 1 if side == "long" else -1
            pnl = sign * (opens[exit_] - opens[entry]) * qty - fees - funding
            rows.append({"symbol": sym, "entry_ts": ts[entry], "exit_ts": ts[exit_],
                         "entry_bar": entry, "exit_bar": exit_, "side": side, "qty": qty,
                         "entry_price": opens[entry], "exit_price": opens[exit_],
                         "fees": fees, "funding": funding, "pnl": pnl,
                         "return": pnl / (qty * opens[entry]),
                         "exit_reason": REASONS[int(rng.integers(len(REASONS)))]})
    frame = pl.DataFrame(rows)
    # the last trade is still open at the end
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(pl.lit("open"))
        .otherwise(pl.col("exit_reason")).alias("exit_reason"))


def synthetic_blueprint(n_bars: int = 2_016, n_trades: int = 40,
                        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"), *,
                        interval: int = 5, seed: int = 7, name: str = "momentum_test",
                        gap: tuple[int, int] | None = (600, 640),
                        walkforward: bool = True) -> BlueprintInputs:
    """A blueprint's inputs: ``n_bars`` bars per symbol (a gap of missing bars by default),
    ``n_trades`` trades, events before each entry, six folds, a Phase-2 hypothesis."""
    rng = np.random.default_rng(seed)
    cash = 100_000.0
    bars = _bars(symbols, n_bars, interval, rng, gap)
    trades = _trades(bars, symbols, n_trades, cash, rng) if n_trades else pl.DataFrame(
        schema={"symbol": pl.String, "entry_ts": pl.Datetime("us"),
                "exit_ts": pl.Datetime("us"), "entry_bar": pl.Int64, "exit_bar": pl.Int64,
                "side": pl.String, "qty": pl.Float64, "entry_price": pl.Float64,
                "exit_price": pl.Float64, "fees": pl.Float64, "funding": pl.Float64,
                "pnl": pl.Float64, "return": pl.Float64, "exit_reason": pl.String})
    step = dt.timedelta(minutes=interval)
    grid = bars.filter(pl.col("symbol") == symbols[0])["ts_open"]
    closes_at = grid + step
    closed = trades.filter(pl.col("exit_reason") != "open")
    realized = (pl.DataFrame({"ts": closes_at}).join(
        closed.group_by(ts=pl.col("exit_ts") + step).agg(pl.col("pnl").sum()),
        on="ts", how="left").with_columns(pl.col("pnl").fill_null(0.0)))
    equity = cash + np.cumsum(realized["pnl"].to_numpy())
    per_bar = {c: np.abs(rng.normal(0, 1, equity.size)) * (rng.random(equity.size) < 0.05)
               for c in ("fees", "slippage")}
    eq = pl.DataFrame({"ts": closes_at, "equity": equity, "cash": equity,
                       "exposure": np.where(rng.random(equity.size) < 0.5, 0.4, 0.0),
                       "drawdown": drawdown_path(equity, cash), **per_bar,
                       "funding": rng.normal(0, 0.05, equity.size)})
    r = P.returns(equity, cash)
    per_year = P.bars_per_year(interval)
    mdd, mdd_bars = _drawdown(equity, cash)
    pnl = closed["pnl"].to_numpy()
    metrics = {"blueprint": name, "init_cash": cash, "total_return": equity[-1] / cash - 1,
               "annualized_return": (equity[-1] / cash) ** (per_year / equity.size) - 1,
               "volatility": float(r.std(ddof=1)) * per_year ** 0.5,
               "sharpe": P.sharpe(r, per_year), "sortino": float("nan"), "calmar": None,
               "max_drawdown": mdd, "max_drawdown_bars": float(mdd_bars),
               "trades": float(closed.height),
               "win_rate": float((pnl > 0).mean()) if pnl.size else float("nan"),
               "profit_factor": float(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
               if (pnl < 0).any() else float("nan"),
               "expectancy": float(pnl.mean()) if pnl.size else float("nan"),
               "avg_holding_bars": float((closed["exit_bar"] - closed["entry_bar"]).mean())
               if closed.height else float("nan"),
               "exposure": float(eq["exposure"].mean()), "time_in_market": 0.5,
               "turnover_per_year": 12.0, "fee_drag": float(eq["fees"].sum()) / cash,
               "slippage_drag": float(eq["slippage"].sum()) / cash,
               "funding_pnl": -float(eq["funding"].sum()) / cash, "liquidations": 0.0,
               "liquidation_fee_drag": 0.0, "insurance_drag": 0.0,
               "spec_hash": HASHES["spec"], "dataset_hash": HASHES["data"],
               "code_commit": HASHES["code"]}
    event_ts = (trades.select("symbol", ts=pl.col("entry_ts") - step)
                if trades.height else pl.DataFrame(schema={"symbol": pl.String,
                                                          "ts": pl.Datetime("us")}))
    extra = bars.sample(min(20, bars.height), seed=seed).select("symbol", ts=pl.col("ts_open"))
    events = pl.concat([event_ts, extra]).unique().with_columns(
        event_type=pl.lit("volatility_shock"), direction=pl.lit(1, pl.Int8))
    kw = {}
    if walkforward:
        kw = _walkforward(name, grid, step, rng, cash)
    hypotheses = pl.DataFrame({
        "hypothesis_id": ["h_0123456789ab"], "event_type": ["volatility_shock"],
        "rule_template": ["continuation"], "horizon": ["60m"], "symbol": ["ALL"],
        "n": [83], "mean": [0.0101], "t": [5.2], "q": [0.000412], "net_1x": [0.0089],
        "net_2x": [0.0077], "survivor": [True]})
    return BlueprintInputs(
        blueprint=name, window=(T0.date(), (T0 + step * (n_bars - 1)).date()),
        interval_minutes=interval, init_cash=cash,
        trace=Provenance(study="synthetic", spec_hashes={"strategies/x.yaml": "a" * 64},
                         spec_hash=HASHES["spec"], dataset_hash=HASHES["data"],
                         code_commit=HASHES["code"]),
        catalog={"blueprint": name, "source": "phase2", "hypothesis_id": "h_0123456789ab",
                 "entry": "event volatility_shock", "direction": "continuation",
                 "exits": "bars 12", "symbols": ",".join(symbols)},
        metrics=metrics, equity=eq, trades=trades, bars=bars, events=events,
        hypotheses=hypotheses,
        event_curve=event_study(bars, events, before=12, after=24), leverage=1.0, **kw)


def _walkforward(name, grid: pl.Series, step, rng, cash) -> dict:
    n = grid.len()
    edges = np.linspace(n // 3, n - 1, 7).astype(int)
    folds, oos = [], []
    level = cash
    for f in range(6):
        a, b = grid[int(edges[f])], grid[int(edges[f + 1])]
        folds.append({"blueprint": name, "kind": "rolling", "fold": f, "start": a, "end": b,
                      "params": json.dumps({"exits.time_stop_bars": 12 + f}),
                      "is_sharpe": 2.0 - 0.1 * f, "sharpe": float(rng.normal(1, 1)),
                      "total_return": 0.01 * (f - 2), "max_drawdown": -0.01 * (f + 1),
                      "trades": 10 + f, "stress_sharpe": float(rng.normal(0.5, 1)),
                      "stress_total_return": 0.005 * (f - 2)})
        seg = grid.slice(int(edges[f]), int(edges[f + 1] - edges[f]))
        path = level * np.exp(np.cumsum(rng.normal(0, 0.001, seg.len())))
        level = float(path[-1]) if path.size else level
        oos.append(pl.DataFrame({"fold": f, "ts": seg + step, "equity": path}))
    oos_eq = pl.concat(oos)
    summary = {"blueprint": name, "combinations": 9, "trials_phase2": 24, "trials": 33,
               "deflated_sharpe": 0.97, "pbo": 0.12, "pbo_splits": 924, "n_obs": n,
               "skew": 0.3, "kurtosis": 9.1, "var_sharpe": 4.2e-5, "sr0": 3.1,
               "is_sharpe": 14.2, "degradation_slope": -0.8, "prob_oos_loss": 0.05,
               "folds": 6, "purge_bars": 12, "embargo_bars": 3, "oos_sharpe": 5.8,
               "oos_total_return": 0.064, "oos_max_drawdown": -0.098, "oos_psr": 0.9,
               "stress_multiplier": 2.0, "stress_sharpe": 2.99, "stress_total_return": 0.032,
               "stress_max_drawdown": -0.11, "stress_psr": 0.74}
    decision = {"blueprint": name, "from_stage": "idea", "to_stage": "demo",
                "decision": "promote",
                "reasons": "deflated Sharpe over 33 trials 0.97 >= 0.95; PBO 0.12 <= 0.3"}
    return {"folds": pl.DataFrame(folds), "oos_equity": oos_eq, "summary": summary,
            "decision": decision}


def synthetic_portfolio(n_bars: int = 2_016, seed: int = 3) -> PortfolioInputs:
    """A portfolio's inputs: the book and the equal-weight book, weights at 3 rebalances."""
    rng = np.random.default_rng(seed)
    step = dt.timedelta(minutes=5)
    ts = [T0 + step * (i + 1) for i in range(n_bars)]
    rows, metrics = [], []
    for book in ("book", "equal_weight"):
        eq = 100_000 * np.exp(np.cumsum(rng.normal(0.00005, 0.001, n_bars)))
        rows.append(pl.DataFrame({"book": book, "ts": ts, "equity": eq,
                                  "gross": rng.uniform(0.3, 0.6, n_bars),
                                  "net": rng.uniform(-0.2, 0.2, n_bars),
                                  "drawdown": drawdown_path(eq, 100_000.0)}))
        mdd, _ = _drawdown(eq, 100_000.0)
        metrics.append({"book": book, "total_return": eq[-1] / 1e5 - 1,
                        "sharpe": P.sharpe(P.returns(eq, 1e5), P.bars_per_year(5)),
                        "max_drawdown": mdd, "fees": 760.0, "trades": 41, "edges": 3,
                        "max_gross": 0.6, "max_net": 0.2, "spec_hash": "f" * 64})
    weights = pl.DataFrame({
        "rebalance_ts": [ts[i] for i in (0, 0, 700, 700, 1400, 1400)],
        "edge": ["a", "b"] * 3, "eligible": [True] * 6,
        "weight": [0.5, 0.5, 0.7, 0.3, 0.0, 1.0], "risk_contribution": [0.5] * 6,
        "turnover": [0.1] * 6, "binding": ["none"] * 6})
    closes = _bars(("BTCUSDT",), n_bars, 5, rng, None).select("symbol", "ts_open", "close")
    return PortfolioInputs(
        portfolio="book_test", window=(T0.date(), (T0 + step * n_bars).date()),
        interval_minutes=5, init_cash=100_000.0,
        trace=Provenance(study="synthetic", spec_hashes={}, spec_hash="f" * 64,
                         dataset_hash=HASHES["data"], code_commit=HASHES["code"]),
        metrics=pl.DataFrame(metrics), equity=pl.concat(rows), weights=weights,
        closes=closes)
