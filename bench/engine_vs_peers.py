"""The engine beside vectorbt, backtesting.py and NumPy, in the peers' own harness and run.

Runs ``../shared/bench/peers/bench.py`` (its data, cases, timing, peak-memory children and
agreement checks) with the engine's rows added to its registry, so every figure in the table
comes from the same process run on the same 1,051,200 bars:

- ``a/engine``: case a (SMA 20/100 crossover, long/short, fee 4 bps + slippage 1 bp per
  side, fills at the next open) with vectorbt's sizing (``long_sizing="cash"``), written
  with the project's own tools as vectorbt's rows use vectorbt's: the compiled moving
  averages and crossover target (:mod:`backtest_assets.engine.indicators`, bit-identical to
  the peers' numpy ones) and the compiled headline metrics (``metrics.headline``);
- ``a/engine_numpy``: the same backtest with the peers' numpy moving averages, target and
  metrics around it, what a user writes without those helpers (the difference is their
  temporaries: at a million bars each fresh array costs about 2 ms of page faults here);
- ``a/engine_funding``: the same orders on a perp: 8-hourly funding, isolated margin at a
  leverage setting of 2 with a 0.4 % maintenance rate (initial margin checked on every
  order, liquidation on every bar), default sizing;
- ``a/engine_venue``: the same perp orders with the venue's rules switched on: Binance's
  BTCUSDT leverage brackets (the liquidation level from the tier of the notional there,
  orders refused above the notional the setting allows) and the pre-trade risk manager
  (daily loss cap 5 % over the minute bars' UTC days, a leverage limit of 1.5, position and
  total caps), with the ledger rebuilt from the trades checked after the run;
- ``a/engine_full``: everything issue 18 asks for at once: the venue rules above, mark
  prices (the last's OHLC off by a drifting basis of about 1 bp: liquidation on the mark's
  extreme, funding on its open), and every signal order a limit order at the decision
  close, valid 5 bars, filled at its price with the maker fee when a bar trades through;
- ``a/engine_full_liquidity``: the same with a 10 % participation cap on the bars' volume
  and square-root impact (coefficient 0.05) on every market fill;
- ``a/engine_events``: case a written as a strategy (``backtest_assets.sim``): its Python
  ``on_bar`` called on every one of the 1,051,200 bars by the event loop, on the same fees and
  slippage (sizing as the engine's targets, +-100 % of equity); beside backtesting.py, the
  other event-driven row, whose time is extrapolated from its slice. The agreement lines
  compare the two's trades (entry bar, exit bar, side) on backtesting.py's slice. The
  strategy never reads its account, so its targets are collected and the compiled engine
  runs them (``backtest_assets.sim.loop``, Blind decisions); ``a/engine_events_loop`` is the
  same strategy reading its account at every bar, which the event loop runs step by step;
- ``b/engine_sweep``: case b (100 SMA pairs) with :func:`backtest_assets.engine.sweep`, on all
  threads (2 here), and ``b/engine_sweep_1t`` on one thread (vectorbt's rows are
  single-threaded: compare those two figures with that in mind).

Every engine row computes its moving averages and targets inside the timed part, as the
peers do. It needs vectorbt and backtesting.py, which are benchmark-only dependencies: ``make
bench-peers`` creates ``.venv-peers`` from the peers' lock file and runs this script there.

    .venv-peers/bin/python bench/engine_vs_peers.py --peak-mem --json out.json
    (any option of the peers' bench.py; --only a/engine,b/engine_sweep for a quick run)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "bench" / "peers"
DATA = ROOT / "bench" / ".data"
sys.path[:0] = [str(PEERS), str(ROOT)]

import backtest_assets  # noqa: E402, F401, I001  (first: it sets numba's cache dir)
import numba  # noqa: E402

import bench as peers  # noqa: E402  (the peers' bench.py)
from backtest_assets.engine import Instrument, LimitOrders, backtest  # noqa: E402
from backtest_assets.sim import Strategy, Target, run_strategy  # noqa: E402
from backtest_assets.engine.indicators import crossover_target, sma  # noqa: E402
from backtest_assets.engine.metrics import headline  # noqa: E402
from backtest_assets.engine.sweep import sweep  # noqa: E402
from backtest_assets.engine.venue import RiskLimits  # noqa: E402
from backtest_assets.specs import load_registry  # noqa: E402

FUNDING_EVERY = 480  # bars of 1 minute: 8 hours


def _shifted(held: np.ndarray) -> np.ndarray:
    """The peers' target held during bar t (filled at open t) as the engine's target decided
    at the close of t-1 (filled at open t): the same orders, one bar earlier."""
    return np.append(held[1:], held[-1])


def prep_engine(data: dict) -> dict:
    fees = dict(symbol="SYNTH", taker_bps=peers.FEE * 1e4, slippage_bps=peers.SLIP * 1e4)
    funding = np.full(data["close"].shape, np.nan)
    funding[::FUNDING_EVERY] = np.random.default_rng(0).normal(1e-4, 2e-4,
                                                               funding[::FUNDING_EVERY].shape)
    return {"bars": tuple(data[k] for k in ("open", "high", "low", "close")),
            "spot": Instrument(**fees),
            "perp": Instrument(**fees, max_leverage=2.0, maintenance_margin_rate=0.004,
                               liquidation_fee_rate=0.005),  # setting 2: headroom for 1x
            "funding": funding,
            "venue": dataclasses.replace(
                Instrument.from_venue("BTCUSDT", load_registry().fees.venues[
                    "binance_usdm_vip0"], max_leverage=2.0, lot_size=0.0, tick_size=0.0,
                    min_notional=0.0), taker_bps=peers.FEE * 1e4,
                slippage_bps=peers.SLIP * 1e4, symbol="SYNTH"),
            "risk": RiskLimits(daily_loss_cap=0.05, max_leverage=1.5,
                               max_position_notional=1e12, max_total_notional=1e12),
            "day": np.arange(len(data["close"])) // 1440,
            "marks": _marks(data), "volume": data["volume"]}


def _marks(data: dict) -> dict:
    """Mark open/high/low: the last's off by an AR(1) basis of about 1 bp (its extremes
    beyond or short of the last's), as the synthetic source draws them."""
    rng = np.random.default_rng(1)
    n = len(data["close"])
    shock = rng.normal(0, 2e-5, n)
    basis = np.empty(n)
    basis[0] = 0.0
    for t in range(1, n):  # not timed: the mark is input data, as the bars are
        basis[t] = 0.98 * basis[t - 1] + shock[t]
    m_open = data["open"] * (1 + basis)
    return {"mark_open": m_open,
            "mark_high": np.maximum(m_open, data["high"] * (1 + basis + np.abs(shock))),
            "mark_low": np.minimum(m_open, data["low"] * (1 + basis - np.abs(shock)))}


