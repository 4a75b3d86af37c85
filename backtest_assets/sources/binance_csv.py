"""Pure parsers for Binance market data: archive CSVs (inside zips) and REST JSON pages.

Bytes in, canonical frames out (layouts in :mod:`backtest_assets.core.frames`); no I/O here.

Every parser follows the same contract:

* a structural problem (wrong column count, non-numeric garbage, unreadable zip) raises a
  :class:`BinanceDataError` subclass naming the file, the partition and the 1-based line,
  because a broken file must never be half-ingested;
* a row that is well-formed but implausible (NaN price, ``high < low``, a duplicate or
  out-of-order timestamp, a row outside the partition's period, ...) is dropped from the
  frame and returned as a :class:`QuarantineRecord` with its line number and raw text.

Parsing is vectorized: the bytes are split into lines and fields by polars, cast and
checked with expressions; only the refused lines are turned into Python objects. The CSV
and REST paths share the casting and validation code and differ only in how fields arrive.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA, TS
from backtest_assets.sources.base import QuarantineRecord, SourceDataError


@dataclass(frozen=True)
class KeptBytes:
    """Where the bytes of a refused file are kept (relative to the data root)."""

    path: str
    sha256: str
    size: int


class BinanceDataError(SourceDataError):
    """Base class of every error raised while reading Binance data.

    ``kept``: where the offending bytes were kept, when the error saved them.
    """

    def __init__(self, message: str, *, kept: KeptBytes | None = None) -> None:
        super().__init__(message)
        self.kept = kept


class BinanceFormatError(BinanceDataError):
    """A file or response whose structure is not what Binance publishes."""


class CorruptArchiveError(BinanceDataError):
    """A zip that cannot be read, or that does not hold exactly one CSV member."""


class ChecksumMismatchError(BinanceDataError):
    """Downloaded bytes whose sha256 differs from the archive's ``.CHECKSUM``."""


class FetchError(BinanceDataError):
    """An HTTP request that failed for good (non-retryable status or retries exhausted)."""


KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
FUNDING_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")
METRICS_COLUMNS = (
    "create_time",
    "symbol",
    "sum_open_interest",
    "sum_open_interest_value",
    "count_toptrader_long_short_ratio",
    "sum_toptrader_long_short_ratio",
    "count_long_short_ratio",
    "sum_taker_long_short_vol_ratio",
)

# Binance kline intervals and the calendar unit an open time must be a multiple of
# (polars ``dt.truncate`` syntax). Binance does not document where 3d bars start, so they
# are only required to start at midnight.
KLINE_INTERVALS: dict[str, str] = {
    "1s": "1s",
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1h",
    "2h": "2h",
    "4h": "4h",
    "6h": "6h",
    "8h": "8h",
    "12h": "12h",
    "1d": "1d",
    "3d": "1d",
    "1w": "1w",
    "1M": "1mo",
}

_PRICES = ("open", "high", "low", "close")
_VOLUMES = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
_BOM = b"\xef\xbb\xbf"
_HEADER_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*")
# Epoch values at or above this are microseconds: 1e14 ms would be the year 5138.
_US_THRESHOLD = 10**14
# Clip before scaling ms to µs so garbage magnitudes cannot overflow Int64; a clipped value
# is far outside any period and is quarantined as such.
_MAX_EPOCH = 10**16
_META = ("_src", "_line", "_raw")
_NAN_TOKENS = ("nan", "-nan", "+nan")
_Rows = tuple[pl.DataFrame, list[QuarantineRecord]]
_F64 = pl.Float64()
_I64 = pl.Int64()


# ---------------------------------------------------------------------------- public API


def read_zip_member(data: bytes, *, source_file: str, partition: str) -> bytes:
    """Return the bytes of the single CSV member of a Binance zip.

    Parameters
    ----------
    data
        The zip file's bytes.
    source_file
        Name of the file, used in error messages.
    partition
        The partition the file belongs to (dataset/symbol/period), used in error messages.

    Returns
    -------
    bytes
        The uncompressed CSV, CRC-checked.

    Raises
    ------
    CorruptArchiveError
        Not a zip, truncated, CRC or deflate error, or not exactly one ``.csv`` member.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            names = [info.filename for info in members]
            if len(members) != 1 or not names[0].lower().endswith(".csv"):
                raise CorruptArchiveError(
                    f"{source_file} ({partition}): expected exactly one .csv member, found {names}"
                )
            return archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptArchiveError(
            f"{source_file} ({partition}): unreadable zip ({len(data)} bytes): {exc}"
        ) from exc


def csv_is_empty(data: bytes) -> bool:
    """Whether a CSV holds no data row: nothing, blank lines, or a header line alone."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = (line for line in data.splitlines() if line.strip())
    first = next(lines, None)
    if first is None:
        return True
    return _is_header(first.decode("utf8", errors="replace")) and next(lines, None) is None


