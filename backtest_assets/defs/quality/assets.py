"""Gate E-1: per event type, does it fire at a sane rate and join its features and labels?

One run per event type (``BackfillPolicy.multi_run(1)``) so that the blocking ``e1_gate``
check result belongs to that event type's partition: a failing type is blocked from
discovery, the others are not.
"""

import datetime as dt
import json

import dagster as dg
import polars as pl

from backtest_assets.events.quality import event_quality, quality_json
from backtest_assets.partitions import BASE_BARS, REGISTRY, event_type_partitions_def
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.warehouse import Box, PartitionLayout

REPORT_FILE = "event_quality_report.json"
_SCHEMA_CHECK = "schema"
E1_CHECK = "e1_gate"


def study_boxes(symbols: list[str], start: dt.date, end: dt.date) -> list[Box]:
    lo = dt.datetime.combine(start, dt.time())
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    return [Box(equals=(("symbol", s),), start=lo, end=hi) for s in symbols]


def _layout(time_col: str) -> PartitionLayout:
    return PartitionLayout(time_col=time_col, time_dim="date", value_dims={"symbol": "symbol"})


_ALL = dg.AllPartitionMapping()


@dg.asset(
    partitions_def=event_type_partitions_def,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    deps=[dg.AssetDep(a, partition_mapping=_ALL)
          for a in ("event_table", "pit_features", "forward_labels", BASE_BARS)],
    check_specs=[
        dg.AssetCheckSpec(E1_CHECK, asset="event_quality_report", blocking=True,
                          partitions_def=event_type_partitions_def,
                          description="prevalence and join rate within specs/gates.yaml e1"),
        dg.AssetCheckSpec(_SCHEMA_CHECK, asset="event_quality_report", blocking=True,
                          partitions_def=event_type_partitions_def,
                          description="one row per study symbol plus ALL"),
    ],
    group_name="quality",
    pool="duckdb",
    kinds={"duckdb", "polars"},
    metadata={"partition_expr": "event_type"},
)
def event_quality_report(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                         warehouse: WarehouseResource):
    """Per symbol and pooled: bars, events, prevalence per 10k bars, join rate, gate verdict."""
    event_type = context.partition_key
    reg = specs.registry()
    study = reg.default_study
    wh = warehouse.warehouse()
    boxes = study_boxes(list(study.symbols), study.start, study.end)
    spec = reg.events[event_type]
    feature_cols = sorted({f for _, f in spec.features()})
    label_cols = list(reg.label_bars())
    report = event_quality(
        event_type=event_type,
        events=wh.read("event_table", _layout("ts"), boxes).filter(
            pl.col("event_type") == event_type),
        bars=wh.read(BASE_BARS, _layout("ts_open"), boxes).filter(pl.col("market") == "perp"),
        features=wh.read("pit_features", _layout("ts_open"), boxes).select(
            "symbol", "ts_open", *feature_cols),
        labels=wh.read("forward_labels", _layout("ts_open"), boxes),
        feature_cols=feature_cols, label_cols=label_cols, gate=reg.gates.e1,
        symbols=list(study.symbols),
    )
    path = warehouse.root / "reports" / study.name / context.run.run_id / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = quality_json(report, gate=reg.gates.e1, spec_hashes=reg.spec_hashes,
                       window=(study.start, study.end))
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    pooled = report.filter(pl.col("symbol") == "ALL").row(0, named=True)
    yield dg.Output(report, metadata={
        "report_json": dg.MetadataValue.path(str(path)),
        "study": study.name, "window": f"{study.start}..{study.end}",
        "events": pooled["events"], "bars": pooled["bars"],
        "prevalence_per_10k": pooled["prevalence_per_10k"],
        "join_rate": pooled["join_rate"], "passed": pooled["passed"],
        "table": dg.MetadataValue.md(_markdown(report)),
    })
    yield dg.AssetCheckResult(
        check_name=_SCHEMA_CHECK,
        passed=report["symbol"].to_list() == [*study.symbols, "ALL"],
        description=f"rows for {report['symbol'].to_list()}")
    yield dg.AssetCheckResult(
        check_name=E1_CHECK, passed=bool(pooled["passed"]),
        description=pooled["reasons"] or "passed",
        metadata={"prevalence_per_10k": pooled["prevalence_per_10k"],
                  "join_rate": pooled["join_rate"], "events": pooled["events"]})


def _markdown(report: pl.DataFrame) -> str:
    cols = ["symbol", "bars", "events", "prevalence_per_10k", "join_rate", "passed", "reasons"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in report.select(cols).iter_rows():
        lines.append("| " + " | ".join(
            f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


defs = dg.Definitions(assets=[event_quality_report]) if REGISTRY.events else dg.Definitions()