def _case_a(ctx: dict, **kw) -> dict:
    """Case a with the project's own tools around the engine, as vectorbt's rows use its
    own: compiled moving averages and crossover target (bit-identical to the peers' numpy
    spelling), the backtest, and the compiled headline metrics."""
    o, h, lo, c = ctx["bars"]
    target = crossover_target(sma(c, peers.FAST), sma(c, peers.SLOW))
    res = backtest(o, h, lo, c, target, init_cash=peers.INIT_CASH, **kw)
    return {"equity": res.equity, "n_trades": res.trades.height,
            **_headline3(res.equity)}


def _headline3(equity: np.ndarray) -> dict:
    m = headline(equity, peers.INIT_CASH, peers.ANN_FACTOR)
    return {k: m[k] for k in ("total_return", "sharpe", "max_drawdown")}


def run_engine(ctx: dict) -> dict:
    return _case_a(ctx, instruments=ctx["spot"], long_sizing="cash")


def run_engine_numpy(ctx: dict) -> dict:
    """The same backtest with the peers' numpy moving averages, target and metrics around
    it (what a user writes without the project's helpers)."""
    o, h, lo, c = ctx["bars"]
    held = peers.target_position(peers.sma(c, peers.FAST), peers.sma(c, peers.SLOW))
    res = backtest(o, h, lo, c, _shifted(held), ctx["spot"], init_cash=peers.INIT_CASH,
                   long_sizing="cash")
    return {"equity": res.equity, "n_trades": res.trades.height, **peers.metrics(res.equity)}


