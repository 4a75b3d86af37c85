"""Dagster resources: the warehouse and its IO manager, market-data sources, the spec registry."""

from backtest_assets.resources.io_manager import WarehouseIOManager, WarehouseWrite
from backtest_assets.resources.market_source import MarketSourceResource
from backtest_assets.resources.specs import SpecRegistryResource
from backtest_assets.resources.warehouse import WarehouseResource, resolve_data_root

__all__ = [
    "MarketSourceResource",
    "SpecRegistryResource",
    "WarehouseIOManager",
    "WarehouseResource",
    "WarehouseWrite",
    "resolve_data_root",
]
