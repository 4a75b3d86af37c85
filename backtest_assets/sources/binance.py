"""Binance market data: the public archive (data.binance.vision) with a REST fallback.

:class:`BinanceSource` implements :class:`~backtest_assets.sources.base.MarketDataSource`.
For each partition it downloads the archive zip, verifies it against the published
``.CHECKSUM``, keeps the raw bytes under ``data_root/raw/`` (same relative path as the
URL) and parses them with :mod:`backtest_assets.sources.binance_csv`. Days the archive has
not published yet (within ``rest_fallback_days`` of today) are read from the REST API
instead, and its raw JSON responses are kept under ``data_root/raw/rest/``.

The USD-M mark price and premium index klines (``markPriceKlines``, ``premiumIndexKlines``)
are klines of another archive folder and REST path: they go through the same download,
checksum, parsing and quarantine code as the klines (:meth:`BinanceSource.klines` with
``dataset=``); only the premium index, a signed rate, skips the positive-price rule.

Raw bytes are never lost: a file replaced upstream keeps its old version as
``<name>.superseded-<sha256[:12]>``, and bytes that fail the checksum are kept under
``data_root/raw/_rejected/``. A file refused whole raises with its ``rejected`` record (status
``rejected``, the reason, the kept bytes' path) for the manifest. A day without data rows
(no file, or a zip holding an empty CSV) is ``missing``; its file's status says which.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Literal, overload

import polars as pl

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA, empty
from backtest_assets.core.keys import InvalidKeyError, validate_date, validate_symbol
from backtest_assets.sources.base import Market, QuarantineRecord, RawFileRecord, SourceBatch
from backtest_assets.sources.binance_csv import (
    KLINE_INTERVALS,
    BinanceDataError,
    BinanceFormatError,
    ChecksumMismatchError,
    CorruptArchiveError,
    FetchError,
    KeptBytes,
    csv_is_empty,
    parse_funding_csv,
    parse_funding_json,
    parse_klines_csv,
    parse_klines_json,
    parse_metrics_csv,
    parse_open_interest_json,
    read_zip_member,
)

__all__ = ["BinanceSource"]

log = logging.getLogger(__name__)

_MONTH = re.compile(r"\d{4}-\d{2}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_USER_AGENT = "backtest-assets/0.1 (+urllib)"
# Transient by Binance's own description: 429 = slow down, 418 = IP banned for a while.
_RETRY_4XX = frozenset({418, 429})
_Parse = Callable[[bytes, str], tuple[pl.DataFrame, list[QuarantineRecord]]]


@dataclass(frozen=True)
class _KlineDataset:
    """A kline archive folder: its USD-M REST path and whether its values are a signed rate."""

    futures_rest: str
    signed: bool = False


KlineDataset = Literal["klines", "markPriceKlines", "premiumIndexKlines"]
_KLINE_DATASETS: dict[str, _KlineDataset] = {
    "klines": _KlineDataset("/fapi/v1/klines"),
    "markPriceKlines": _KlineDataset("/fapi/v1/markPriceKlines"),
    "premiumIndexKlines": _KlineDataset("/fapi/v1/premiumIndexKlines", signed=True),
}
# What ingest reads of a perp day besides its klines (the archive sensor waits for them).
_PERP_DAILY_KLINES: tuple[KlineDataset, ...] = ("markPriceKlines", "premiumIndexKlines")


@dataclass(frozen=True)
class _Period:
    """A half-open UTC period ``[start, end)`` labelled as the archive names it."""

    label: str  # "2022-05-06" (daily file) or "2021-01" (monthly file)
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def day(cls, day: dt.date) -> _Period:
        start = dt.datetime(day.year, day.month, day.day)
        return cls(day.isoformat(), start, start + dt.timedelta(days=1))

    @classmethod
    def month(cls, year: int, month: int) -> _Period:
        start = dt.datetime(year, month, 1)
        end = dt.datetime(year + month // 12, month % 12 + 1, 1)
        return cls(f"{year:04d}-{month:02d}", start, end)

    @property
    def daily(self) -> bool:
        return self.end - self.start == dt.timedelta(days=1)

    @property
    def last_day(self) -> dt.date:
        return (self.end - dt.timedelta(days=1)).date()


class BinanceSource:
    """Binance spot and USD-M data from the public archive, with a REST fallback.

    Parameters
    ----------
    base_url
        Archive root (``https://data.binance.vision``; a local server in tests).
    spot_api_url, futures_api_url
        REST hosts for spot (``/api/v3``) and USD-M futures (``/fapi``, ``/futures/data``).
    data_root
        Where raw files are kept, under ``data_root/raw/``.
    timeout_s
        Socket timeout of one HTTP request.
    max_retries
        Retries after the first attempt on 5xx, 429, 418, connection errors and timeouts.
    backoff_s, max_backoff_s
        The wait before retry ``n`` (0-based) is ``backoff_s * 2**n`` capped at
        ``max_backoff_s``, unless the server sends ``Retry-After`` (seconds), which is
        honoured; a ``Retry-After`` above ``max_backoff_s`` fails at once instead.
    rest_fallback_days
        An archive file that is absent (404) although its period ends within this many
        days of ``today()`` is not published yet: the period is read from REST instead.
    today
        Today's UTC date (injectable for tests); defaults to the system clock.
    sleep
        How to wait between retries (injectable so tests do not really sleep).
    """

    def __init__(
        self,
        *,
        base_url: str = "https://data.binance.vision",
        spot_api_url: str = "https://api.binance.com",
        futures_api_url: str = "https://fapi.binance.com",
        data_root: Path,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        rest_fallback_days: int = 2,
        today: Callable[[], dt.date] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = _http_url(base_url)
        self.spot_api_url = _http_url(spot_api_url)
        self.futures_api_url = _http_url(futures_api_url)
        self.data_root = Path(data_root)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.rest_fallback_days = rest_fallback_days
        self._today = today or (lambda: dt.datetime.now(dt.UTC).date())
        self._sleep = sleep
        self._opener = urllib.request.build_opener()
        # One CHECKSUM fetch per archive file per instance: a monthly funding file serves
        # ~30 daily partitions.
        self._checksums: dict[str, tuple[str, bytes]] = {}

    # ------------------------------------------------------------------------ public API

    def klines(
        self,
        market: Market,
        symbol: str,
        interval: str,
        period: dt.date | str,
        *,
        dataset: KlineDataset = "klines",
    ) -> SourceBatch:
        """Klines of one archive file: a day (``date`` or ``"YYYY-MM-DD"``) or a month.

        Parameters
        ----------
        market
            ``"perp"`` (USD-M futures) or ``"spot"``.
        symbol
            Upper-case ticker, e.g. ``"BTCUSDT"``.
        interval
            Binance kline interval, e.g. ``"1m"`` or ``"1h"``.
        period
            A date for the daily file, or ``"YYYY-MM"`` for the monthly file.
        dataset
            The archive folder: ``"klines"`` (last price), or for ``"perp"`` only
            ``"markPriceKlines"`` and ``"premiumIndexKlines"`` (same 12 columns, volumes 0;
            the premium index is a signed rate: zero and negative values are kept).

        Returns
        -------
        SourceBatch
            Rows in :data:`KLINE_SCHEMA` sorted by ``ts_open``; ``missing=True`` with an
            empty frame when the archive has no such file.

        Raises
        ------
        InvalidKeyError
            A market, symbol, interval, period or dataset that is not a plain key (before any
            I/O).
        BinanceDataError
            Checksum mismatch, corrupt zip, malformed file or failed download. For the first
            three its ``rejected`` is the file's manifest record (status ``rejected``, the
            reason, where the bytes are kept); a failed download has none.
        """
        symbol = validate_symbol(symbol)
        market = _validate_market(market)
        interval = _validate_interval(interval)
        span = _parse_period(period)
        spec = _validate_dataset(dataset, market)
        rel = _klines_path(market, symbol, interval, span, dataset)
        partition = f"{market}/{dataset}/{symbol}/{interval}/{span.label}"

        def parse(data: bytes, source_file: str) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
            return parse_klines_csv(
                data,
                source_file=source_file,
                symbol=symbol,
                interval=interval,
                period_start=span.start,
                period_end=span.end,
                partition=partition,
                signed=spec.signed,
            )

        return self._from_archive(
            rel,
            partition,
            span,
            parse,
            KLINE_SCHEMA,
            rest=lambda: self._rest_klines(market, symbol, interval, span, partition, spec),
        )

    def klines_1m(self, market: Market, symbol: str, day: dt.date) -> SourceBatch:
        """1-minute klines of ``day`` (UTC) in :data:`KLINE_SCHEMA`, sorted by ``ts_open``.

        Parameters
        ----------
        market
            ``"perp"`` or ``"spot"``.
        symbol
            Upper-case ticker.
        day
            The UTC day (a ``date`` or ``"YYYY-MM-DD"``).

        Returns
        -------
        SourceBatch
            As :meth:`klines` with ``interval="1m"``.
        """
        return self.klines(market, symbol, "1m", validate_date(day))

    def mark_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M 1-minute mark price klines of ``day`` (``markPriceKlines``), as
        :meth:`klines_1m`; volumes are 0, ``trade_count`` the number of mark samples."""
        return self.klines("perp", symbol, "1m", validate_date(day), dataset="markPriceKlines")

    def premium_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M 1-minute premium index klines of ``day`` (``premiumIndexKlines``), as
        :meth:`klines_1m`; the values are a signed rate (zero and negative values kept)."""
        return self.klines("perp", symbol, "1m", validate_date(day), dataset="premiumIndexKlines")

    def funding_rates(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M funding rates fixed during ``day`` in :data:`FUNDING_SCHEMA`, sorted by ``ts``.

        The archive publishes one file per month; it is verified once per instance and
        filtered to ``day``. ``mark_price`` is null from the archive and
        ``funding_interval_hours`` is null from REST (neither source carries it).

        Parameters
        ----------
        symbol
            Upper-case ticker.
        day
            The UTC day (a ``date`` or ``"YYYY-MM-DD"``).

        Returns
        -------
        SourceBatch
            ``missing=True`` when the month's file does not exist.
        """
        symbol = validate_symbol(symbol)
        day_span = _Period.day(validate_date(day))
        month = _Period.month(day_span.start.year, day_span.start.month)
        rel = f"data/futures/um/monthly/fundingRate/{symbol}/{symbol}-fundingRate-{month.label}.zip"
        partition = f"perp/fundingRate/{symbol}/{day_span.label}"

        def parse(data: bytes, source_file: str) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
            return parse_funding_csv(
                data,
                source_file=source_file,
                symbol=symbol,
                period_start=month.start,
                period_end=month.end,
                keep_start=day_span.start,
                keep_end=day_span.end,
                partition=partition,
            )

        return self._from_archive(
            rel,
            partition,
            month,
            parse,
            FUNDING_SCHEMA,
            rest=lambda: self._rest_funding(symbol, day_span, partition),
        )

    def open_interest(self, symbol: str, day: dt.date) -> SourceBatch:
        """USD-M 5-minute open interest of ``day`` in :data:`OPEN_INTEREST_SCHEMA`.

        Read from the daily ``metrics`` file (with the long/short ratios); the REST
        fallback ``openInterestHist`` has no ratios (null) and only covers 30 days.

        Parameters
        ----------
        symbol
            Upper-case ticker.
        day
            The UTC day (a ``date`` or ``"YYYY-MM-DD"``).

        Returns
        -------
        SourceBatch
            Rows sorted by ``ts``; ``missing=True`` when the day's file does not exist.
        """
        symbol = validate_symbol(symbol)
        span = _Period.day(validate_date(day))
        rel = _metrics_path(symbol, span)
        partition = f"perp/metrics/{symbol}/{span.label}"

        def parse(data: bytes, source_file: str) -> tuple[pl.DataFrame, list[QuarantineRecord]]:
            return parse_metrics_csv(
                data,
                source_file=source_file,
                symbol=symbol,
                period_start=span.start,
                period_end=span.end,
                partition=partition,
            )

        return self._from_archive(
            rel,
            partition,
            span,
            parse,
            OPEN_INTEREST_SCHEMA,
            rest=lambda: self._rest_open_interest(symbol, span, partition),
        )

    # ------------------------------------------------------------------------- archive

    def published(self, symbol: str, day: dt.date, markets: Sequence[Market]) -> bool:
        """Whether the archive has published every daily file ingest reads for ``symbol`` on
        ``day`` (1m klines of each market in ``markets``, and the perp's metrics, mark price
        and premium index klines): their ``.CHECKSUM`` files exist. Funding is monthly, so it
        does not decide a day.

        Raises ``InvalidKeyError`` before any I/O for a bad key, ``BinanceDataError`` for a
        malformed CHECKSUM or a failed request (a 404 is "not yet").
        """
        symbol = validate_symbol(symbol)
        span = _Period.day(validate_date(day))
        rels = [_klines_path(_validate_market(m), symbol, "1m", span) for m in markets]
        if "perp" in markets:
            rels.append(_metrics_path(symbol, span))
            rels += [_klines_path("perp", symbol, "1m", span, d) for d in _PERP_DAILY_KLINES]
        return all(self._checksum(rel, f"published/{rel}") is not None for rel in rels)

    def _from_archive(
        self,
        rel: str,
        partition: str,
        period: _Period,
        parse: _Parse,
        schema: Mapping[str, pl.DataType],
        *,
        rest: Callable[[], SourceBatch],
    ) -> SourceBatch:
        url = f"{self.base_url}/{rel}"
        checksum = self._checksum(rel, partition)
        raw_path = f"raw/{rel}"
        try:
            # The archive publishes a zip and its CHECKSUM together: no CHECKSUM, no file.
            data = None if checksum is None else self._verified_zip(rel, url, checksum, partition)
        except ChecksumMismatchError as exc:
            exc.rejected = _rejected(url, exc, exc.kept)
            raise
        if data is None or checksum is None:
            return self._absent(url, partition, period, schema, rest)
        try:
            member = read_zip_member(data, source_file=raw_path, partition=partition)
            frame, quarantine = parse(member, raw_path)
        except (CorruptArchiveError, BinanceFormatError) as exc:
            # The bytes matched their CHECKSUM: they are the kept file itself.
            exc.rejected = _rejected(url, exc, KeptBytes(raw_path, checksum[0], len(data)))
            raise
        # A day without data rows is missing whatever the file looks like; "empty" says the
        # file itself held none (a verified zip with a header or nothing inside).
        status = "empty" if frame.is_empty() and csv_is_empty(member) else "ok"
        if status == "empty":
            log.warning("%s: %s holds no data rows: recorded as missing", partition, url)
        record = RawFileRecord(
            url=url, path=raw_path, sha256=checksum[0], size=len(data), status=status
        )
        return SourceBatch(
            frame=frame, files=[record], quarantine=quarantine, missing=frame.is_empty()
        )

    def _absent(
        self,
        url: str,
        partition: str,
        period: _Period,
        schema: Mapping[str, pl.DataType],
        rest: Callable[[], SourceBatch],
    ) -> SourceBatch:
        if (self._today() - period.last_day).days <= self.rest_fallback_days:
            log.info("%s not in the archive yet (%s): reading REST", partition, url)
            return rest()
        log.info("%s missing from the archive (%s)", partition, url)
        missing = RawFileRecord(url=url, path=None, sha256=None, size=None, status="missing")
        return SourceBatch(frame=empty(dict(schema)), files=[missing], missing=True)

    def _checksum(self, rel: str, partition: str) -> tuple[str, bytes] | None:
        """The published sha256 of ``rel`` and the CHECKSUM bytes, or None if absent."""
        if rel in self._checksums:
            return self._checksums[rel]
        url = f"{self.base_url}/{rel}.CHECKSUM"
        data = self._get(url, allow_404=True)
        if data is None:
            return None
        fields = data.decode("ascii", errors="replace").split()
        name = PurePosixPath(rel).name
        if (
            len(fields) != 2
            or not _SHA256.fullmatch(fields[0].lower())
            or fields[1].lstrip("*") != name
        ):
            raise BinanceFormatError(
                f"{url} ({partition}): expected '<sha256>  {name}', got {data[:200]!r}"
            )
        self._checksums[rel] = (fields[0].lower(), data)
        return self._checksums[rel]

    def _verified_zip(
        self, rel: str, url: str, checksum: tuple[str, bytes], partition: str
    ) -> bytes | None:
        """The zip's bytes matching ``checksum``: the local copy, or downloaded and kept."""
        expected, checksum_bytes = checksum
        local = self.data_root / "raw" / rel
        old = local.read_bytes() if local.exists() else None
        if old is not None and _sha256(old) == expected:
            data = old
        else:
            data = self._download_verified(rel, url, expected, partition)
            if data is None:
                return None
            if old is not None:
                old_sha = _sha256(old)
                log.warning("%s changed upstream (was %s, now %s)", rel, old_sha, expected)
                _atomic_write(local.with_name(f"{local.name}.superseded-{old_sha[:12]}"), old)
            _atomic_write(local, data)
        checksum_path = local.with_name(f"{local.name}.CHECKSUM")
        if not checksum_path.exists() or checksum_path.read_bytes() != checksum_bytes:
            _atomic_write(checksum_path, checksum_bytes)
        return data

    def _download_verified(self, rel: str, url: str, expected: str, partition: str) -> bytes | None:
        """Download ``url`` (None on 404); bytes failing the checksum go to ``_rejected``."""
        data = self._get(url, allow_404=True)
        if data is None:
            return None
        actual = _sha256(data)
        if actual != expected:
            rejected = f"raw/_rejected/{rel}.{actual}"
            _atomic_write(self.data_root / rejected, data)
            raise ChecksumMismatchError(
                f"{rel} ({partition}): sha256 {actual} does not match the published "
                f"CHECKSUM {expected}; the downloaded bytes are kept at {rejected}",
                kept=KeptBytes(path=rejected, sha256=actual, size=len(data)),
            )
        return data

    # ---------------------------------------------------------------------------- REST

    def _rest_klines(
        self,
        market: Market,
        symbol: str,
        interval: str,
        span: _Period,
        partition: str,
        spec: _KlineDataset,
    ) -> SourceBatch:
        if market == "perp":
            api, path, limit = self.futures_api_url, spec.futures_rest, 1500
        else:
            api, path, limit = self.spot_api_url, "/api/v3/klines", 1000
        pages, files = self._rest_pages(
            api,
            path,
            {"symbol": symbol, "interval": interval},
            limit=limit,
            time_of=lambda row: row[0],
            span=span,
            name=f"{symbol}/{interval}/{span.label}",
        )
        frame, quarantine = parse_klines_json(
            pages,
            symbol=symbol,
            interval=interval,
            period_start=span.start,
            period_end=span.end,
            partition=partition,
            signed=spec.signed,
        )
        return _rest_batch(frame, files, quarantine)

    def _rest_funding(self, symbol: str, span: _Period, partition: str) -> SourceBatch:
        pages, files = self._rest_pages(
            self.futures_api_url,
            "/fapi/v1/fundingRate",
            {"symbol": symbol},
            limit=1000,
            time_of=lambda row: row["fundingTime"],
            span=span,
            name=f"{symbol}/{span.label}",
        )
        frame, quarantine = parse_funding_json(
            pages,
            symbol=symbol,
            period_start=span.start,
            period_end=span.end,
            partition=partition,
        )
        return _rest_batch(frame, files, quarantine)

    def _rest_open_interest(self, symbol: str, span: _Period, partition: str) -> SourceBatch:
        pages, files = self._rest_pages(
            self.futures_api_url,
            "/futures/data/openInterestHist",
            {"symbol": symbol, "period": "5m"},
            limit=500,
            time_of=lambda row: row["timestamp"],
            span=span,
            name=f"{symbol}/{span.label}",
        )
        frame, quarantine = parse_open_interest_json(
            pages,
            symbol=symbol,
            period_start=span.start,
            period_end=span.end,
            partition=partition,
        )
        return _rest_batch(frame, files, quarantine)

    def _rest_pages(
        self,
        api_url: str,
        path: str,
        params: dict[str, str],
        *,
        limit: int,
        time_of: Callable[[object], object],
        span: _Period,
        name: str,
    ) -> tuple[list[tuple[str, bytes]], list[RawFileRecord]]:
        """GET ``path`` page by page over ``span`` (by ``startTime``), keeping each page."""
        start_ms, end_ms = _epoch_ms(span.start), _epoch_ms(span.end) - 1
        pages: list[tuple[str, bytes]] = []
        files: list[RawFileRecord] = []
        while True:
            query = {**params, "startTime": start_ms, "endTime": end_ms, "limit": limit}
            url = f"{api_url}{path}?{urllib.parse.urlencode(query)}"
            data = self._get(url)
            rel = f"raw/rest/{path.strip('/')}/{name}-{start_ms}.json"
            _atomic_write(self.data_root / rel, data)
            pages.append((rel, data))
            files.append(
                RawFileRecord(
                    url=url, path=rel, sha256=_sha256(data), size=len(data), status="rest"
                )
            )
            try:
                rows = json.loads(data)
                last_ms = int(time_of(rows[-1])) if len(rows) >= limit else None
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise BinanceFormatError(f"{url}: unexpected response {data[:200]!r}") from exc
            # A short page is the last one; a full page continues after its last row.
            if last_ms is None or last_ms + 1 > end_ms:
                return pages, files
            if last_ms < start_ms:
                raise BinanceFormatError(f"{url}: page ends before its startTime {start_ms}")
            start_ms = last_ms + 1

    # ---------------------------------------------------------------------------- HTTP

    @overload
    def _get(self, url: str) -> bytes: ...

    @overload
    def _get(self, url: str, *, allow_404: Literal[True]) -> bytes | None: ...

    def _get(self, url: str, *, allow_404: bool = False) -> bytes | None:
        """GET ``url`` with bounded retries; ``None`` for a 404 when ``allow_404``."""
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                with self._opener.open(request, timeout=self.timeout_s) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 404 and allow_404:
                    return None
                if exc.code < 500 and exc.code not in _RETRY_4XX:
                    raise FetchError(f"GET {url} failed: HTTP {exc.code} (not retried)") from None
                last, retry_after = f"HTTP {exc.code}", _retry_after(exc.headers)
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after, url)
                log.warning("GET %s: %s; retry %d in %.1fs", url, last, attempt + 1, delay)
                self._sleep(delay)
        raise FetchError(f"GET {url} failed after {self.max_retries + 1} attempts; last: {last}")

    def _delay(self, attempt: int, retry_after: float | None, url: str) -> float:
        if retry_after is None:
            return min(self.backoff_s * 2**attempt, self.max_backoff_s)
        if retry_after > self.max_backoff_s:
            # Typically a 418 ban: waiting hours inside a backfill helps nobody.
            raise FetchError(
                f"GET {url}: server asks to retry after {retry_after:g}s, "
                f"more than max_backoff_s={self.max_backoff_s:g}"
            )
        return retry_after


