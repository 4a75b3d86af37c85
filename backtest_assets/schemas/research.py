"""Pandera models (``pandera.polars``) of the research frames: Gate E-1's report and Phase 2's
candidates, p-values and FDR tables.

Columns and dtypes come from the pure modules that make the frames
(:data:`backtest_assets.events.quality.REPORT_SCHEMA`,
:data:`backtest_assets.discovery.phase2.SAMPLE_SCHEMA` and the p-value table's columns), so a
layout is written once; the models add what the values must satisfy. Each asset's blocking
``schema`` check validates its frame against its model before anything is written.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from backtest_assets.discovery.phase2 import (
    INSUFFICIENT,
    PVALS_SCHEMA,
    SAMPLE_SCHEMA,
    TESTED,
    UNTESTABLE,
)
from backtest_assets.events.quality import REPORT_SCHEMA

_NULLABLE_STATS = frozenset({"mean", "se", "t", "p", "clusters", "df", "q", "slice_share",
                             "slices", "regime_share", "regimes"})
_IN_UNIT = frozenset({"p", "q", "join_rate", "slice_share", "regime_share"})
_NON_NEGATIVE = frozenset({"bars", "events", "joined", "n", "n_overlapping", "clusters",
                           "cluster_lag", "se", "prevalence_per_10k", "slices", "regimes"})


def _columns(schema: dict[str, pl.DataType], nullable: frozenset[str] = frozenset()
             ) -> dict[str, pa.Column]:
    cols = {}
    for name, dtype in schema.items():
        checks = []
        if name in _IN_UNIT:
            checks.append(pa.Check.in_range(0.0, 1.0))
        elif name in _NON_NEGATIVE:
            checks.append(pa.Check.ge(0))
        cols[name] = pa.Column(dtype, checks=checks, nullable=name in nullable)
    return cols


# No bars: no prevalence; no events: no join rate.
E1_REPORT = pa.DataFrameSchema(
    _columns(REPORT_SCHEMA, frozenset({"prevalence_per_10k", "join_rate"})), strict=True,
    name="event_quality_report")

PHASE2_CANDIDATES = pa.DataFrameSchema(
    {**_columns(SAMPLE_SCHEMA, frozenset({"regime"})),
     "direction": pa.Column(pl.Int8, pa.Check.isin([-1, 1])),
     "regime": pa.Column(pl.String, pa.Check.isin(["high", "low"]), nullable=True)},
    strict=True, name="phase2_candidates_raw")

_STATUS = pa.Column(pl.String, pa.Check.isin([TESTED, INSUFFICIENT, UNTESTABLE]))
PHASE2_PVALS = pa.DataFrameSchema(
    {**_columns(PVALS_SCHEMA, _NULLABLE_STATS), "status": _STATUS},
    strict=True, name="phase2_pvals")

# The FDR table: the p-values' columns and the gates'; one net_<m>x column per cost
# multiplier of specs/fees.yaml (so not strict), each a Float64.
PHASE2_FDR = pa.DataFrameSchema(
    {**_columns(PVALS_SCHEMA, _NULLABLE_STATS), "status": _STATUS,
     **_columns({"q": pl.Float64(), "slice_share": pl.Float64(), "slices": pl.UInt32(),
                 "regime_share": pl.Float64(), "regimes": pl.UInt32()}, _NULLABLE_STATS),
     "fdr_method": pa.Column(pl.String, pa.Check.isin(["bh", "by"])),
     **{name: pa.Column(pl.Boolean) for name in ("discovered", "economic", "stable",
                                                 "survivor")},
     "reasons": pa.Column(pl.String),
     r"net_.*x": pa.Column(pl.Float64, nullable=True, regex=True)},
    strict=False, name="phase2_fdr")
