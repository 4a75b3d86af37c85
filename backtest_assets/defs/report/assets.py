"""Promotion decisions and the research report of a study.

``promotion_decisions`` applies the promotion gates of ``specs/gates.yaml`` to every
blueprint's walk-forward summary and moves it through the lifecycle
(:mod:`backtest_assets.strategies.promotion`), from the stage its previous decision (for
the same spec hash) left it at. Once a blueprint's demo has days on record, its latest
demo day's decision is its decision (the demo stage decides demo -> live and archival:
``defs.lifecycle``). ``research_report`` writes the study's self-contained HTML
report (:mod:`backtest_assets.reporting.report`) under the data root and shows its summary
chart in the UI.
"""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import polars as pl

from backtest_assets.core.studies import study_files
from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.report.checks import (
    MAX_SHEET_BYTES,
    REPORT_CHECKS,
    check_decisions,
    report_problems,
    sheet_problems,
)
from backtest_assets.defs.report.sheets import study_frames, write_sheets
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    markdown_table,
    refuse_failed,
    report_folder,
    study_boxes,
    symbol_layout,
)
from backtest_assets.defs.studies.assets import recorded_study, study_warehouse
from backtest_assets.discovery.phase2 import TESTED, frame_hash
from backtest_assets.lifecycle.demo import decision_of_day
from backtest_assets.partitions import (
    ALPHA_NAMES,
    BASE_BARS,
    PORTFOLIO_NAMES,
    study_partitions_def,
)
from backtest_assets.reporting.charts import markdown_image
from backtest_assets.reporting.compare import TABLES as COMPARE_TABLES
from backtest_assets.reporting.compare import Comparison, compare_from
from backtest_assets.reporting.event_study import event_study
from backtest_assets.reporting.report import ReportInputs, render_report, summary_png
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.strategies.promotion import EVIDENCE, decide
from backtest_assets.warehouse import WarehouseError

_ALL = dg.AllPartitionMapping()
_STUDY = dict(partitions_def=study_partitions_def, group_name="report", pool="duckdb",
              kinds={"duckdb", "polars"}, metadata={"partition_expr": "study"})
REPORT_FILE = "research_report.html"
SHEETS_DIR = "tear_sheets"  # <report folder>/tear_sheets/<blueprint>.html, portfolio_<name>.html
# A study without blueprints (none of its symbols' baselines, no survivor) decides nothing.
DECISION_SCHEMA = {"study": pl.String, "blueprint": pl.String, "spec_hash": pl.String,
                   "from_stage": pl.String, "to_stage": pl.String, "decision": pl.String,
                   "passed": pl.Boolean, "reasons": pl.String, "inputs_hash": pl.String,
                   "gates_hash": pl.String, **dict.fromkeys(EVIDENCE, pl.Float64)}
EVENT_WINDOW = (12, 24)  # event-study curves: bars before and after the entry


def latest_demo_days(wh, study: str) -> dict[tuple[str, str], dict]:
    """(blueprint, spec hash) -> its latest ``demo_days`` row in ``study`` (read, not a
    declared dependency: the demo days depend on these decisions)."""
    rows = wh.study_rows("demo_days", study)
    if rows is None or rows.is_empty():
        return {}
    last = rows.sort("date").group_by("blueprint", "spec_hash", maintain_order=True).last()
    return {(r["blueprint"], r["spec_hash"]): r for r in last.iter_rows(named=True)}


def _comparisons(wh, study) -> dict[str, Comparison]:
    """Study ``study`` (A) beside each study of its ``compare_with`` that has a record."""
    if not study.compare_with:
        return {}
    names = (study.name, *study.compare_with)
    frames = {t: wh.study_rows(t, *names) for t in COMPARE_TABLES.values()}
    recorded = set() if frames["study_record"] is None else set(frames["study_record"]["study"])
    return {other: compare_from(study.name, other, frames.get)
            for other in study.compare_with if other in recorded}


def _study_of(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
              warehouse: WarehouseResource):
    """The registry, the study of the partition (as recorded) and the warehouse pinned to
    the study's snapshot."""
    reg = specs.registry()
    wh = warehouse.warehouse()
    study = recorded_study(reg, wh, context.partition_key)
    return reg, study, study_warehouse(wh, study.name)


