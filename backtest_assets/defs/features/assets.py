"""Point-in-time features and forward labels on the base interval, kept in separate tables.

Rolling windows reach back across days through a declared partition mapping (the warm-up),
and labels reach one day ahead through another, so Dagster knows both lineages and a day's
values do not depend on which other days were materialized in the same run.
"""

import dagster as dg
import polars as pl

from backtest_assets.defs.features.checks import FEATURES_CONTRACT, LABELS_CONTRACT
from backtest_assets.defs.shared import (
    LANDED,
    check_specs,
    checked_output,
    date_symbol_keys,
    keep_keys,
    require_upstream,
    warehouse_asset,
)
from backtest_assets.features.compute import compute_features
from backtest_assets.features.labels import compute_labels
from backtest_assets.partitions import (
    BARS_PARTITION_EXPR,
    BASE_BARS,
    REGISTRY,
    UNIVERSE,
    date_window_mapping,
)
from backtest_assets.resources import SpecRegistryResource

WARMUP_DAYS = REGISTRY.feature_warmup_days
def _common(spec: str) -> dict:
    return warehouse_asset("features", BARS_PARTITION_EXPR, automation_condition=LANDED,
                           lineage_specs=[spec])


def _warmup(upstream: str) -> dg.AssetIn:
    return dg.AssetIn(upstream, partition_mapping=date_window_mapping(start_offset=-WARMUP_DAYS))


@dg.asset(
    ins={"bars": _warmup(BASE_BARS), "funding": _warmup("raw_funding_rates"),
         "oi": _warmup("raw_open_interest")},
    check_specs=check_specs("pit_features", FEATURES_CONTRACT),
    **_common("features"),
)
def pit_features(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                 bars: pl.DataFrame, funding: pl.DataFrame, oi: pl.DataFrame):
    """Features per base bar from specs/features, each using only data known at its close."""
    keys = date_symbol_keys(context)
    require_upstream(context, BASE_BARS, keys, days_before=WARMUP_DAYS,
                     first_day=UNIVERSE.start_date)
    reg = specs.registry()
    frame = compute_features(
        bars.filter(pl.col("market") == "perp"), bars.filter(pl.col("market") == "spot"),
        funding, oi, list(reg.features.values()), interval_minutes=reg.base_minutes)
    frame = keep_keys(frame, keys, "ts_open")
    null_share = {n: round(float(frame[n].null_count()) / max(frame.height, 1), 4)
                  for n in reg.features}
    yield from checked_output(context, frame, frame, FEATURES_CONTRACT, registry=reg, metadata={
        "features": len(reg.features), "warmup_days": WARMUP_DAYS,
        "null_share": dg.MetadataValue.json(null_share)})


@dg.asset(
    ins={"bars": dg.AssetIn(BASE_BARS, partition_mapping=date_window_mapping(end_offset=1))},
    check_specs=check_specs("forward_labels", LABELS_CONTRACT),
    **_common("labels.yaml"),
)
def forward_labels(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                   bars: pl.DataFrame):
    """Forward log returns from the next bar's open, per horizon in specs/labels.yaml."""
    keys = date_symbol_keys(context)
    require_upstream(context, BASE_BARS, keys, first_day=UNIVERSE.start_date)
    frame = compute_labels(bars.filter(pl.col("market") == "perp"), specs.registry().label_bars())
    frame = keep_keys(frame, keys, "ts_open")
    yield from checked_output(context, frame, frame, LABELS_CONTRACT,
                              registry=specs.registry(), metadata={
        "horizons_bars": dg.MetadataValue.json(specs.registry().label_bars()),
        "rows_without_label": int(frame.select(pl.any_horizontal(
            pl.exclude("symbol", "ts_open").is_null())).to_series().sum())})


defs = dg.Definitions(assets=[pit_features, forward_labels])
