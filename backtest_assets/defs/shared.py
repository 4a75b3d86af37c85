"""Wiring shared by the layers: partition keys of a run, and checks evaluated before a write."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from backtest_assets.core.keys import InvalidKeyError, validate_date, validate_symbol
from backtest_assets.core.lineage import Dep, LineageSpec, LineageWrite, digest, version_of
from backtest_assets.partitions import (
    UNIVERSE,
    date_symbol_partitions_def,
    last_partition_day,
    universe_listings,
)
from backtest_assets.resources.io_manager import WarehouseWrite
from backtest_assets.schemas.checks import CheckOutcome, FrameContract, evaluate
from backtest_assets.specs import SpecRegistry, load_registry
from backtest_assets.warehouse import Box, PartitionLayout

# Materialize a partition when its upstream partitions land, for every day: Dagster's eager
# condition looks at the latest day only, and a catch-up of several days must flow down too.
# Evaluated by the ``downstream_automation`` sensor (defs.automation).
LANDED = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())


# A study-partitioned asset reading (or read by) a study x something asset: the same study.
BY_STUDY_DIM = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="study")


def study_and(context: dg.AssetExecutionContext, dim: str) -> tuple[str, str]:
    """(study, the other dimension's value) of a one-partition step of a study x ``dim``
    asset."""
    key = context.partition_key
    dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else \
        context.assets_def.partitions_def.get_partition_key_from_str(key).keys_by_dimension
    return dims["study"], dims[dim]


def with_study(frame: pl.DataFrame, study: str) -> pl.DataFrame:
    """``frame`` with the study's name as its first column (every research table has it)."""
    return frame.select(pl.lit(study, pl.String).alias("study"), pl.exclude("study"))


def study_keys(context: dg.AssetExecutionContext, dim: str) -> tuple[str, list[str]]:
    """(study, values of ``dim``) of a step over study x ``dim`` keys of one study."""
    pairs = [context.assets_def.partitions_def.get_partition_key_from_str(str(k)).keys_by_dimension
             for k in context.partition_keys]
    studies = sorted({p["study"] for p in pairs})
    if len(studies) != 1:
        raise dg.Failure(description=f"a run covers one study at a time; these keys span "
                                     f"{', '.join(studies)}")
    return studies[0], sorted({p[dim] for p in pairs})


def warehouse_asset(group: str, partition_expr: str | Mapping[str, str], *,
                    partitions_def: dg.PartitionsDefinition = date_symbol_partitions_def,
                    backfill_policy: dg.BackfillPolicy | None = None,
                    automation_condition: dg.AutomationCondition | None = None,
                    lineage_specs: Sequence[str] = (), lineage_source: bool = False
                    ) -> dict[str, Any]:
    """Decorator settings every asset written to the warehouse shares.

    Single-run backfills over ranges by default (DESIGN.md), the ``duckdb`` pool (one writer),
    where the partition dimensions live in its table (``partition_expr``), and when it
    materializes by itself (``automation_condition``, see ``defs.automation``).
    A date x symbol asset's keys are stale when the spec files under ``lineage_specs``
    (paths or folders of specs/) change, or the market source when ``lineage_source``
    (see :func:`lineage_spec`).
    """
    lineage = {"lineage_specs": list(lineage_specs), "lineage_source": lineage_source}
    return dict(
        automation_condition=automation_condition,
        group_name=group,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy or dg.BackfillPolicy.single_run(),
        pool="duckdb",
        kinds={"duckdb", "polars"},
        metadata={"partition_expr": partition_expr,
                  **(lineage if partitions_def is date_symbol_partitions_def else {})},
    )


def date_symbol_keys(context: dg.AssetExecutionContext) -> list[tuple[dt.date, str]]:
    """The (date, symbol) keys this run materializes: one key, a range, or a key set."""
    return parse_date_symbol_keys(context.partition_keys)


def parse_date_symbol_keys(keys: Sequence[str]) -> list[tuple[dt.date, str]]:
    """Sorted (date, symbol) pairs of ``date|symbol`` keys, each validated before any use.

    Raises ``InvalidKeyError`` for a key that is not a plain ISO date and ticker.
    """
    out = []
    for key in keys:
        dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else \
            dict(zip(("date", "symbol"), str(key).split("|", 1), strict=False))
        if set(dims) != {"date", "symbol"}:
            raise InvalidKeyError(f"invalid partition key {key!r}: expected 'YYYY-MM-DD|SYMBOL'")
        out.append((validate_date(dims["date"]), validate_symbol(dims["symbol"])))
    return sorted(out)


def check_specs(asset: str, contract: FrameContract, extra: Sequence[str] = ()
                ) -> list[dg.AssetCheckSpec]:
    """One AssetCheckSpec per named check; ERROR checks block downstream assets."""
    warn_only = {"complete_days"}
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=name not in warn_only,
                          description=CHECK_DESCRIPTIONS.get(name, name))
        for name in [*contract.check_names, *extra]
    ]


