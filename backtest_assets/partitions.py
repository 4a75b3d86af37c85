"""Every PartitionsDefinition, declared once from ``specs/universe.yaml``, imported everywhere."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from backtest_assets.specs import load_registry

UNIVERSE = load_registry().universe

daily_partitions_def = dg.DailyPartitionsDefinition(
    start_date=UNIVERSE.start_date.isoformat(),
    # Dagster's end_date is exclusive; the spec's is the last day included.
    end_date=(UNIVERSE.end_date + dt.timedelta(days=1)).isoformat() if UNIVERSE.end_date else None,
    timezone="UTC",
)
symbol_partitions_def = dg.StaticPartitionsDefinition(UNIVERSE.symbol_names)
date_symbol_partitions_def = dg.MultiPartitionsDefinition(
    {"date": daily_partitions_def, "symbol": symbol_partitions_def}
)

# Where the date x symbol dimensions live in a market-data table (see warehouse.PartitionLayout).
BARS_PARTITION_EXPR = {"date": "ts_open", "symbol": "symbol"}
TS_PARTITION_EXPR = {"date": "ts", "symbol": "symbol"}