def parse_klines_csv(
    data: bytes,
    *,
    source_file: str,
    symbol: str,
    interval: str = "1m",
    period_start: dt.datetime,
    period_end: dt.datetime,
    partition: str | None = None,
    signed: bool = False,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse a spot or USD-M klines CSV into :data:`KLINE_SCHEMA`.

    The USD-M ``markPriceKlines`` and ``premiumIndexKlines`` files have the same 12 columns
    (their volumes, quote volumes and taker volumes are 0 and ``count`` is the number of
    index samples behind the bar) and are parsed here too.

    Parameters
    ----------
    data
        The CSV bytes, with or without a header row (detected from the first field).
    source_file
        Name of the file, used in quarantine records and error messages.
    symbol
        The symbol the file belongs to; fills the ``symbol`` column.
    interval
        Binance kline interval (a key of :data:`KLINE_INTERVALS`); open times must align to it.
    period_start, period_end
        The partition's half-open UTC period ``[start, end)``; naive datetimes are UTC.
    partition
        Label of the partition in error messages (default: symbol, interval and period).
    signed
        The values are a signed rate, not prices (``premiumIndexKlines``): zero and negative
        values are kept; every other row check (finite, ``low <= open, close <= high``, ...)
        still applies.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        Kept rows sorted by ``ts_open`` (strictly increasing), and the refused rows with
        their 1-based line number (the header line counts) and reason.

    Raises
    ------
    BinanceFormatError
        A line without exactly 12 columns, or a numeric field holding garbage (NaN is not
        garbage: its row is quarantined).
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, interval, start, end)
    fields = _csv_fields(data, source_file=source_file, partition=label, columns=KLINE_COLUMNS)
    return _klines_from_fields(fields, symbol, interval, start, end, label, signed=signed)


def parse_klines_json(
    pages: Sequence[tuple[str, bytes]],
    *,
    symbol: str,
    interval: str = "1m",
    period_start: dt.datetime,
    period_end: dt.datetime,
    partition: str | None = None,
    signed: bool = False,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse REST ``/api/v3/klines`` or ``/fapi/v1/klines`` pages into :data:`KLINE_SCHEMA`.

    ``/fapi/v1/markPriceKlines`` and ``/fapi/v1/premiumIndexKlines`` answer the same rows.

    Parameters
    ----------
    pages
        ``(source_file, response_bytes)`` in request order; each body is a JSON array of
        12-element kline arrays.
    symbol, interval, period_start, period_end, partition, signed
        As in :func:`parse_klines_csv`.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        As in :func:`parse_klines_csv`; ``line_no`` is the 1-based row index in its page.
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, interval, start, end)

    def values(row: object) -> list[object] | None:
        return row if isinstance(row, list) and len(row) == len(KLINE_COLUMNS) else None

    fields = _json_fields(pages, columns=KLINE_COLUMNS, values=values, partition=label)
    return _klines_from_fields(fields, symbol, interval, start, end, label, signed=signed)


def parse_funding_csv(
    data: bytes,
    *,
    source_file: str,
    symbol: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    keep_start: dt.datetime | None = None,
    keep_end: dt.datetime | None = None,
    partition: str | None = None,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse a monthly USD-M ``fundingRate`` CSV into :data:`FUNDING_SCHEMA`.

    Parameters
    ----------
    data
        CSV bytes with columns ``calc_time, funding_interval_hours, last_funding_rate``.
    source_file, symbol, partition
        As in :func:`parse_klines_csv`.
    period_start, period_end
        The file's period (the month); rows outside it are quarantined.
    keep_start, keep_end
        Optional sub-window (e.g. one day) to return. Rows of the file's period outside it
        are dropped silently, not quarantined, and are not checked.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        Kept rows sorted by ``ts`` (``mark_price`` null: the archive does not carry it) and
        the quarantined rows.
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, "funding", start, end)
    fields = _csv_fields(data, source_file=source_file, partition=label, columns=FUNDING_COLUMNS)
    fields = fields.with_columns(mark_price=pl.lit(None, pl.String))
    return _funding_from_fields(fields, symbol, start, end, _keep(keep_start, keep_end), label)


