"""The warehouse resource: where the tables and the raw archives live.

Two backends behind one interface (:mod:`backtest_assets.warehouse`): ``duckdb``, one file
``<data_root>/warehouse.duckdb`` with one writer at a time (the default), and ``ducklake``, a
DuckLake whose catalog is in Postgres and whose rows are Parquet files under a data path, for
several writers at once (backfills side by side, workers on other machines). Each setting is
a field here, or else an environment variable, so the CLI, the webserver, the daemon and
every run worker choose the same warehouse.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from backtest_assets.warehouse import BACKEND_ENV, LakeWarehouse, Warehouse, WarehouseError

DATA_ROOT_ENV = "BACKTEST_DATA_ROOT"
WAREHOUSE_FILE = "warehouse.duckdb"
LAKE_CATALOG_ENV = "BACKTEST_LAKE_CATALOG"
LAKE_DATA_ENV = "BACKTEST_LAKE_DATA"
BACKENDS = ("duckdb", "ducklake")


def resolve_data_root(data_root: str | None = None) -> Path:
    """``data_root``, else ``$BACKTEST_DATA_ROOT``, else ``./data``; made absolute."""
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or "data").resolve()


def make_warehouse(data_root: str | None = None, backend: str | None = None,
                   lake_catalog: str | None = None, lake_data: str | None = None) -> Warehouse:
    """The warehouse these settings name (each falling back to its environment variable)."""
    root = resolve_data_root(data_root)
    kind = backend or os.environ.get(BACKEND_ENV) or "duckdb"
    if kind == "duckdb":
        return Warehouse(root / WAREHOUSE_FILE)
    if kind != "ducklake":
        raise WarehouseError(f"warehouse backend {kind!r}: choose one of {', '.join(BACKENDS)}"
                             f" ({BACKEND_ENV})")
    catalog = lake_catalog or os.environ.get(LAKE_CATALOG_ENV)
    if not catalog:
        raise WarehouseError(
            f"the ducklake warehouse needs a catalog: set {LAKE_CATALOG_ENV}, e.g. "
            "'postgres:dbname=lake host=127.0.0.1 port=5433 user=postgres'")
    data = lake_data or os.environ.get(LAKE_DATA_ENV) or str(root / "lake")
    return LakeWarehouse(catalog, data)


class WarehouseResource(dg.ConfigurableResource):
    """The data root (raw files under ``raw/``) and the warehouse backend."""

    data_root: str | None = None
    backend: str | None = None  # duckdb (default) | ducklake; else $BACKTEST_WAREHOUSE
    lake_catalog: str | None = None  # else $BACKTEST_LAKE_CATALOG
    lake_data: str | None = None  # else $BACKTEST_LAKE_DATA, else <data_root>/lake

    @property
    def root(self) -> Path:
        return resolve_data_root(self.data_root)

    def warehouse(self) -> Warehouse:
        return make_warehouse(self.data_root, self.backend, self.lake_catalog, self.lake_data)
