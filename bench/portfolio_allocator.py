"""The allocator's walk-forward at scale, beside a reference optimizer in the same run.

50 edges x 2 years of 5m returns (210,240 bars), weekly rebalancing on a 90-day lookback
(daily scenarios), ``constrained_optimizer`` under 5 limits: per-edge cap, gross exposure,
CVaR_95 of the daily loss, max drawdown (additive, in-sample) and a weekly turnover budget.
Times each rebalance and the whole walk-forward.

The edges are synthetic and documented here so a reader knows what is true: 5 clusters of 10
edges share a factor (within-cluster correlation ~0.5), innovations are Student-t with 3
degrees of freedom (heavy tails) scaled by a volatility that switches between a calm and a
stormy regime (clustering), and each edge has a small drift drawn once.

Reference (``--reference``): skfolio's ``MeanRisk`` (maximize return, CVaR_95 limit, weight
cap, fully invested; solved by cvxpy/CLARABEL) on the same scenarios at every rebalance, with
the same limits but turnover and drawdown (it has no additive-drawdown limit; the comparison
problem leaves both out on our side too), comparing the weights and the time. It runs in
its own environment (benchmark-only), so the comparison reads our weights from a file:

    .venv/bin/python bench/portfolio_allocator.py --out bench/results/portfolio_allocator.json
    /tmp/refvenv/bin/python bench/portfolio_allocator.py --reference \\
        bench/results/portfolio_allocator.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BARS_PER_DAY = 288
N_EDGES, DAYS = 50, 730
EVERY, LOOKBACK = 7 * BARS_PER_DAY, 90 * BARS_PER_DAY
CAP, CVAR_ALPHA, GROSS = 0.08, 0.95, 0.85


def edge_returns(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = DAYS * BARS_PER_DAY
    storm = np.repeat(rng.random(DAYS) < 0.2, BARS_PER_DAY)  # 20% of days stormy
    vol = np.where(storm, 3.0, 1.0)[:, None] * 4e-4
    factors = rng.standard_t(3, size=(t, 5)) / np.sqrt(3)
    own = rng.standard_t(3, size=(t, N_EDGES)) / np.sqrt(3)
    cluster = np.repeat(np.arange(5), N_EDGES // 5)
    drift = rng.normal(2e-6, 4e-6, N_EDGES)
    return (drift + vol * (factors[:, cluster] + own)).astype(float)


def limits_of(daily_cvar: float, drawdown: float | None, turnover: float | None):
    from backtest_assets.portfolio.allocator import Limits

    return Limits(edge_max=CAP, gross_max=GROSS, cvar_max=daily_cvar, cvar_alpha=CVAR_ALPHA,
                  max_drawdown=drawdown, turnover_max=turnover)


def ours(out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from backtest_assets.portfolio.walkforward import scenarios, walk_forward

    r = edge_returns()
    load0 = os.getloadavg()[0]
    rng = np.random.default_rng(2)
    gross = rng.uniform(0.5, 1.0, N_EDGES)  # each edge's worst gross exposure
    exposures = lambda lo, hi: (np.eye(N_EDGES), gross, gross)  # noqa: E731
    full = dict(every=EVERY, lookback=LOOKBACK, scenario_bars=BARS_PER_DAY,
                mode="constrained_optimizer", exposures=exposures)
    t0 = time.perf_counter()
    wf = walk_forward(r, limits=limits_of(0.012, 0.05, 0.5), **full)
    whole = time.perf_counter() - t0
    # the problem the reference solves too: cap, gross, CVaR, budget
    t1 = time.perf_counter()
    cmp_wf = walk_forward(r, limits=limits_of(0.012, None, None), **full)
    cmp_whole = time.perf_counter() - t1
    starts = wf.rebalance_bars
    doc = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": load0, "load_after": os.getloadavg()[0],
        "edges": N_EDGES, "bars": int(r.shape[0]), "rebalances": len(starts),
        "limits": "edge_max 0.08, gross_max 0.85, CVaR95(daily) <= 1.2%, max drawdown <= 5%, "
                  "turnover <= 0.5 per week",
        "walk_forward_s": whole, "per_rebalance_s": {
            "median": float(np.median(wf.seconds)), "max": float(wf.seconds.max())},
        "binding_share": {name: float(np.mean([name in b for b in wf.binding]))
                          for name in ("edge_max", "cvar_max", "max_drawdown", "turnover_max",
                                       "gross_max")},
        "max_turnover_after_first": float(wf.turnover[1:].max()),
        "comparison_problem_walk_forward_s": cmp_whole,
        "comparison_weights": cmp_wf.weights.tolist(),
        "scenarios": [scenarios(r[k - LOOKBACK:k], BARS_PER_DAY).tolist() for k in starts],
        "gross": gross.tolist(),
    }
    out.write_text(json.dumps(doc))
    print(f"{N_EDGES} edges x {r.shape[0]:,} bars, {len(starts)} weekly rebalances: "
          f"walk-forward {whole:.2f} s (median {np.median(wf.seconds) * 1e3:.1f} ms, max "
          f"{wf.seconds.max() * 1e3:.1f} ms per rebalance); load {load0:.2f} -> "
          f"{doc['load_after']:.2f}")
    print("limits binding (share of rebalances):", doc["binding_share"])


def reference(path: Path) -> None:
    from skfolio import RiskMeasure
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    doc = json.loads(path.read_text())
    gross = np.array(doc["gross"])
    diffs, gaps, times = [], [], []
    for scen, w_ours in zip(doc["scenarios"], doc["comparison_weights"], strict=True):
        x = np.array(scen)
        model = MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RETURN,
                         risk_measure=RiskMeasure.CVAR, cvar_beta=CVAR_ALPHA, max_cvar=0.012,
                         min_weights=0.0, max_weights=CAP, budget=1.0,
                         left_inequality=gross[None, :], right_inequality=np.array([GROSS]))
        t0 = time.perf_counter()
        model.fit(x)
        times.append(time.perf_counter() - t0)
        diffs.append(float(np.abs(model.weights_ - np.array(w_ours)).max()))
        mu = x.mean(axis=0)
        gaps.append(float(mu @ np.array(w_ours) - mu @ model.weights_))
    doc.update(reference_library="skfolio MeanRisk (cvxpy)",
               reference_walk_forward_s=float(sum(times)),
               reference_per_rebalance_median_s=float(np.median(times)),
               max_weight_difference=float(max(diffs)),
               expected_return_ours_minus_reference={"min": min(gaps), "max": max(gaps)},
               reference_load_after=os.getloadavg()[0])
    for k in ("scenarios", "comparison_weights"):
        doc.pop(k)
    path.write_text(json.dumps(doc, indent=1))
    print(f"skfolio: {sum(times):.2f} s for {len(times)} rebalances (median "
          f"{np.median(times) * 1e3:.1f} ms); ours on the same problem "
          f"{doc['comparison_problem_walk_forward_s']:.2f} s; largest weight difference "
          f"{max(diffs):.2e}; expected daily return ours - skfolio in "
          f"[{min(gaps):.2e}, {max(gaps):.2e}]")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--reference", type=Path)
    args = ap.parse_args()
    if args.reference:
        reference(args.reference)
    else:
        ours(args.out or REPO / "bench/results/portfolio_allocator.json")
