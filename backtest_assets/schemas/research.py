"""Pandera models (``pandera.polars``) of the research frames: Gate E-1's report and Phase 2's
candidates, p-values and FDR tables, and Phase 2's report document (``report.json``, as the
frames :func:`phase2_report_frames` makes of it).

Columns and dtypes come from the pure modules that make the frames
(:data:`backtest_assets.events.quality.REPORT_SCHEMA`,
:data:`backtest_assets.discovery.phase2.SAMPLE_SCHEMA` and the p-value table's columns), so a
layout is written once; the models add what the values must satisfy. Each asset's blocking
``schema`` check validates its frame against its model before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


# Every research table carries the study its rows belong to (the backtest and walk-forward
# models use it too).
STUDY_COLUMN = {"study": pa.Column(pl.String)}

# No bars: no prevalence; no events: no join rate.
E1_REPORT = pa.DataFrameSchema(
    {**STUDY_COLUMN, **_columns(REPORT_SCHEMA, frozenset({"prevalence_per_10k", "join_rate"}))},
    strict=True, name="event_quality_report")

PHASE2_CANDIDATES = pa.DataFrameSchema(
    {**STUDY_COLUMN, **_columns(SAMPLE_SCHEMA, frozenset({"regime"})),
     "direction": pa.Column(pl.Int8, pa.Check.isin([-1, 1])),
     "regime": pa.Column(pl.String, pa.Check.isin(["high", "low"]), nullable=True)},
    strict=True, name="phase2_candidates_raw")

_STATUS = pa.Column(pl.String, pa.Check.isin([TESTED, INSUFFICIENT, UNTESTABLE]))
PHASE2_PVALS = pa.DataFrameSchema(
    {**STUDY_COLUMN, **_columns(PVALS_SCHEMA, _NULLABLE_STATS), "status": _STATUS},
    strict=True, name="phase2_pvals")

# The FDR table: the p-values' columns and the gates'; one net_<m>x column per cost
# multiplier of specs/fees.yaml (so not strict), each a Float64.
PHASE2_FDR = pa.DataFrameSchema(
    {**STUDY_COLUMN, **_columns(PVALS_SCHEMA, _NULLABLE_STATS), "status": _STATUS,
     **_columns({"q": pl.Float64(), "slice_share": pl.Float64(), "slices": pl.UInt32(),
                 "regime_share": pl.Float64(), "regimes": pl.UInt32()}, _NULLABLE_STATS),
     "fdr_method": pa.Column(pl.String, pa.Check.isin(["bh", "by"])),
     **{name: pa.Column(pl.Boolean) for name in ("discovered", "economic", "stable",
                                                 "survivor")},
     "reasons": pa.Column(pl.String),
     r"net_.*x": pa.Column(pl.Float64, nullable=True, regex=True)},
    strict=False, name="phase2_fdr")

# Phase 2's report.json: one row of what was tested and how, and one row per survivor.
_INFERENCE = ("signflip+cr2", "signflip", "cr2")
PHASE2_REPORT = pa.DataFrameSchema({
    "event_type": pa.Column(pl.String),
    "study": pa.Column(pl.String),
    "window_start": pa.Column(pl.Date), "window_end": pa.Column(pl.Date),
    "symbols": pa.Column(pl.List(pl.String)),
    "fdr_method": pa.Column(pl.String, pa.Check.isin(["bh", "by"])),
    "fdr_q": pa.Column(pl.Float64, pa.Check.in_range(0.0, 1.0, include_min=False)),
    "family_by": pa.Column(pl.List(pl.String)),
    "inference": pa.Column(pl.String, pa.Check.isin(list(_INFERENCE))),
    "cluster_lag_multiple": pa.Column(pl.Float64, pa.Check.gt(0)),
    "hypotheses": pa.Column(pl.Int64, pa.Check.ge(0)),
    "families": pa.Column(pl.Int64, pa.Check.ge(0)),
    "survivors": pa.Column(pl.Int64, pa.Check.ge(0)),
    "spec_files": pa.Column(pl.Int64, pa.Check.ge(1)),
    "dataset_hash": pa.Column(pl.String, pa.Check.str_matches(r"^[0-9a-f]{16,}$"),
                              nullable=True),
    "code_commit": pa.Column(pl.String, pa.Check.str_length(min_value=1)),
}, checks=[pa.Check(lambda df: df.lazyframe.select(
    pl.col("survivors") <= pl.col("hypotheses")), error="more survivors than hypotheses")],
    strict=True, name="phase2_report")
PHASE2_REPORT_SURVIVORS = pa.DataFrameSchema({
    "hypothesis_id": pa.Column(pl.String, unique=True),
    "rule_template": pa.Column(pl.String),
    "horizon": pa.Column(pl.String), "symbol": pa.Column(pl.String),
    "n": pa.Column(pl.Int64, pa.Check.ge(1)), "clusters": pa.Column(pl.Int64, pa.Check.ge(1)),
    "mean": pa.Column(pl.Float64), "t": pa.Column(pl.Float64),
    "p": pa.Column(pl.Float64, pa.Check.in_range(0.0, 1.0)),
    "q": pa.Column(pl.Float64, pa.Check.in_range(0.0, 1.0)),
    r"net_.*x": pa.Column(pl.Float64, nullable=True, regex=True),
}, strict=False, name="phase2_report_survivors")


def phase2_report_frames(doc: Mapping[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``report.json``'s document as (its one-row header, its survivors), for the models.

    A key missing from the document raises ``KeyError`` naming it."""
    header = pl.DataFrame([{
        "event_type": doc["event_type"], "study": doc["study"]["name"],
        "window_start": doc["study"]["window"][0], "window_end": doc["study"]["window"][1],
        "symbols": doc["study"]["symbols"], "fdr_method": doc["fdr"]["method"],
        "fdr_q": float(doc["fdr"]["q"]), "family_by": doc["fdr"]["family_by"],
        "inference": doc["inference"]["test"],
        "cluster_lag_multiple": float(doc["inference"]["cluster_lag_multiple"]),
        "hypotheses": doc["hypotheses"], "families": len(doc["families"]),
        "survivors": len(doc["survivors"]), "spec_files": len(doc["spec_hashes"]),
        "dataset_hash": doc["dataset_hash"], "code_commit": doc["code_commit"]}],
        schema_overrides={"symbols": pl.List(pl.String), "family_by": pl.List(pl.String),
                          "dataset_hash": pl.String, "hypotheses": pl.Int64}
    ).with_columns(pl.col("window_start", "window_end").str.to_date())
    survivors = pl.DataFrame(doc["survivors"], infer_schema_length=None) if doc["survivors"] \
        else pl.DataFrame(schema={"hypothesis_id": pl.String, "rule_template": pl.String,
                                  "horizon": pl.String, "symbol": pl.String, "n": pl.Int64,
                                  "clusters": pl.Int64, "mean": pl.Float64, "t": pl.Float64,
                                  "p": pl.Float64, "q": pl.Float64})
    return header, survivors
