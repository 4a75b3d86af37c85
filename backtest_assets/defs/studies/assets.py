"""The study record: what a study reads, kept when it first runs and checked by every layer.

``study_record`` (partitioned by study) writes the study's window, symbols, event types,
capital, source and the hash of every spec file it reads (``core.studies``), and, on a
DuckLake warehouse, the lake snapshot it reads. Materialized again with the same specs it
changes nothing; with other specs it is refused, naming the files, and so is every research
asset of the study (:func:`recorded_study`). The research assets read the market tables at
the recorded snapshot (:func:`study_warehouse`): re-run after newer data landed, a study
reproduces its results.
"""


import datetime as dt

import dagster as dg
import polars as pl

from backtest_assets.core.studies import (
    RECORDS_TABLE,
    StudyDriftError,
    check_unchanged,
    record_of,
)
from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.shared import markdown_table, study_and, table_metadata
from backtest_assets.partitions import study_partitions_def
from backtest_assets.resources import (
    MarketSourceResource,
    SpecRegistryResource,
    WarehouseResource,
)
from backtest_assets.specs import SpecRegistry
from backtest_assets.specs.models import StudySpec
from backtest_assets.warehouse import Box, PartitionLayout, Warehouse, WarehouseError

BY_STUDY = PartitionLayout(value_dims={"_key": "study"})


def stored_record(wh: Warehouse, name: str) -> pl.DataFrame | None:
    """The record row of study ``name``, or None when it has none."""
    try:
        return wh.read(RECORDS_TABLE, BY_STUDY, [Box(equals=(("study", name),))])
    except WarehouseError:
        return None


def study_warehouse(wh: Warehouse, name: str) -> Warehouse:
    """``wh`` reading the market tables at the snapshot study ``name`` recorded (as it is,
    when the record holds none: a DuckDB-file warehouse, or a record older than snapshots)."""
    record = stored_record(wh, name)
    if record is None or record.is_empty() or "lake_snapshot" not in record.columns:
        return wh
    return wh.pinned(record["lake_snapshot"][0])


def recorded_study(reg: SpecRegistry, wh: Warehouse, name: str):
    """Study ``name``'s spec, after checking its record holds today's specs (else a
    ``dg.Failure`` naming each changed file and both hashes)."""
    try:
        current = record_of(reg, name, source="")
        check_unchanged(name, stored_record(wh, name), current)
    except (KeyError, StudyDriftError) as exc:
        raise dg.Failure(description=str(exc).strip('"')) from None
    return reg.studies[name]


def study_step(context: dg.AssetExecutionContext, dim: str, specs: SpecRegistryResource,
               warehouse: WarehouseResource) -> tuple[SpecRegistry, Warehouse, StudySpec, str]:
    """(registry, warehouse, the recorded study, the value of ``dim``) of a one-partition
    step of a study x ``dim`` asset (refused when the study's specs changed)."""
    name, value = study_and(context, dim)
    reg = specs.registry()
    wh = warehouse.warehouse()
    study = recorded_study(reg, wh, name)
    return reg, study_warehouse(wh, name), study, value


@dg.asset(
    partitions_def=study_partitions_def,
    group_name="studies",
    pool="duckdb",
    kinds={"duckdb", "yaml"},
    metadata={"partition_expr": "study"},
    check_specs=[dg.AssetCheckSpec(
        "specs_unchanged", asset="study_record", blocking=True,
        partitions_def=study_partitions_def,
        description="the study's spec files hash as when it was first recorded")],
)
def study_record(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                 market_source: MarketSourceResource, warehouse: WarehouseResource):
    """One row per study: window, symbols, event types, capital, source, spec hashes."""
    name = context.partition_key
    reg = specs.registry()
    try:
        record = record_of(reg, name, source=market_source.kind)
    except KeyError as exc:
        raise dg.Failure(description=str(exc).strip('"')) from None
    wh = warehouse.warehouse()
    stored = stored_record(wh, name)
    if stored is not None and not stored.is_empty():
        try:
            check_unchanged(name, stored, record)
        except StudyDriftError as exc:
            yield dg.AssetCheckResult(check_name="specs_unchanged", passed=False,
                                      description=str(exc))
            raise dg.Failure(description=str(exc)) from None
        frame = stored  # the first record stands
    else:
        frame = record.frame(code_commit(), dt.datetime.now(dt.UTC).replace(tzinfo=None),
                             lake_snapshot=wh.snapshot())
    yield dg.Output(frame, metadata={
        **table_metadata(frame), "study_hash": frame["study_hash"][0],
        "window": f"{frame['start'][0]}..{frame['end'][0]}",
        "symbols": ", ".join(frame["symbols"][0]), "source": frame["source"][0],
        "lake_snapshot": str(frame["lake_snapshot"][0]) if "lake_snapshot" in frame.columns
        and frame["lake_snapshot"][0] is not None else "none (DuckDB file)",
        "spec_files": dg.MetadataValue.md(markdown_table(pl.DataFrame(
            {"file": list(record.spec_hashes),
             "sha256": [h[:16] for h in record.spec_hashes.values()]})))})
    yield dg.AssetCheckResult(check_name="specs_unchanged", passed=True)


defs = dg.Definitions(assets=[study_record])
