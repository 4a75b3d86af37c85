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
    *_specs("tear_sheets", {
        "sheets_complete": "a sheet per blueprint and portfolio, each file as written "
                           "(sha256), every chart placed, its headline numbers those of the "
                           "warehouse",
    }),
    # not blocking: a large sheet is still a correct one; the report goes on and links it
    dg.AssetCheckSpec("sheets_under_5mb", asset="tear_sheets", blocking=False,
                      partitions_def=study_partitions_def,
                      description="every tear sheet is at most 5 MB (issue 21's target)"),
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
SECTIONS = ("summary", "blueprints", "equity", "walkforward", "events", "funnel", "survivors",
            "promotion", "portfolio", "alpha", "compare", "traceability")
MAX_SHEET_BYTES = 5_000_000  # issue 21: a tear sheet stays under 5 MB
# tear sheet headline -> the warehouse table and column it must equal
SHEET_NUMBERS = {"blueprint": ("backtest_metrics", "blueprint",
                               ("total_return", "sharpe", "max_drawdown", "trades")),
                 "portfolio": ("portfolio_metrics", "portfolio",
                               ("total_return", "sharpe", "max_drawdown", "trades"))}


def check_decisions(frame: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("promotion_decisions", frame, DECISIONS_MODEL)


def sheet_problems(rows: pl.DataFrame, frames) -> list[str]:
    """What is wrong with the written tear sheets (``sheets.write_sheets`` rows) against the
    study's tables (``sheets.StudyFrames``); empty when all is well."""
    out = []
    catalog = frames["strategy_blueprints"]
    books = frames["portfolio_metrics"]
    expected = {("blueprint", n) for n in (catalog["blueprint"] if catalog.height else [])}
    expected |= {("portfolio", n) for n in (books["portfolio"] if books.height else [])}
    have = set(zip(rows["kind"], rows["name"], strict=True)) if rows.height else set()
    out += [f"no tear sheet of {k} {n}" for k, n in sorted(expected - have)]
    for r in rows.iter_rows(named=True):
        path = Path(r["path"])
        if not path.is_file():
            out.append(f"{path} does not exist")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != r["sha256"]:
            out.append(f"{path}: sha256 differs")
        main = data[data.find(b"<main>"):data.find(b"</main>")]
        if main.count(b"<div data-root=") != r["charts"]:
            out.append(f"{path}: {r['charts']} charts but not every one placed")
        table, key, cols = SHEET_NUMBERS[r["kind"]]
        ref = frames[table]
        ref = ref.filter(pl.col(key) == r["name"]) if ref.height else ref
        if r["kind"] == "portfolio" and ref.height:
            ref = ref.filter(pl.col("book") == "book")
        if not ref.height:
            continue
        for c in cols:
            want = ref[c][0]
            if not _same(r[c], want):
                out.append(f"{r['name']}: {c} {r[c]} on the sheet, {want} in {table}")
    return out


def _same(a: object, b: object) -> bool:
    """Equal, counting None and NaN as one missing value."""
    def na(v: object) -> bool:
        return v is None or (isinstance(v, float) and v != v)
    return (na(a) and na(b)) or (not na(a) and not na(b) and float(a) == float(b))


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
