"""The edge-candidate export: Phase 2 survivors and alpha signals in one table (pure polars;
no Dagster).

Frame contract
--------------
``edge_candidates_normalized.csv`` and ``.parquet`` hold the same frame, one row per
candidate, the columns of :data:`EDGE_CANDIDATE_COLUMNS` in this order:

============== ============ ===== =============================================================
column         dtype        null  meaning
============== ============ ===== =============================================================
candidate_id   String       no    ``sha256(f"{kind}|{source_id}|{study}")``, first 16 hex; the
                                  source id is the Phase 2 ``hypothesis_id``, or
                                  ``f"{signal}|{rule_template}|{horizon}"`` for a signal
study          String       no    the study the evidence comes from
kind           String       no    ``phase2_survivor`` or ``alpha_signal``
name           String       no    ``event_type/rule_template/horizon/symbol`` (Phase 2) or
                                  ``signal/horizon`` (alpha)
event_type     String       yes   the event type (Phase 2 only)
signal         String       yes   the signal's name (alpha only)
rule_template  String       yes   ``continuation`` / ``mean_reversion`` (Phase 2), the bucket
                                  spread traded, e.g. ``q5-q1`` (alpha)
horizon        String       no    the label horizon, e.g. ``60m`` (``<int><m|h|d>``)
symbol         String       no    the symbol, or ``ALL`` (pooled; every alpha signal)
n              Int64        no    Phase 2: tested (non-overlapping) events; alpha: bars of the
                                  spread series
mean           Float64      no    gross mean signed forward log return (a fraction) per event
                                  or per bar of the spread
net_mean       Float64      yes   ``mean`` net of round-trip costs: Phase 2's ``net_1x`` (at
                                  the 1x cost multiplier), alpha's spread ``net_mean``
t_stat         Float64      yes   Phase 2's cluster-robust ``t``; alpha's ``t_hac``
q_value        Float64      yes   Phase 2's within-family FDR ``q``; null for alpha
ic             Float64      yes   mean cross-sectional Spearman IC (alpha, when given)
ic_lo, ic_hi   Float64      yes   its 95 % moving-block bootstrap interval
evidence_hash  String       no    sha256 (64 hex) of the canonical JSON of the source row
spec_hash      String       no    the caller's spec hash
dataset_hash   String       yes   the caller's dataset hash
created_at     Datetime(us) no    UTC, naive (no time zone), microseconds
============== ============ ===== =============================================================

The frame is sorted by ``(kind, name, candidate_id)``; ``candidate_id`` is unique. The same
candidate of the same study gets the same id in every run. :func:`validate` enforces every
line of the table (and that a Phase 2 row has an event type and a template, an alpha row a
signal) and raises one ``ValueError`` naming the column; :func:`write` refuses a frame that
fails it and writes both files atomically (a temporary file in the directory, then a rename:
a reader sees the old file or the whole new one, never a part).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from backtest_assets.alpha.expectancy import BUCKET_SCHEMA, plain

CSV_NAME = "edge_candidates_normalized.csv"
PARQUET_NAME = "edge_candidates_normalized.parquet"
PHASE2, ALPHA = "phase2_survivor", "alpha_signal"
KINDS = (PHASE2, ALPHA)
POOLED = "ALL"
NET_COLUMN = "net_1x"  # Phase 2's net mean at the 1x cost multiplier

EDGE_CANDIDATE_COLUMNS: dict[str, pl.DataType] = {
    "candidate_id": pl.String(), "study": pl.String(), "kind": pl.String(),
    "name": pl.String(), "event_type": pl.String(), "signal": pl.String(),
    "rule_template": pl.String(), "horizon": pl.String(), "symbol": pl.String(),
    "n": pl.Int64(), "mean": pl.Float64(), "net_mean": pl.Float64(), "t_stat": pl.Float64(),
    "q_value": pl.Float64(), "ic": pl.Float64(), "ic_lo": pl.Float64(), "ic_hi": pl.Float64(),
    "evidence_hash": pl.String(), "spec_hash": pl.String(), "dataset_hash": pl.String(),
    "created_at": pl.Datetime("us"),
}
"""The export's columns and dtypes, in order (module docstring)."""
NULLABLE = frozenset({"event_type", "signal", "rule_template", "net_mean", "t_stat",
                      "q_value", "ic", "ic_lo", "ic_hi", "dataset_hash"})
