"""Named checks evaluated on an asset's frame before it is written (no Dagster here).

Each :class:`FrameContract` says what a frame must satisfy: its pandera model, its unique key,
the column whose time must increase within each group, and its slot grid. :func:`evaluate`
returns one :class:`CheckOutcome` per named check, with counts and the first failing row so
an error names the partition and the row.

Funding prints have no fixed grid: their ``complete_days`` expects each partition's prints
at the symbol's funding interval as its prints show it (:mod:`backtest_assets.core.funding`)
and lists the missing times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandera.polars as pa
import polars as pl

from backtest_assets.core.bars import day_coverage
from backtest_assets.core.funding import missing_prints

VALUE_CHECKS = ("positive_prices", "non_negative_volumes", "ohlc_sanity")


@dataclass(frozen=True, kw_only=True)
class FrameContract:
    """What a frame must satisfy; ``value_checks`` names the model's value checks to report."""

    schema: pa.DataFrameSchema
    key_cols: tuple[str, ...]
    time_col: str
    group_cols: tuple[str, ...]
    slot_minutes: int | None  # the time grid; None when rows are irregular
    value_checks: tuple[str, ...] = VALUE_CHECKS
    max_rows_per_day: int | None = None  # for irregular rows (funding): an upper bound
    # complete_days expects funding prints at each symbol's interval (core.funding)
    funding_prints: bool = False

    @property
    def check_names(self) -> list[str]:
        return ["schema", *self.value_checks, "unique_keys", "monotonic_time", "row_count",
                "complete_days"]


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: Literal["ERROR", "WARN"] = "ERROR"
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking_failure(self) -> bool:
        return not self.passed and self.severity == "ERROR"


def evaluate(frame: pl.DataFrame, contract: FrameContract, *,
             keys: Sequence[tuple[dt.date, str]] | None = None) -> list[CheckOutcome]:
    """Every named check of ``contract`` on ``frame``, in ``contract.check_names`` order.

    ``keys``: the (date, symbol) partitions the frame holds, where rows are expected: a key
    without any row fails ``complete_days`` (WARN) as a whole missing day, and a funding
    contract expects its prints there (default: the days and symbols of the frame's rows, so
    a partition without any row is not checked).
    """
    outcomes = _model_checks(frame, contract)
    if not outcomes["schema"].passed:
        # Without the right columns and dtypes the other checks cannot be trusted.
        skipped = CheckOutcome(name="", passed=False, description="not run: schema failed")
        return [outcomes.get(n) or _renamed(skipped, n) for n in contract.check_names]
    outcomes["unique_keys"] = _unique_keys(frame, contract)
    outcomes["monotonic_time"] = _monotonic(frame, contract)
    outcomes["row_count"], outcomes["complete_days"] = _row_counts(frame, contract, keys)
    if contract.funding_prints:
        outcomes["complete_days"] = _funding_complete(frame, contract, keys)
    return [outcomes[n] for n in contract.check_names]


def _renamed(outcome: CheckOutcome, name: str) -> CheckOutcome:
    return CheckOutcome(name=name, passed=outcome.passed, severity=outcome.severity,
                        description=outcome.description, metadata=outcome.metadata)


def _model_checks(frame: pl.DataFrame, contract: FrameContract) -> dict[str, CheckOutcome]:
    try:
        contract.schema.validate(frame, lazy=True)
        failures = pl.DataFrame()
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases
    names = contract.value_checks
    out = {}
    for name in ("schema", *names):
        if failures.is_empty():
            rows = failures
        elif name == "schema":
            rows = failures.filter(~pl.col("check").is_in(names))
        else:
            rows = failures.filter(pl.col("check") == name)
        out[name] = _from_failures(name, rows, frame)
    return out


def _from_failures(name: str, rows: pl.DataFrame, frame: pl.DataFrame) -> CheckOutcome:
    if rows.is_empty():
        return CheckOutcome(name=name, passed=True, metadata={"failing_rows": 0})
    first = rows.row(0, named=True)
    where = ""
    if first.get("index") is not None:
        where = f"; first at row {first['index']}: {_row_text(frame, int(first['index']))}"
    desc = (f"{rows.height} failure(s); first: column {first['column']!r}, "
            f"check {first['check']!r}, value {first['failure_case']!r}{where}")
    return CheckOutcome(name=name, passed=False, description=desc,
                        metadata={"failing_rows": rows.height})


def _row_text(frame: pl.DataFrame, i: int) -> str:
    row = frame.row(i, named=True)
    keys = [k for k in ("symbol", "market", "ts_open", "ts") if k in row]
    return ", ".join(f"{k}={row[k]}" for k in keys) or str(row)


def _unique_keys(frame: pl.DataFrame, contract: FrameContract) -> CheckOutcome:
    dup = frame.select(contract.key_cols).is_duplicated()
    n = int(dup.sum())
    if n == 0:
        return CheckOutcome(name="unique_keys", passed=True, metadata={"duplicate_rows": 0})
    i = int(dup.arg_true()[0])
    return CheckOutcome(
        name="unique_keys", passed=False, metadata={"duplicate_rows": n},
        description=f"{n} rows share a key {list(contract.key_cols)}; first at row {i}: "
                    f"{_row_text(frame, i)}")


