"""Two studies side by side: Gate E-1 verdicts, Phase-2 survivors, backtests, walk-forward
and promotions, with both studies' records (window, symbols, spec hashes).

No Dagster here: every function takes the research tables (each with its ``study`` column,
as the warehouse holds them) and returns frames a person reads, one row per event type,
hypothesis or blueprint, with an ``a_``/``b_`` column per study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

BOTH, ONLY_A, ONLY_B, NEITHER = "both", "only A", "only B", "neither"
# The warehouse table each argument of :func:`compare` is read from.
TABLES = {"records": "study_record", "e1": "event_quality_report", "fdr": "phase2_fdr",
          "metrics": "backtest_metrics", "summary": "walkforward_summary",
          "decisions": "promotion_decisions"}


@dataclass(frozen=True)
class Comparison:
    a: str  # the study read as A (the report's own, in a report)
    b: str
    studies: pl.DataFrame  # one row per study: window, symbols, study hash, source
    e1: pl.DataFrame  # event_type, a_/b_ events, prevalence, verdict
    survivors: pl.DataFrame  # hypothesis_id ..., where, a_/b_ q and mean, q and mean moved
    backtests: pl.DataFrame  # blueprint, a_/b_ return, sharpe, max drawdown, trades
    walkforward: pl.DataFrame  # blueprint, a_/b_ deflated Sharpe, PBO, OOS Sharpe
    promotions: pl.DataFrame  # blueprint, a_/b_ stage


def _side(frame: pl.DataFrame | None, study: str, key: list[str], cols: list[str],
          prefix: str) -> pl.DataFrame:
    if frame is None or frame.is_empty() or "study" not in frame.columns:
        return pl.DataFrame(schema={k: pl.String for k in key})
    own = frame.filter(pl.col("study") == study)
    return own.select(*key, *[pl.col(c).alias(f"{prefix}{c}") for c in cols if c in own.columns])


def _pair(frame: pl.DataFrame | None, a: str, b: str, key: list[str], cols: list[str]
          ) -> pl.DataFrame:
    left, right = _side(frame, a, key, cols, "a_"), _side(frame, b, key, cols, "b_")
    if left.is_empty() and right.is_empty():
        return pl.DataFrame()
    return left.join(right, on=key, how="full", coalesce=True).sort(key)


def survivors(fdr: pl.DataFrame | None, a: str, b: str) -> pl.DataFrame:
    """Every hypothesis that survived in either study: where, its q and mean in each, and
    how they moved (b - a)."""
    cols = ["survivor", "q", "mean", "n"]
    key = ["hypothesis_id", "event_type", "rule_template", "horizon", "symbol"]
    both = _pair(fdr, a, b, key, cols)
    if both.is_empty():
        return both
    for side in ("a_", "b_"):
        if f"{side}survivor" not in both.columns:
            both = both.with_columns(pl.lit(None, pl.Boolean).alias(f"{side}survivor"),
                                     pl.lit(None, pl.Float64).alias(f"{side}q"),
                                     pl.lit(None, pl.Float64).alias(f"{side}mean"),
                                     pl.lit(None, pl.Int64).alias(f"{side}n"))
    sa, sb = pl.col("a_survivor").fill_null(False), pl.col("b_survivor").fill_null(False)
    return (both.filter(sa | sb)
            .with_columns(where=pl.when(sa & sb).then(pl.lit(BOTH))
                          .when(sa).then(pl.lit(ONLY_A)).otherwise(pl.lit(ONLY_B)),
                          q_moved=pl.col("b_q") - pl.col("a_q"),
                          mean_moved=pl.col("b_mean") - pl.col("a_mean"))
            .select(*key, "where", "a_n", "b_n", "a_q", "b_q", "q_moved", "a_mean", "b_mean",
                    "mean_moved")
            .sort("where", "hypothesis_id"))


def compare(a: str, b: str, *, records: pl.DataFrame | None, e1: pl.DataFrame | None,
            fdr: pl.DataFrame | None, metrics: pl.DataFrame | None,
            summary: pl.DataFrame | None, decisions: pl.DataFrame | None) -> Comparison:
    """Studies ``a`` and ``b`` side by side, from the warehouse's research tables."""
    studies = (records.filter(pl.col("study").is_in([a, b])).select(
        "study", "start", "end", pl.col("symbols").list.join(",").alias("symbols"), "source",
        "study_hash").sort(pl.col("study") == b) if records is not None else pl.DataFrame())
    pooled = e1.filter(pl.col("symbol") == "ALL") if e1 is not None else None
    return Comparison(
        a=a, b=b, studies=studies,
        e1=_pair(pooled, a, b, ["event_type"], ["events", "prevalence_per_10k", "passed"]),
        survivors=survivors(fdr, a, b),
        backtests=_pair(metrics, a, b, ["blueprint"],
                        ["total_return", "sharpe", "max_drawdown", "trades"]),
        walkforward=_pair(summary, a, b, ["blueprint"],
                          ["deflated_sharpe", "pbo", "oos_sharpe", "oos_total_return"]),
        promotions=_pair(decisions, a, b, ["blueprint"], ["to_stage"]),
    )


def compare_from(a: str, b: str, read: Callable[[str], pl.DataFrame | None]) -> Comparison:
    """:func:`compare` of the tables ``read(table)`` returns (None: not materialized)."""
    return compare(a, b, **{arg: read(table) for arg, table in TABLES.items()})
