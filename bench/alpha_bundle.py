"""The alpha bundle end to end on 20 symbols x 1 year of 5m bars: snapshots, signals, a
6-block purged CV over 5 lambdas, out-of-sample scores and their IC.

Data (not timed): :func:`backtest_assets.sources.synthetic_universe.generate_universe` with 20
symbols over 365 days (105,120 bars; listings, delistings, gaps, the planted one-day
cross-sectional reversal).

Timed, in order:

1. ``snapshots``: the point-in-time liquid universe (ADV over the trailing day of 15m
   bars, >= 1 M USD, top 15);
2. ``signals``: the five signals of :data:`backtest_assets.alpha.signals.SIGNALS`, masked to
   the members;
3. ``cv fit``: one :func:`backtest_assets.alpha.model.fit` over the whole year (residual
   orthogonalization, a 6-block purged and embargoed CV over 5 lambdas, the refit);
4. ``walk-forward``: :func:`~backtest_assets.alpha.model.walk_forward_scores`, a refit every
   28 days after the first 60 (each a 6-block CV over 5 lambdas): the out-of-sample scores;
5. ``ic``: their information coefficient with its block-bootstrap interval.

Reference in the same run: the time numpy takes to sort the pooled rows once per fold and
lambda (what a naive per-fold Spearman over all rows costs is dominated by this), printed
beside the model's fold time so the ratio says how close the CV is to the cost of ranking.

Peak memory: the process's maximum resident set (``ru_maxrss``) after the run. Target
(issue 17): the end to end time <= 60 s on this machine (2 cores).

    .venv/bin/python bench/alpha_bundle.py [--symbols 20] [--days 365]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from backtest_assets.alpha.model import fit, information_coefficient, walk_forward_scores
from backtest_assets.alpha.panel import forward_log_returns
from backtest_assets.alpha.signals import compute
from backtest_assets.alpha.universe import UniverseRule, snapshots
from backtest_assets.sources.synthetic_universe import generate_universe

HORIZON = 12
LAMBDAS = [0.0, 0.1, 1.0, 10.0, 100.0]
RESULT = Path(__file__).parent / "results" / "alpha_bundle.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    u = generate_universe(7, symbols=args.symbols, days=args.days)
    p = u.panel
    load0 = os.getloadavg()[0]
    times: dict[str, float] = {}
    t = time.perf_counter()
    _, member = snapshots(p, UniverseRule(name="top_liquid_v1", top_n=15))
    times["snapshots"] = time.perf_counter() - t
    t = time.perf_counter()
    signals = compute(p, member)
    x = np.stack([np.where(member, signals[n], np.nan) for n in sorted(signals)], axis=2)
    y = np.where(member, forward_log_returns(p.open, HORIZON), np.nan)
    times["signals"] = time.perf_counter() - t
    t = time.perf_counter()
    model = fit(x, y, LAMBDAS, n_blocks=6, purge=HORIZON + 1, embargo=HORIZON)
    times["cv fit"] = time.perf_counter() - t
    t = time.perf_counter()
    per_day = p.bars_per_day
    scores = walk_forward_scores(x, y, LAMBDAS, first_train_bars=60 * per_day,
                                 refit_every=28 * per_day, purge=HORIZON + 1,
                                 embargo=HORIZON)
    times["walk-forward"] = time.perf_counter() - t
    t = time.perf_counter()
    ic = information_coefficient(scores, y, block_bars=per_day)
    times["ic"] = time.perf_counter() - t
    total = sum(times.values())
    # reference: one argsort of the pooled label rows per fold and lambda
    rows = y[np.isfinite(x).all(axis=2) & np.isfinite(y)]
    t = time.perf_counter()
    for _ in range(6 * len(LAMBDAS)):
        np.argsort(rows, kind="stable")
    ref = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load1 = os.getloadavg()[0]
    cells = int(np.isfinite(x).all(axis=2).sum())
    print(f"{args.symbols} symbols x {args.days} days of 5m bars ({len(p.ts):,} bars, "
          f"{cells:,} member cells with every signal); python {platform.python_version()}, "
          f"{os.cpu_count()} cpus, load {load0:.2f} -> {load1:.2f}")
    for k, v in times.items():
        print(f"  {k:<13} {v:7.2f} s")
    print(f"  {'end to end':<13} {total:7.2f} s   (target <= 60 s)")
    print(f"reference: {6 * len(LAMBDAS)} argsorts of the {rows.size:,} pooled rows "
          f"{ref:.2f} s; the CV fit is {times['cv fit'] / ref:.1f}x that")
    print(f"chosen lambda {model.lam:g}; out-of-sample IC {ic['ic']:.4f} "
          f"[{ic['lo']:.4f}, {ic['hi']:.4f}] over {ic['bars']:,} bars; peak RSS {peak_mb:.0f} MB")
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps({
        "symbols": args.symbols, "days": args.days, "bars": len(p.ts), "cells": cells,
        "seconds": times, "end_to_end_s": total, "reference_argsort_s": ref,
        "lambda": model.lam, "ic": {k: v for k, v in ic.items() if k != "series"},
        "peak_rss_mb": peak_mb, "load_before": load0, "load_after": load1,
        "cpus": os.cpu_count(), "python": platform.python_version()}, indent=1))


if __name__ == "__main__":
    main()
