"""Phase 2 per event type: the hypotheses' samples, p-values, FDR and gates, and the report.

Discovery reads only event types that passed Gate E-1: in a run with ``event_quality_report``
its blocking ``e1_gate`` check stops these assets, and on its own ``phase2_candidates_raw``
reads the E-1 verdict from the warehouse and refuses a failed type.
"""

import json

import dagster as dg
import polars as pl

from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.discovery.checks import (
    FDR_CHECKS,
    PVALS_CHECKS,
    REPORT_CHECKS,
    SAMPLE_CHECKS,
    check_fdr,
    check_pvals,
    check_report,
    check_sample,
)
from backtest_assets.defs.shared import (
    guarded_output,
    markdown_table,
    refuse_failed,
    report_folder,
    study_boxes,
    symbol_layout,
    warehouse_asset,
    with_study,
)
from backtest_assets.defs.studies.assets import study_step, study_warehouse
from backtest_assets.discovery import phase2
from backtest_assets.partitions import (
    REGISTRY,
    STUDY_EVENT_TYPE_EXPR,
    study_event_type_partitions_def,
)
from backtest_assets.resources import SpecRegistryResource, WarehouseResource, WarehouseWrite
from backtest_assets.strategies.catalog import survivor_rows
from backtest_assets.warehouse import Box, PartitionLayout, SideWrite

INPUTS_TABLE = "phase2_inputs"
BY_STUDY_EVENT_TYPE = PartitionLayout(value_dims=STUDY_EVENT_TYPE_EXPR)
_COMMON = warehouse_asset("discovery", STUDY_EVENT_TYPE_EXPR,
                          partitions_def=study_event_type_partitions_def,
                          backfill_policy=dg.BackfillPolicy.multi_run(1))
_ALL = dg.AllPartitionMapping()


def _specs(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
           warehouse: WarehouseResource):
    """(the study's spec, after its record check; the event type; Phase 2's specs)."""
    reg, _, study, event_type = study_step(context, "event_type", specs, warehouse)
    return study, event_type, reg.phase2()


def _of_study(box_study: str, event_type: str) -> list[Box]:
    return [Box(equals=(("event_type", event_type), ("study", box_study)))]


@dg.asset(
    ins={"e1": dg.AssetIn("event_quality_report")},
    deps=[dg.AssetDep(a, partition_mapping=_ALL)
          for a in ("event_table", "forward_labels", "pit_features")],
    check_specs=SAMPLE_CHECKS,
    **_COMMON,
)
def phase2_candidates_raw(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                          warehouse: WarehouseResource, e1: pl.DataFrame):
    """Every hypothesis of the event type with its sample: one row per (hypothesis, event)."""
    study, event_type, p2 = _specs(context, specs, warehouse)
    verdict = e1.filter(pl.col("symbol") == "ALL")
    if verdict.is_empty() or not verdict["passed"].item():
        reasons = verdict["reasons"].item() if verdict.height else "no E-1 report"
        raise dg.Failure(description=f"{event_type} did not pass Gate E-1 ({reasons}): "
                                     "discovery does not read it")
    reg = specs.registry()
    wh = study_warehouse(warehouse.warehouse(), study.name)
    boxes = study_boxes(list(study.symbols), study.start, study.end)
    regime = p2.gate.stability.regime_feature
    inputs = phase2.Phase2Inputs(
        event_type=event_type, symbols=list(study.symbols),
        events=wh.read("event_table", symbol_layout("ts"), boxes).filter(
            pl.col("event_type") == event_type).select("symbol", "ts", "direction"),
        labels=wh.read("forward_labels", symbol_layout("ts_open"), boxes).select(
            "symbol", "ts_open", *p2.horizon_bars),
        regimes=wh.read("pit_features", symbol_layout("ts_open"), boxes).select(
            "symbol", "ts_open", regime),
        regime_feature=regime, interval_minutes=reg.base_minutes)
    sample = with_study(phase2.samples(inputs, p2.families, p2.gate), study.name)
    dataset_hash = phase2.frame_hash({"events": inputs.events, "labels": inputs.labels,
                                      "regimes": inputs.regimes})
    side = pl.DataFrame({"event_type": [event_type], "study": [study.name],
                         "window_start": [study.start], "window_end": [study.end],
                         "events": [inputs.events.height], "dataset_hash": [dataset_hash]})
    write = WarehouseWrite(sample, side=[SideWrite(INPUTS_TABLE, side,
                                                   side.select("study", "event_type"))])
    yield from guarded_output(
        context, write,
        list(check_sample(sample, phase2.hypotheses(event_type, study.symbols, p2.families))),
        metadata={"rows": sample.height, "events": inputs.events.height,
                  "dataset_hash": dataset_hash})


@dg.asset(check_specs=PVALS_CHECKS, **_COMMON)
def phase2_pvals(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                 warehouse: WarehouseResource, phase2_candidates_raw: pl.DataFrame):
    """Per hypothesis: n, mean signed return, clusters, cluster-robust t, p, status."""
    study, event_type, p2 = _specs(context, specs, warehouse)
    reg = specs.registry()
    hyps = phase2.hypotheses(event_type, study.symbols, p2.families)
    table = with_study(phase2.pvalues(phase2_candidates_raw.drop("study"), hyps, p2.families,
                                       p2.gate, p2.horizon_bars, reg.base_minutes), study.name)
    yield from guarded_output(context, table, list(check_pvals(table, hyps)), metadata={
        "hypotheses": table.height,
        "tested": int((table["status"] == phase2.TESTED).sum()),
        "insufficient_sample": int((table["status"] == phase2.INSUFFICIENT).sum()),
        "untestable": int((table["status"] == phase2.UNTESTABLE).sum()),
        "inference": p2.families.inference})


