"""The demo stage: a promoted blueprint paper-traded forward day by day, and the test that
decides whether it behaves as its backtest said (pure; no Dagster).

Forward run. A blueprint promoted to ``demo`` at the end of its study enters the demo on the
next day. Each day that has been ingested since, the blueprint is run on the bars from the
demo's first bar to that day's last, starting flat with the study's capital and reading the
bars before the demo as history (its signals, features and a code strategy's view are
point in time). The engine and the event loop are causal, so a day's rows never change when
later days arrive: running the whole demo again each day equals carrying the account over,
and :func:`forward` checks it (the days already on record must come out identical).

Consistency test (stated). The walk-forward's chained out-of-sample equity gives the daily
returns the backtest expects: mean ``mu`` and standard deviation ``s_b`` over its ``m``
out-of-sample days. After ``n`` demo days with mean daily return ``x`` and standard
deviation ``s_d``, the two-sample statistic with the pooled standard deviation ``s``
(``s^2 = ((n - 1) s_d^2 + (m - 1) s_b^2) / (n + m - 2)``: under the hypothesis the demo
draws from the backtest's distribution, so a first day or two do not bring a variance of
their own)

    t = (x - mu) / (s sqrt(1 / n + 1 / m))

with ``n + m - 2`` degrees of freedom calls the demo *decaying* when
``t < -t_(1 - alpha / N)``: one-sided (only doing worse than expected archives), tested
after every demo day, so ``promotion.demo_alpha`` (0.05 by default) is shared over the
``N = min_demo_days`` looks before live (Bonferroni): a demo as good as its backtest is
archived before live with probability at most ``demo_alpha``. The backtest's own mean is
uncertain (``m`` is a few weeks of folds), so both samples count. It holds when daily
returns are roughly independent with a common variance; heavy tails only slow the normal
approximation (Student-t(3) days keep the sequential size below ``demo_alpha``:
tests/unit/test_demo_stage.py).

Also archived, whatever ``t``: a demo whose drawdown from its start exceeds
``promotion.max_oos_drawdown``, or with a liquidation or a blown account (the risk limits the
backtest was promoted under). The demo's annualized Sharpe is recorded beside ``t``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy  # its submodules load on first use: not when the code location is imported

from backtest_assets.engine.metrics import drawdown_path
from backtest_assets.specs.models import PromotionGate, StrategySpec
from backtest_assets.strategies.promotion import Decision
from backtest_assets.walkforward.evaluate import Market, Simulator

DAYS_PER_YEAR = 365  # DESIGN.md: crypto trades every day
DEMO_DAY_SCHEMA = {"date": pl.Date, "bars": pl.Int64, "equity": pl.Float64,
                   "day_return": pl.Float64, "drawdown": pl.Float64, "trades": pl.Int64,
                   "liquidations": pl.Int64}


def forward(bp: StrategySpec, market: Market, start_bar: int,
            on_record: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per demo day (``DEMO_DAY_SCHEMA``) of ``bp`` paper-traded on ``market``'s bars
    from ``start_bar`` (the demo's first bar) to its last (module docstring).

    ``on_record``: the demo days already stored; they must come out identical (the run is
    causal), else ``ValueError`` names the first day that changed (data rewritten under
    the demo, or a strategy that is not deterministic).

    Raises ``ValueError`` when there is no bar after ``start_bar``.
    """
    p = market.panel
    if not 0 < start_bar < len(p.ts):
        raise ValueError(f"{bp.name}: the demo starts at bar {start_bar}, the market has "
                         f"bars 0..{len(p.ts) - 1} (it needs history before and a bar after)")
    sim = Simulator(dataclasses.replace(bp, grid=None), market)
    _, res = sim.run(0, start_bar, len(p.ts))
    step = np.timedelta64(p.interval_minutes, "m")
    close_ts = p.ts[start_bar:] + step
    day = (close_ts - np.timedelta64(1, "us")).astype("datetime64[D]")  # a bar's close day
    tr = res.trades
    exits = tr.filter(pl.col("exit_bar").is_not_null())
    frame = pl.DataFrame({
        "date": day, "equity": res.equity,
        "drawdown": drawdown_path(res.equity, market.init_cash)}).with_row_index("bar")
    closed = pl.DataFrame({"bar": exits["exit_bar"].cast(pl.UInt32),
                           "liq": exits["exit_reason"] == "liquidation"})
    out = (frame.join(closed, on="bar", how="left")
           .group_by("date", maintain_order=True)
           .agg(pl.len().cast(pl.Int64).alias("bars"), pl.col("equity").last(),
                pl.col("drawdown").min(), pl.col("liq").is_not_null().sum().cast(pl.Int64)
                .alias("trades"), pl.col("liq").fill_null(False).sum().cast(pl.Int64)
                .alias("liquidations")))
    before = out["equity"].shift(1).fill_null(market.init_cash)
    out = out.with_columns((pl.col("equity") / before - 1.0).alias("day_return")).select(
        list(DEMO_DAY_SCHEMA)).cast(DEMO_DAY_SCHEMA)
    if on_record is not None and on_record.height:
        _same_past(bp.name, on_record.select(list(DEMO_DAY_SCHEMA)).cast(DEMO_DAY_SCHEMA), out)
    return out


