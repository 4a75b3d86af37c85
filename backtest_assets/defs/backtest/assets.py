"""Blueprints and their backtests over a study's window.

``strategy_blueprints`` (per study) catalogs the baseline blueprints of specs/strategies
that trade the study's symbols, one per Phase-2 survivor of the study and one per alpha
model with scores in the study (long-short on its scores), and registers
each name as a partition of the dynamic ``blueprint`` partitions (a name is the same in
every study); the backtests are partitioned by study x blueprint. ``backtest_trades``,
``backtest_equity`` and ``backtest_metrics`` come from one simulation per blueprint (a
multi-asset: the three frames are written together or not at all), reading perp bars,
features, events and funding from the warehouse.
"""

import math

import dagster as dg
import polars as pl

from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.backtest.checks import BACKTEST_CHECKS, BLUEPRINT_CHECKS, check_backtest
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
from backtest_assets.discovery.phase2 import frame_hash
from backtest_assets.partitions import (
    BASE_BARS,
    BLUEPRINT_PARTITIONS,
    STUDY_BLUEPRINT_EXPR,
    study_blueprint_key,
    study_blueprint_partitions_def,
    study_partitions_def,
)
from backtest_assets.reporting.charts import equity_drawdown_png, markdown_image
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.strategies.catalog import catalog, problems
from backtest_assets.strategies.run import funding_policy, run_blueprint
from backtest_assets.warehouse import PartitionLayout, WarehouseError

_ALL = dg.AllPartitionMapping()
HEADLINE = ("blueprint", "total_return", "sharpe", "max_drawdown", "trades", "win_rate",
            "fee_drag", "funding_pnl", "margin_usage_max", "min_liquidation_distance")
# How the UI shows them: fractions as percent, counts as integers.
HEADLINE_FORMATS = {"total_return": ".2%", "sharpe": ".2f", "max_drawdown": ".2%",
                    "trades": ",.0f", "win_rate": ".1%", "fee_drag": ".3%",
                    "funding_pnl": ",.2f", "margin_usage_max": ".1%",
                    "min_liquidation_distance": ".1%"}


@dg.asset(
    group_name="backtest",
    pool="duckdb",
    kinds={"duckdb", "polars", "yaml"},
    partitions_def=study_partitions_def,
    metadata={"partition_expr": "study"},
    deps=[dg.AssetDep("phase2_fdr", partition_mapping=BY_STUDY_DIM),
          dg.AssetDep("alpha_scores", partition_mapping=BY_STUDY_DIM),
          dg.AssetDep("study_record")],
    check_specs=BLUEPRINT_CHECKS,
)
def strategy_blueprints(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                        warehouse: WarehouseResource):
    """Baseline blueprints plus one per Phase-2 survivor of the study; each name becomes a
    partition."""
    reg = specs.registry()
    wh = warehouse.warehouse()
    study = recorded_study(reg, wh, context.partition_key)
    wh = study_warehouse(wh, study.name)
    try:
        survivors = wh.read("phase2_fdr", PartitionLayout()).filter(
            pl.col("survivor") & (pl.col("study") == study.name))
    except WarehouseError:
        survivors = None  # no Phase 2 yet: the baselines alone
    scored = wh.study_rows("alpha_scores", study.name)
    models = sorted(set(scored["alpha_model"])) if scored is not None else []
    table = catalog(reg, survivors, study.symbols, models).select(
        pl.lit(study.name).alias("study"), pl.all())
    found = problems(reg, table)
    check = dg.AssetCheckResult(check_name="blueprints_valid", passed=not found,
                                description="\n".join(found) or None,
                                metadata={"problems": len(found)})
    if found:
        yield check
        raise dg.Failure(description="strategy_blueprints: blocking check failed, nothing "
                                     "written and no partition added:\n" + "\n".join(found))
    known = set(context.instance.get_dynamic_partitions(BLUEPRINT_PARTITIONS))
    new = [n for n in table["blueprint"] if n not in known]
    if new:
        context.instance.add_dynamic_partitions(BLUEPRINT_PARTITIONS, new)
    yield dg.Output(table, metadata={
        "blueprints": table.height, "from_phase2": int((table["source"] == "phase2").sum()),
        "new_partitions": len(new),
        "catalog": dg.MetadataValue.md(markdown_table(table.select(
            "blueprint", "source", "symbols", "entry", "direction", "exits",
            "overlays")))})
    yield check


