"""The project's claims, the tests that verify them, and the log of their status (no Dagster).

``golden/claim_test_map.csv`` has one row per (claim, test): ``claim_id``, ``claim`` (the
sentence the project asserts) and ``test_id`` (a pytest node id without parameters; every
parametrization of it counts). A test run's outcomes give each claim a status:

- ``verified``: every test of the claim ran and passed;
- ``failed``: at least one of its tests failed (or errored in set-up);
- ``unverified``: none failed, but some did not run in this session (deselected, skipped).

:func:`append_log` adds one row per claim to ``claim_verification_log.parquet``, written to a
temporary file and renamed, so an interrupted run never leaves half a log.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import polars as pl

MAP_SCHEMA = {"claim_id": pl.String, "claim": pl.String, "test_id": pl.String}
LOG_SCHEMA = {"run_at": pl.Datetime("us"), "commit": pl.String, "claim_id": pl.String,
              "claim": pl.String, "status": pl.String, "tests": pl.Int64,
              "passed": pl.Int64, "failed_tests": pl.String, "not_run": pl.String}
STATUSES = ("verified", "failed", "unverified")


def load_map(path: Path) -> pl.DataFrame:
    """The claim map; raises ``ValueError`` naming the file and row of a malformed one."""
    frame = pl.read_csv(path, schema=MAP_SCHEMA)
    for i, row in enumerate(frame.iter_rows(named=True), start=2):  # line 1 is the header
        empty = [k for k, v in row.items() if not (v or "").strip()]
        if empty:
            raise ValueError(f"{path}: line {i}: empty {', '.join(empty)}")
        if "::" not in row["test_id"] or "[" in row["test_id"]:
            raise ValueError(f"{path}: line {i}: test_id {row['test_id']!r} is not a pytest "
                             "node id without parameters (tests/...py::test_name)")
    dup = frame.group_by("claim_id", "test_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"{path}: claim {dup['claim_id'][0]} lists {dup['test_id'][0]} twice")
    texts = frame.group_by("claim_id").agg(pl.col("claim").n_unique()).filter(
        pl.col("claim") > 1)
    if texts.height:
        raise ValueError(f"{path}: claim {texts['claim_id'][0]} has two different texts")
    return frame


def base_id(nodeid: str) -> str:
    """A node id without its parameters: ``f.py::test_x[3]`` -> ``f.py::test_x``."""
    return nodeid.split("[", 1)[0]


def statuses(claims: pl.DataFrame, outcomes: Mapping[str, str]) -> pl.DataFrame:
    """Each claim's status from test ``outcomes`` (node id -> passed/failed/skipped).

    Every parametrization of a mapped test counts: one failure fails it, all passing passes.
    """
    by_test: dict[str, list[str]] = {}
    for nodeid, outcome in outcomes.items():
        by_test.setdefault(base_id(nodeid), []).append(outcome)
    rows = []
    for (claim_id, claim), group in claims.group_by("claim_id", "claim", maintain_order=True):
        tests = group["test_id"].to_list()
        failed = [t for t in tests if "failed" in by_test.get(t, [])]
        passed = [t for t in tests if by_test.get(t) and
                  all(o == "passed" for o in by_test[t])]
        not_run = [t for t in tests if t not in failed and t not in passed]
        status = "failed" if failed else "unverified" if not_run else "verified"
        rows.append({"claim_id": claim_id, "claim": claim, "status": status,
                     "tests": len(tests), "passed": len(passed),
                     "failed_tests": " ".join(failed), "not_run": " ".join(not_run)})
    return pl.DataFrame(rows, schema={k: v for k, v in LOG_SCHEMA.items()
                                      if k not in ("run_at", "commit")})


def append_log(path: Path, status: pl.DataFrame, *, commit: str,
               run_at: dt.datetime | None = None) -> pl.DataFrame:
    """Append ``status`` (from :func:`statuses`) to the parquet log at ``path``; returns the
    whole log. The file is replaced atomically."""
    stamp = (run_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    rows = status.with_columns(run_at=pl.lit(stamp, dtype=pl.Datetime("us")),
                               commit=pl.lit(commit)).select(list(LOG_SCHEMA))
    log = pl.concat([pl.read_parquet(path), rows]) if path.is_file() else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        log.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return log


def latest(log: pl.DataFrame) -> pl.DataFrame:
    """The most recent status of each claim in ``log``."""
    return log.sort("run_at").group_by("claim_id", maintain_order=True).last().sort("claim_id")
