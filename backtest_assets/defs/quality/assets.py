"""Gate E-1: per event type, does it fire at a sane rate and join its features and labels?

One run per event type (``BackfillPolicy.multi_run(1)``) so that the blocking ``e1_gate``
check result belongs to that event type's partition: a failing type is blocked from
discovery, the others are not.
"""

import json

import dagster as dg
import polars as pl

from backtest_assets.core.studies import study_files
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    markdown_table,
    report_folder,
    schema_result,
    study_boxes,
    symbol_layout,
    table_metadata,
    warehouse_asset,
)
from backtest_assets.defs.studies.assets import study_step
from backtest_assets.events.quality import event_quality, quality_json
from backtest_assets.partitions import (
    BASE_BARS,
    REGISTRY,
    STUDY_EVENT_TYPE_EXPR,
    study_event_type_partitions_def,
)
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.schemas.research import E1_REPORT

REPORT_FILE = "event_quality_report.json"
_SCHEMA_CHECK = "schema"
E1_CHECK = "e1_gate"


_ALL = dg.AllPartitionMapping()


@dg.asset(
    deps=[*[dg.AssetDep(a, partition_mapping=_ALL)
            for a in ("event_table", "pit_features", "forward_labels", BASE_BARS)],
          dg.AssetDep("study_record", partition_mapping=BY_STUDY_DIM)],
    check_specs=[
        dg.AssetCheckSpec(E1_CHECK, asset="event_quality_report", blocking=True,
                          partitions_def=study_event_type_partitions_def,
                          description="prevalence and join rate within specs/gates.yaml e1"),
        dg.AssetCheckSpec(_SCHEMA_CHECK, asset="event_quality_report", blocking=True,
                          partitions_def=study_event_type_partitions_def,
                          description="columns, dtypes and values of the E-1 report model "
                                      "(schemas/research.py); one row per study symbol "
                                      "plus ALL"),
    ],
    **warehouse_asset("quality", STUDY_EVENT_TYPE_EXPR,
                      partitions_def=study_event_type_partitions_def,
                      backfill_policy=dg.BackfillPolicy.multi_run(1)),
)
def event_quality_report(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                         warehouse: WarehouseResource):
    """Per symbol and pooled: bars, events, prevalence per 10k bars, join rate, gate verdict."""
    reg, wh, study, event_type = study_step(context, "event_type", specs, warehouse)
    boxes = study_boxes(list(study.symbols), study.start, study.end)
    spec = reg.events[event_type]
    feature_cols = sorted({f for _, f in spec.features()})
    label_cols = list(reg.label_bars())
    report = event_quality(
        event_type=event_type,
        events=wh.read("event_table", symbol_layout("ts"), boxes).filter(
            pl.col("event_type") == event_type),
        bars=wh.read(BASE_BARS, symbol_layout("ts_open"), boxes).filter(pl.col("market") == "perp"),
        features=wh.read("pit_features", symbol_layout("ts_open"), boxes).select(
            "symbol", "ts_open", *feature_cols),
        labels=wh.read("forward_labels", symbol_layout("ts_open"), boxes),
        feature_cols=feature_cols, label_cols=label_cols, gate=reg.gates.e1,
        symbols=list(study.symbols),
    ).select(pl.lit(study.name).alias("study"), pl.all())
    path = report_folder(warehouse, study.name, context) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # the spec files of the study's record (not every study's file in specs/studies)
    doc = quality_json(report.drop("study"), gate=reg.gates.e1,
                       spec_hashes=study_files(reg, study.name), window=(study.start, study.end))
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    pooled = report.filter(pl.col("symbol") == "ALL").row(0, named=True)
    yield dg.Output(report, metadata={
        **table_metadata(report),
        "report_json": dg.MetadataValue.path(str(path)),
        "study": study.name, "window": f"{study.start}..{study.end}",
        "events": pooled["events"], "bars": pooled["bars"],
        "prevalence_per_10k": pooled["prevalence_per_10k"],
        "join_rate": pooled["join_rate"], "passed": pooled["passed"],
        "table": dg.MetadataValue.md(markdown_table(report.select(
            "symbol", "bars", "events", "prevalence_per_10k", "join_rate", "passed", "reasons"))),
    })
    schema = schema_result("event_quality_report", report, E1_REPORT)
    rows_ok = report["symbol"].to_list() == [*study.symbols, "ALL"]
    yield dg.AssetCheckResult(
        check_name=_SCHEMA_CHECK, passed=bool(schema.passed and rows_ok),
        description="; ".join([*([] if schema.passed else [schema.description]),
                               *([] if rows_ok else
                                 [f"rows for {report['symbol'].to_list()}"])]) or None)
    yield dg.AssetCheckResult(
        check_name=E1_CHECK, passed=bool(pooled["passed"]),
        description=pooled["reasons"] or "passed",
        metadata={"prevalence_per_10k": pooled["prevalence_per_10k"],
                  "join_rate": pooled["join_rate"], "events": pooled["events"]})


defs = dg.Definitions(assets=[event_quality_report]) if REGISTRY.events else dg.Definitions()
