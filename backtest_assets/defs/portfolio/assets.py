"""A portfolio of a study's edges as one netted book (per study x portfolio).

``portfolio_book`` writes four tables together or not at all: ``edge_contracts`` (each
blueprint's contract state on its walk-forward evidence, and whether it entered the book),
``portfolio_weights`` (per rebalance and edge), ``portfolio_equity`` (the book and the
equal-weight book of every edge, per bar) and ``portfolio_metrics`` (out of sample, from the
first rebalance). The computation is :func:`backtest_assets.portfolio.run.run_portfolio`;
the edges' targets are rebuilt from their blueprints, their own runs read from
``backtest_trades`` and ``backtest_equity``.
"""

import math

import dagster as dg
import numpy as np
import polars as pl

from backtest_assets.defs.backtest.market import StudyData
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    layer_checks,
    markdown_table,
    refuse_failed,
    schema_result,
)
from backtest_assets.defs.studies.assets import study_step
from backtest_assets.defs.walkforward.assets import phase2_trials
from backtest_assets.engine import Instrument
from backtest_assets.partitions import (
    BASE_BARS,
    PORTFOLIO_NAMES,
    STUDY_PORTFOLIO_EXPR,
    study_portfolio_partitions_def,
)
from backtest_assets.portfolio.allocator import Infeasible
from backtest_assets.portfolio.evidence import as_of
from backtest_assets.portfolio.run import EdgeRun, run_portfolio
from backtest_assets.reporting.charts import equity_drawdown_png, markdown_image
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.schemas.portfolio import (
    EDGE_CONTRACTS,
    PORTFOLIO_EQUITY,
    PORTFOLIO_METRICS,
    PORTFOLIO_WEIGHTS,
)
from backtest_assets.specs import spec_hash
from backtest_assets.strategies.blueprints import Panel
from backtest_assets.strategies.catalog import load_blueprint
from backtest_assets.strategies.run import (
    edge_target,
    funding_policy,
    instruments_for,
    largest_weight,
)
from backtest_assets.walkforward.evaluate import Market

TABLES = ("edge_contracts", "portfolio_weights", "portfolio_equity", "portfolio_metrics")
MODELS = dict(zip(TABLES, (EDGE_CONTRACTS, PORTFOLIO_WEIGHTS, PORTFOLIO_EQUITY,
                           PORTFOLIO_METRICS), strict=True))
# study x blueprint upstream -> study x portfolio: the same study, every blueprint
_SAME_STUDY = dg.MultiPartitionMapping({
    "study": dg.DimensionPartitionMapping("study", dg.IdentityPartitionMapping())})
_CHECKS = {
    "weights_within_caps": ("portfolio_weights", "every rebalance: weights >= 0, each at most "
                            "edge_max, 0 for an edge not eligible then, their sum the budget "
                            "(or at most it; cash when no edge is eligible)"),
    "turnover_within_budget": ("portfolio_weights", "every rebalance after the first (from "
                               "cash) whose eligible edges did not change: sum of |weight "
                               "changes| <= turnover_max"),
    "exposure_within_limits": ("portfolio_equity", "every bar: the book's target gross, "
                               "|net| and per-symbol exposure within the spec's caps"),
    "equity_reconciles": ("portfolio_equity", "the book's equity change is its fills' P&L "
                          "(to 1e-6 of capital)"),
}
PORTFOLIO_CHECKS = layer_checks(TABLES, "schemas/portfolio.py", _CHECKS,
                                study_portfolio_partitions_def)


def _read(wh, table: str, study: str) -> pl.DataFrame:
    frame = wh.study_rows(table, study)
    return pl.DataFrame() if frame is None else frame