@dg.asset(check_specs=FDR_CHECKS, **_COMMON)
def phase2_fdr(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
               warehouse: WarehouseResource, phase2_candidates_raw: pl.DataFrame,
               phase2_pvals: pl.DataFrame):
    """q-values within families, economic and stability gates, survivors and reasons."""
    study, _, p2 = _specs(context, specs, warehouse)
    table = with_study(phase2.fdr(phase2_pvals.drop("study"),
                                   phase2_candidates_raw.drop("study"), p2.families, p2.gate,
                                   p2.fees), study.name)
    yield from guarded_output(
        context, table, list(check_fdr(table, phase2_pvals, p2.families.fdr_q)),
        metadata={"discovered": int(table["discovered"].sum()),
                  "survivors": int(table["survivor"].sum()),
                  "survivors_table": dg.MetadataValue.md(survivors_markdown(table)),
                  # read by the blueprint partitions sensor (defs/automation.py)
                  "survivor_rows": dg.MetadataValue.json(survivor_rows(table))})


SURVIVOR_COLUMNS = ("rule_template", "horizon", "symbol", "n", "clusters", "mean", "t", "p",
                    "q")


def survivors_markdown(table: pl.DataFrame) -> str:
    """The survivors as a table for the UI: mean in bps, q and p to 2 significant digits."""
    survivors = table.filter(pl.col("survivor")).sort("rule_template", "horizon", "symbol")
    if survivors.is_empty():
        return "no survivor"
    return markdown_table(survivors.select(*SURVIVOR_COLUMNS[:5],
                                           (pl.col("mean") * 1e4).alias("mean_bps"),
                                           *SURVIVOR_COLUMNS[6:]),
                          {"mean_bps": ".1f", "t": ".2f", "p": ".2g", "q": ".2g"})


@dg.asset(
    deps=[dg.AssetDep("phase2_candidates_raw")],
    check_specs=REPORT_CHECKS,
    **{**_COMMON, "kinds": {"duckdb", "polars", "json", "parquet"}},
)
def phase2_report(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                  warehouse: WarehouseResource, phase2_pvals: pl.DataFrame,
                  phase2_fdr: pl.DataFrame):
    """Survivors, counts per family, spec hashes, dataset hash and code commit; also as files."""
    study, event_type, p2 = _specs(context, specs, warehouse)
    wh = warehouse.warehouse()
    this_type = _of_study(study.name, event_type)
    inputs = wh.read(INPUTS_TABLE, BY_STUDY_EVENT_TYPE, this_type)
    sample = wh.read("phase2_candidates_raw", BY_STUDY_EVENT_TYPE, this_type)
    counts = phase2.family_counts(phase2_fdr)
    survivors = phase2_fdr.filter(pl.col("survivor")).sort("family", "symbol")
    doc = {
        "event_type": event_type,
        "study": {"name": study.name, "window": [study.start.isoformat(),
                                                 study.end.isoformat()],
                  "symbols": list(study.symbols)},
        "fdr": {"method": p2.families.fdr_method, "q": p2.families.fdr_q,
                "family_by": list(p2.families.family_by)},
        "inference": {"test": p2.families.inference,
                      "cluster_lag_multiple": p2.families.cluster_lag_multiple},
        "hypotheses": phase2_fdr.height,
        "families": counts.to_dicts(),
        "survivors": _rounded(survivors.select(
            "hypothesis_id", "rule_template", "horizon", "symbol", "n", "clusters", "mean", "t",
            "p", "q",
            *[c for c in survivors.columns if c.startswith("net_")]).to_dicts()),
        "spec_hashes": p2.spec_hashes,
        "dataset_hash": inputs["dataset_hash"].item() if inputs.height else None,
        "code_commit": code_commit(),
    }
    checks = list(check_report(doc, phase2_fdr))
    yield from refuse_failed(checks, f"phase2_report {event_type}", " (no report files)")
    folder = report_folder(warehouse, study.name, context) / "phase2" / event_type
    folder.mkdir(parents=True, exist_ok=True)
    sample.write_parquet(folder / "candidates_raw.parquet")
    phase2_pvals.write_parquet(folder / "pvals.parquet")
    phase2_fdr.write_parquet(folder / "fdr.parquet")
    (folder / "report.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    yield dg.MaterializeResult(check_results=checks, metadata={
        "report_json": dg.MetadataValue.path(str(folder / "report.json")),
        "hypotheses": phase2_fdr.height, "survivors": survivors.height,
        "dataset_hash": doc["dataset_hash"], "code_commit": doc["code_commit"],
        "families": dg.MetadataValue.md(markdown_table(counts)),
        "survivor_table": dg.MetadataValue.md(markdown_table(survivors.select(
            "rule_template", "horizon", "symbol", "n", "clusters", "mean", "t", "q"))),
    })


def _rounded(rows: list[dict]) -> list[dict]:
    return [{k: round(v, 8) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


defs = dg.Definitions(
    assets=[phase2_candidates_raw, phase2_pvals, phase2_fdr, phase2_report]
) if REGISTRY.events else dg.Definitions()
