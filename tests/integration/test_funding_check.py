"""The funding completeness check through Dagster: a partition missing a print warns."""

import datetime as dt

import dagster as dg
import polars as pl

from backtest_assets.defs.ingest.assets import raw_funding_rates
from backtest_assets.resources import MarketSourceResource, WarehouseIOManager, WarehouseResource
from backtest_assets.sources.base import SourceBatch
from backtest_assets.sources.synthetic import SyntheticSource


class _Gappy:
    """The synthetic source without BTCUSDT's 08:00 funding print of 2024-01-02."""

    def __init__(self, seed: int) -> None:
        self.inner = SyntheticSource(seed=seed)

    def funding_rates(self, symbol: str, day: dt.date) -> SourceBatch:
        batch = self.inner.funding_rates(symbol, day)
        if (symbol, day) == ("BTCUSDT", dt.date(2024, 1, 2)):
            batch.frame = batch.frame.filter(pl.col("ts").dt.hour() != 8)
        return batch


class GappySource(MarketSourceResource):
    def source(self, data_root):
        return _Gappy(self.seed)


def test_a_partition_missing_a_funding_print_warns_with_the_time(data_root, instance):
    resources = {"market_source": GappySource(), "warehouse": WarehouseResource(),
                 "io_manager": WarehouseIOManager()}
    ok = dg.materialize([raw_funding_rates], partition_key="2024-01-01|BTCUSDT",
                        resources=resources, instance=instance)
    (check,) = [e for e in ok.get_asset_check_evaluations() if e.check_name == "complete_days"]
    assert check.passed

    gap = dg.materialize([raw_funding_rates], partition_key="2024-01-02|BTCUSDT",
                         resources=resources, instance=instance)
    assert gap.success  # a warning: the two prints there are written
    (check,) = [e for e in gap.get_asset_check_evaluations()
                if e.check_name == "complete_days"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["missing_prints"].value == 1
    assert check.metadata["missing_times"].value == "BTCUSDT 2024-01-02 08:00"
    assert "BTCUSDT 2024-01-02 08:00" in check.description
    stored = WarehouseResource().warehouse()
    with stored.connect(read_only=True) as conn:
        hours = conn.sql("SELECT hour(ts) FROM raw_funding_rates WHERE CAST(ts AS DATE) = "
                         "'2024-01-02' ORDER BY ts").fetchall()
    assert hours == [(0,), (16,)]