CHECK_DESCRIPTIONS = {
    "schema": "columns, dtypes and nulls match the pandera model",
    "positive_prices": "open, high, low, close > 0",
    "non_negative_volumes": "volumes, counts and open interest >= 0",
    "ohlc_sanity": "low <= open, close <= high; taker-buy volume <= volume",
    "unique_keys": "no two rows share the key",
    "monotonic_time": "time strictly increases within each symbol (and market)",
    "row_count": "rows per day on the time grid and no more than its slots",
    "complete_days": "no missing slots; funding: no print missing at the symbol's interval "
                     "from its prints (a gap is kept and flagged, never filled): warning",
    "source_bars_reconcile": "n_source_bars per day adds up to the 1m bars behind it",
}


def checked_output(
    context: dg.AssetExecutionContext,
    value: Any,
    frame: pl.DataFrame,
    contract: FrameContract,
    *,
    extra: Sequence[CheckOutcome] = (),
    metadata: Mapping[str, Any] | None = None,
    keys: Sequence[tuple[dt.date, str]] | None = None,
    registry: SpecRegistry | None = None,
    source: str | None = None,
    incomplete: Iterable[tuple[dt.date, str]] = (),
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Evaluate the contract's checks; write ``value`` (a date x symbol table) only when no
    blocking check failed, with the lineage of every key of the run (:func:`lineage_spec`:
    ``registry`` and ``source`` give its version; ``incomplete`` keys lacked source files).

    ``keys``: the (date, symbol) partitions ``frame`` should cover (see
    :func:`backtest_assets.schemas.checks.evaluate`).
    """
    outcomes = [*evaluate(frame, contract, keys=keys), *extra]
    write = value if isinstance(value, WarehouseWrite) else WarehouseWrite(value)
    lineage = LineageWrite(lineage_spec(context.assets_def, registry or load_registry(), source),
                           tuple(date_symbol_keys(context)), context.run.run_id,
                           frozenset(incomplete))
    yield from guarded_output(context, dataclasses.replace(write, lineage=lineage),
                              [_result(o) for o in outcomes],
                              metadata={"rows": frame.height, **(metadata or {})})


def lineage_deps(assets_def: dg.AssetsDefinition) -> tuple[Dep, ...]:
    """The upstream date x symbol keys each key of ``assets_def`` reads, from its partition
    mappings: identity, or :func:`date_window_mapping` (a day window of the same symbol)."""
    deps = []
    for up in sorted(assets_def.dependency_keys, key=lambda k: k.to_user_string()):
        mapping = assets_def.get_partition_mapping(up)  # None: the default, identity here
        if mapping is None or isinstance(mapping, dg.IdentityPartitionMapping):
            deps.append(Dep(up.to_user_string()))
            continue
        dims = getattr(mapping, "downstream_mappings_by_upstream_dimension", {})
        date, symbol = dims.get("date"), dims.get("symbol")
        if not (isinstance(mapping, dg.MultiPartitionMapping) and date and symbol
                and isinstance(date.partition_mapping, dg.TimeWindowPartitionMapping)
                and isinstance(symbol.partition_mapping, dg.IdentityPartitionMapping)):
            raise TypeError(f"{assets_def.key.to_user_string()} reads {up.to_user_string()} "
                            f"through {mapping!r}: lineage knows identity and day windows")
        deps.append(Dep(up.to_user_string(), date.partition_mapping.start_offset,
                        date.partition_mapping.end_offset))
    return tuple(deps)


def lineage_spec(assets_def: dg.AssetsDefinition, registry: SpecRegistry,
                 source: str | None = None) -> LineageSpec:
    """What the keys of a date x symbol asset are built from: its upstream keys (partition
    mappings), the hashes of the spec files its metadata names, and the market source."""
    meta = assets_def.metadata_by_key[assets_def.key]
    parts = {}
    for prefix in meta.get("lineage_specs", []):
        files = {f: h for f, h in registry.hashes.items() if f == prefix or
                 f.startswith(prefix.rstrip("/") + "/")}
        parts[f"specs/{prefix}"] = digest(version_of(files), 8)
    if meta.get("lineage_source"):
        if source is None:
            raise ValueError(f"{assets_def.key.to_user_string()}: its lineage needs the source")
        parts["source"] = source
    return LineageSpec(
        asset=assets_def.key.to_user_string(), time_col=meta["partition_expr"]["date"],
        deps=lineage_deps(assets_def), version=version_of(parts),
        first_day=UNIVERSE.start_date, last_day=last_partition_day())


def guarded_output(
    context: dg.AssetExecutionContext,
    value: Any,
    results: Sequence[dg.AssetCheckResult],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield ``value`` then its check results, unless a blocking (ERROR) check failed.

    A blocking failure reports every check and fails the step before anything is written, so
    the warehouse keeps the previous good data of these partitions.
    """
    yield from refuse_failed(results, f"{context.asset_key.to_user_string()} "
                                      f"{_describe_keys(context)}", " (previous data kept)")
    frame = value.frame if isinstance(value, WarehouseWrite) else value
    table = table_metadata(frame) if isinstance(frame, pl.DataFrame) else {}
    yield dg.Output(value, metadata={**table, **(metadata or {})})
    yield from results


PREVIEW_ROWS = 5


def _type_name(dtype: pl.DataType) -> str:
    """A column type as a person reads it: ``Datetime[us]`` (``Datetime[us, UTC]``), not
    ``Datetime(time_unit='us', time_zone=None)``."""
    if isinstance(dtype, pl.Datetime):
        return f"Datetime[{dtype.time_unit}{', ' + dtype.time_zone if dtype.time_zone else ''}]"
    return str(dtype)


def table_metadata(frame: pl.DataFrame) -> dict[str, Any]:
    """Dagster's standard table metadata of a frame a materialization writes, so the catalog
    shows rows and columns: ``dagster/row_count`` (the rows this materialization wrote: its
    partitions), ``dagster/column_schema`` (each column's name and polars dtype, and whether
    it holds nulls) and a Markdown ``preview`` of its first rows."""
    schema = dg.TableSchema(columns=[
        dg.TableColumn(name, _type_name(dtype), constraints=dg.TableColumnConstraints(
            nullable=frame[name].null_count() > 0))
        for name, dtype in frame.schema.items()])
    return {"dagster/row_count": frame.height,
            "dagster/column_schema": dg.MetadataValue.table_schema(schema),
            "preview": dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS)))}