def _checks(spec, run, init_cash: float) -> list[dg.AssetCheckResult]:
    lim = spec.limits
    w = run.weights
    per = w.group_by("rebalance_ts").agg(
        pl.col("weight").sum().alias("total"), pl.col("weight").max().alias("largest"),
        pl.col("turnover").first(), pl.col("eligible").any().alias("any_eligible"),
        pl.col("binding").first().str.contains("members changed").alias("changed"),
    ).sort("rebalance_ts")
    problems = []
    if w.height and w["weight"].min() < -1e-12:
        problems.append("a negative weight")
    if lim.edge_max is not None and w.height and per["largest"].max() > lim.edge_max + 1e-9:
        problems.append(f"a weight {per['largest'].max():.6g} above edge_max {lim.edge_max}")
    if w.height and (w.filter(~pl.col("eligible"))["weight"].abs().max() or 0) > 1e-12:
        problems.append("a weight on an edge not eligible at its rebalance")
    invested = per.filter(pl.col("any_eligible"))  # with no eligible edge: cash
    if invested.height:
        total = invested["total"]
        off = (total - lim.budget).abs().max() if lim.fully_invested else \
            (total - lim.budget).max()
        if off > 1e-9:
            problems.append(f"weights summing to {total.to_list()} against a budget of "
                            f"{lim.budget}{'' if lim.fully_invested else ' (at most)'}")
    # the first rebalance is from cash; one whose members changed must sell what left
    budgeted = per[1:].filter(~pl.col("changed"))
    turnover_ok = lim.turnover_max is None or budgeted.is_empty() or \
        budgeted["turnover"].max() <= lim.turnover_max + 1e-9
    exposure = []
    tgt = run.book_target
    if tgt is not None:
        for name, cap, value in (("gross", lim.gross_max, np.abs(tgt).sum(axis=1)),
                                 ("net", lim.net_max, np.abs(tgt.sum(axis=1))),
                                 ("symbol", lim.symbol_max, np.abs(tgt).max(axis=1))):
            if cap is not None and value.max() > cap + 1e-9:
                bar = int(value.argmax())
                exposure.append(f"{name} {value.max():.6g} > {cap} at bar {bar}")
    reconciled = True
    if run.book is not None:
        gap = run.book.equity[-1] - init_cash - run.book.trades["pnl"].sum()
        reconciled = abs(gap) <= 1e-6 * init_cash
    return [
        dg.AssetCheckResult(check_name="weights_within_caps", asset_key="portfolio_weights",
                            passed=not problems, description="; ".join(problems) or None),
        dg.AssetCheckResult(check_name="turnover_within_budget",
                            asset_key="portfolio_weights", passed=bool(turnover_ok),
                            description=None if turnover_ok else
                            f"turnover {budgeted['turnover'].max():.6g} > "
                            f"{lim.turnover_max}"),
        dg.AssetCheckResult(check_name="exposure_within_limits", asset_key="portfolio_equity",
                            passed=not exposure, description="; ".join(exposure) or None),
        dg.AssetCheckResult(check_name="equity_reconciles", asset_key="portfolio_equity",
                            passed=bool(reconciled),
                            description=None if reconciled else
                            "the book's equity change differs from its fills' P&L"),
    ]