@dg.asset(
    **_STUDY,
    deps=[dg.AssetDep("strategy_blueprints"),
          *[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in ("walkforward_summary", "backtest_metrics")]],
    check_specs=[c for c in REPORT_CHECKS if c.asset_key.path[-1] == "promotion_decisions"],
)
def promotion_decisions(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                        warehouse: WarehouseResource):
    """Each blueprint's promotion gates and lifecycle stage, with the reasons."""
    reg, study, wh = _study_of(context, specs, warehouse)
    catalog = wh.study_rows("strategy_blueprints", study.name)
    if catalog is None:
        raise dg.Failure(description=f"materialize strategy_blueprints for study "
                                     f"{study.name} first")
    summary = wh.study_rows("walkforward_summary", study.name)
    backtested = wh.study_rows("backtest_metrics", study.name)
    previous = wh.study_rows("promotion_decisions", study.name)
    evidence = {} if summary is None else {r["blueprint"]: r for r in summary.iter_rows(
        named=True)}
    before = {} if previous is None else {
        (r["blueprint"], r["spec_hash"]): r["to_stage"]
        for r in previous.filter(pl.col("study") == study.name).iter_rows(named=True)}
    done = set() if backtested is None else set(backtested["blueprint"])
    demo = latest_demo_days(wh, study.name)
    rows = []
    for bp in catalog.iter_rows(named=True):
        ev = evidence.get(bp["blueprint"])
        if ev is not None and ev["spec_hash"] != bp["spec_hash"]:
            ev = None  # evidence of an older version of the spec
        last = demo.get((bp["blueprint"], bp["spec_hash"]))
        if last is not None:  # in demo: its demo days decide (defs.lifecycle.demo_days)
            d = decision_of_day(last)
        else:
            d = decide(ev, reg.gates.promotion,
                       from_stage=before.get((bp["blueprint"], bp["spec_hash"]), "idea"),
                       backtested=bp["blueprint"] in done)
        rows.append({"study": study.name, "blueprint": bp["blueprint"],
                     "spec_hash": bp["spec_hash"], "from_stage": d.from_stage,
                     "to_stage": d.to_stage, "decision": d.decision, "passed": d.passed,
                     "reasons": "; ".join(d.reasons), "inputs_hash": d.inputs_hash,
                     "gates_hash": reg.hashes["gates.yaml"],
                     **{k: None if ev is None else ev.get(k) for k in EVIDENCE}})
    frame = pl.DataFrame(rows, schema=None if rows else DECISION_SCHEMA,
                         infer_schema_length=None).with_columns(
        pl.col(k).cast(pl.Float64) for k in EVIDENCE)
    checks = list(check_decisions(frame))
    yield from refuse_failed(checks, "promotion_decisions")
    counts = frame.group_by("to_stage").len().sort("to_stage")
    yield dg.Output(frame, metadata={
        "rows": frame.height, **{f"stage_{s}": n for s, n in counts.iter_rows()},
        "decisions": dg.MetadataValue.md(markdown_table(frame.select(
            "blueprint", "from_stage", "to_stage", "decision", "reasons")))})
    yield from checks


@dg.asset(
    **_STUDY,
    deps=[dg.AssetDep("strategy_blueprints"),
          *[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in ("backtest_equity", "backtest_metrics", "backtest_trades",
                      "walkforward_results", "walkforward_equity", "walkforward_summary",
                      "phase2_fdr")],
          *[dg.AssetDep(a, partition_mapping=_ALL) for a in ("event_table", BASE_BARS)],
          *[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in (("portfolio_metrics", "portfolio_equity", "portfolio_weights")
                      if PORTFOLIO_NAMES else ())],
          dg.AssetDep("promotion_decisions")],
    check_specs=[c for c in REPORT_CHECKS if c.asset_key.path[-1] == "tear_sheets"],
)
def tear_sheets(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                warehouse: WarehouseResource):
    """One interactive, self-contained HTML tear sheet per blueprint and per portfolio."""
    reg, study, wh = _study_of(context, specs, warehouse)
    frames = study_frames(study, wh)
    folder = report_folder(warehouse, study.name, context) / SHEETS_DIR
    rows = write_sheets(reg, study, frames, folder)
    found = sheet_problems(rows, frames)
    check = dg.AssetCheckResult(check_name="sheets_complete", passed=not found,
                                description="; ".join(found[:5]) or None)
    if found:
        yield check
        raise dg.Failure(description=f"tear_sheets: {'; '.join(found[:5])}")
    large = rows.filter(pl.col("bytes") > MAX_SHEET_BYTES)
    size = dg.AssetCheckResult(
        check_name="sheets_under_5mb", passed=large.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=None if large.is_empty() else "; ".join(
            f"{r['name']}: {r['bytes'] / 1e6:.2f} MB" for r in large.iter_rows(named=True)))
    preview = rows.select(
        "kind", "name", pl.col("bytes").truediv(1e6).alias("MB"), "total_return", "sharpe",
        "max_drawdown", "trades")
    # the table is a function of the inputs; the time it took goes to the metadata only
    yield dg.Output(rows.drop("seconds"), metadata={
        "folder": dg.MetadataValue.path(str(folder)), "sheets": rows.height,
        "total_MB": round(float(rows["bytes"].sum()) / 1e6, 2) if rows.height else 0.0,
        "largest_MB": round(float(rows["bytes"].max()) / 1e6, 2) if rows.height else 0.0,
        "seconds": round(float(rows["seconds"].sum()), 2) if rows.height else 0.0,
        "headline": dg.MetadataValue.md(markdown_table(preview, {
            "MB": ".2f", "total_return": ".2%", "sharpe": ".2f", "max_drawdown": ".2%",
            "trades": ",.0f"}) if rows.height else "no blueprint or portfolio"),
        "files": dg.MetadataValue.md("\n".join(
            f"- [{r['name']}](file://{r['path']}) ({r['bytes'] / 1e6:.2f} MB): `{r['path']}`"
            for r in rows.iter_rows(named=True)) or "none")})
    yield check
    yield size