# ----------------------------------------------------------------------------- helpers


def _klines_path(
    market: Market, symbol: str, interval: str, span: _Period, dataset: str = "klines"
) -> str:
    root = "data/futures/um" if market == "perp" else "data/spot"
    frequency = "daily" if span.daily else "monthly"
    name = f"{symbol}-{interval}-{span.label}.zip"
    return f"{root}/{frequency}/{dataset}/{symbol}/{interval}/{name}"


def _metrics_path(symbol: str, span: _Period) -> str:
    return f"data/futures/um/daily/metrics/{symbol}/{symbol}-metrics-{span.label}.zip"


def _http_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _validate_market(market: object) -> Market:
    if market == "perp":
        return "perp"
    if market == "spot":
        return "spot"
    raise InvalidKeyError(f"invalid market {market!r}: expected 'perp' or 'spot'")


def _validate_dataset(dataset: object, market: Market) -> _KlineDataset:
    spec = _KLINE_DATASETS.get(dataset) if isinstance(dataset, str) else None
    if spec is None:
        raise InvalidKeyError(
            f"invalid kline dataset {dataset!r}: expected one of {', '.join(_KLINE_DATASETS)}"
        )
    if dataset != "klines" and market != "perp":
        raise InvalidKeyError(f"{dataset} exist for USD-M futures only, not {market!r}")
    return spec


