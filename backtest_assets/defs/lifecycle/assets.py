"""The lifecycle beyond the backtest: the demo stage and the run epochs.

The demo stage: blueprints promoted to ``demo`` paper-traded forward, one ingested day at a
time (:mod:`backtest_assets.lifecycle.demo`).

``demo_days`` is partitioned by day, like the ingest. For a day D it finds every blueprint
whose study's ``promotion_decisions`` moved it to ``demo`` and whose demo is still running
(its last ``demo_days`` row is not ``live`` or ``archived``), and, when D is after the
study's end, paper-trades it from the study's next day through D (the bars before the demo
are history). It writes D's row per blueprint: the day's equity, return, drawdown, trades
and liquidations, the days of demo on record with D, the consistency test against the
walk-forward's out-of-sample days, and the decision it leads to (``hold`` in demo,
``promote`` to live after ``min_demo_days`` consistent days, ``archive`` a decaying or
breaching demo, with the reasons). Its automation condition runs it when the day's bars,
features and events have landed, so the daily schedule and the downstream automation bring
one demo day per ingested day.

``run_epochs`` (per study, built with the report) records every backtest, walk-forward and
demo evaluation of the study's blueprints as an epoch (:mod:`backtest_assets.lifecycle.epochs`):
strategy, stage, the run that produced it, config, metrics, verdict and reason, one row each,
with ``config.json``, ``results.json``, ``summary.json`` and ``trades.jsonl`` per epoch under
the run's report folder (``<data root>/reports/<study>/<run id>/epochs/<blueprint>/``).
It reads ``demo_days`` without declaring it (a daily asset over every day since the
universe's start; the report runs after the demo days it shows).
"""

import dataclasses
import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandera.polars as pa
import polars as pl

from backtest_assets.defs.backtest.market import StudyData
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    LANDED,
    blocking_checks,
    markdown_table,
    refuse_failed,
    report_folder,
    schema_result,
)
from backtest_assets.defs.studies.assets import recorded_study
from backtest_assets.lifecycle.demo import (
    DEMO_DAY_SCHEMA,
    demo_start,
    evidence,
    expectation,
    forward,
)
from backtest_assets.lifecycle.epochs import (
    EPOCH_SCHEMA,
    FILES,
    Epoch,
    read_epoch,
    write_epoch,
)
from backtest_assets.partitions import (
    BASE_BARS,
    daily_partitions_def,
    study_blueprint_key,
    study_partitions_def,
)
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.specs.models import PromotionGate, StrategySpec, StudySpec
from backtest_assets.specs.registry import SpecRegistry
from backtest_assets.strategies.catalog import load_blueprint
from backtest_assets.strategies.promotion import STAGES, decide
from backtest_assets.strategies.run import funding_policy
from backtest_assets.walkforward.evaluate import Market
from backtest_assets.warehouse import Warehouse

DEMO_SCHEMA = {"study": pl.String, "blueprint": pl.String, "spec_hash": pl.String,
               "ts": pl.Datetime("us"), **DEMO_DAY_SCHEMA, "demo_days": pl.Int64,
               "t_stat": pl.Float64, "demo_sharpe": pl.Float64, "stage": pl.String,
               "decision": pl.String, "reasons": pl.String}
DEMO_MODEL = pa.DataFrameSchema({
    "study": pa.Column(pl.String), "blueprint": pa.Column(pl.String),
    "spec_hash": pa.Column(pl.String, pa.Check.str_length(64, 64)),
    "bars": pa.Column(pl.Int64, pa.Check.gt(0)),
    "equity": pa.Column(pl.Float64, pa.Check(
        lambda d: d.lazyframe.select(pl.col(d.key).is_finite()), name="finite")),
    "demo_days": pa.Column(pl.Int64, pa.Check.ge(1)),
    "stage": pa.Column(pl.String, pa.Check.isin(STAGES)),
    "decision": pa.Column(pl.String, pa.Check.isin(["promote", "hold", "archive"])),
    "reasons": pa.Column(pl.String, pa.Check.str_length(min_value=1)),
}, unique=["study", "blueprint", "date"])
DEMO_CHECKS = blocking_checks("demo_days", {
    "schema": "one row per demo blueprint and day; finite equity; a stage and its reasons",
}, daily_partitions_def)
_BY_DAY = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="date")
_ALL = dg.AllPartitionMapping()
UNKNOWN_RUN = "unknown"  # rows this instance did not materialize (written by another)
_STUDY_INPUTS = ("promotion_decisions", "walkforward_equity", "walkforward_summary")


