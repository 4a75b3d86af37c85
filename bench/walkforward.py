"""Walk-forward of one blueprint with a 1,000-combination grid over one symbol-year of 5m bars.

Data (not timed): a year of synthetic BTCUSDT 5m perp bars and funding from the synthetic
source, and the feature the blueprint reads, ``ret_48`` (the 4-hour log return, known at the
bar's close).

Timed: :func:`backtest_assets.walkforward.evaluate.evaluate` of a momentum blueprint whose grid
is 10 thresholds x 10 time stops x 10 stop-losses = 1,000 combinations, with the spec of the
issue: 6 rolling folds after a first train window of 180 days (each test window about 31 days),
purge of the longest hold + 1, and what the evaluation always adds: the full-sample sweep with
block statistics for 15 CPCV splits and PBO over C(16, 8) = 12,870 CSCV splits, the deflated
Sharpe's re-simulation, and each fold's chosen combination run twice (costs 1x and 2x).

Reference in the same run: the same in-sample work done naively, one ``backtest`` + ``metrics``
call per combination and train window (timed on a sample of combinations of the first fold and
extrapolated to 1,000 x 6).

Target (issue 6): under 60 s on 2 cores.

    .venv/bin/python bench/walkforward.py [--days 366] [--sample 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import time

import numba
import numpy as np
import polars as pl

from backtest_assets.core import bars as core_bars
from backtest_assets.engine import backtest
from backtest_assets.engine.core import forward_fill
from backtest_assets.engine.metrics import metrics
from backtest_assets.sources.synthetic import SyntheticSource
from backtest_assets.specs import load_registry
from backtest_assets.specs.models import Condition, Entry, Exits, StrategySpec, WalkForwardSpec
from backtest_assets.strategies import Panel
from backtest_assets.walkforward.evaluate import Market, Simulator, evaluate, purge_bars, windows

SYMBOL = "BTCUSDT"
START = dt.date(2024, 1, 1)


def market(days: int) -> Market:
    reg = load_registry()
    src = SyntheticSource(seed=7)
    dates = [START + dt.timedelta(days=i) for i in range(days)]
    klines = pl.concat([src.klines_1m("perp", SYMBOL, d).frame for d in dates])
    bars = core_bars.resample(core_bars.bars_1m(klines, "perp"), reg.base_minutes)
    funding = pl.concat([src.funding_rates(SYMBOL, d).frame for d in dates]).select(
        "symbol", "ts", "funding_rate")
    start = dt.datetime.combine(START, dt.time())
    panel = Panel.from_bars(bars, [SYMBOL], start, start + dt.timedelta(days=days),
                            reg.base_minutes)
    close = panel.close[:, 0]
    ret_48 = np.full(close.shape, np.nan)
    ret_48[48:] = np.log(close[48:] / close[:-48])
    venue = reg.fees.venues[reg.fees.default_venue]
    return Market(panel, {"ret_48": ret_48[:, None]}, None, funding, venue, 100_000.0)


BLUEPRINT = StrategySpec(
    name="momentum_grid", symbols=(SYMBOL,),
    entry=Entry(condition=Condition(feature="ret_48", op="abs_gt", threshold=0.02)),
    direction="continuation", target_weight=1.0, exits=Exits(time_stop_bars=48),
    grid={"entry.condition.threshold": tuple(np.round(np.linspace(0.005, 0.05, 10), 4)),
          "exits.time_stop_bars": tuple(float(h) for h in (3, 6, 12, 24, 36, 48, 72, 96, 144,
                                                           288)),
          "exits.stop_loss": tuple(np.round(np.linspace(0.005, 0.05, 10), 4))})
SPEC = WalkForwardSpec(scheme="rolling", folds=6, train_days=180, purge_bars=12,
                       embargo_bars=12, min_trades=5)


def naive_per_combination(m: Market, sample: int) -> float:
    """Seconds per combination of one ``backtest`` + ``metrics`` on the first train window."""
    sim = Simulator(BLUEPRINT, m)
    wf, _ = windows(len(m.panel.ts), m.panel.interval_minutes, SPEC,
                    purge_bars(BLUEPRINT, SPEC))
    a, b = wf[0].train[0]
    bars = sim._bars(a, b)
    ks = np.linspace(0, sim.k - 1, sample).astype(int)
    sim.run(int(ks[0]), a, b)  # compiled already; warm the caches
    t0 = time.perf_counter()
    for k in ks:
        tgt = sim.target(int(k), a, b)
        res = backtest(**bars, target=tgt, instruments=sim.insts, exits=sim.exits[k])
        metrics(res, bars["close"], init_cash=m.init_cash, bars_per_year=sim.annual ** 2,
                weights=forward_fill(tgt), instruments=sim.insts)
    return (time.perf_counter() - t0) / sample


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=366)
    p.add_argument("--sample", type=int, default=40)
    args = p.parse_args()
    t0 = time.perf_counter()
    m = market(args.days)
    prep = time.perf_counter() - t0
    small = Market(m.panel.rows(0, 60 * 288), {"ret_48": m.features["ret_48"][:60 * 288]},
                   None, m.funding, m.venue, m.init_cash)
    evaluate(BLUEPRINT, small, WalkForwardSpec(scheme="rolling", folds=2, train_days=30,
                                               purge_bars=12), stress=load_registry()
             .gates.promotion.cost_stress)  # compile the kernels outside the timing
    t1 = time.perf_counter()
    wf = evaluate(BLUEPRINT, m, SPEC, stress=load_registry().gates.promotion.cost_stress)
    wall = time.perf_counter() - t1
    per = naive_per_combination(m, args.sample)
    naive = per * wf.summary["combinations"][0] * SPEC.folds
    s = wf.summary.row(0, named=True)
    test = wf.results.filter(pl.col("sample") == "test")
    print(f"walk-forward, {SYMBOL}, {args.days} days of 5m bars ({len(m.panel.ts):,} bars; "
          f"data built in {prep:.1f} s, not timed), python {platform.python_version()}, "
          f"cpus {os.cpu_count()}, numba threads {numba.get_num_threads()}")
    print(f"grid {s['combinations']:,} combinations x {SPEC.folds} rolling folds (train "
          f"{SPEC.train_days:g} days, test {test['bars'].min() // 288}..{test['bars'].max() // 288}"
          f" days, purge {s['purge_bars']} bars) + full-sample sweep for 15 CPCV splits and "
          f"PBO over {s['pbo_splits']:,} CSCV splits")
    print(f"walk-forward wall {wall:.1f} s (target < 60 s); naive reference (one backtest + "
          f"metrics per combination and train window, {per * 1e3:.1f} ms each on "
          f"{args.sample} sampled) {naive:.1f} s for the in-sample part alone: "
          f"ratio {wall / naive:.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
          f"chosen per fold {test['combo'].to_list()}; IS Sharpe {s['is_sharpe']:.2f}, "
          f"deflated Sharpe {s['deflated_sharpe']:.3f} over {s['trials']} trials, PBO "
          f"{s['pbo']:.3f}, OOS Sharpe {s['oos_sharpe']:.2f}, decay {s['is_oos_decay']:.2f}")


if __name__ == "__main__":
    main()
