"""An IO manager that reads and writes any set of partition keys in one DuckDB transaction.

The stock DuckDB IO managers handle one rectangle of keys at most, so a single-run backfill
over several days x several symbols (or a selection with holes) fails there. Here the keys
become boxes (see :mod:`backtest_assets.warehouse`) and each write is one transaction.

An asset declares where its partition dimensions live with
``metadata={"partition_expr": {"date": "ts_open", "symbol": "symbol"}}`` (a plain string for
a single-dimension partitioning). Unpartitioned assets replace the whole table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import polars as pl

from backtest_assets.core.lineage import LineageWrite
from backtest_assets.resources.warehouse import make_warehouse
from backtest_assets.warehouse import Box, PartitionLayout, SideWrite, Warehouse

_SINGLE = "_key"


@dataclass(frozen=True)
class WarehouseWrite:
    """An asset's frame plus side-table rows to replace in the same transaction, and the
    lineage of its keys (``core.lineage``)."""

    frame: pl.DataFrame
    side: Sequence[SideWrite] = ()
    lineage: LineageWrite | None = None


def layout_for(metadata: Mapping[str, object] | None) -> PartitionLayout:
    expr = (metadata or {}).get("partition_expr")
    if expr is None:
        return PartitionLayout()
    if isinstance(expr, str):
        return PartitionLayout(value_dims={_SINGLE: expr})
    dims = dict(expr)  # type: ignore[arg-type]
    time_col = dims.pop("date", None)
    return PartitionLayout(time_col=time_col, time_dim="date" if time_col else None,
                           value_dims=dims)


def _keys(partitions_def: dg.PartitionsDefinition, keys: Sequence[str]) -> list[dict[str, str]]:
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return [dict(partitions_def.get_partition_key_from_str(k).keys_by_dimension)
                for k in keys]
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return [{"date": k} for k in keys]
    return [{_SINGLE: k} for k in keys]


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Polars frames in and out of the warehouse (``resources.warehouse``: the DuckDB file or
    the lake), one table per asset."""

    data_root: str | None = None
    backend: str | None = None
    lake_catalog: str | None = None
    lake_data: str | None = None

    def _warehouse(self) -> Warehouse:
        return make_warehouse(self.data_root, self.backend, self.lake_catalog, self.lake_data)

    def _boxes(self, context: dg.InputContext | dg.OutputContext, layout: PartitionLayout
               ) -> list[Box] | None:
        if not context.has_asset_partitions:
            return None
        keys = _keys(context.asset_partitions_def, list(context.asset_partition_keys))
        return layout.boxes(keys)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | WarehouseWrite
                      ) -> None:
        write = obj if isinstance(obj, WarehouseWrite) else WarehouseWrite(obj)
        table = context.asset_key.path[-1]
        layout = layout_for(context.definition_metadata)
        warehouse = self._warehouse()
        rows = warehouse.replace(table, write.frame, layout, self._boxes(context, layout),
                                 side=write.side, lineage=write.lineage)
        context.add_output_metadata({
            "table": table,
            "warehouse": warehouse.location,
            "rows_written": rows,
        })

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        table = context.upstream_output.asset_key.path[-1]
        layout = layout_for(context.upstream_output.definition_metadata)
        order = [*layout.value_dims.values(), *([layout.time_col] if layout.time_col else [])]
        return self._warehouse().read(table, layout, self._boxes(context, layout),
                                      order_by=order)