def run_engine_funding(ctx: dict) -> dict:
    return _case_a(ctx, instruments=ctx["perp"], funding=ctx["funding"])


def run_engine_venue(ctx: dict) -> dict:
    return _case_a(ctx, instruments=ctx["venue"], funding=ctx["funding"], risk=ctx["risk"],
                   day=ctx["day"])


LIMITS = LimitOrders(offset_bps=0.0, valid_bars=5)


def run_engine_full(ctx: dict) -> dict:
    inst = dataclasses.replace(ctx["venue"], maker_bps=2.0)
    return _case_a(ctx, instruments=inst, funding=ctx["funding"], risk=ctx["risk"],
                   day=ctx["day"], limits=LIMITS, **ctx["marks"])


def run_engine_full_liquidity(ctx: dict) -> dict:
    inst = dataclasses.replace(ctx["venue"], maker_bps=2.0, participation=0.1,
                               impact_coef=0.05)
    return _case_a(ctx, instruments=inst, funding=ctx["funding"], risk=ctx["risk"],
                   day=ctx["day"], limits=LIMITS, volume=ctx["volume"], **ctx["marks"])


class SmaCrossApi(Strategy):
    """Case a in the strategy API: long while the fast SMA is above the slow one, short
    otherwise, as backtesting.py's SmaCross, which first calls ``next`` on the bar after
    the one where its last indicator starts (bar SLOW)."""

    def on_bar(self, bar, account):
        if bar.index < peers.SLOW:
            if bar.index == 0:
                self.fast, self.slow = bar.feature("fast"), bar.feature("slow")
            return None
        return Target("SYNTH", 1.0 if self.fast[-1] > self.slow[-1] else -1.0)


class SmaCrossApiAccount(SmaCrossApi):
    """The same strategy reading its account at every bar (the equity it would size by):
    its decisions could see the venue, so it runs on the event loop, never collected."""

    def on_bar(self, bar, account):
        self.equity = account.equity
        return super().on_bar(bar, account)


def _events(ctx: dict, n: int | None = None, strategy: type[Strategy] = SmaCrossApi):
    o, h, lo, c = (a[:n] for a in ctx["bars"])
    feats = {"fast": peers.sma(c, peers.FAST), "slow": peers.sma(c, peers.SLOW)}
    run = run_strategy(strategy(), o, h, lo, c, ctx["spot"], features=feats,
                       init_cash=peers.INIT_CASH)
    assert run.plan == ("loop" if strategy is SmaCrossApiAccount else "collected"), run.plan
    return run.result


def run_engine_events(ctx: dict, strategy: type[Strategy] = SmaCrossApi) -> dict:
    res = _events(ctx, strategy=strategy)
    return {"equity": res.equity, "n_trades": res.trades.height, **peers.metrics(res.equity)}