@dg.asset(
    **_STUDY,
    deps=[*[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in ("backtest_equity", "backtest_metrics", "walkforward_results",
                      "walkforward_equity", "walkforward_summary", "phase2_fdr")],
          *[dg.AssetDep(a, partition_mapping=_ALL) for a in ("event_table", BASE_BARS)],
          *[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in (("portfolio_metrics", "portfolio_equity", "portfolio_weights")
                      if PORTFOLIO_NAMES else ())],
          *[dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in (("alpha_model", "expectancy_report") if ALPHA_NAMES else ())],
          dg.AssetDep("promotion_decisions"), dg.AssetDep("tear_sheets")],
    check_specs=[c for c in REPORT_CHECKS if c.asset_key.path[-1] == "research_report"],
)
def research_report(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                    warehouse: WarehouseResource):
    """The study's self-contained HTML research report (path and sha256 in the row)."""
    reg, study, wh = _study_of(context, specs, warehouse)
    folder = report_folder(warehouse, study.name, context)
    inputs = _report_inputs(reg, study, wh, folder)
    html = render_report(inputs)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a report
    digest = hashlib.sha256(html.encode()).hexdigest()
    found = report_problems(path, digest, html)
    check = dg.AssetCheckResult(check_name="report_complete", passed=not found,
                                description="; ".join(found) or None)
    if found:
        yield check
        raise dg.Failure(description=f"research_report: {'; '.join(found)}")
    promoted = inputs.promotions.filter(pl.col("decision") == "promote").height \
        if inputs.promotions.height else 0
    row = pl.DataFrame([{
        "study": study.name, "path": str(path), "sha256": digest, "bytes": len(html.encode()),
        "blueprints": inputs.promotions.height, "promoted": promoted,
        "spec_hashes": json.dumps(inputs.spec_hashes, sort_keys=True),
        "dataset_hash": inputs.dataset_hash, "code_commit": inputs.code_commit}])
    yield dg.Output(row, metadata={
        "path": dg.MetadataValue.path(str(path)), "sha256": digest,
        "tear_sheets_linked": len(inputs.sheets),
        "chart": dg.MetadataValue.md(markdown_image(summary_png(inputs),
                                                    "out-of-sample Sharpe per blueprint")),
        "promotions": dg.MetadataValue.md(markdown_table(inputs.promotions.select(
            "blueprint", "to_stage", "decision", "deflated_sharpe", "pbo", "oos_sharpe"))
            if inputs.promotions.height else "no blueprint in this study")})
    yield check


def _sheet_links(wh, study: str, folder: Path) -> dict[str, str]:
    """Blueprint (or ``portfolio:NAME``) -> its tear sheet's path relative to ``folder``
    (the report's), from the latest ``tear_sheets`` rows; none before the first."""
    rows = wh.study_rows("tear_sheets", study)
    if rows is None or rows.is_empty():
        return {}
    out = {}
    for r in rows.iter_rows(named=True):
        key = r["name"] if r["kind"] == "blueprint" else f"portfolio:{r['name']}"
        out[key] = Path(os.path.relpath(r["path"], folder)).as_posix()
    return out