@dg.asset(
    group_name="demo",
    pool="duckdb",
    kinds={"duckdb", "polars"},
    partitions_def=daily_partitions_def,
    metadata={"partition_expr": {"date": "ts"}},
    deps=[*(dg.AssetDep(a, partition_mapping=_BY_DAY)
            for a in (BASE_BARS, "pit_features", "event_table", "raw_funding_rates")),
          *(dg.AssetDep(a, partition_mapping=_ALL) for a in _STUDY_INPUTS)],
    # when the day's market data and research layers have landed (promotions do not start a
    # past day again); one run per day, in order, as the days arrive
    automation_condition=LANDED.ignore(dg.AssetSelection.assets(*_STUDY_INPUTS)),
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    check_specs=DEMO_CHECKS,
)
def demo_days(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
              warehouse: WarehouseResource):
    """The day's demo (paper) trading of every blueprint in demo, and its decision."""
    day = dt.date.fromisoformat(context.partition_key)
    reg, wh = specs.registry(), warehouse.warehouse()
    rows = []
    for study_name, names in in_demo(wh, day).items():
        study = recorded_study(reg, wh, study_name)
        if day <= study.end:
            continue
        try:
            rows += demo_rows(reg, wh, study, names, day)
        except ValueError as exc:
            raise dg.Failure(description=f"demo of study {study_name} on {day}: {exc}"
                             ) from None
    frame = pl.DataFrame(rows, schema=DEMO_SCHEMA) if rows else \
        pl.DataFrame(schema=DEMO_SCHEMA)
    checks = [schema_result("demo_days", frame, DEMO_MODEL)]
    yield from refuse_failed(checks, "demo_days")
    yield dg.Output(frame, metadata={
        "rows": frame.height, **{f"stage_{s}": int((frame["stage"] == s).sum())
                                 for s in ("demo", "live", "archived")},
        "demo": dg.MetadataValue.md(markdown_table(frame.select(
            "study", "blueprint", "demo_days", "day_return", "equity", "t_stat", "stage",
            "reasons"), {"day_return": ".2%", "equity": ",.2f", "t_stat": ".2f"}))})
    yield from checks


def in_demo(wh: Warehouse, day: dt.date) -> dict[str, dict[str, str]]:
    """study -> {blueprint: spec hash} of the blueprints in demo on ``day``: their study's
    decision put them in demo or comes from their demo (one that has ended since shows
    live or archived there), and no demo day before ``day`` made them live or archived. A
    day run again after the demo ended therefore gives its rows again."""
    decisions = wh.study_rows("promotion_decisions")
    if decisions is None:
        return {}
    promoted = decisions.filter((pl.col("to_stage") == "demo") | (pl.col("from_stage") == "demo"))
    done = wh.study_rows("demo_days")
    ended = set() if done is None else {
        (r["study"], r["blueprint"], r["spec_hash"]) for r in done.filter(
            (pl.col("date") < day) & pl.col("stage").is_in(["live", "archived"])).iter_rows(
            named=True)}
    out: dict[str, dict[str, str]] = {}
    for r in promoted.sort("study", "blueprint").iter_rows(named=True):
        if (r["study"], r["blueprint"], r["spec_hash"]) not in ended:
            out.setdefault(r["study"], {})[r["blueprint"]] = r["spec_hash"]
    return out