_OUT = dict(kinds={"duckdb", "polars"}, metadata={"partition_expr": STUDY_BLUEPRINT_EXPR},
            group_name="backtest")


@dg.multi_asset(
    outs={name: dg.AssetOut(**_OUT) for name in
          ("backtest_trades", "backtest_equity", "backtest_metrics")},
    ins={"strategy_blueprints": dg.AssetIn(partition_mapping=BY_STUDY_DIM)},
    deps=[dg.AssetDep(a, partition_mapping=_ALL)
          for a in (BASE_BARS, "pit_features", "event_table", "raw_funding_rates")],
    partitions_def=study_blueprint_partitions_def,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    check_specs=BACKTEST_CHECKS,
)
def backtest_blueprints(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                        warehouse: WarehouseResource, strategy_blueprints: pl.DataFrame):
    """Each blueprint of the run backtested over its study: trades, equity, metrics."""
    reg = specs.registry()
    study_name, names = study_keys(context, BLUEPRINT_PARTITIONS)
    wh = warehouse.warehouse()
    study = recorded_study(reg, wh, study_name)
    blueprints, rows = selected_blueprints(reg, strategy_blueprints, names)

    data = StudyData.read(study_warehouse(wh, study.name), study, blueprints)
    runs = []
    for bp in blueprints:
        venue = reg.fees.venues[bp.venue or reg.fees.default_venue]
        try:
            panel, features, own_funding = data.for_blueprint(bp, reg.base_minutes,
                                                                study.missing_marks)
            run = run_blueprint(bp, panel, features=features, events=data.events,
                                funding=own_funding, venue=venue, init_cash=study.capital,
                                funding_policy=funding_policy(study, bp))
        except ValueError as exc:
            raise dg.Failure(description=f"blueprint {bp.name}: refused before simulating: "
                                         f"{exc}") from None
        runs.append((run, rows[bp.name]["spec_hash"], frame_hash(data.inputs_of(bp))))

    trades = with_study(pl.concat([r.trades for r, _, _ in runs]), study.name)
    equity = with_study(pl.concat([r.equity for r, _, _ in runs]), study.name)
    metrics = with_study(pl.concat([r.metrics.with_columns(
        spec_hash=pl.lit(h), dataset_hash=pl.lit(d), code_commit=pl.lit(code_commit()))
        for r, h, d in runs], how="diagonal_relaxed"), study.name)
    # each blueprint partition's checks on its own rows, stored as that partition's
    keys = {n: str(study_blueprint_key(study.name, n)) for n in names}
    checks = [(keys[n], r) for n in names for r in check_backtest(
        *(f.filter(pl.col("blueprint") == n) for f in (trades, equity, metrics)))]
    yield from refuse_failed_partitions(context, checks, "backtest")
    headline = metrics.select(HEADLINE)
    # Each blueprint partition shows its own curve and headline in the UI.
    for name in names:
        own = headline.filter(pl.col("blueprint") == name)
        context.add_asset_metadata({
            "chart": dg.MetadataValue.md(markdown_image(equity_drawdown_png(
                equity.filter(pl.col("blueprint") == name),
                title=f"{name}: {study.name} {study.start}..{study.end}"),
                "equity and drawdown")),
            "headline": dg.MetadataValue.md(markdown_table(own, HEADLINE_FORMATS)),
            **{k: float(own[k][0]) for k in HEADLINE[1:]
               if own[k][0] is not None and math.isfinite(own[k][0])}},
            asset_key="backtest_equity", partition_key=keys[name])
    yield dg.Output(trades, output_name="backtest_trades", metadata={
        "trades": trades.height,
        "by_exit_reason": dg.MetadataValue.md(markdown_table(
            trades.group_by("exit_reason").len().sort("exit_reason")))})
    yield dg.Output(equity, output_name="backtest_equity")
    yield dg.Output(metrics, output_name="backtest_metrics", metadata={
        "metrics": dg.MetadataValue.md(markdown_table(metrics.drop(
            "study", "spec_hash", "dataset_hash", "code_commit", "window_start",
            "window_end"))),
        "code_commit": code_commit()})
    yield from partition_evaluations(context, checks)


defs = dg.Definitions(assets=[strategy_blueprints, backtest_blueprints])