def _monotonic(frame: pl.DataFrame, contract: FrameContract) -> CheckOutcome:
    t = pl.col(contract.time_col)
    bad = frame.with_row_index("_row").filter(
        (t <= t.shift(1).over(list(contract.group_cols))).fill_null(False))
    if bad.is_empty():
        return CheckOutcome(name="monotonic_time", passed=True,
                            metadata={"non_increasing_rows": 0})
    i = int(bad["_row"][0])
    return CheckOutcome(
        name="monotonic_time", passed=False, metadata={"non_increasing_rows": bad.height},
        description=f"{bad.height} rows do not increase in {contract.time_col} within "
                    f"{list(contract.group_cols)}; first at row {i}: {_row_text(frame, i)}")


def _row_counts(frame: pl.DataFrame, contract: FrameContract,
                keys: Sequence[tuple[dt.date, str]] | None = None
                ) -> tuple[CheckOutcome, CheckOutcome]:
    if contract.slot_minutes is None:
        per_day = (frame.group_by([*contract.group_cols, pl.col(contract.time_col).dt.date()])
                   .len())
        over = per_day.filter(pl.col("len") > (contract.max_rows_per_day or 0))
        ok = over.is_empty()
        desc = "" if ok else f"days with more than {contract.max_rows_per_day} rows: " \
            f"{over.head(3).to_dicts()}"
        meta = {"days": per_day.height, "rows": frame.height}
        return (CheckOutcome(name="row_count", passed=ok, description=desc, metadata=meta),
                CheckOutcome(name="complete_days", passed=True, severity="WARN", metadata=meta))
    cov = day_coverage(frame, time_col=contract.time_col, group_cols=list(contract.group_cols),
                       slot_minutes=contract.slot_minutes)
    bad = cov.filter((pl.col("missing") < 0) | (pl.col("misaligned") > 0))
    gaps = cov.filter(pl.col("missing") > 0)
    # A partition without any row is a whole day missing: day_coverage cannot see it.
    present = set(cov.select("date", "symbol").rows()) if "symbol" in cov.columns else set()
    empty_days = sorted({(d, s) for d, s in keys or ()} - present, key=lambda k: (k[1], k[0]))
    per_day = 24 * 60 // contract.slot_minutes
    missing_slots = (int(gaps["missing"].sum()) if gaps.height else 0) + per_day * len(empty_days)
    listed = [f"{s} {d.isoformat()}" for d, s in empty_days[:MAX_LISTED]]
    more = f" and {len(empty_days) - MAX_LISTED} more" if len(empty_days) > MAX_LISTED else ""
    meta = {"days": cov.height, "rows": frame.height,
            "expected_rows": int(cov["expected"].sum()) + per_day * len(empty_days),
            "missing_slots": missing_slots,
            "days_with_gaps": gaps.height + len(empty_days),
            "days_without_rows": len(empty_days),
            "missing_days": ", ".join(listed) + more}
    row_count = CheckOutcome(
        name="row_count", passed=bad.is_empty(), metadata=meta,
        description="" if bad.is_empty() else
        f"rows off the {contract.slot_minutes}-minute grid or more rows than slots: "
        f"{bad.head(3).to_dicts()}")
    parts = []
    if empty_days:
        parts.append(f"{len(empty_days)} day(s) without any row (missing at the source): "
                     f"{', '.join(listed[:5])}"
                     + (f" and {len(empty_days) - 5} more" if len(empty_days) > 5 else ""))
    if gaps.height:
        parts.append(f"{gaps.height} day(s) with missing {contract.slot_minutes}m slots "
                     f"({int(gaps['missing'].sum())} in all), kept as gaps; first: "
                     f"{gaps.head(3).to_dicts()}")
    complete = CheckOutcome(
        name="complete_days", passed=not parts, severity="WARN", metadata=meta,
        description="; ".join(parts))
    return row_count, complete


MAX_LISTED = 100  # missing funding times listed in a check's metadata


def _funding_complete(frame: pl.DataFrame, contract: FrameContract,
                      keys: Sequence[tuple[dt.date, str]] | None) -> CheckOutcome:
    """``complete_days`` of funding prints: each partition's expected prints are there."""
    if keys is None:
        keys = frame.select(pl.col(contract.time_col).dt.date(), "symbol").unique().rows()
    day = dt.timedelta(days=1)
    windows = sorted((s, dt.datetime.combine(d, dt.time()), dt.datetime.combine(d + day,
                                                                                 dt.time()))
                     for d, s in set(keys))
    missing = missing_prints(frame.rename({contract.time_col: "ts"}), windows)
    listed = [f"{r['symbol']} {r['ts']:%Y-%m-%d %H:%M}" for r in
              missing.head(MAX_LISTED).iter_rows(named=True)]
    more = f" and {missing.height - MAX_LISTED} more" if missing.height > MAX_LISTED else ""
    meta = {"partitions": len(windows), "rows": frame.height,
            "missing_prints": missing.height, "missing_times": ", ".join(listed) + more}
    return CheckOutcome(
        name="complete_days", passed=missing.is_empty(), severity="WARN", metadata=meta,
        description="" if missing.is_empty() else
        f"{missing.height} funding print(s) missing at the times the symbol's interval (from "
        f"its prints) expects, kept as gaps: {', '.join(listed[:5])}"
        + (f" and {missing.height - 5} more" if missing.height > 5 else ""))
