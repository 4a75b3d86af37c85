"""The warehouse resource: where the DuckDB file and the raw archives live."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from backtest_assets.warehouse import Warehouse

DATA_ROOT_ENV = "BACKTEST_DATA_ROOT"
WAREHOUSE_FILE = "warehouse.duckdb"


def resolve_data_root(data_root: str | None = None) -> Path:
    """``data_root``, else ``$BACKTEST_DATA_ROOT``, else ``./data``; made absolute."""
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "data").resolve()


class WarehouseResource(dg.ConfigurableResource):
    """The data root: ``warehouse.duckdb`` plus the raw files under ``raw/``."""

    data_root: str | None = None

    @property
    def root(self) -> Path:
        return resolve_data_root(self.data_root)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.root / WAREHOUSE_FILE)
