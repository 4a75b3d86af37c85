"""Market events detected on point-in-time features, one row per event."""

import dagster as dg
import polars as pl

from backtest_assets.defs.events.checks import EVENTS_CONTRACT
from backtest_assets.defs.shared import (
    LANDED,
    check_specs,
    checked_output,
    date_symbol_keys,
    keep_keys,
    require_upstream,
    warehouse_asset,
)
from backtest_assets.events.detect import detect_events_by_day
from backtest_assets.partitions import (
    TS_PARTITION_EXPR,
    UNIVERSE,
    date_window_mapping,
)
from backtest_assets.resources import SpecRegistryResource

# An event's cooldown and lags reach back at most one day (the spec linter enforces it).
LOOKBACK_DAYS = 1


@dg.asset(
    ins={"features": dg.AssetIn(
        "pit_features", partition_mapping=date_window_mapping(start_offset=-LOOKBACK_DAYS))},
    check_specs=check_specs("event_table", EVENTS_CONTRACT),
    **warehouse_asset("events", TS_PARTITION_EXPR, automation_condition=LANDED,
                      lineage_specs=["events"]),
)
def event_table(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                features: pl.DataFrame):
    """Events from specs/events: type, bar label ts, ts_known, severity, direction."""
    keys = date_symbol_keys(context)
    require_upstream(context, "pit_features", keys, days_before=LOOKBACK_DAYS,
                     first_day=UNIVERSE.start_date)
    reg = specs.registry()
    events = detect_events_by_day(features, list(reg.events.values()),
                                  interval_minutes=reg.base_minutes,
                                  days=sorted({d for d, _ in keys}))
    events = keep_keys(events, keys, "ts")
    counts = events.group_by("event_type").len().sort("event_type")
    yield from checked_output(context, events, events, EVENTS_CONTRACT, registry=reg, metadata={
        "events_by_type": dg.MetadataValue.json(dict(counts.iter_rows()))})


defs = dg.Definitions(assets=[event_table])
