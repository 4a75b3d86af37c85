"""Calibration table of Phase 2's candidate tests on adversarial null markets, and power.

For each generator of tests/support/null_markets.py (every hypothesis null) and each method
of its ``METHODS``: the family false-discovery rate at q = 0.05 (BH within the family of
the 3 symbols + ALL; all null, so FDR = P(any discovery)) per horizon, with its 95% Wilson
interval over the datasets. Then the power of each method: one symbol carries an effect of
0.3 sd of the h-bar return in the ``hawkes`` and ``garch_t`` markets (found by BH at 0.05 in
its family of 4).

    .venv/bin/python bench/calibration.py [--datasets 1000] [--power-runs 300] [--jobs 2]
        [--generators garch_t,hawkes] [--methods signflip+thin,hac]

Datasets are seeded by (generator, index), so a rerun prints the same table.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import null_markets as nm

Q = 0.05
EFFECT = 0.3


def null_chunk(args: tuple[str, list[str], int, int]) -> np.ndarray:
    """(datasets, methods, horizons) booleans: any discovery in the family."""
    generator, methods, start, stop = args
    return np.array([nm.family_discoveries(nm.dataset(generator, k), methods, Q)
                     for k in range(start, stop)])


def power_chunk(args: tuple[str, list[str], int, int]) -> np.ndarray:
    """(runs, methods, horizons) booleans: the planted symbol 0 discovered."""
    generator, methods, start, stop = args
    return np.array([nm.family_discoveries(nm.dataset(generator, k, stream=99), methods, Q,
                                           effect=EFFECT, planted=np.array([0]))
                     for k in range(start, stop)])


def run(pool: ProcessPoolExecutor, fn, generator: str, methods: list[str], n: int,
        jobs: int) -> np.ndarray:
    edges = np.linspace(0, n, 4 * jobs + 1).astype(int)
    chunks = [(generator, methods, int(a), int(b)) for a, b in itertools.pairwise(edges)
              if b > a]
    return np.concatenate(list(pool.map(fn, chunks)))


def cells(hits: np.ndarray, j: int) -> str:
    out = []
    for c in range(len(nm.HORIZONS)):
        share, lo, hi = nm.wilson_ci(int(hits[:, j, c].sum()), hits.shape[0])
        out.append(f"{share:6.3f} [{lo:.3f}, {hi:.3f}]")
    return "  ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=1000)
    ap.add_argument("--power-runs", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--generators", default=",".join(nm.GENERATORS))
    ap.add_argument("--methods", default=",".join(nm.METHODS))
    args = ap.parse_args()
    generators, methods = args.generators.split(","), args.methods.split(",")
    width = max(map(len, methods))
    head = "  ".join(f"{h:>2}m FDR [95% CI]      " for h in nm.HORIZONS)
    print(f"null markets: {args.datasets} datasets per generator, family of {nm.N_SYMBOLS} "
          f"symbols + ALL, BH q = {Q}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for g in generators:
            hits = run(pool, null_chunk, g, methods, args.datasets, args.jobs)
            print(f"\n{g}\n  {'method':<{width}}  {head}")
            for j, m in enumerate(methods):
                print(f"  {m:<{width}}  {cells(hits, j)}")
        print(f"\npower: effect {EFFECT} sd of the h-bar return on symbol 0, "
              f"{args.power_runs} runs")
        for g in ("garch_t", "hawkes"):
            hits = run(pool, power_chunk, g, methods, args.power_runs, args.jobs)
            print(f"\n{g}\n  {'method':<{width}}  " + "  ".join(
                f"{h:>2}m power [95% CI]    " for h in nm.HORIZONS))
            for j, m in enumerate(methods):
                print(f"  {m:<{width}}  {cells(hits, j)}")
    print(f"\n{time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