def parse_funding_json(
    pages: Sequence[tuple[str, bytes]],
    *,
    symbol: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    partition: str | None = None,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse REST ``/fapi/v1/fundingRate`` pages into :data:`FUNDING_SCHEMA`.

    Parameters
    ----------
    pages
        ``(source_file, response_bytes)``; rows are ``{symbol, fundingTime, fundingRate,
        markPrice}`` objects.
    symbol, period_start, period_end, partition
        As in :func:`parse_funding_csv`.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        Kept rows (``funding_interval_hours`` null: REST does not carry it) and the
        quarantined rows.
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, "funding", start, end)

    def values(row: object) -> list[object] | None:
        if not isinstance(row, dict):
            return None
        return [row.get("fundingTime"), None, row.get("fundingRate"), row.get("markPrice")]

    fields = _json_fields(
        pages, columns=(*FUNDING_COLUMNS, "mark_price"), values=values, partition=label
    )
    return _funding_from_fields(fields, symbol, start, end, None, label)


def parse_metrics_csv(
    data: bytes,
    *,
    source_file: str,
    symbol: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    partition: str | None = None,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse a daily USD-M ``metrics`` CSV into :data:`OPEN_INTEREST_SCHEMA`.

    Parameters
    ----------
    data
        CSV bytes with the 8 metrics columns; ``create_time`` is ``YYYY-MM-DD HH:MM:SS`` UTC.
    source_file, symbol, period_start, period_end, partition
        As in :func:`parse_klines_csv`. Rows whose ``symbol`` column differs are quarantined.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        Kept rows sorted by ``ts`` and the quarantined rows. Empty ratio fields are null.
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, "metrics", start, end)
    fields = _csv_fields(data, source_file=source_file, partition=label, columns=METRICS_COLUMNS)
    typed = _cast(
        fields,
        {"create_time": TS, "symbol": pl.String(), **dict.fromkeys(METRICS_COLUMNS[2:], _F64)},
        optional=METRICS_COLUMNS[2:],
        partition=label,
    ).with_columns(ts=pl.col("create_time"))
    return _open_interest_from_typed(typed, symbol, start, end, "create_time")


def parse_open_interest_json(
    pages: Sequence[tuple[str, bytes]],
    *,
    symbol: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    partition: str | None = None,
) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
    """Parse REST ``/futures/data/openInterestHist`` pages into :data:`OPEN_INTEREST_SCHEMA`.

    Parameters
    ----------
    pages
        ``(source_file, response_bytes)``; rows are ``{symbol, sumOpenInterest,
        sumOpenInterestValue, timestamp}`` objects.
    symbol, period_start, period_end, partition
        As in :func:`parse_metrics_csv`.

    Returns
    -------
    tuple[pl.DataFrame, list[QuarantineRecord]]
        Kept rows (long/short ratio columns null: this endpoint does not carry them) and
        the quarantined rows.
    """
    start, end = _naive_utc(period_start), _naive_utc(period_end)
    label = partition or _partition_label(symbol, "openInterest", start, end)
    columns = ("timestamp", "symbol", "sum_open_interest", "sum_open_interest_value")

    def values(row: object) -> list[object] | None:
        if not isinstance(row, dict):
            return None
        keys = ("timestamp", "symbol", "sumOpenInterest", "sumOpenInterestValue")
        return [row.get(key) for key in keys]

    fields = _json_fields(pages, columns=columns, values=values, partition=label)
    typed = _cast(
        fields,
        {"timestamp": _I64, "symbol": pl.String(), **dict.fromkeys(columns[2:], _F64)},
        optional=columns[2:],
        partition=label,
    )
    typed = typed.with_columns(ts=_epoch_to_ts(typed, "timestamp"))
    return _open_interest_from_typed(typed, symbol, start, end, "timestamp")