def same_trades_as_backtesting(data: dict, n: int) -> str:
    """backtesting.py's SmaCross and the API's on the first ``n`` bars: their trades' entry
    bar, exit bar and side."""
    import warnings

    from backtesting import Backtest

    ctx = peers.prep_bt(data, n)
    bt = Backtest(ctx["df"], ctx["strategy"], cash=peers.BT_CASH, commission=peers.FEE,
                  spread=2 * peers.SLIP, exclusive_orders=True, trade_on_close=False,
                  finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = bt.run()["_trades"]
    theirs = list(zip(theirs["EntryBar"].astype(int), theirs["ExitBar"].astype(int),
                      np.where(theirs["Size"] > 0, "long", "short"), strict=True))
    ours = _events(prep_engine(data), n).trades.filter(pl.col("exit_bar").is_not_null())
    ours = list(zip(ours["entry_bar"], ours["exit_bar"], ours["side"], strict=True))
    diff = sum(a != b for a, b in zip(theirs, ours, strict=False)) + abs(len(theirs) - len(ours))
    return (f"backtesting.py vs engine_events on the {n:,}-bar slice: {len(theirs)} vs "
            f"{len(ours)} closed trades, {diff} differing in entry bar, exit bar or side")


class _PairTargets:
    """The 100 pairs' targets, each built when the sweep asks for it (the project's compiled
    moving averages and crossover, as in ``a/engine``)."""

    def __init__(self, close: np.ndarray) -> None:
        windows = sorted({w for pair in peers.SWEEP_PAIRS for w in pair})
        self.ma = {w: sma(close, w) for w in windows}

    def __len__(self) -> int:
        return len(peers.SWEEP_PAIRS)

    def __getitem__(self, k: int) -> np.ndarray:
        fast, slow = peers.SWEEP_PAIRS[k]
        return crossover_target(self.ma[fast], self.ma[slow])


def run_engine_sweep(ctx: dict, threads: int | None = None) -> dict:
    o, h, lo, c = ctx["bars"]
    before = numba.get_num_threads()
    numba.set_num_threads(threads or numba.config.NUMBA_NUM_THREADS)
    try:
        table = sweep(o, h, lo, c, _PairTargets(c), ctx["spot"], long_sizing="cash",
                      init_cash=peers.INIT_CASH, bars_per_year=peers.ANN_FACTOR)
    finally:
        numba.set_num_threads(before)
    return {k: table[k].to_numpy() for k in ("total_return", "sharpe", "max_drawdown")}


def engine_impls(args) -> list:
    pairs = len(peers.SWEEP_PAIRS)
    return [
        peers.Impl("a", "engine", "backtest_assets engine (vbt sizing)", prep_engine, run_engine),
        peers.Impl("a", "engine_numpy", "engine, peers' numpy MAs and metrics", prep_engine,
                   run_engine_numpy),
        peers.Impl("a", "engine_funding", "engine + funding + isolated margin", prep_engine,
                   run_engine_funding),
        peers.Impl("a", "engine_venue", "engine + brackets + risk manager", prep_engine,
                   run_engine_venue),
        peers.Impl("a", "engine_full", "engine + limits, marks, brackets, risk", prep_engine,
                   run_engine_full),
        peers.Impl("a", "engine_full_liquidity", "engine_full + participation + impact",
                   prep_engine, run_engine_full_liquidity),
        peers.Impl("a", "engine_events", "engine event loop, Python on_bar per bar",
                   prep_engine, run_engine_events),
        peers.Impl("a", "engine_events_loop", "the same reading its account: the loop",
                   prep_engine, lambda ctx: run_engine_events(ctx, SmaCrossApiAccount)),
        peers.Impl("b", "engine_sweep", "engine sweep (all threads)", prep_engine,
                   run_engine_sweep, repeats="sweep_repeats", bars_factor=pairs),
        peers.Impl("b", "engine_sweep_1t", "engine sweep (1 thread)", prep_engine,
                   lambda ctx: run_engine_sweep(ctx, threads=1), repeats="sweep_repeats",
                   bars_factor=pairs),
    ]


def engine_agreement(res: dict, data: dict, args) -> list[str]:
    lines = _peers_agreement(res, data, args)

    def out(key):
        return res[key]["out"] if key in res else None

    for ref_key in ("a/numpy_exact", "a/vbt_rust", "a/vbt_numba"):
        ref, eng = out(ref_key), out("a/engine")
        if ref is not None and eng is not None:
            lines.append(
                f"{ref_key.split('/')[1]} vs engine (vbt sizing): total return rel diff "
                f"{peers.rel(eng['total_return'], ref['total_return']):.2e}, max equity-curve rel "
                f"diff {peers.rel(eng['equity'], ref['equity']):.2e}, |dSharpe| "
                f"{abs(eng['sharpe'] - ref['sharpe']):.2e}, |dMDD| "
                f"{abs(eng['max_drawdown'] - ref['max_drawdown']):.2e}, trades "
                f"{ref['n_trades']} (orders) vs {eng['n_trades']}")
    for key in ("b/engine_sweep", "b/engine_sweep_1t"):
        ref, eng = out("b/numpy_exact") or out("b/vbt_loop_rust"), out(key)
        if ref is not None and eng is not None:
            lines.append(
                f"sweep numpy exact vs {key.split('/')[1]} ({len(eng['total_return'])} pairs): "
                f"max final-equity rel diff "
                f"{peers.rel(1 + eng['total_return'], 1 + ref['total_return']):.2e}, max |dSharpe| "
                f"{np.max(np.abs(eng['sharpe'] - ref['sharpe'])):.2e}")
    lines += _event_lines(res, data, args)
    plain = res.get("a/engine", {}).get("median_s_full")
    for key in ("a/engine_venue", "a/engine_full", "a/engine_full_liquidity"):
        if plain and key in res:
            ratio = res[key]["median_s_full"] / plain
            lines.append(f"cost: {key} / a/engine ({plain:.4f} s) = {ratio:.2f}x (target for "
                         f"the full model <= 2x: {'met' if ratio <= 2 else 'MISSED'}); "
                         f"trades {out(key)['n_trades']}")
    busiest = LOAD.stop()
    cores = os.cpu_count() or 1
    quiet = busiest <= cores
    lines.append(f"load average (1 min) during the run: at most {busiest:.2f} on {cores} cpus"
                 + ("" if quiet else " -- BUSIER THAN ITS CORES: the ratios below are not a "
                    "result"))
    for case, engines, target in (("a", ("a/engine", "a/engine_funding"), 0.25),
                                  ("b", ("b/engine_sweep", "b/engine_sweep_1t"), 0.2)):
        vbt = {k: r["median_s_full"] for k, r in res.items()
               if k.startswith(f"{case}/vbt") and "signals" not in k}
        if not vbt:
            continue
        fastest = min(vbt, key=vbt.get)
        for key in engines:
            if key in res:
                ratio = res[key]["median_s_full"] / vbt[fastest]
                verdict = ("not a result (load)" if not quiet
                           else "met" if ratio <= target else "MISSED")
                lines.append(f"speed: {key} / fastest vectorbt ({fastest}, "
                             f"{vbt[fastest]:.4f} s) = {ratio:.3f} (target <= {target}: "
                             f"{verdict})")
    return lines


def _event_lines(res: dict, data: dict, args) -> list[str]:
    """The event loop against backtesting.py: speed, and the same trades on its slice."""
    if "a/engine_events" not in res or "a/backtesting" not in res:
        return []
    bt = res["a/backtesting"]["median_s_full"]
    lines = []
    for row in ("a/engine_events", "a/engine_events_loop"):
        if row not in res:
            continue
        ev = res[row]["median_s_full"]
        lines.append(f"speed: backtesting.py ({bt:.3f} s, extrapolated) / {row} ({ev:.3f} s, "
                     f"{ev / len(data['close']) * 1e9:.0f} ns per bar) = {bt / ev:.2f}x"
                     + (f" (target >= 5: {'met' if bt / ev >= 5 else 'MISSED'})"
                        if row == "a/engine_events" else ""))
    return [*lines, same_trades_as_backtesting(data, args.bt_bars)]


class LoadWatch:
    """The highest 1-minute load average seen while the benchmark runs (every 2 s)."""

    def __init__(self) -> None:
        self.highest = os.getloadavg()[0]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(2.0):
            self.highest = max(self.highest, os.getloadavg()[0])

    def stop(self) -> float:
        self._done.set()
        self.highest = max(self.highest, os.getloadavg()[0])
        return self.highest


LOAD = LoadWatch()
_peers_registry = peers.build_registry
_peers_agreement = peers.agreement
peers.build_registry = lambda args: _peers_registry(args) + engine_impls(args)
peers.agreement = engine_agreement
# Peak-memory children re-run "<python> <peers.__file__> --only <key>": make that this file.
peers.__file__ = __file__

if __name__ == "__main__":
    if "--data" not in sys.argv:
        bars = sys.argv[sys.argv.index("--bars") + 1] if "--bars" in sys.argv else "1051200"
        DATA.mkdir(parents=True, exist_ok=True)
        sys.argv += ["--data", str(DATA / f"synth_ohlcv_1m_n{bars}_seed42.parquet")]
    peers.main()