@dg.multi_asset(
    outs={t: dg.AssetOut(kinds={"duckdb", "polars"}, group_name="portfolio",
                         metadata={"partition_expr": STUDY_PORTFOLIO_EXPR}) for t in TABLES},
    deps=[dg.AssetDep("strategy_blueprints", partition_mapping=BY_STUDY_DIM),
          dg.AssetDep("study_record", partition_mapping=BY_STUDY_DIM),
          *[dg.AssetDep(a, partition_mapping=_SAME_STUDY)
            for a in ("backtest_trades", "backtest_equity", "walkforward_summary")],
          *[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping())
            for a in (BASE_BARS, "pit_features", "event_table", "raw_funding_rates")]],
    partitions_def=study_portfolio_partitions_def,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="duckdb",
    check_specs=PORTFOLIO_CHECKS,
)
def portfolio_book(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                   warehouse: WarehouseResource):
    """The study's edges under the portfolio spec: contracts, weights, the netted book."""
    reg, wh, study, portfolio = study_step(context, "portfolio", specs, warehouse)
    spec = reg.portfolios[portfolio]
    catalog = _read(wh, "strategy_blueprints", study.name)
    if catalog.is_empty():
        raise dg.Failure(description=f"study {study.name} has no blueprints yet: materialize "
                                     "strategy_blueprints and its backtests first")
    blueprints = [load_blueprint(r) for r in catalog.iter_rows(named=True)]
    rows = {r["blueprint"]: r for r in catalog.iter_rows(named=True)}
    trades = _read(wh, "backtest_trades", study.name)
    equity = _read(wh, "backtest_equity", study.name)
    summary = _read(wh, "walkforward_summary", study.name)
    missing = sorted({bp.name for bp in blueprints} - set(equity["blueprint"].unique())
                     if equity.height else {bp.name for bp in blueprints})
    if missing:
        raise dg.Failure(description=f"study {study.name}: no backtest of {missing}: "
                                     "backtest every blueprint of the study first")
    data = StudyData.read(wh, study, blueprints)
    symbols = [s for s in study.symbols if any(s in bp.symbols for bp in blueprints)]
    book = Panel.from_bars(data.bars, symbols, data.start, data.end, reg.base_minutes)
    evidence = {r["blueprint"]: r for r in summary.iter_rows(named=True)} if summary.height \
        else {}
    edges, evidence_of = [], []
    trials_phase2 = phase2_trials(wh, study.name)
    for bp in blueprints:
        panel, features, own_funding = data.for_blueprint(bp, reg.base_minutes,
                                                            study.missing_marks)
        venue = reg.fees.venues[bp.venue or reg.fees.default_venue]
        evidence_of.append(as_of(
            bp, Market(panel, features, data.events, own_funding, venue, study.capital,
                       funding_policy(study, bp)), reg.walkforward,
            stress=reg.gates.promotion.cost_stress,
            trials_phase2=trials_phase2 if rows[bp.name]["source"] == "phase2" else 0))
        own = trades.filter(pl.col("blueprint") == bp.name)
        eq = equity.filter(pl.col("blueprint") == bp.name).sort("ts")["equity"].to_numpy()
        target, _ = edge_target(
            bp, panel, features=features, events=data.events,
            rates=panel.funding(own_funding) if own_funding.height else None,
            instruments=instruments_for(bp, venue),
            init_cash=study.capital)
        edges.append(EdgeRun(
            name=bp.name, symbols=tuple(bp.symbols), target=target,
            trades=own, equity=eq, init_cash=study.capital,
            spec_hash=rows[bp.name]["spec_hash"], evidence=evidence.get(bp.name),
            max_weight=largest_weight(bp),
            overlays={o.name: spec_hash(o) for o in bp.overlays}))
    venue = reg.fees.venues[reg.fees.default_venue]
    leverage = max(1.0, *(bp.leverage for bp in blueprints))
    instruments = [Instrument.from_venue(s, venue, max_leverage=leverage) for s in symbols]
    bars_per_day = reg.bars_per_day
    try:
        run = run_portfolio(
            spec, edges, ts=book.ts + np.timedelta64(reg.base_minutes, "m"), symbols=symbols,
            bars=(book.open, book.high, book.low, book.close), instruments=instruments,
            funding=book.funding(data.funding) if data.funding.height else None,
            init_cash=study.capital, bars_per_day=bars_per_day, gate=reg.gates.promotion,
            evidence_at=lambda i, bar: evidence_of[i](bar))
    except (Infeasible, ValueError) as exc:
        raise dg.Failure(description=f"portfolio {portfolio} of study {study.name}: "
                                     f"{exc}") from None
    h = spec_hash(spec)
    key = [pl.lit(study.name).alias("study"), pl.lit(portfolio).alias("portfolio")]
    frames = {
        "edge_contracts": run.contracts.select(*key, pl.all(), pl.lit(h).alias("spec_hash")),
        "portfolio_weights": run.weights.select(*key, pl.all()),
        "portfolio_equity": run.equity.select(*key, pl.all()),
        "portfolio_metrics": run.metrics.select(*key, pl.all(),
                                                pl.lit(spec.selection).alias("selection"),
                                                pl.lit(h).alias("spec_hash"))
        if run.metrics.height else
        pl.DataFrame(schema=dict(PORTFOLIO_METRICS.dtypes)),
    }
    checks = [schema_result(t, frames[t], MODELS[t]) for t in TABLES] + \
        _checks(spec, run, study.capital)
    yield from refuse_failed(checks, f"portfolio {portfolio} of study {study.name}")
    metrics = frames["portfolio_metrics"]
    for t in TABLES:
        extra = {}
        if t == "portfolio_metrics" and metrics.height:
            extra = {"metrics": dg.MetadataValue.md(markdown_table(metrics.select(
                "book", "edges", "total_return", "sharpe", "max_drawdown", "fees",
                "max_gross", "max_net"), {"total_return": ".2%", "max_drawdown": ".2%"})),
                **{f"{r['book']}_sharpe": float(r["sharpe"]) for r in metrics.to_dicts()
                   if math.isfinite(r["sharpe"])}}
        if t == "portfolio_equity" and frames[t].height:
            curves = frames[t].rename({"book": "blueprint"}).select(
                "blueprint", "ts", "equity", "drawdown")
            extra = {"chart": dg.MetadataValue.md(markdown_image(equity_drawdown_png(
                curves, title=f"{portfolio}: {study.name}, the book and the equal-weight "
                              "book of every edge"), "book equity and drawdown"))}
        if t == "edge_contracts":
            last = frames[t].filter(pl.col("as_of") == pl.col("as_of").max())
            extra = {"reviews": frames[t]["as_of"].n_unique(),
                     "approved_at_last_review": int((last["state"] == "APPROVED").sum()),
                     "contracts": dg.MetadataValue.md(markdown_table(last.select(
                         "as_of", "edge", "state", "in_book", "reasons")))}
        yield dg.Output(frames[t], output_name=t, metadata={"rows": frames[t].height, **extra})
    yield from checks


defs = dg.Definitions(assets=[portfolio_book]) if PORTFOLIO_NAMES else dg.Definitions()