def _validate_interval(interval: object) -> str:
    if not isinstance(interval, str) or interval not in KLINE_INTERVALS:
        raise InvalidKeyError(
            f"invalid interval {interval!r}: expected one of {', '.join(KLINE_INTERVALS)}"
        )
    return interval


def _parse_period(period: object) -> _Period:
    if isinstance(period, str) and _MONTH.fullmatch(period):
        year, month = int(period[:4]), int(period[5:])
        if not 1 <= month <= 12:
            raise InvalidKeyError(f"invalid month {period!r}: expected YYYY-MM")
        return _Period.month(year, month)
    return _Period.day(validate_date(period))


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # the HTTP-date form: fall back to exponential backoff


def _rest_batch(
    frame: pl.DataFrame, files: list[RawFileRecord], quarantine: list[QuarantineRecord]
) -> SourceBatch:
    # REST answering nothing for the period means the exchange has no data for it.
    missing = frame.is_empty() and not quarantine
    return SourceBatch(frame=frame, files=files, quarantine=quarantine, missing=missing)


def _rejected(url: str, exc: BinanceDataError, kept: KeptBytes | None) -> RawFileRecord:
    """The record of a file that failed verification: its reason and where its bytes are."""
    return RawFileRecord(
        url=url,
        path=kept.path if kept else None,
        sha256=kept.sha256 if kept else None,
        size=kept.size if kept else None,
        status="rejected",
        reason=f"{type(exc).__name__}: {exc}",
    )


def _epoch_ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
