"""Checks on the walk-forward frames: pandera models, no leak, selections and sums agree."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pandera.polars as pa
import polars as pl

from backtest_assets.defs.shared import blocking_checks, check_result, schema_result
from backtest_assets.partitions import study_blueprint_partitions_def
from backtest_assets.schemas.research import STUDY_COLUMN
from backtest_assets.walkforward import folds as F


def _specs(asset: str, names: dict[str, str]) -> list[dg.AssetCheckSpec]:
    return blocking_checks(asset, names, study_blueprint_partitions_def)


FOLD_CHECKS = _specs("walkforward_folds", {
    "schema": "columns and dtypes of the folds model; ranges non-empty",
    "folds_do_not_leak": "no test bar in train, none within the purge before or the embargo "
                         "after a test range",
})
WALKFORWARD_CHECKS = [
    *_specs("walkforward_results", {
        "schema": "columns and dtypes of the results model",
        "selection_consistent": "each test window trades the combination selected on its "
                                "train window, after it",
    }),
    *_specs("walkforward_equity", {
        "schema": "columns and dtypes; time strictly increasing per blueprint",
    }),
    *_specs("walkforward_summary", {
        "schema": "one row per blueprint; probabilities within [0, 1]",
        "summary_reconciles": "out-of-sample return equals the chained equity's",
    }),
]

FOLDS_MODEL = pa.DataFrameSchema({
    **STUDY_COLUMN, "blueprint": pa.Column(pl.String), "kind": pa.Column(pl.String, pa.Check.isin(
        ["rolling", "anchored", "cpcv"])),
    "fold": pa.Column(pl.Int64, pa.Check.ge(0)),
    "role": pa.Column(pl.String, pa.Check.isin(["train", "test"])),
    "segment": pa.Column(pl.Int64), "start_bar": pa.Column(pl.Int64, pa.Check.ge(0)),
    "end_bar": pa.Column(pl.Int64), "start": pa.Column(pl.Datetime("us")),
    "end": pa.Column(pl.Datetime("us")), "purge_bars": pa.Column(pl.Int64, pa.Check.ge(0)),
    "embargo_bars": pa.Column(pl.Int64, pa.Check.ge(0)),
}, strict=True, checks=[pa.Check(lambda d: d.lazyframe.select(
    pl.col("end_bar") > pl.col("start_bar")), error="empty range")])
_PROB = dict(nullable=True, checks=pa.Check.in_range(0, 1))
RESULTS_MODEL = pa.DataFrameSchema({
    "blueprint": pa.Column(pl.String), "kind": pa.Column(pl.String),
    "fold": pa.Column(pl.Int64), "sample": pa.Column(pl.String, pa.Check.isin(
        ["train", "test", "cpcv"])),
    "combo": pa.Column(pl.Int64), "params": pa.Column(pl.String),
    "selected": pa.Column(pl.Boolean), "start": pa.Column(pl.Datetime("us")),
    "end": pa.Column(pl.Datetime("us")), "bars": pa.Column(pl.Int64, pa.Check.gt(0)),
    "sharpe": pa.Column(pl.Float64, nullable=True),
    "total_return": pa.Column(pl.Float64, nullable=True),
    "trades": pa.Column(pl.Int64, nullable=True),
})
EQUITY_MODEL = pa.DataFrameSchema({
    **STUDY_COLUMN, "blueprint": pa.Column(pl.String), "fold": pa.Column(pl.Int64),
    "ts": pa.Column(pl.Datetime("us")), "equity": pa.Column(pl.Float64),
    "drawdown": pa.Column(pl.Float64, pa.Check.le(0)),
}, strict=True, unique=["blueprint", "ts"])
SUMMARY_MODEL = pa.DataFrameSchema({
    "blueprint": pa.Column(pl.String, unique=True),
    "combinations": pa.Column(pl.Int64, pa.Check.ge(1)),
    "trials": pa.Column(pl.Int64, pa.Check.ge(1)),
    "deflated_sharpe": pa.Column(pl.Float64, **_PROB), "pbo": pa.Column(pl.Float64, **_PROB),
    "oos_sharpe": pa.Column(pl.Float64, nullable=True),
    "oos_total_return": pa.Column(pl.Float64, nullable=True),
    "funding_missing": pa.Column(pl.Int64, pa.Check.ge(0)),
    "funding_constant_runs": pa.Column(pl.Int64, pa.Check.ge(0)),
    "spec_hash": pa.Column(pl.String), "dataset_hash": pa.Column(pl.String),
    "code_commit": pa.Column(pl.String),
})


def fold_leaks(folds: pl.DataFrame) -> list[str]:
    """Every leak of the splits written in a ``walkforward_folds`` frame."""
    out = []
    for (bp, kind, fold), rows in folds.group_by("blueprint", "kind", "fold",
                                                 maintain_order=True):
        ranges = {role: tuple((r["start_bar"], r["end_bar"]) for r in rows.filter(
            pl.col("role") == role).sort("start_bar").iter_rows(named=True))
            for role in ("train", "test")}
        split = F.Split(kind, fold, ranges["train"], ranges["test"])
        out += [f"{bp}: {p}" for p in F.leaks(split, purge=rows["purge_bars"][0],
                                              embargo=rows["embargo_bars"][0])]
    return out


def check_folds(folds: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("walkforward_folds", folds, FOLDS_MODEL)
    leaks = fold_leaks(folds)
    yield check_result("folds_do_not_leak", "walkforward_folds", not leaks,
                  f"{len(leaks)} leaks, e.g. {leaks[:3]}")


def check_walkforward(results: pl.DataFrame, equity: pl.DataFrame, summary: pl.DataFrame,
                      capital: float) -> Iterator[dg.AssetCheckResult]:
    """Every check of ``WALKFORWARD_CHECKS`` on the frames of one run."""
    yield schema_result("walkforward_results", results, RESULTS_MODEL)
    train = results.filter((pl.col("sample") == "train") & pl.col("selected")).select(
        "blueprint", "kind", "fold", pl.col("combo").alias("chosen"),
        pl.col("end").alias("train_end"))
    test = results.filter(pl.col("sample") == "test").join(
        train, on=["blueprint", "kind", "fold"], how="left")
    bad = test.filter((pl.col("combo") != pl.col("chosen")) | pl.col("chosen").is_null()
                      | (pl.col("start") < pl.col("train_end")))
    yield check_result("selection_consistent", "walkforward_results", bad.is_empty(),
                  f"{bad.height} test windows disagree with their train selection, e.g. "
                  f"{bad.select('blueprint', 'fold', 'combo', 'chosen').head(3).to_dicts()}")
    ordered = equity.group_by("blueprint").agg((pl.col("ts").diff() > pl.duration()).all()
                                              .alias("ok"))
    schema = schema_result("walkforward_equity", equity, EQUITY_MODEL)
    yield schema if ordered["ok"].all() else check_result(
        "schema", "walkforward_equity", False, "time does not increase within a blueprint")
    yield schema_result("walkforward_summary", summary, SUMMARY_MODEL)
    last = equity.group_by("blueprint").agg(pl.col("equity").last())
    rec = summary.select("blueprint", "oos_total_return").join(last, on="blueprint",
                                                               how="left")
    off = rec.filter(pl.col("equity").is_not_null() & (
        (pl.col("equity") / capital - 1 - pl.col("oos_total_return")).abs() > 1e-9))
    yield check_result("summary_reconciles", "walkforward_summary", off.is_empty(),
                  f"summary disagrees with the chained equity: {off.head(3).to_dicts()}")
