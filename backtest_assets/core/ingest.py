"""Collect a source's day-by-day batches into one frame plus quarantine and file manifests.

No Dagster here: ``fetch(symbol, day)`` is any source method returning a ``SourceBatch``.
The side tables are keyed by ``(asset, symbol, date)`` so that re-materializing a partition
replaces its quarantine and manifest rows along with its data.

A file the source refuses whole (:class:`SourceDataError` with a ``rejected`` record) does not
stop the collection: every key is still fetched, so one pass records every rejected file of
a range in ``Collected.rejected`` (with the error in ``errors``) for the caller to record and
fail on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import polars as pl

from backtest_assets.core.frames import QUARANTINE_SCHEMA, conform
from backtest_assets.sources.base import SourceBatch, SourceDataError

SIDE_KEY_SCHEMA: dict[str, pl.DataType] = {
    "asset": pl.String(), "symbol": pl.String(), "date": pl.Date(),
}
FILES_SCHEMA: dict[str, pl.DataType] = {
    **SIDE_KEY_SCHEMA,
    "url": pl.String(), "path": pl.String(), "sha256": pl.String(), "size": pl.Int64(),
    "status": pl.String(), "reason": pl.String(),
}
QUARANTINE_TABLE_SCHEMA: dict[str, pl.DataType] = {**SIDE_KEY_SCHEMA, **QUARANTINE_SCHEMA}


@dataclass(frozen=True)
class Collected:
    frame: pl.DataFrame
    quarantine: pl.DataFrame  # QUARANTINE_TABLE_SCHEMA
    files: pl.DataFrame  # FILES_SCHEMA
    keys: pl.DataFrame  # SIDE_KEY_SCHEMA: every partition asked for
    missing: list[str]  # "SYMBOL date" of days the source does not have
    rejected: pl.DataFrame  # FILES_SCHEMA: files refused whole (status "rejected")
    errors: list[str]  # why, one per rejected file, naming file and partition
    missing_keys: list[tuple[dt.date, str]] = field(default_factory=list)  # (day, symbol)


def collect(
    asset: str,
    keys: Sequence[tuple[dt.date, str]],
    fetch: Callable[[str, dt.date], SourceBatch],
    schema: dict[str, pl.DataType],
) -> Collected:
    """Fetch every (date, symbol) key and stack the batches (sorted by symbol, then time)."""
    frames, quarantine, files, missing, rejected, errors = [], [], [], [], [], []
    missing_keys: list[tuple[dt.date, str]] = []
    for day, symbol in sorted(keys, key=lambda k: (k[1], k[0])):
        side_key = {"asset": asset, "symbol": symbol, "date": day}
        try:
            batch = fetch(symbol, day)
        except SourceDataError as exc:
            if exc.rejected is None:
                raise
            rejected.append({**side_key, **asdict(exc.rejected)})
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        frames.append(conform(batch.frame, schema))
        quarantine += [{**side_key, **asdict(q)} for q in batch.quarantine]
        files += [{**side_key, **asdict(f)} for f in batch.files]
        if batch.missing:
            missing.append(f"{symbol} {day.isoformat()}")
            missing_keys.append((day, symbol))
    key_rows = [{"asset": asset, "symbol": s, "date": d} for d, s in keys]
    return Collected(
        frame=pl.concat(frames) if frames else pl.DataFrame(schema=schema),
        quarantine=pl.DataFrame(quarantine, schema=QUARANTINE_TABLE_SCHEMA),
        files=pl.DataFrame(files, schema=FILES_SCHEMA),
        keys=pl.DataFrame(key_rows, schema=SIDE_KEY_SCHEMA),
        missing=missing,
        rejected=pl.DataFrame(rejected, schema=FILES_SCHEMA),
        errors=errors,
        missing_keys=missing_keys,
    )
