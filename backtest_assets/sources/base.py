"""What every market-data source returns (no Dagster here).

A source answers one ``(dataset, symbol, day)`` at a time with a :class:`SourceBatch`: the
canonical frame (layouts in :mod:`backtest_assets.core.frames`), the raw files it read with
their sha256, and the rows it refused (quarantine) with the reason. A day the source does
not have (no file, or a file without data rows) is ``missing=True`` with an empty frame,
never an exception. A file that fails verification (checksum, unreadable zip, a structure
that refuses the whole file) raises a :class:`SourceDataError` whose ``rejected`` is the
file's record (status ``rejected``, the reason, where its bytes are kept), so the caller can
record the rejection before it fails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol

import polars as pl

Market = Literal["perp", "spot"]
# ok: verified and parsed; missing: the source has no such file (404); empty: a verified file
# holding no data rows; rest: a REST page; generated: synthetic; rejected: failed
# verification (bytes kept at ``path``, ``reason`` says why)
FileStatus = Literal["ok", "missing", "empty", "rest", "generated", "rejected"]


@dataclass(frozen=True, kw_only=True)
class RawFileRecord:
    """One raw file behind a partition, as kept under the data root."""

    url: str  # where it came from ("synthetic://..." for generated data)
    path: str | None  # path relative to the data root where the bytes are kept
    sha256: str | None  # of the bytes kept (verified against CHECKSUM for archive files)
    size: int | None
    status: FileStatus
    reason: str | None = None  # why a file was rejected (None otherwise)


@dataclass(frozen=True, kw_only=True)
class QuarantineRecord:
    """A row (or file) the source refused, and why."""

    source_file: str
    line_no: int | None
    reason: str
    raw_line: str


@dataclass(kw_only=True)
class SourceBatch:
    """A day of one dataset for one symbol."""

    frame: pl.DataFrame
    files: list[RawFileRecord] = field(default_factory=list)
    quarantine: list[QuarantineRecord] = field(default_factory=list)
    missing: bool = False


class SourceDataError(Exception):
    """Data a source cannot deliver. ``rejected`` is set when a whole file was refused."""

    rejected: RawFileRecord | None = None


class MarketDataSource(Protocol):
    """The interface the ingest assets call."""

    def klines_1m(self, market: Market, symbol: str, day: dt.date) -> SourceBatch:
        """1-minute klines of ``day`` (UTC) in :data:`KLINE_SCHEMA`, sorted by ``ts_open``."""
        ...

    def mark_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M 1-minute mark price klines of ``day`` in :data:`KLINE_SCHEMA` (volumes 0,
        ``trade_count`` the number of mark samples), sorted by ``ts_open``."""
        ...

    def premium_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M 1-minute premium index klines of ``day`` in :data:`KLINE_SCHEMA`: a signed
        rate, (mark-side price - index) / index, not a price; volumes 0."""
        ...

    def funding_rates(self, symbol: str, day: dt.date) -> SourceBatch:
        """Funding rates fixed during ``day`` in :data:`FUNDING_SCHEMA`, sorted by ``ts``."""
        ...

    def open_interest(self, symbol: str, day: dt.date) -> SourceBatch:
        """5-minute open interest of ``day`` in :data:`OPEN_INTEREST_SCHEMA`, sorted by ``ts``."""
        ...