def demo_rows(reg: SpecRegistry, wh: Warehouse, study: StudySpec, names: dict[str, str],
              day: dt.date) -> list[dict]:
    """``day``'s demo row of each blueprint ``names`` (name -> spec hash) of ``study``."""
    catalog = wh.study_rows("strategy_blueprints", study.name)
    rows = {r["blueprint"]: r for r in (catalog.iter_rows(named=True)
                                        if catalog is not None else [])}
    blueprints = [load_blueprint(rows[n]) for n in names
                  if n in rows and rows[n]["spec_hash"] == names[n]]
    if not blueprints:
        return []
    data = StudyData.read(wh, dataclasses.replace(study, end=day), blueprints)
    stored = wh.study_rows("demo_days", study.name)
    oos = wh.study_rows("walkforward_equity", study.name)
    wf = wh.study_rows("walkforward_summary", study.name)
    summary = {} if wf is None else {r["blueprint"]: r for r in wf.iter_rows(named=True)}
    gate = reg.gates.promotion
    out = []
    for bp in blueprints:
        h = names[bp.name]
        panel, features, own_funding = data.for_blueprint(bp, reg.base_minutes,
                                                            study.missing_marks)
        venue = reg.fees.venues[bp.venue or reg.fees.default_venue]
        market = Market(panel, features, data.events, own_funding, venue, study.capital,
                        funding_policy(study, bp))
        first = np.datetime64(study.end + dt.timedelta(days=1))
        record = _record(stored, bp, h, day)
        days = forward(bp, market, demo_start(panel.ts, first), on_record=record)
        today = days.filter(pl.col("date") == day)
        if today.is_empty():  # no bar of the day: nothing to record
            continue
        # the demo's record: the days on record and this one (a day left unmaterialized is
        # not a demo day)
        known = days.filter(pl.col("date").is_in([*record["date"].to_list(), day]))
        own = None if oos is None else oos.filter(pl.col("blueprint") == bp.name)
        ev = evidence(known, expectation(own if own is not None else pl.DataFrame(
            schema={"ts": pl.Datetime("us"), "equity": pl.Float64}), study.capital), gate)
        d = decide(summary.get(bp.name), gate, from_stage="demo", demo=ev)
        out.append({"study": study.name, "blueprint": bp.name, "spec_hash": h,
                    "ts": dt.datetime.combine(day, dt.time()), **today.row(0, named=True),
                    "demo_days": ev.days, "t_stat": ev.z, "demo_sharpe": ev.sharpe,
                    "stage": d.to_stage, "decision": d.decision,
                    "reasons": "; ".join(d.reasons)})
    return out


def _record(stored: pl.DataFrame | None, bp: StrategySpec, spec_hash: str, day: dt.date
            ) -> pl.DataFrame:
    if stored is None:
        return pl.DataFrame(schema=DEMO_DAY_SCHEMA)
    return stored.filter((pl.col("blueprint") == bp.name) & (pl.col("spec_hash") == spec_hash)
                         & (pl.col("date") < day)).select(list(DEMO_DAY_SCHEMA)).sort("date")


EPOCH_MODEL = pa.DataFrameSchema({
    "study": pa.Column(pl.String), "blueprint": pa.Column(pl.String),
    "stage": pa.Column(pl.String, pa.Check.isin(["backtest", "walkforward", "demo"])),
    "run_id": pa.Column(pl.String, pa.Check.str_length(min_value=1)),
    "verdict": pa.Column(pl.String, pa.Check.isin(["promote", "hold", "archive"])),
    "to_stage": pa.Column(pl.String, pa.Check.isin(STAGES)),
    "reason": pa.Column(pl.String, pa.Check.str_length(min_value=1)),
}, unique=["study", "blueprint", "stage", "evaluation"])
EPOCH_CHECKS = blocking_checks("run_epochs", {
    "schema": "one epoch per blueprint, stage and evaluation; a run, a verdict and a reason",
    "files_written": "each epoch's four files exist and its summary.json holds its verdict",
}, study_partitions_def)


@dg.asset(
    partitions_def=study_partitions_def,
    group_name="report",
    pool="duckdb",
    kinds={"duckdb", "polars", "json"},
    metadata={"partition_expr": "study"},
    deps=[dg.AssetDep("strategy_blueprints"), dg.AssetDep("promotion_decisions"),
          *(dg.AssetDep(a, partition_mapping=BY_STUDY_DIM)
            for a in ("backtest_trades", "backtest_metrics", "walkforward_summary"))],
    check_specs=EPOCH_CHECKS,
)
def run_epochs(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
               warehouse: WarehouseResource):
    """Every evaluation of the study's blueprints as an epoch, with its files."""
    reg, wh = specs.registry(), warehouse.warehouse()
    study = recorded_study(reg, wh, context.partition_key)
    root = report_folder(warehouse, study.name, context) / "epochs"
    rows = []
    for epoch, trades in study_epochs(context.instance, wh, study, reg.gates.promotion):
        rows.append(epoch.row(write_epoch(root, epoch, trades)))
    frame = pl.DataFrame(rows, schema=EPOCH_SCHEMA) if rows else \
        pl.DataFrame(schema=EPOCH_SCHEMA)
    missing = [f"{r['folder']}: {n}" for r in frame.iter_rows(named=True) for n in FILES
               if not (Path(r["folder"]) / n).is_file()]
    wrong = [r["folder"] for r in frame.iter_rows(named=True) if not missing
             and read_epoch(Path(r["folder"]))["summary.json"]["verdict"] != r["verdict"]]
    checks = [schema_result("run_epochs", frame, EPOCH_MODEL),
              dg.AssetCheckResult(check_name="files_written", passed=not (missing or wrong),
                                  description="; ".join([*missing, *wrong][:5]) or None,
                                  metadata={"epochs": frame.height})]
    yield from refuse_failed(checks, "run_epochs")
    counts = frame.group_by("stage", "verdict").len().sort("stage", "verdict")
    yield dg.Output(frame, metadata={
        "epochs": frame.height, "folder": dg.MetadataValue.path(str(root)),
        "by_stage": dg.MetadataValue.md(markdown_table(counts))})
    yield from checks


