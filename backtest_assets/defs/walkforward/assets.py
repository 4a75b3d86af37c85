"""Walk-forward evaluation of every blueprint over the default study.

``walkforward_folds`` writes each blueprint's splits (rolling or anchored walk-forward folds
and combinatorially purged cross-validation splits, purged and embargoed); the multi-asset
``walkforward_results`` / ``walkforward_equity`` / ``walkforward_summary`` comes from one
evaluation per blueprint (:func:`backtest_assets.walkforward.evaluate.evaluate`): every grid
combination in sample, each fold's chosen combination out of sample, the chained
out-of-sample equity and the overfitting statistics.
"""

import dagster as dg
import numpy as np
import polars as pl

from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.backtest.market import StudyData, selected_blueprints
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    markdown_table,
    partition_evaluations,
    refuse_failed_partitions,
    study_keys,
    with_study,
)
from backtest_assets.defs.studies.assets import recorded_study, study_warehouse
from backtest_assets.defs.walkforward.checks import (
    FOLD_CHECKS,
    WALKFORWARD_CHECKS,
    check_folds,
    check_walkforward,
)
from backtest_assets.discovery.phase2 import TESTED, frame_hash
from backtest_assets.partitions import (
    BASE_BARS,
    BLUEPRINT_PARTITIONS,
    STUDY_BLUEPRINT_EXPR,
    study_blueprint_key,
    study_blueprint_partitions_def,
)
from backtest_assets.reporting.charts import equity_drawdown_png, markdown_image
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.strategies.run import funding_policy
from backtest_assets.walkforward import folds as F
from backtest_assets.walkforward.evaluate import Market, evaluate, purge_bars, windows
from backtest_assets.warehouse import PartitionLayout, WarehouseError

_ALL = dg.AllPartitionMapping()
_OUT = dict(kinds={"duckdb", "polars"}, metadata={"partition_expr": STUDY_BLUEPRINT_EXPR},
            group_name="walkforward")
HEADLINE = ("blueprint", "combinations", "trials", "is_sharpe", "deflated_sharpe", "pbo",
            "oos_sharpe", "oos_total_return", "oos_max_drawdown", "oos_trades",
            "stress_sharpe", "is_oos_decay")


@dg.asset(
    **_OUT,
    partitions_def=study_blueprint_partitions_def,
    ins={"strategy_blueprints": dg.AssetIn(partition_mapping=BY_STUDY_DIM)},
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    check_specs=FOLD_CHECKS,
)
def walkforward_folds(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                      warehouse: WarehouseResource, strategy_blueprints: pl.DataFrame):
    """Each blueprint's walk-forward and CPCV splits over its study, purged."""
    reg = specs.registry()
    study_name, names = study_keys(context, BLUEPRINT_PARTITIONS)
    study, spec = recorded_study(reg, warehouse.warehouse(), study_name), reg.walkforward
    blueprints, _ = selected_blueprints(reg, strategy_blueprints, names)
    n = ((study.end - study.start).days + 1) * reg.bars_per_day
    ts = np.datetime64(study.start, "us") + np.arange(n) * np.timedelta64(reg.base_minutes, "m")
    frames = []
    for bp in blueprints:
        purge = purge_bars(bp, spec)
        try:
            wf, cp = windows(n, reg.base_minutes, spec, purge)
        except ValueError as exc:
            raise dg.Failure(description=f"blueprint {bp.name}: walkforward.yaml does not fit "
                                         f"the study {study.name}: {exc}") from None
        frames.append(F.splits_frame([*wf, *cp], ts, np.timedelta64(reg.base_minutes, "m"))
                      .with_columns(pl.lit(bp.name).alias("blueprint"),
                                    pl.lit(purge, pl.Int64).alias("purge_bars"),
                                    pl.lit(spec.embargo_bars, pl.Int64).alias("embargo_bars")))
    folds = with_study(pl.concat(frames).select("blueprint", pl.exclude("blueprint")),
                       study.name)
    keys = {n: str(study_blueprint_key(study.name, n)) for n in names}
    checks = [(keys[n], r) for n in names
              for r in check_folds(folds.filter(pl.col("blueprint") == n))]
    yield from refuse_failed_partitions(context, checks, "walkforward_folds")
    yield dg.Output(folds, metadata={
        "rows": folds.height, "scheme": spec.scheme,
        "splits": dg.MetadataValue.md(markdown_table(
            folds.group_by("blueprint", "kind").agg(pl.col("fold").n_unique().alias("splits"),
                                                    pl.col("purge_bars").first())
            .sort("blueprint", "kind")))})
    yield from partition_evaluations(context, checks)