def _report_inputs(reg, study, wh, folder: Path) -> ReportInputs:
    """The frames of the report, read from the warehouse (empty where not materialized)."""
    def table(name: str) -> pl.DataFrame:
        frame = wh.study_rows(name, study.name)
        return pl.DataFrame() if frame is None else frame.drop("study", strict=False)

    decisions = table("promotion_decisions")
    results = table("walkforward_results")
    folds = (results.filter(pl.col("sample") == "test").select(
        "blueprint", "fold", "kind", "start", "end", "params", "is_sharpe", "sharpe",
        "total_return", "max_drawdown", "trades").sort("blueprint", "fold")
        if results.height else pl.DataFrame())
    fdr = table("phase2_fdr")
    funnel = pl.DataFrame({"stage": ["hypotheses", "tested", "discovered (q)",
                                     "economic (costs)", "stable (survivors)"],
                           "hypotheses": [fdr.height, *(int(fdr.select(e.sum()).item())
                                          for e in (pl.col("status") == TESTED,
                                                    pl.col("discovered"),
                                                    pl.col("discovered") & pl.col("economic"),
                                                    pl.col("survivor")))]}) \
        if fdr.height else pl.DataFrame()
    boxes = study_boxes(list(study.symbols), study.start, study.end)
    try:
        bars = wh.read(BASE_BARS, symbol_layout("ts_open"), boxes).filter(
            pl.col("market") == "perp").select("symbol", "ts_open", "open", "close")
        events = wh.read("event_table", symbol_layout("ts"), boxes).select(
            "event_type", "symbol", "ts", "direction")
        curves = event_study(bars, events, before=EVENT_WINDOW[0], after=EVENT_WINDOW[1])
        data_hash = frame_hash({"bars": bars, "events": events})
    except WarehouseError:
        curves, data_hash = pl.DataFrame(), ""
    promotions = (decisions.select("blueprint", "from_stage", "to_stage", "decision",
                                   "reasons", "deflated_sharpe", "pbo", "oos_sharpe",
                                   "oos_max_drawdown", pl.col("oos_trades").alias("trades"))
                  if decisions.height else pl.DataFrame())
    return ReportInputs(
        study=study.name, window=(study.start, study.end),
        spec_hashes=study_files(reg, study.name),
        dataset_hash=data_hash, code_commit=code_commit(),
        equity=_curves(table("backtest_equity")), oos_equity=table("walkforward_equity"),
        folds=folds, event_curves=curves, funnel=funnel, promotions=promotions,
        funding=_funding(table("backtest_metrics"), table("walkforward_summary")),
        compare_with=study.compare_with, comparisons=_comparisons(wh, study),
        portfolio_metrics=table("portfolio_metrics"), portfolio_equity=table("portfolio_equity"),
        portfolio_weights=table("portfolio_weights"), alpha_model=table("alpha_model"),
        alpha_expectancy=table("expectancy_report"),
        metrics=_metrics(table("strategy_blueprints"), table("backtest_metrics"),
                         table("walkforward_summary"), decisions),
        survivors=fdr.filter(pl.col("survivor")).sort("event_type", "q") if fdr.height
        else pl.DataFrame(), sheets=_sheet_links(wh, study.name, folder))


def _metrics(catalog: pl.DataFrame, backtests: pl.DataFrame, summary: pl.DataFrame,
             decisions: pl.DataFrame) -> pl.DataFrame:
    """One row per blueprint: its source, backtest and walk-forward figures and decision
    (``ReportInputs.metrics``), as stored."""
    if catalog.is_empty():
        return pl.DataFrame()
    out = catalog.select("blueprint", "source")
    for frame, cols in ((backtests, ("total_return", "sharpe", "max_drawdown", "trades",
                                     "win_rate", "fee_drag")),
                        (summary, ("oos_sharpe", "deflated_sharpe", "pbo", "stress_sharpe")),
                        (decisions, ("decision", "to_stage"))):
        have = [c for c in cols if c in frame.columns]
        if frame.height and have:
            out = out.join(frame.select("blueprint", *have), on="blueprint", how="left")
    return out


def _funding(metrics: pl.DataFrame, summary: pl.DataFrame) -> pl.DataFrame:
    """Each run's funding audit counts (``ReportInputs.funding``); tables written before
    the counts existed have none."""
    cols = ("blueprint", "funding_missing", "funding_constant_runs")
    frames = [f.select(*cols).with_columns(pl.lit(run).alias("run"))
              for f, run in ((metrics, "backtest"), (summary, "walk-forward"))
              if set(cols) <= set(f.columns)]
    return pl.concat(frames).select("blueprint", "run", *cols[1:]) if frames else pl.DataFrame()


def _curves(equity: pl.DataFrame) -> pl.DataFrame:
    return equity.select("blueprint", "ts", "equity", "drawdown") if equity.height else equity


defs = dg.Definitions(assets=[promotion_decisions, tear_sheets, research_report])
