"""Backtest engine speed on the peers' 1,051,200-bar series, beside the peers' NumPy reference.

Uses ``../shared/bench/peers`` (its data generator and its ``equity_exact``: the NumPy
closed form that agrees with vectorbt to ~1e-13; see its README). Same strategy as the
peers' case a: SMA(20)/SMA(100) crossover, long/short, fee 4 bps + slippage 1 bp per side;
the engine runs additionally pay 8-hourly funding. Median of 7 after a warm-up call.

The reference is measured in the same run. vectorbt itself is not run here (it is not a
project dependency): the peers' results file records vectorbt's rust engine at 0.115 s and
NumPy exact at 0.028 s on this machine kind.

    .venv/bin/python bench/engine.py [--bars 1051200] [--reference-loop]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backtest_assets.engine import ExitRules, Instrument, backtest, backtest_reference

PEERS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peers"


def median_time(fn: Callable[[], object], repeats: int = 7) -> tuple[float, object]:
    result = fn()  # warm-up (numba compile or cache load)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bars", type=int, default=1_051_200)
    p.add_argument("--reference-loop", action="store_true",
                   help="also time the plain-Python reference loop (about 25 s)")
    args = p.parse_args()
    if not PEERS.is_dir():
        raise SystemExit(f"the peers' benchmark is not at {PEERS}")
    sys.path.insert(0, str(PEERS))
    import bench as peers  # the peers' bench.py (its make_data comes with it)

    data = peers.make_data.generate(args.bars, 42)
    o, h, lo, c = data["open"], data["high"], data["low"], data["close"]
    held = peers.target_position(peers.sma(c, peers.FAST), peers.sma(c, peers.SLOW))
    # The peers' target at bar t is held during bar t (filled at open t); the engine's target
    # at bar t fills at open t+1: the same orders are the peers' target one bar earlier.
    target = np.append(held[1:], held[-1])
    funding = np.full(c.shape, np.nan)
    funding[::480] = np.random.default_rng(0).normal(1e-4, 2e-4, funding[::480].shape)
    fees = dict(symbol="BTCUSDT", taker_bps=peers.FEE * 1e4, slippage_bps=peers.SLIP * 1e4)
    spot = Instrument(**fees)
    # Isolated margin at a leverage setting of 2: the +-1 target posts half its notional (at
    # a setting of 1 its margin, slippage included, would exceed the equity: refused).
    perp = Instrument(**fees, max_leverage=2.0, maintenance_margin_rate=0.004,
                      liquidation_fee_rate=0.005)
    lots = Instrument(**fees, lot_size=0.001, tick_size=0.1, min_notional=5.0,
                      max_leverage=2.0, maintenance_margin_rate=0.004)
    stops = ExitRules(stop_loss=0.01, take_profit=0.02, time_stop=600)

    ref_s, (ref_eq, ref_trades) = median_time(lambda: peers.equity_exact(o, c, held))
    cases = [
        ("fee + slippage, vectorbt sizing (long_sizing='cash')",
         lambda: backtest(o, h, lo, c, target, spot, long_sizing="cash")),
        ("fee + slippage + funding: closed form (auto)",
         lambda: backtest(o, h, lo, c, target, spot, funding=funding)),
        ("fee + slippage + funding: compiled loop",
         lambda: backtest(o, h, lo, c, target, spot, funding=funding, path="compiled")),
        ("+ isolated margin, setting 2x (margin and liquidation checked)",
         lambda: backtest(o, h, lo, c, target, perp, funding=funding)),
        ("+ lot / tick / min notional (compiled)",
         lambda: backtest(o, h, lo, c, target, lots, funding=funding)),
        ("+ stop 1% / take-profit 2% / time stop 600 (compiled)",
         lambda: backtest(o, h, lo, c, target, perp, funding=funding, exits=stops)),
    ]
    print(f"{args.bars:,} bars, SMA {peers.FAST}/{peers.SLOW}, fee {peers.FEE * 1e4:g} bps + "
          f"slippage {peers.SLIP * 1e4:g} bp; median of 7")
    print(f"{'case':<56} {'median ms':>10} {'t / t_numpy':>12} {'path':>12} {'trades':>7}")
    print(f"{'peers numpy exact (reference, no funding)':<56} {1e3 * ref_s:>10.1f} {1.0:>12.2f} "
          f"{'-':>12} {ref_trades:>7}")
    for label, fn in cases:
        secs, res = median_time(fn)
        print(f"{label:<56} {1e3 * secs:>10.1f} {secs / ref_s:>12.2f} {res.path:>12} "
              f"{res.trades.height:>7}")
    for sizing in ("cash", "equity"):
        eq = backtest(o, h, lo, c, target, spot, long_sizing=sizing,
                      init_cash=peers.INIT_CASH).equity
        print(f"long_sizing={sizing!r} vs numpy exact (vectorbt's convention): max rel equity "
              f"diff over all bars {np.max(np.abs(eq / ref_eq - 1)):.2e}")
    if args.reference_loop:
        for label, kw in (("no stops", {}), ("stops", {"exits": stops})):
            t0 = time.perf_counter()
            slow = backtest_reference(o, h, lo, c, target, perp, funding=funding, **kw)
            secs = time.perf_counter() - t0
            fast = backtest(o, h, lo, c, target, perp, funding=funding, path="compiled", **kw)
            print(f"reference loop ({label}): {secs:.2f} s; max rel equity diff vs compiled "
                  f"{np.max(np.abs(slow.equity / fast.equity - 1)):.2e}")


if __name__ == "__main__":
    main()