# ----------------------------------------------------------------------- field extraction


def _csv_fields(
    data: bytes, *, source_file: str, partition: str, columns: Sequence[str]
) -> pl.DataFrame:
    """Split CSV bytes into one String column per field, plus ``_src/_line/_raw``.

    ``_line`` is the 1-based line in the file (a header counts). Blank lines are skipped.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        return pl.DataFrame(schema=_fields_schema(columns))
    # Two reads of the same bytes, both with quoting off so they split lines identically:
    # one column per line (NUL never occurs in a CSV) for the raw text, the true line
    # numbers and the column-count check, then the fields. Reading fields with the CSV
    # reader is markedly faster than splitting the line strings.
    lines = _read_csv(data, {"_raw": pl.String()}, source_file, partition, separator="\x00")
    lines = lines.with_row_index("_line", offset=1).with_columns(pl.col("_line").cast(pl.Int64))
    _check_column_counts(lines, source_file=source_file, partition=partition, n=len(columns))
    fields = _read_csv(data, dict.fromkeys(columns, pl.String()), source_file, partition)
    if fields.height != lines.height:
        raise BinanceFormatError(
            f"{source_file} ({partition}): {lines.height} lines but {fields.height} CSV rows"
        )
    frame = pl.concat([lines, fields], how="horizontal").filter(pl.col("_raw").is_not_null())
    if frame.height and _is_header(frame.item(0, "_raw")):
        frame = frame.slice(1)
    return frame.select(pl.lit(source_file, pl.String).alias("_src"), "_line", "_raw", *columns)


def _read_csv(
    data: bytes,
    schema: dict[str, pl.DataType],
    source_file: str,
    partition: str,
    *,
    separator: str = ",",
) -> pl.DataFrame:
    try:
        return pl.read_csv(
            data,
            has_header=False,
            separator=separator,
            quote_char=None,
            schema=schema,
            encoding="utf8-lossy",
        )
    except pl.exceptions.PolarsError as exc:
        raise BinanceFormatError(f"{source_file} ({partition}): unreadable CSV: {exc}") from exc


def _check_column_counts(lines: pl.DataFrame, *, source_file: str, partition: str, n: int) -> None:
    commas = pl.col("_raw").str.count_matches(",", literal=True)
    bad = lines.filter(pl.col("_raw").is_not_null() & (commas != n - 1)).head(1)
    if bad.height:
        line_no, raw = bad.item(0, "_line"), bad.item(0, "_raw")
        raise BinanceFormatError(
            f"{source_file} ({partition}) line {line_no}: expected {n} columns, "
            f"found {raw.count(',') + 1}: {raw[:200]!r}"
        )


def _is_header(first_line: str) -> bool:
    """A header's first field is a name, not a number (nor garbage that merely fails to parse)."""
    field = first_line.split(",", 1)[0].strip()
    if field.lower() in _NAN_TOKENS:
        return False
    try:
        float(field)
    except ValueError:
        return _HEADER_FIELD.fullmatch(field) is not None
    return False


def _json_fields(
    pages: Sequence[tuple[str, bytes]],
    *,
    columns: Sequence[str],
    values: Callable[[object], list[object] | None],
    partition: str,
) -> pl.DataFrame:
    """Turn REST JSON pages into the same String field frame the CSV path produces."""
    meta: dict[str, list[object]] = {name: [] for name in _META}
    cells: list[list[object]] = []
    for source_file, data in pages:
        rows = _json_array(data, source_file=source_file, partition=partition)
        for index, row in enumerate(rows, start=1):
            row_values = values(row)
            if row_values is None:
                raise BinanceFormatError(
                    f"{source_file} ({partition}) row {index}: unexpected shape {row!r:.200}"
                )
            meta["_src"].append(source_file)
            meta["_line"].append(index)
            meta["_raw"].append(json.dumps(row, separators=(",", ":")))
            cells.append([None if v is None else str(v) for v in row_values])
    return pl.DataFrame(
        {**meta, **{name: [cell[i] for cell in cells] for i, name in enumerate(columns)}},
        schema=_fields_schema(columns),
    )