"""The columns that may hold nulls."""

_PHASE2_REQUIRED = ("hypothesis_id", "event_type", "rule_template", "horizon", "symbol", "n",
                    "mean")
_HORIZON = re.compile(r"^[1-9][0-9]*[mhd]$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def candidate_id(kind: str, source_id: str, study: str) -> str:
    """The candidate's id: the first 16 hex of ``sha256(f"{kind}|{source_id}|{study}")``."""
    return hashlib.sha256(f"{kind}|{source_id}|{study}".encode()).hexdigest()[:16]


def evidence_hash(row: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``row`` (sorted keys, floats to 12 significant
    digits, NaN as null)."""
    doc = json.dumps(plain(dict(row)), sort_keys=True, separators=(",", ":"), allow_nan=False,
                     ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def from_phase2(fdr_survivors: pl.DataFrame, *, study: str, spec_hash: str,
                dataset_hash: str | None, created_at: dt.datetime) -> pl.DataFrame:
    """Candidates from Phase 2's FDR table (``phase2_fdr``).

    Parameters
    ----------
    fdr_survivors : pl.DataFrame
        Rows of ``phase2_fdr`` (:data:`backtest_assets.schemas.research.PHASE2_FDR`). Needs
        ``hypothesis_id, event_type, rule_template, horizon, symbol, n, mean``; reads ``t``,
        ``q`` and ``net_1x`` when present (null otherwise). When it has a ``survivor``
        column, only the rows where it is True are taken, so the whole table may be passed;
        when it has a ``study`` column, every row's must be ``study``.
    study, spec_hash, dataset_hash, created_at
        Stamped on every row (``created_at`` converted to naive UTC; a naive one is taken as
        UTC).

    Returns
    -------
    pl.DataFrame
        :data:`EDGE_CANDIDATE_COLUMNS`, kind ``phase2_survivor``, in the input's order.

    Raises
    ------
    ValueError
        Naming a missing column, a row of another study, or (through :func:`validate`) a
        value the schema refuses.
    """
    missing = [c for c in _PHASE2_REQUIRED if c not in fdr_survivors.columns]
    if missing:
        raise ValueError(f"from_phase2: fdr_survivors lacks column(s) {missing}")
    table = fdr_survivors
    if "survivor" in table.columns:
        table = table.filter(pl.col("survivor").fill_null(False))
    if "study" in table.columns and table.height:
        others = sorted(set(table["study"].to_list()) - {study})
        if others:
            raise ValueError(f"from_phase2: column study holds {others}, not {study!r}")
    stamp = _utc_naive(created_at)
    rows = []
    for r in table.iter_rows(named=True):
        rows.append({
            "candidate_id": candidate_id(PHASE2, r["hypothesis_id"], study), "study": study,
            "kind": PHASE2,
            "name": "/".join(str(r[c]) for c in ("event_type", "rule_template", "horizon",
                                                 "symbol")),
            "event_type": r["event_type"], "signal": None, "rule_template": r["rule_template"],
            "horizon": r["horizon"], "symbol": r["symbol"], "n": r["n"], "mean": r["mean"],
            "net_mean": r.get(NET_COLUMN), "t_stat": r.get("t"), "q_value": r.get("q"),
            "ic": None, "ic_lo": None, "ic_hi": None, "evidence_hash": evidence_hash(r),
            "spec_hash": spec_hash, "dataset_hash": dataset_hash, "created_at": stamp})
    return _frame(rows)


def from_alpha(expectancy: Mapping[str, pl.DataFrame],
               ic: Mapping[str, Mapping[str, Any]] | None = None, *, study: str, horizon: str,
               spec_hash: str, dataset_hash: str | None, created_at: dt.datetime
               ) -> pl.DataFrame:
    """Candidates from alpha signals: one row per signal, from the spread row of its
    conditional-expectancy table and, when given, its IC.

    Parameters
    ----------
    expectancy : mapping of str to pl.DataFrame
        Per signal name, its :func:`backtest_assets.alpha.expectancy.conditional_expectancy`
        table; the spread row (bucket ``q<B>-q1``) gives ``rule_template``, ``n``
        (``n_bars``), ``mean``, ``net_mean`` and ``t_stat`` (``t_hac``).
    ic : mapping of str to mapping, optional
        Per signal name, :func:`backtest_assets.alpha.model.information_coefficient`'s dict
        (``ic``, ``lo``, ``hi`` read; its other scalars go into the evidence hash).
    horizon : str
        The label horizon, e.g. ``"60m"``.
    study, spec_hash, dataset_hash, created_at
        As :func:`from_phase2`.

    Returns
    -------
    pl.DataFrame
        :data:`EDGE_CANDIDATE_COLUMNS`, kind ``alpha_signal``, symbol ``ALL``, signals in
        name order; a signal whose spread has no bar (fewer members than buckets at every
        bar) has no evidence and no row.

    Raises
    ------
    ValueError
        On a table that is not an expectancy table or has no spread row, an IC of a signal
        without a table, or a value the schema refuses.
    """
    ic = dict(ic or {})
    extra = sorted(set(ic) - set(expectancy))
    if extra:
        raise ValueError(f"from_alpha: IC given for signal(s) {extra} without an expectancy "
                         "table")
    stamp = _utc_naive(created_at)
    rows = []
    for name in sorted(expectancy):
        table = expectancy[name]
        if dict(table.schema) != BUCKET_SCHEMA:
            raise ValueError(f"from_alpha: the table of {name!r} is not a conditional "
                             f"expectancy table: columns {table.columns}")
        spread = table.filter(pl.col("bucket").str.contains("-", literal=True))
        if spread.height != 1:
            raise ValueError(f"from_alpha: signal {name!r} has no spread row")
        if not spread["n_bars"][0] or spread["mean"][0] is None \
                or not math.isfinite(spread["mean"][0]):
            continue  # no bar with every bucket (e.g. fewer members than buckets): no evidence
        s = spread.row(0, named=True)
        scalars = {k: v for k, v in ic.get(name, {}).items()
                   if isinstance(v, int | float | str | None)}
        rows.append({
            "candidate_id": candidate_id(ALPHA, f"{name}|{s['bucket']}|{horizon}", study),
            "study": study, "kind": ALPHA, "name": f"{name}/{horizon}", "event_type": None,
            "signal": name, "rule_template": s["bucket"], "horizon": horizon,
            "symbol": POOLED, "n": s["n_bars"], "mean": s["mean"], "net_mean": s["net_mean"],
            "t_stat": s["t_hac"], "q_value": None, "ic": _float(scalars.get("ic")),
            "ic_lo": _float(scalars.get("lo")), "ic_hi": _float(scalars.get("hi")),
            "evidence_hash": evidence_hash({"signal": name, "horizon": horizon,
                                            "spread": s, "ic": scalars}),
            "spec_hash": spec_hash, "dataset_hash": dataset_hash, "created_at": stamp})
    return _frame(rows)


def normalize(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The candidates of ``frames`` in one table: columns selected and cast to
    :data:`EDGE_CANDIDATE_COLUMNS`, validated, sorted by ``(kind, name, candidate_id)``.

    Raises
    ------
    ValueError
        Naming a column a frame lacks or cannot be cast to, or one :func:`validate` refuses.
    """
    parts = []
    for frame in frames:
        missing = [c for c in EDGE_CANDIDATE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"normalize: a frame lacks column(s) {missing}")
        for column, dtype in EDGE_CANDIDATE_COLUMNS.items():
            try:
                frame = frame.with_columns(pl.col(column).cast(dtype, strict=True))
            except pl.exceptions.PolarsError as exc:
                raise ValueError(f"normalize: column {column} cannot be cast to {dtype}: "
                                 f"{exc}") from exc
        parts.append(frame.select(list(EDGE_CANDIDATE_COLUMNS)))
    out = pl.concat(parts) if parts else _frame([])
    validate(out)
    return out.sort("kind", "name", "candidate_id")


def validate(frame: pl.DataFrame) -> None:
    """Check ``frame`` against the module docstring's table.

    Raises
    ------
    ValueError
        Naming the first column that is missing, extra, out of order, of another dtype,
        null where it may not be, or holding a refused value.
    """
    expected = list(EDGE_CANDIDATE_COLUMNS)
    for column in expected:
        if column not in frame.columns:
            raise ValueError(f"edge candidates: column {column} is missing")
    for column in frame.columns:
        if column not in EDGE_CANDIDATE_COLUMNS:
            raise ValueError(f"edge candidates: column {column} is not in the schema")
    if frame.columns != expected:
        raise ValueError(f"edge candidates: columns are out of order: {frame.columns}, "
                         f"expected {expected}")
    for column, dtype in EDGE_CANDIDATE_COLUMNS.items():
        if frame[column].dtype != dtype:
            raise ValueError(f"edge candidates: column {column} has dtype "
                             f"{frame[column].dtype}, expected {dtype}")
        if column not in NULLABLE and frame[column].null_count():
            raise ValueError(f"edge candidates: column {column} has "
                             f"{frame[column].null_count()} null(s)")
    _check_values(frame)


def write(frame: pl.DataFrame, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``frame`` as ``edge_candidates_normalized.csv`` and ``.parquet`` in
    ``directory`` (created if needed), each atomically.

    Both files are written to temporary files in ``directory`` first and renamed over the
    targets only when both are complete; a failure leaves the previous files (or none)
    and no temporary file.

    Returns
    -------
    (Path, Path)
        The CSV and the parquet path.

    Raises
    ------
    ValueError
        When ``frame`` fails :func:`validate` (nothing is written).
    """
    validate(frame)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    targets = (folder / CSV_NAME, folder / PARQUET_NAME)
    temps: list[str] = []
    try:
        for target in targets:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
            os.close(fd)
            temps.append(tmp)
            if target.suffix == ".csv":
                frame.write_csv(tmp)
            else:
                frame.write_parquet(tmp)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return targets


def read(path: str | os.PathLike) -> pl.DataFrame:
    """An export file (``.csv`` or ``.parquet``) back as the validated frame."""
    p = Path(path)
    if p.suffix == ".csv":
        frame = pl.read_csv(p, schema=EDGE_CANDIDATE_COLUMNS)
    else:
        frame = pl.read_parquet(p)
    validate(frame)
    return frame


def _check_values(frame: pl.DataFrame) -> None:
    def refuse(column: str, bad: pl.Series, what: str) -> None:
        if bad.any():
            value = frame[column].filter(bad)[0]
            raise ValueError(f"edge candidates: column {column} holds {value!r}: {what}")

    ids = frame["candidate_id"]
    refuse("candidate_id", ~ids.str.contains(_ID.pattern), "expected 16 lowercase hex")
    refuse("candidate_id", ids.is_duplicated(), "candidate ids must be unique")
    refuse("kind", ~frame["kind"].is_in(list(KINDS)), f"expected one of {list(KINDS)}")
    refuse("horizon", ~frame["horizon"].str.contains(_HORIZON.pattern),
           "expected <int><m|h|d>, e.g. 60m")
    refuse("evidence_hash", ~frame["evidence_hash"].str.contains(_SHA256.pattern),
           "expected 64 lowercase hex")
    for column in ("study", "name", "symbol", "spec_hash"):
        refuse(column, frame[column].str.len_chars() == 0, "must not be empty")
    refuse("n", frame["n"] < 1, "n must be >= 1")
    phase2, alpha = frame["kind"] == PHASE2, frame["kind"] == ALPHA
    refuse("event_type", phase2 & frame["event_type"].is_null(), "a phase2 row needs one")
    refuse("rule_template", phase2 & frame["rule_template"].is_null(),
           "a phase2 row needs one")
    refuse("signal", alpha & frame["signal"].is_null(), "an alpha row needs one")


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    out = pl.DataFrame(rows, schema=EDGE_CANDIDATE_COLUMNS)
    validate(out)
    return out


def _utc_naive(t: dt.datetime) -> dt.datetime:
    if not isinstance(t, dt.datetime):
        raise ValueError(f"created_at must be a datetime, got {type(t).__name__}")
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _float(x: Any) -> float | None:
    """``x`` as a float, None when missing or not finite (NaN: no IC)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)
