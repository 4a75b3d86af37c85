"""Walk-forward evaluation of one blueprint (pure; no Dagster): the ``walkforward_*`` core.

For a blueprint with a parameter grid (:mod:`backtest_assets.walkforward.grid`) over a
:class:`~backtest_assets.strategies.Panel` of the study:

1. **Walk-forward folds** (``rolling`` / ``anchored``, :mod:`.folds`): on each train window
   every combination is simulated in one sweep (:func:`backtest_assets.engine.sweep`); the
   best by the spec's objective among those with ``min_trades`` trades is run on the test
   window, once with the venue's costs and once with every cost times the stress
   multiplier. The test windows chained one after another (each starting from the equity
   the previous one ended with) are the out-of-sample equity.
2. **Full sample**: one more sweep over the whole panel records every combination's bar
   returns per block (count, sum, sum of squares). From it come the probability of backtest
   overfitting (CSCV over ``cscv_groups`` groups) and the combinatorially purged
   cross-validation results (in each split the best combination on the train groups and its
   Sharpe on the test groups; blocks end at every purge and embargo edge, so the train set
   is exactly the split's).
3. **Deflated Sharpe**: the full sample's best combination re-simulated for its bar returns
   (Sharpe, skewness, kurtosis); the variance of Sharpe ratios across the sweep's
   combinations; the number of trials = the grid's combinations + the hypotheses Phase 2
   tested before this blueprint existed (``trials_phase2``).

Every Sharpe ratio in the frames is annualized (``bars_per_year`` from the bar interval);
the deflated-Sharpe inputs are per bar, as the statistics are defined.

A blueprint of kind ``code`` runs each combination's strategy on the event loop
(:mod:`backtest_assets.strategies.code`) in every window, reading the bars before the
window as history; its sweep table and block stats are those of these runs.

Signals are computed once on the whole panel per entry rule and sliced per window: a
feature condition at a window's first bar reads its (point-in-time) value from before the
window, as a live strategy would. Funding is placed on the whole panel and sliced likewise;
it is audited once on the whole panel (:func:`backtest_assets.strategies.run.check_funding`),
refusing before any simulation what ``Market.funding_policy`` does not allow, and the
summary records ``funding_missing`` and ``funding_constant_runs``. A blueprint's overlays
(:mod:`backtest_assets.strategies.overlays`) act on each window's target, reading the same
point-in-time features; a drawdown brake's paper equity starts with the window (every
window is a run of its own), at the costs of the run it brakes (stressed or not).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.core.funding import DEFAULT_POLICY, FundingPolicy
from backtest_assets.engine import backtest
from backtest_assets.engine.metrics import bar_returns, drawdown_path, metrics
from backtest_assets.engine.sweep import SWEEP_METRICS, sweep
from backtest_assets.specs.models import CostStress, StrategySpec, VenueSpec, WalkForwardSpec
from backtest_assets.stats.overfitting import (
    block_sharpe,
    deflated_sharpe,
    expected_max_sharpe,
    pbo_from_blocks,
    probabilistic_sharpe,
    sharpe_decay,
    sharpe_stats,
)
from backtest_assets.strategies.blueprints import (
    Panel,
    exit_rules,
    flat_start,
    shape_targets,
    signals,
)
from backtest_assets.strategies.code import code_inputs, run_code
from backtest_assets.strategies.overlays import features_read
from backtest_assets.strategies.run import (
    MINUTES_PER_YEAR,
    check_funding,
    instruments_for,
    overlaid,
    venue_inputs,
)
from backtest_assets.walkforward import folds as F
from backtest_assets.walkforward.grid import params_json, variants

RESULT_METRICS = SWEEP_METRICS


@dataclass(frozen=True)
class Market:
    """What a blueprint's simulation reads: bars, features, events, funding (None: none, as
    on spot), venue, cash, and what it accepts of the funding prints."""

    panel: Panel
    features: Mapping[str, np.ndarray]
    events: pl.DataFrame | None
    funding: pl.DataFrame | None
    venue: VenueSpec
    init_cash: float
    funding_policy: FundingPolicy = DEFAULT_POLICY


@dataclass(frozen=True)
class WalkForward:
    """The frames of one blueprint's walk-forward (module docstring).

    ``folds``: one row per train/test range of every split (``folds.splits_frame``).
    ``results``: ``sample`` = ``train`` (every combination on every walk-forward train
    window), ``test`` (the chosen combination on each test window, with its in-sample
    Sharpe and its cost-stressed results) and ``cpcv`` (per combinatorial split, the chosen
    combination's train and test Sharpe). ``equity``: the chained out-of-sample equity.
    ``summary``: one row of overfitting statistics and out-of-sample figures.
    """

    folds: pl.DataFrame
    results: pl.DataFrame
    equity: pl.DataFrame
    summary: pl.DataFrame


def windows(n_bars: int, interval_minutes: int, spec: WalkForwardSpec, purge: int
            ) -> tuple[list[F.Split], list[F.Split]]:
    """The walk-forward and the combinatorial splits of a grid of ``n_bars`` bars."""
    per_day = 24 * 60 / interval_minutes
    test = None if spec.test_days is None else round(spec.test_days * per_day)
    wf = F.walk_forward(n_bars, scheme=spec.scheme, folds=spec.folds,
                        train_bars=round(spec.train_days * per_day), test_bars=test,
                        purge=purge)
    cp = F.cpcv(n_bars, groups=spec.cpcv_groups, test_groups=spec.cpcv_test_groups,
                purge=purge, embargo=spec.embargo_bars)
    return wf, cp


def purge_bars(bp: StrategySpec, spec: WalkForwardSpec) -> int:
    """The spec's purge, raised to one bar past the grid's longest time stop."""
    holds = [v.exits.time_stop_bars or 0 for _, v in variants(bp)]
    return max(spec.purge_bars, max(holds) + 1 if max(holds) else 0)


def evaluate(bp: StrategySpec, market: Market, spec: WalkForwardSpec, *,
             stress: CostStress, trials_phase2: int = 0) -> WalkForward:
    """Walk-forward, CPCV, PBO and deflated Sharpe of ``bp`` (module docstring).

    Parameters
    ----------
    bp : StrategySpec
        The blueprint and its grid; ``market.panel.symbols`` must be its symbols.
    market : Market
        The study's bars and what the blueprint reads.
    spec : WalkForwardSpec
        Folds, purge, embargo, objective and the CPCV / CSCV groups.
    stress : CostStress
        The cost multiplier of the stressed out-of-sample run.
    trials_phase2 : int
        Hypotheses tested by Phase 2 before this blueprint was written (0 for a hand-written
        one): they count as trials in the deflated Sharpe ratio.

    Raises
    ------
    ValueError
        A study too short for the folds, an invalid grid combination, bad inputs, or funding
        prints missing or constant beyond what ``market.funding_policy`` allows (each naming
        what and where), before any simulation.
    """
    sim = Simulator(bp, market)
    n = len(market.panel.ts)
    purge = purge_bars(bp, spec)
    wf, cp = windows(n, market.panel.interval_minutes, spec, purge)
    step = np.timedelta64(market.panel.interval_minutes, "m")
    folds = F.splits_frame([*wf, *cp], market.panel.ts, step)

    rows, oos, stressed_oos, is_best, oos_best = [], [], [], [], []
    for split in wf:
        (a, b), (c, d) = split.train[0], split.test[0]
        table = sim.sweep(a, b)
        best = choose(table, spec.objective, spec.min_trades)
        rows.append(_train_rows(sim, table, split, best, a, b))
        if best is None:  # nothing qualified: the fold is not traded
            continue
        base, res = sim.run(best, c, d)
        stressed, stressed_res = sim.run(best, c, d, cost_multiplier=stress.multiplier)
        is_best.append(float(table["sharpe"][best]))
        oos_best.append(base["sharpe"])
        closes = market.panel.ts[c:d] + step
        oos.append((split.fold, res, closes))
        stressed_oos.append((split.fold, stressed_res, closes))
        rows.append(pl.DataFrame([{
            **sim.describe(split, "test", best, c, d), "selected": True,
            **{k: base[k] for k in RESULT_METRICS if k in base}, "trades": int(base["trades"]),
            "final_equity": float(res.equity[-1]), "is_sharpe": is_best[-1],
            "stress_sharpe": stressed["sharpe"], "stress_total_return": stressed["total_return"],
        }]))

    groups = F.group_bounds(n, spec.cscv_groups)
    bounds = F.boundaries(cp, n, groups)
    full, stats = sim.sweep(0, n, blocks=bounds)
    rows.append(_cpcv_rows(sim, cp, stats, bounds))
    equity, oos_returns, oos_trades = _chain(oos, market.init_cash)
    stressed_equity, stress_returns, _ = _chain(stressed_oos, market.init_cash)
    summary = {
        "blueprint": bp.name, "combinations": sim.k, "trials_phase2": trials_phase2,
        "trials": sim.k + trials_phase2, "purge_bars": purge, "embargo_bars": spec.embargo_bars,
        "objective": spec.objective, "folds": len(wf), "folds_traded": len(oos),
        "funding_missing": sim.funding.missing.height,
        "funding_constant_runs": sim.funding.constant.height,
        **_deflated(sim, full, spec, trials_phase2),
        **_pbo(stats, bounds, groups),
        **_oos("oos", equity, oos_returns, sim.annual, market.init_cash),
        "oos_trades": oos_trades,
        "is_oos_decay": sharpe_decay(np.array(is_best), np.array(oos_best))
        if is_best else math.nan,
        "stress_multiplier": stress.multiplier,
        **_oos("stress", stressed_equity, stress_returns, sim.annual, market.init_cash),
    }
    results = pl.concat([r for r in rows if r.height], how="diagonal_relaxed")
    return WalkForward(folds=_named(folds, bp.name), results=_named(results, bp.name),
                       equity=_named(equity, bp.name), summary=pl.DataFrame([summary]))


def _named(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(name).alias("blueprint")).select(
        "blueprint", pl.exclude("blueprint"))


def choose(table: pl.DataFrame, objective: str, min_trades: int) -> int | None:
    """The combination with the highest finite ``objective`` among those with at least
    ``min_trades`` trades (ties: the lowest combination), or None when none qualifies."""
    ok = table.filter(pl.col(objective).is_finite() & (pl.col("trades") >= min_trades))
    if not ok.height:
        return None
    return int(ok.sort([objective, "combo"], descending=[True, False])["combo"][0])


class Simulator:
    """The blueprint's combinations over windows of one market (signals computed once)."""

    def __init__(self, bp: StrategySpec, market: Market) -> None:
        self.bp, self.m = bp, market
        self.combos = variants(bp)
        self.k = len(self.combos)
        p = market.panel
        self.annual = math.sqrt(MINUTES_PER_YEAR / p.interval_minutes)
        self.insts = instruments_for(bp, market.venue)
        self.rates = (p.funding(market.funding) if market.funding is not None
                      and market.funding.height else None)
        self.funding = check_funding(p, market.funding, market.funding_policy)
        cache: dict = {}
        self.signal = []
        # a code blueprint's strategy reads these (its grid varies only its params)
        self.inputs = (code_inputs(bp, p, market.features, market.events)
                       if bp.entry.code is not None else None)
        for _, v in self.combos if self.inputs is None else ():  # one per entry rule
            if v.entry not in cache:
                cache[v.entry] = signals(v, p, market.features, market.events)
            self.signal.append(cache[v.entry])
        self.exits = [exit_rules(v) for _, v in self.combos]

    def target(self, k: int, a: int, b: int, insts=None) -> np.ndarray:
        """Combination k's target on bars [a, b), its overlays applied (a drawdown brake's
        paper run on the same window, with ``insts``: the run's, stressed or not)."""
        bp = self.combos[k][1]
        raw = flat_start(shape_targets(bp, self.signal[k][a:b]))
        if not bp.overlays:
            return raw
        feats = {f: np.asarray(self.m.features[f])[a:b] for f in features_read(bp.overlays)}
        return overlaid(bp, raw, feats, bars=self._bars(a, b),
                        instruments=self.insts if insts is None else insts)[0]

    def _bars(self, a: int, b: int) -> dict:
        p = self.m.panel
        return {"open_": p.open[a:b], "high": p.high[a:b], "low": p.low[a:b],
                "close": p.close[a:b],
                "funding": None if self.rates is None else self.rates[a:b],
                "init_cash": self.m.init_cash, **venue_inputs(self.bp, p, slice(a, b))}

    def sweep(self, a: int, b: int, blocks: np.ndarray | None = None):
        """Every combination on bars [a, b): the sweep's table (and block stats)."""
        if self.inputs is not None:
            return self._code_sweep(a, b, blocks)
        return sweep(**self._bars(a, b), targets=_Targets(self, a, b),
                     instruments=self.insts, exits=self.exits, blocks=blocks,
                     bars_per_year=self.annual ** 2)

    def run(self, k: int, a: int, b: int, cost_multiplier: float = 1.0):
        """Combination k on bars [a, b): (metrics, engine result)."""
        insts = self.insts
        if cost_multiplier != 1.0:
            v = self.m.venue
            insts = instruments_for(self.bp, dataclasses.replace(
                v, maker_bps=v.maker_bps * cost_multiplier,
                taker_bps=v.taker_bps * cost_multiplier,
                slippage_bps=v.slippage_bps * cost_multiplier))
        bars = self._bars(a, b)
        if self.inputs is not None:
            res = run_code(self.combos[k][1], self.m.panel, self.inputs, bars=bars,
                           instruments=insts, a=a, b=b)
        else:
            res = backtest(**bars, target=self.target(k, a, b, insts), instruments=insts,
                           exits=self.exits[k])
        return metrics(res, bars["close"], init_cash=self.m.init_cash,
                       bars_per_year=self.annual ** 2, instruments=insts), res

    def _code_sweep(self, a: int, b: int, blocks: np.ndarray | None):
        """The sweep's table (and block stats) of a code blueprint: each combination run on
        the event loop, summarized as the sweep kernel summarizes its runs."""
        rows, stats = [], []
        for k in range(self.k):
            m, res = self.run(k, a, b)
            rows.append({**{c: m[c] for c in SWEEP_METRICS if c in m},
                         "final_equity": float(res.equity[-1]),
                         "rejected": sum(res.rejected.values()),
                         "blown_bar": -1 if res.blown_bar is None else res.blown_bar})
            if blocks is not None:
                r = bar_returns(res.equity, self.m.init_cash)
                stats.append([[e - s, r[s:e].sum(), (r[s:e] ** 2).sum()]
                              for s, e in itertools.pairwise(blocks)])
        frame = pl.DataFrame(rows).select(SWEEP_METRICS).with_columns(
            pl.col(c).cast(pl.Int64) for c in ("trades", "rejected", "blown_bar")
        ).with_row_index("combo").with_columns(pl.col("combo").cast(pl.Int64))
        return frame if blocks is None else (frame, np.asarray(stats, dtype=np.float64))

    def describe(self, split: F.Split, sample: str, k: int | None, a: int, b: int) -> dict:
        ts, step = self.m.panel.ts, np.timedelta64(self.m.panel.interval_minutes, "m")
        return {"kind": split.kind, "fold": split.fold, "sample": sample,
                "combo": k, "params": None if k is None else params_json(self.combos[k][0]),
                "start": ts[a].astype("datetime64[us]").item(),
                "end": (ts[b - 1] + step).astype("datetime64[us]").item(), "bars": b - a}


class _Targets(Sequence):
    """The combinations' targets on bars [a, b), built when the sweep asks for each."""

    def __init__(self, sim: Simulator, a: int, b: int) -> None:
        self.sim, self.a, self.b = sim, a, b

    def __len__(self) -> int:
        return self.sim.k

    def __getitem__(self, k):  # type: ignore[override]
        return self.sim.target(k, self.a, self.b)


def _train_rows(sim: Simulator, table: pl.DataFrame, split: F.Split, best: int | None,
                a: int, b: int) -> pl.DataFrame:
    d = sim.describe(split, "train", None, a, b)
    return table.with_columns(
        pl.lit(d["kind"]).alias("kind"), pl.lit(d["fold"]).alias("fold"),
        pl.lit("train").alias("sample"),
        pl.Series("params", [params_json(p) for p, _ in sim.combos]),
        (pl.col("combo") == (-1 if best is None else best)).alias("selected"),
        pl.lit(d["start"]).alias("start"), pl.lit(d["end"]).alias("end"),
        pl.lit(d["bars"]).alias("bars"))


def _cpcv_rows(sim: Simulator, splits: list[F.Split], stats: np.ndarray,
               bounds: np.ndarray) -> pl.DataFrame:
    rows = []
    for s in splits:
        train = block_sharpe(stats, F.block_mask(s.train, bounds))
        test = block_sharpe(stats, F.block_mask(s.test, bounds))
        k = int(np.argmax(np.where(np.isfinite(train), train, -np.inf)))
        rows.append({**sim.describe(s, "cpcv", k, s.test[0][0], s.test[-1][1]),
                     "bars": s.test_bars, "selected": True,
                     "is_sharpe": float(train[k]) * sim.annual,
                     "sharpe": float(test[k]) * sim.annual})
    return pl.DataFrame(rows)


def _deflated(sim: Simulator, full: pl.DataFrame, spec: WalkForwardSpec,
              trials_phase2: int) -> dict:
    """Deflated Sharpe of the full sample's best combination (module docstring, 3)."""
    best = choose(full, spec.objective, spec.min_trades)
    per_bar = full["sharpe"].to_numpy() / sim.annual
    finite = per_bar[np.isfinite(per_bar)]
    var_sr = float(np.var(finite, ddof=1)) if finite.size > 1 else math.nan
    out = {"full_best_combo": best, "full_best_params": None, "is_sharpe": math.nan,
           "n_obs": 0, "skew": math.nan, "kurtosis": math.nan, "var_sharpe": var_sr,
           "sr0": math.nan, "deflated_sharpe": math.nan}
    if best is None:
        return out
    _, res = sim.run(best, 0, len(sim.m.panel.ts))
    st = sharpe_stats(bar_returns(res.equity, sim.m.init_cash))
    n_trials = sim.k + trials_phase2
    sr0 = expected_max_sharpe(n_trials, var_sr) if math.isfinite(var_sr) else math.nan
    return out | {"full_best_params": params_json(sim.combos[best][0]),
                  "is_sharpe": st.sr * sim.annual, "n_obs": st.n, "skew": st.skew,
                  "kurtosis": st.kurtosis, "sr0": sr0 * sim.annual,
                  "deflated_sharpe": deflated_sharpe(st.sr, st.n, st.skew, st.kurtosis,
                                                     n_trials, var_sr)
                  if math.isfinite(var_sr) else math.nan}


def _pbo(stats: np.ndarray, bounds: np.ndarray, groups: np.ndarray) -> dict:
    """PBO by CSCV on the block stats pooled into the CSCV groups."""
    if stats.shape[0] < 2:
        return {"pbo": math.nan, "pbo_splits": 0, "degradation_slope": math.nan,
                "prob_oos_loss": math.nan}
    pooled = np.stack([stats[:, F.block_mask(((int(groups[g]), int(groups[g + 1])),), bounds)]
                      .sum(axis=1) for g in range(len(groups) - 1)], axis=1)
    r = pbo_from_blocks(pooled)
    return {"pbo": r.pbo, "pbo_splits": r.n_splits, "degradation_slope": r.degradation_slope,
            "prob_oos_loss": r.prob_oos_loss}


def _chain(oos: list, init_cash: float) -> tuple[pl.DataFrame, np.ndarray, int]:
    """Test windows (fold, engine result, bar close times) one after another, each starting
    from the equity the previous one ended with: (fold, ts, equity, drawdown) frame, the bar
    returns, the closed trades."""
    if not oos:
        empty = pl.DataFrame(schema={"fold": pl.Int64, "ts": pl.Datetime("us"),
                                     "equity": pl.Float64, "drawdown": pl.Float64})
        return empty, np.empty(0), 0
    r = np.concatenate([bar_returns(res.equity, init_cash) for _, res, _ in oos])
    eq = init_cash * np.cumprod(1.0 + r)
    frame = pl.DataFrame({
        "fold": np.concatenate([np.full(len(ts), f, dtype=np.int64) for f, _, ts in oos]),
        "ts": np.concatenate([ts for _, _, ts in oos]),
        "equity": eq, "drawdown": drawdown_path(eq, init_cash)})
    trades = sum(int((res.trades["exit_reason"] != "open").sum()) for _, res, _ in oos)
    return frame, r, trades


def _oos(prefix: str, chained: pl.DataFrame, r: np.ndarray, annual: float,
         init_cash: float) -> dict:
    """Sharpe, total return, max drawdown and PSR(0) of a chain of test windows (``_chain``)."""
    if not r.size:
        return {f"{prefix}_{k}": math.nan for k in ("sharpe", "total_return", "max_drawdown",
                                                    "psr")} | {f"{prefix}_bars": 0}
    st = sharpe_stats(r)
    return {f"{prefix}_bars": int(r.size), f"{prefix}_sharpe": st.sr * annual,
            f"{prefix}_total_return": float(chained["equity"][-1] / init_cash - 1.0),
            f"{prefix}_max_drawdown": float(chained["drawdown"].min()),
            f"{prefix}_psr": probabilistic_sharpe(st.sr, 0.0, st.n, st.skew, st.kurtosis)}
