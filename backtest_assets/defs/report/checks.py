"""Checks on the promotion decisions and the research report."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandera.polars as pa
import polars as pl

from backtest_assets.defs.shared import blocking_checks, schema_result
from backtest_assets.partitions import study_partitions_def
from backtest_assets.strategies.promotion import STAGES


def _specs(asset: str, names: dict[str, str]) -> list[dg.AssetCheckSpec]:
    return blocking_checks(asset, names, study_partitions_def)


REPORT_CHECKS = [
    *_specs("promotion_decisions", {
        "schema": "one decision per blueprint; stages of the lifecycle; reasons recorded",
    }),
    *_specs("research_report", {
        "report_complete": "the HTML file exists, matches its sha256 and has every section "
                           "and chart",
    }),
]

DECISIONS_MODEL = pa.DataFrameSchema({
    "study": pa.Column(pl.String), "blueprint": pa.Column(pl.String, unique=True),
    "spec_hash": pa.Column(pl.String),
    "from_stage": pa.Column(pl.String, pa.Check.isin(STAGES)),
    "to_stage": pa.Column(pl.String, pa.Check.isin(STAGES)),
    "decision": pa.Column(pl.String, pa.Check.isin(["promote", "hold", "archive"])),
    "passed": pa.Column(pl.Boolean),
    "reasons": pa.Column(pl.String, pa.Check.str_length(min_value=1)),
    "inputs_hash": pa.Column(pl.String, pa.Check.str_length(64, 64)),
})
SECTIONS = ("summary", "equity", "walkforward", "events", "funnel", "promotion", "portfolio",
            "alpha", "compare", "traceability")


def check_decisions(frame: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("promotion_decisions", frame, DECISIONS_MODEL)


def report_problems(path: Path, sha256: str, html: str) -> list[str]:
    """What is wrong with a written report (empty when it is complete)."""

    if not path.is_file():
        return [f"{path} does not exist"]
    data = path.read_bytes()
    out = [] if hashlib.sha256(data).hexdigest() == sha256 else [f"{path}: sha256 differs"]
    out += [f"section {s} is missing" for s in SECTIONS if f'<section id="{s}"' not in html]
    if 'class="chart"' not in html:
        out.append("no chart")
    return out