def refuse_failed(results: Sequence[dg.AssetCheckResult | dg.AssetCheckEvaluation], what: str,
                  note: str = "") -> Iterator[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """When a blocking (ERROR) check failed: report every check, then fail the step before
    anything is written, naming each failed check (and its partition, for
    :func:`partition_evaluations`). Yields nothing otherwise."""
    failed = [r for r in results
              if not r.passed and r.severity == dg.AssetCheckSeverity.ERROR]
    if failed:
        yield from results
        details = "; ".join(
            f"{r.asset_key.to_user_string() + ' ' if r.asset_key else ''}{r.check_name}"
            f"{' of ' + r.partition if getattr(r, 'partition', None) else ''}: "
            f"{r.description}" for r in failed)
        raise dg.Failure(description=f"{what}: blocking checks failed, nothing written"
                                     f"{note}: {details}")


def partition_evaluations(context: dg.AssetExecutionContext,
                          results: Sequence[tuple[str, dg.AssetCheckResult]], *,
                          outputs: bool = True) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Each ``(partition, result)`` as that partition's check evaluation.

    Dagster attributes a partitioned check's result to a partition only in a step of one
    partition; a range step (``BackfillPolicy.single_run``) would store it for no partition,
    and the partition's check panel would say "Skipped". Yield these after the outputs: each
    evaluation then names the partition's materialization of this run as its target. Then
    (``outputs``) each check's empty output, which blocked assets downstream wait for.
    """
    selected = context.selected_asset_check_keys
    for partition, r in results:
        key = dg.AssetKey.from_coercible(r.asset_key) if r.asset_key else context.asset_key
        check_key = dg.AssetCheckKey(key, r.check_name)
        if check_key not in selected:
            continue
        spec = context.assets_def.get_spec_for_check_key(check_key)
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        target = AssetCheckEvaluationTargetMaterializationData(
            run_id=found[0].event_log_entry.run_id, storage_id=found[0].storage_id,
            timestamp=found[0].timestamp) if found else None
        yield dg.AssetCheckEvaluation(
            asset_key=key, check_name=r.check_name, passed=r.passed, metadata=r.metadata,
            severity=r.severity, description=r.description, blocking=spec.blocking,
            partition=partition, target_materialization_data=target)
    if not outputs:
        return
    for check_key in sorted({dg.AssetCheckKey(dg.AssetKey.from_coercible(r.asset_key)
                                              if r.asset_key else context.asset_key,
                                              r.check_name) for _, r in results} & selected,
                            key=str):
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
            check_key))


def refuse_failed_partitions(context: dg.AssetExecutionContext,
                             results: Sequence[tuple[str, dg.AssetCheckResult]], what: str
                             ) -> Iterator[dg.AssetCheckEvaluation]:
    """:func:`refuse_failed` for ``(partition, result)`` pairs, reported per partition."""
    yield from refuse_failed(list(partition_evaluations(context, results, outputs=False)), what)


def _describe_keys(context: dg.AssetExecutionContext) -> str:
    keys = context.partition_keys
    return f"partition {keys[0]}" if len(keys) == 1 else f"partitions {keys[0]}..{keys[-1]}"


def _result(o: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=o.name,
        passed=o.passed,
        severity=dg.AssetCheckSeverity.WARN if o.severity == "WARN" else
        dg.AssetCheckSeverity.ERROR,
        description=o.description or None,
        metadata=o.metadata,
    )


def keep_keys(frame: pl.DataFrame, keys: Sequence[tuple[dt.date, str]], time_col: str
              ) -> pl.DataFrame:
    """Rows of ``frame`` whose (UTC day of ``time_col``, symbol) is one of ``keys``."""
    wanted = pl.DataFrame({"_date": [d for d, _ in keys], "symbol": [s for _, s in keys]},
                          schema={"_date": pl.Date, "symbol": pl.String})
    return (frame.with_columns(pl.col(time_col).dt.date().alias("_date"))
            .join(wanted, on=["_date", "symbol"], how="semi").drop("_date"))


def require_upstream(context: dg.AssetExecutionContext, upstream: str,
                     keys: Sequence[tuple[dt.date, str]], *, days_before: int = 0,
                     first_day: dt.date) -> None:
    """Fail clearly unless every (day, symbol) of the warm-up window was materialized.

    Without this, a day's values would silently depend on which earlier days happened to be
    in the warehouse. Days before ``first_day`` (the first partition), or before the
    symbol's listing day, do not exist and are not required.
    """
    listed = {x.symbol: x.first_day for x in universe_listings()}
    needed = {f"{d - dt.timedelta(days=k)}|{s}" for d, s in keys for k in range(days_before + 1)
              if d - dt.timedelta(days=k) >= max(first_day, listed.get(s, first_day))}
    have = context.instance.get_materialized_partitions(dg.AssetKey(upstream))
    missing = sorted(needed - set(have))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise dg.Failure(
            description=f"{context.asset_key.to_user_string()} needs {upstream} for "
                        f"{len(missing)} partition(s) not materialized yet: {shown}. "
                        f"Materialize {upstream} for them first (its warm-up is "
                        f"{days_before} day(s)).")


def study_boxes(symbols: Sequence[str], start: dt.date, end: dt.date) -> list[Box]:
    """The warehouse boxes of a study: each symbol over [start, end] (inclusive days)."""
    lo = dt.datetime.combine(start, dt.time())
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    return [Box(equals=(("symbol", s),), start=lo, end=hi) for s in symbols]


def symbol_layout(time_col: str) -> PartitionLayout:
    """A date x symbol table whose days are bounded on ``time_col``."""
    return PartitionLayout(time_col=time_col, time_dim="date", value_dims={"symbol": "symbol"})


def report_folder(warehouse: Any, study: str, context: dg.AssetExecutionContext) -> Path:
    """``<data root>/reports/<study>/<run id>/``: where a run writes its report files."""
    return warehouse.root / "reports" / study / context.run.run_id


def markdown_table(frame: pl.DataFrame, formats: Mapping[str, str] | None = None) -> str:
    """A frame as a Markdown table for the UI's metadata.

    ``formats`` maps a column to a format spec (``".2%"``, ``",.0f"``, ``".2f"``); floats of
    other columns get 4 significant digits, and a float within 1e-12 of 0 prints as 0 (no
    ``-1.999e-07`` for a sum that is zero up to rounding).
    """
    formats = formats or {}

    def cell(name: str, v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            v = 0.0 if abs(v) < 1e-12 else v
            return format(v, formats.get(name, ".4g"))
        return format(v, formats[name]) if name in formats else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(cell(n, v) for n, v in zip(frame.columns, row,
                                                                   strict=True)) + " |")
    return "\n".join(lines)


def blocking_checks(asset: str, names: Mapping[str, str],
                    partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """Blocking check specs ``name -> description`` of a partitioned asset."""
    return [dg.AssetCheckSpec(n, asset=asset, blocking=True, description=d,
                              partitions_def=partitions_def) for n, d in names.items()]


def layer_checks(schema_tables: Sequence[str], schemas: str,
                 checks: Mapping[str, tuple[str, str]],
                 partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The blocking check specs of a multi-asset layer: a ``schema`` check of each of
    ``schema_tables`` (their pandera models in ``schemas``), then ``checks``: name ->
    (asset, description)."""
    return [
        *[dg.AssetCheckSpec("schema", asset=t, blocking=True, partitions_def=partitions_def,
                            description=f"columns, dtypes and values of the {t} model "
                                        f"({schemas})") for t in schema_tables],
        *[dg.AssetCheckSpec(n, asset=a, blocking=True, partitions_def=partitions_def,
                            description=d) for n, (a, d) in checks.items()]]


def check_result(name: str, asset: str, ok: bool, detail: str) -> dg.AssetCheckResult:
    """A check's result; ``detail`` is shown only when it failed."""
    return dg.AssetCheckResult(check_name=name, asset_key=asset, passed=bool(ok),
                               description=None if ok else detail)


def schema_result(asset: str, frame: pl.DataFrame, model: Any) -> dg.AssetCheckResult:
    """The ``schema`` check of ``frame`` against a pandera polars ``model``."""
    import pandera.polars as pa

    try:
        model.validate(frame, lazy=True)
        return check_result("schema", asset, True, "")
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return check_result("schema", asset, False, f"{cases.height} failures, e.g. "
                                                    f"{cases.head(3).to_dicts()}")


def root_cause(failure: Any) -> str:
    """The innermost error of a failed step (Dagster wraps the user's exception)."""
    if failure.user_failure_data is not None and failure.user_failure_data.description:
        return failure.user_failure_data.description
    error = failure.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else "unknown error"