def study_epochs(instance: dg.DagsterInstance, wh: Warehouse, study: StudySpec,
                 gate: PromotionGate) -> list[tuple[Epoch, pl.DataFrame | None]]:
    """The epochs of ``study``'s blueprints (lifecycle.epochs) and each one's trades. A
    walk-forward epoch's verdict is the decision its evidence gets on leaving the backtest
    (the gates of ``gate``), whatever the demo decided since."""
    def table(name: str) -> pl.DataFrame:
        rows = wh.study_rows(name, study.name)
        return pl.DataFrame() if rows is None else rows

    catalog, metrics, trades = (table(t) for t in ("strategy_blueprints", "backtest_metrics",
                                                   "backtest_trades"))
    summary, demo = (table(t) for t in ("walkforward_summary", "demo_days"))
    by = {name: ({r["blueprint"]: r for r in f.iter_rows(named=True)} if f.height else {})
          for name, f in (("metrics", metrics), ("summary", summary))}
    window = f"{study.start}..{study.end}"
    names = catalog["blueprint"].to_list() if catalog.height else []
    keys = {n: str(study_blueprint_key(study.name, n)) for n in names}
    runs = {a: _run_ids(instance, a, list(keys.values()))
            for a in ("backtest_metrics", "walkforward_summary")}
    runs["demo_days"] = _run_ids(instance, "demo_days", sorted(
        {str(d) for d in demo["date"]}) if demo.height else [])
    out = []
    for row in catalog.iter_rows(named=True) if catalog.height else []:
        name, h = row["blueprint"], row["spec_hash"]
        config = {"spec": json.loads(row["spec_json"]), "source": row["source"],
                  "window": window, "capital": study.capital}
        m = by["metrics"].get(name)
        if m is not None:
            out.append((Epoch(
                study.name, name, h, "backtest", window,
                runs["backtest_metrics"].get(keys[name], UNKNOWN_RUN),
                config, _metrics(m), "hold", "backtest",
                f"backtested: {int(m['trades'])} trades; the walk-forward decides promotion"),
                trades.filter(pl.col("blueprint") == name).drop("study")
                if trades.height else None))
        w = by["summary"].get(name)
        if w is not None and w.get("spec_hash", h) == h:
            v = decide(w, gate, from_stage="backtest", backtested=True)
            out.append((Epoch(
                study.name, name, h, "walkforward", window,
                runs["walkforward_summary"].get(keys[name], UNKNOWN_RUN),
                config, _metrics(w), v.decision, v.to_stage, "; ".join(v.reasons)), None))
        mine = demo.filter((pl.col("blueprint") == name) & (pl.col("spec_hash") == h)) \
            if demo.height else demo
        for r in mine.sort("date").iter_rows(named=True) if mine.height else []:
            out.append((Epoch(
                study.name, name, h, "demo", str(r["date"]),
                runs["demo_days"].get(str(r["date"]), UNKNOWN_RUN),
                {**config, "demo_day": str(r["date"])}, _metrics(r), r["decision"],
                r["stage"], r["reasons"]), None))
    return out


def _metrics(row: dict) -> dict:
    skip = {"study", "blueprint", "spec_hash", "spec_json", "ts"}
    return {k: v for k, v in row.items() if k not in skip}


def _run_ids(instance: dg.DagsterInstance, asset: str, partitions: list[str]
             ) -> dict[str, str]:
    """partition -> the run of its latest materialization of ``asset`` (partitions the
    instance never materialized, e.g. rows written by another instance, are left out)."""
    if not partitions:
        return {}
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=partitions), limit=10_000).records
    out: dict[str, str] = {}
    for r in records:  # newest first
        out.setdefault(r.partition_key, r.run_id)
    return out


defs = dg.Definitions(assets=[demo_days, run_epochs])