@dg.multi_asset(
    outs={name: dg.AssetOut(**_OUT) for name in
          ("walkforward_results", "walkforward_equity", "walkforward_summary")},
    ins={"strategy_blueprints": dg.AssetIn(partition_mapping=BY_STUDY_DIM),
         "walkforward_folds": dg.AssetIn()},
    deps=[dg.AssetDep(a, partition_mapping=_ALL)
          for a in (BASE_BARS, "pit_features", "event_table", "raw_funding_rates",
                    "phase2_fdr")],
    partitions_def=study_blueprint_partitions_def,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    check_specs=WALKFORWARD_CHECKS,
)
def walkforward_blueprints(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                           warehouse: WarehouseResource, strategy_blueprints: pl.DataFrame,
                           walkforward_folds: pl.DataFrame):
    """Every grid combination in sample, each fold's choice out of sample, and how much of
    the result is luck (deflated Sharpe, PBO), per blueprint."""
    reg = specs.registry()
    wh = warehouse.warehouse()
    study_name, names = study_keys(context, BLUEPRINT_PARTITIONS)
    study = recorded_study(reg, wh, study_name)
    blueprints, rows = selected_blueprints(reg, strategy_blueprints, names)
    data = StudyData.read(study_warehouse(wh, study_name), study, blueprints)
    trials_phase2 = phase2_trials(wh, study.name)
    outs = []
    for bp in blueprints:
        venue = reg.fees.venues[bp.venue or reg.fees.default_venue]
        try:
            panel, features, funding = data.for_blueprint(bp, reg.base_minutes,
                                                          study.missing_marks)
            wf = evaluate(bp, Market(panel, features, data.events, funding, venue,
                                     study.capital, funding_policy(study, bp)),
                          reg.walkforward,
                          stress=reg.gates.promotion.cost_stress,
                          trials_phase2=trials_phase2 if rows[bp.name]["source"] == "phase2"
                          else 0)
        except ValueError as exc:
            raise dg.Failure(description=f"blueprint {bp.name}: refused: {exc}") from None
        stored = walkforward_folds.filter(pl.col("blueprint") == bp.name).drop(
            "study", "purge_bars", "embargo_bars")
        if not stored.sort(stored.columns).equals(wf.folds.sort(wf.folds.columns)):
            raise dg.Failure(description=f"blueprint {bp.name}: walkforward_folds differs "
                                         "from the folds of walkforward.yaml now: "
                                         "re-materialize walkforward_folds first")
        outs.append((wf, wf.summary.with_columns(
            spec_hash=pl.lit(rows[bp.name]["spec_hash"]),
            dataset_hash=pl.lit(frame_hash(data.inputs_of(bp))),
            code_commit=pl.lit(code_commit()))))
    results = with_study(pl.concat([wf.results for wf, _ in outs], how="diagonal_relaxed"),
                         study.name)
    equity = with_study(pl.concat([wf.equity.select("blueprint", "fold", "ts", "equity",
                                                    "drawdown") for wf, _ in outs]), study.name)
    summary = with_study(pl.concat([s for _, s in outs], how="diagonal_relaxed"), study.name)
    keys = {n: str(study_blueprint_key(study.name, n)) for n in names}
    checks = [(keys[n], r) for n in names for r in check_walkforward(
        *(f.filter(pl.col("blueprint") == n) for f in (results, equity, summary)),
        study.capital)]
    yield from refuse_failed_partitions(context, checks, "walkforward")
    headline = summary.select(HEADLINE)
    yield dg.Output(results, output_name="walkforward_results", metadata={
        "rows": results.height,
        "out_of_sample": dg.MetadataValue.md(markdown_table(results.filter(
            pl.col("sample") == "test").select("blueprint", "fold", "combo", "params",
                                               "is_sharpe", "sharpe", "total_return",
                                               "trades")))})
    yield dg.Output(equity, output_name="walkforward_equity", metadata={
        "rows": equity.height,
        "chart": dg.MetadataValue.md(markdown_image(equity_drawdown_png(
            equity.drop("study"), title=f"out of sample, chained folds: {study.name}"),
            "out-of-sample equity"))})
    yield dg.Output(summary, output_name="walkforward_summary", metadata={
        "summary": dg.MetadataValue.md(markdown_table(headline)),
        **({k: float(headline[k][0]) for k in HEADLINE[1:]
            if headline[k][0] is not None and np.isfinite(headline[k][0])}
           if len(names) == 1 else {})})
    yield from partition_evaluations(context, checks)


def phase2_trials(wh, study: str) -> int:
    """Hypotheses Phase 2 tested for the study (all event types): trials behind every
    survivor."""
    try:
        fdr = wh.read("phase2_fdr", PartitionLayout())
    except WarehouseError:
        return 0
    return int(((fdr["status"] == TESTED) & (fdr["study"] == study)).sum())


defs = dg.Definitions(assets=[walkforward_folds, walkforward_blueprints])