def _same_past(name: str, stored: pl.DataFrame, now: pl.DataFrame) -> None:
    past = now.filter(pl.col("date").is_in(stored["date"].implode()))
    joined = stored.join(past, on="date", how="left", suffix="_now")
    for r in joined.iter_rows(named=True):
        same = all(r[f"{c}_now"] is not None and math.isclose(
            r[c], r[f"{c}_now"], rel_tol=1e-12, abs_tol=1e-12) for c in DEMO_DAY_SCHEMA
            if c != "date")
        if not same:
            raise ValueError(f"{name}: demo day {r['date']} on record differs from the run "
                             "again (data changed under the demo, or the strategy is not "
                             "deterministic)")


@dataclass(frozen=True)
class Expectation:
    """The daily returns the backtest expects (its out-of-sample days)."""

    mean: float
    sd: float
    days: int


def expectation(oos: pl.DataFrame, init_cash: float) -> Expectation:
    """Mean and sd of the daily returns of a walk-forward's chained out-of-sample equity
    (``walkforward_equity`` rows: ts = bar close, equity); NaN with fewer than 2 days."""
    if oos.is_empty():
        return Expectation(math.nan, math.nan, 0)
    daily = (oos.sort("ts").with_columns(
        (pl.col("ts") - pl.duration(microseconds=1)).dt.date().alias("date"))
        .group_by("date", maintain_order=True).agg(pl.col("equity").last()))
    eq = daily["equity"].to_numpy()
    r = eq / np.concatenate(([init_cash], eq[:-1])) - 1.0
    if r.size < 2:
        return Expectation(math.nan, math.nan, int(r.size))
    return Expectation(float(r.mean()), float(r.std(ddof=1)), int(r.size))


@dataclass(frozen=True)
class DemoEvidence:
    """A demo's record against its expectation (module docstring)."""

    days: int
    mean: float
    sharpe: float  # annualized over 365 days
    z: float  # the two-sample t of the demo mean against the backtest's
    max_drawdown: float
    liquidations: int
    breaches: tuple[str, ...]  # why it is archived: decaying, drawdown, liquidation, blown
    untested: str | None = None  # why the test could not be made yet

    @property
    def consistent(self) -> bool:
        """Tested, and nothing breached."""
        return self.untested is None and not self.breaches


def evidence(days: pl.DataFrame, expected: Expectation, gate: PromotionGate) -> DemoEvidence:
    """The consistency test of the demo days on record (module docstring)."""
    r = days.sort("date")["day_return"].to_numpy()
    n = int(r.size)
    mean = float(r.mean()) if n else math.nan
    sd = float(r.std(ddof=1)) if n > 1 else math.nan
    ann = math.sqrt(DAYS_PER_YEAR)
    sharpe = mean / sd * ann if n > 1 and sd > 0 else math.nan
    m, s_b = expected.days, expected.sd
    df = n + m - 2
    pooled = math.sqrt(((n - 1) * (sd if n > 1 else 0.0) ** 2 + (m - 1) * s_b ** 2) / df) \
        if n and m > 1 and s_b > 0 else math.nan
    se = pooled * math.sqrt(1 / n + 1 / m) if math.isfinite(pooled) else math.nan
    z = (mean - expected.mean) / se if math.isfinite(se) and se > 0 else math.nan
    alpha = look_alpha(gate)
    q = float(scipy.stats.t.ppf(1 - alpha, df)) if math.isfinite(z) else \
        float(scipy.stats.norm.ppf(1 - alpha))
    dd = float(days["drawdown"].min()) if n else 0.0
    liq = int(days["liquidations"].sum()) if n else 0
    breaches, untested = [], None
    if not math.isfinite(z):
        untested = (f"no expectation to test against ({expected.days} out-of-sample days)"
                    if n else "no demo day yet")
    elif z < -q:
        breaches.append(f"decaying: demo mean daily return {mean:.3%} over {n} days is "
                        f"t = {z:.2f} below the backtest's {expected.mean:.3%} over "
                        f"{m} days (t < -{q:.2f}, alpha {alpha:.2g} a day)")
    if -dd > gate.max_oos_drawdown:
        breaches.append(f"demo drawdown {-dd:.1%} > {gate.max_oos_drawdown:g}")
    if liq:
        breaches.append(f"{liq} liquidation(s) in the demo")
    if n and float(days.sort("date")["equity"][-1]) <= 0:
        breaches.append("the demo account was blown")
    return DemoEvidence(days=n, mean=mean, sharpe=sharpe, z=z,
                        max_drawdown=dd, liquidations=liq, breaches=tuple(breaches),
                        untested=untested)


def decision_of_day(row: Mapping) -> Decision:
    """The lifecycle decision a stored demo day carries (a ``demo_days`` row: its stage,
    decision and reasons), as the study's promotion decisions show it once the demo has
    started: the demo stage decides demo -> live and demo -> archived."""
    kept = {k: row[k] for k in ("blueprint", "spec_hash", "date", "stage", "decision",
                                "reasons", "demo_days")}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
    return Decision("demo", row["stage"], row["decision"], row["decision"] != "archive",
                    (f"demo day {row['date']} ({row['demo_days']} on record): "
                     f"{row['reasons']}",), digest)


def look_alpha(gate: PromotionGate) -> float:
    """The level of each day's test: ``demo_alpha`` shared over the ``min_demo_days`` looks
    before live (Bonferroni), so a demo as good as its backtest is archived before it can go
    live with probability at most ``demo_alpha``."""
    return gate.demo_alpha / max(1, gate.min_demo_days)


def demo_start(ts: Sequence[np.datetime64] | np.ndarray, first_day: np.datetime64) -> int:
    """The index of the first bar opening on or after ``first_day`` (the demo's first)."""
    return int(np.searchsorted(np.asarray(ts), np.datetime64(first_day, "us")))