def _json_array(data: bytes, *, source_file: str, partition: str) -> list[object]:
    try:
        rows = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BinanceFormatError(f"{source_file} ({partition}): invalid JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise BinanceFormatError(
            f"{source_file} ({partition}): expected a JSON array, got {data[:200]!r}"
        )
    return rows


def _fields_schema(columns: Sequence[str]) -> dict[str, pl.DataType]:
    return {"_src": pl.String(), "_line": pl.Int64(), "_raw": pl.String()} | dict.fromkeys(
        columns, pl.String()
    )


# -------------------------------------------------------------------------------- casting


def _cast(
    fields: pl.DataFrame,
    casts: Mapping[str, pl.DataType],
    *,
    partition: str,
    optional: Collection[str] = (),
) -> pl.DataFrame:
    """Cast String fields to ``casts``, raising on garbage.

    A field that does not parse is garbage unless it is a NaN token (the row is quarantined
    later, NaN stays NaN in floats and becomes null in integers) or an empty/absent
    ``optional`` field (null).
    """
    parsed = fields.with_columns(
        _parse(name, dtype).alias(f"{name}#") for name, dtype in casts.items()
    )
    suspects = parsed.filter(pl.any_horizontal(pl.col(f"{name}#").is_null() for name in casts))
    if suspects.height:
        _raise_on_garbage(suspects, casts, optional=optional, partition=partition)
    return parsed.select(*_META, *(pl.col(f"{name}#").alias(name) for name in casts))


def _parse(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == TS:
        return pl.col(name).str.strptime(TS, "%Y-%m-%d %H:%M:%S", strict=False)
    return pl.col(name).cast(dtype, strict=False)


def _raise_on_garbage(
    suspects: pl.DataFrame,
    casts: Mapping[str, pl.DataType],
    *,
    optional: Collection[str],
    partition: str,
) -> None:
    def garbage(name: str) -> pl.Expr:
        raw = pl.col(name)
        tolerated = raw.str.strip_chars().str.to_lowercase().is_in(_NAN_TOKENS)
        if name in optional:
            tolerated = tolerated | raw.is_null() | (raw.str.strip_chars() == "")
        return pl.col(f"{name}#").is_null() & ~tolerated.fill_null(False)

    flags = suspects.with_columns(garbage(name).alias(f"{name}!") for name in casts)
    first = flags.filter(pl.any_horizontal(pl.col(f"{name}!") for name in casts)).head(1)
    if first.is_empty():
        return
    row = first.row(0, named=True)
    name = next(name for name in casts if row[f"{name}!"])
    raise BinanceFormatError(
        f"{row['_src']} ({partition}) line {row['_line']}: column {name} is not a valid "
        f"{casts[name]}: {row[name]!r} in {row['_raw'][:200]!r}"
    )


def _epoch_to_ts(frame: pl.DataFrame, name: str) -> pl.Expr:
    """Epoch ms or µs to ``TS``; the unit is decided once for the whole input by magnitude."""
    median = frame.get_column(name).abs().median()
    value = pl.col(name).clip(-_MAX_EPOCH, _MAX_EPOCH)
    if median is not None and median >= _US_THRESHOLD:
        return value.cast(TS)
    return (value * 1000).cast(TS)


# ----------------------------------------------------------------------------- validation


def _klines_from_fields(
    fields: pl.DataFrame,
    symbol: str,
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
    partition: str,
    *,
    signed: bool = False,
) -> _Rows:
    if interval not in KLINE_INTERVALS:
        raise ValueError(
            f"unknown kline interval {interval!r}: expected one of {list(KLINE_INTERVALS)}"
        )
    casts: dict[str, pl.DataType] = dict.fromkeys(KLINE_COLUMNS[:-1], _F64)
    casts.update(open_time=_I64, close_time=_I64, count=_I64)
    typed = _cast(fields, casts, partition=partition)
    typed = typed.with_columns(ts_open=_epoch_to_ts(typed, "open_time"))
    kept, quarantine = _validate(
        typed,
        ts="ts_open",
        time_name="open_time",
        reasons=_kline_reasons(interval, signed=signed),
        start=start,
        end=end,
    )
    frame = kept.select(
        pl.lit(symbol, pl.String).alias("symbol"),
        "ts_open",
        *_PRICES,
        "volume",
        "quote_volume",
        pl.col("count").alias("trade_count"),
        "taker_buy_volume",
        "taker_buy_quote_volume",
    )
    return frame.cast(KLINE_SCHEMA).set_sorted("ts_open"), quarantine


def _kline_reasons(interval: str, *, signed: bool = False) -> list[pl.Expr]:
    col = pl.col
    finite = pl.all_horizontal(col(name).is_finite() for name in (*_PRICES, *_VOLUMES))
    reasons = [_null_reason(name) for name in ("open_time", "close_time", "count")]
    reasons += [_non_finite_reason(name) for name in (*_PRICES, *_VOLUMES)]
    if not signed:
        reasons.append(
            _reason(pl.any_horizontal(col(p) <= 0 for p in _PRICES), "non-positive price")
        )
    reasons += [
        _reason(finite & (col("high") < col("low")), "high < low"),
        _reason(
            finite
            & pl.any_horizontal(
                (col(p) < col("low")) | (col(p) > col("high")) for p in ("open", "close")
            ),
            "open/close outside [low, high]",
        ),
        _reason(pl.any_horizontal(col(v) < 0 for v in _VOLUMES), "negative volume"),
        _reason(col("count") < 0, "negative trade count"),
        _reason(finite & (col("taker_buy_volume") > col("volume")), "taker_buy_volume > volume"),
        _reason(
            col("ts_open").dt.truncate(KLINE_INTERVALS[interval]) != col("ts_open"),
            f"open_time not aligned to {interval}",
        ),
    ]
    return reasons


def _funding_from_fields(
    fields: pl.DataFrame,
    symbol: str,
    start: dt.datetime,
    end: dt.datetime,
    keep: tuple[dt.datetime, dt.datetime] | None,
    partition: str,
) -> _Rows:
    typed = _cast(
        fields,
        {
            "calc_time": _I64,
            "funding_interval_hours": pl.Int32(),
            "last_funding_rate": _F64,
            "mark_price": _F64,
        },
        optional=("funding_interval_hours", "mark_price"),
        partition=partition,
    )
    typed = typed.with_columns(ts=_epoch_to_ts(typed, "calc_time"))
    hours, mark = pl.col("funding_interval_hours"), pl.col("mark_price")
    reasons = [
        _null_reason("calc_time"),
        _null_reason("last_funding_rate"),
        _non_finite_reason("last_funding_rate"),
        _reason(hours <= 0, "non-positive funding_interval_hours"),
        _non_finite_reason("mark_price"),
        _reason(mark <= 0, "non-positive mark_price"),
    ]
    kept, quarantine = _validate(
        typed, ts="ts", time_name="calc_time", reasons=reasons, start=start, end=end, keep=keep
    )
    frame = kept.select(
        pl.lit(symbol, pl.String).alias("symbol"),
        "ts",
        "funding_interval_hours",
        pl.col("last_funding_rate").alias("funding_rate"),
        "mark_price",
    )
    return frame.cast(FUNDING_SCHEMA).set_sorted("ts"), quarantine


def _open_interest_from_typed(
    typed: pl.DataFrame, symbol: str, start: dt.datetime, end: dt.datetime, time_name: str
) -> _Rows:
    ratios = ("count_toptrader_long_short_ratio", "sum_toptrader_long_short_ratio")
    ratios += ("count_long_short_ratio", "sum_taker_long_short_vol_ratio")
    typed = typed.with_columns(
        pl.lit(None, pl.Float64).alias(name) for name in ratios if name not in typed.columns
    )
    oi = ("sum_open_interest", "sum_open_interest_value")
    reasons = [_null_reason("ts", time_name)]
    reasons += [_reason(pl.col(name).is_null(), f"missing {name}") for name in oi]
    reasons += [_non_finite_reason(name) for name in (*oi, *ratios)]
    reasons += [
        _reason(pl.any_horizontal(pl.col(name) < 0 for name in oi), "negative open interest"),
        _reason(pl.any_horizontal(pl.col(name) < 0 for name in ratios), "negative ratio"),
        _reason(pl.col("symbol") != symbol, f"symbol is not {symbol}"),
    ]
    kept, quarantine = _validate(
        typed, ts="ts", time_name=time_name, reasons=reasons, start=start, end=end
    )
    frame = kept.select(
        pl.lit(symbol, pl.String).alias("symbol"),
        "ts",
        pl.col("sum_open_interest").alias("open_interest"),
        pl.col("sum_open_interest_value").alias("open_interest_value"),
        pl.col("count_toptrader_long_short_ratio").alias("toptrader_ls_ratio_count"),
        pl.col("sum_toptrader_long_short_ratio").alias("toptrader_ls_ratio_sum"),
        pl.col("count_long_short_ratio").alias("ls_ratio_count"),
        pl.col("sum_taker_long_short_vol_ratio").alias("taker_ls_vol_ratio"),
    )
    return frame.cast(OPEN_INTEREST_SCHEMA).set_sorted("ts"), quarantine


def _reason(condition: pl.Expr, message: str) -> pl.Expr:
    return pl.when(condition).then(pl.lit(message))


def _null_reason(name: str, label: str | None = None) -> pl.Expr:
    return _reason(pl.col(name).is_null(), f"NaN in {label or name}")


def _non_finite_reason(name: str) -> pl.Expr:
    value = pl.col(name)
    return (
        pl.when(value.is_nan())
        .then(pl.lit(f"NaN in {name}"))
        .when(value.is_infinite())
        .then(pl.lit(f"infinite {name}"))
    )


def _validate(
    typed: pl.DataFrame,
    *,
    ts: str,
    time_name: str,
    reasons: list[pl.Expr],
    start: dt.datetime,
    end: dt.datetime,
    keep: tuple[dt.datetime, dt.datetime] | None = None,
) -> _Rows:
    """Split typed rows into kept rows and quarantine records.

    Row-level ``reasons`` are evaluated first; among the remaining rows, a row is kept only
    if its timestamp is strictly after every earlier kept row's, which (since kept rows
    are increasing) is the running maximum of the earlier candidates.
    """
    t = pl.col(ts)
    outside = t.is_not_null() & ((t < start) | (t >= end))
    if keep is not None:
        typed = typed.filter(outside | t.is_null() | ((t >= keep[0]) & (t < keep[1])))
    period = f"[{start:%Y-%m-%d %H:%M:%S}, {end:%Y-%m-%d %H:%M:%S})"
    all_reasons = [_reason(outside, f"{time_name} outside period {period}"), *reasons]
    checked = typed.with_columns(
        _reason=pl.concat_str(all_reasons, separator="; ", ignore_nulls=True)
    ).with_columns(_ok=pl.col("_reason") == "")
    previous = pl.when(pl.col("_ok")).then(t).cum_max().forward_fill().shift(1)
    checked = checked.with_columns(_kept=pl.col("_ok") & (previous.is_null() | (t > previous)))
    kept = checked.filter("_kept")
    refused = checked.filter(~pl.col("_kept"))
    if refused.is_empty():
        return kept, []
    duplicate = t.is_in(kept.get_column(ts).implode())
    shown = t.dt.to_string("%Y-%m-%d %H:%M:%S%.f")
    # concat_str, not pl.format: polars 2.1's format panics inside this when/then chain
    # on large frames.
    refused = refused.with_columns(
        _reason=pl.when(pl.col("_reason") != "")
        .then(pl.col("_reason"))
        .when(duplicate)
        .then(pl.concat_str(pl.lit(f"duplicate {time_name} "), shown))
        .otherwise(
            pl.concat_str(
                pl.lit(f"out of order: {time_name} "),
                shown,
                pl.lit(" is not after the previous row"),
            )
        )
    )
    quarantine = [
        QuarantineRecord(source_file=src, line_no=line, reason=reason, raw_line=raw)
        for src, line, raw, reason in refused.select(*_META, "_reason").iter_rows()
    ]
    return kept, quarantine


# ------------------------------------------------------------------------------- helpers


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _keep(
    keep_start: dt.datetime | None, keep_end: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime] | None:
    if keep_start is None and keep_end is None:
        return None
    return (
        _naive_utc(keep_start) if keep_start is not None else dt.datetime.min,
        _naive_utc(keep_end) if keep_end is not None else dt.datetime.max,
    )


def _partition_label(symbol: str, dataset: str, start: dt.datetime, end: dt.datetime) -> str:
    return f"{symbol} {dataset} [{start:%Y-%m-%d %H:%M:%S}, {end:%Y-%m-%d %H:%M:%S})"
