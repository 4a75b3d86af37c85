"""Raw market data, one (date, symbol) partition per source day, as the source delivered it.

Refused rows go to ``ingest_quarantine`` with their reason and the raw files behind each
partition (url, path under the data root, sha256, status, reason) to ``ingest_files``, both
replaced in the same transaction as the partition's rows.

A file refused whole (checksum mismatch, unreadable zip, malformed CSV) fails the step, which
writes no data: a silent gap where the previous good rows were would be worse than a stop.
Its ``rejected`` manifest row (reason, kept bytes' path) is written first, in a transaction
of its own that touches only the manifest, beside the rows of the previous good files, which
still describe the data the table holds. The next successful write of that partition
replaces the partition's manifest rows as usual.
"""


import datetime as dt
from collections.abc import Callable

import dagster as dg
import polars as pl

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA, empty
from backtest_assets.core.ingest import collect
from backtest_assets.defs.ingest.checks import (
    FUNDING_CONTRACT,
    KLINES_CONTRACT,
    OPEN_INTEREST_CONTRACT,
    PREMIUM_KLINES_CONTRACT,
)
from backtest_assets.defs.shared import (
    check_specs,
    checked_output,
    date_symbol_keys,
    warehouse_asset,
)
from backtest_assets.partitions import (
    BARS_PARTITION_EXPR,
    TS_PARTITION_EXPR,
    UNIVERSE,
)
from backtest_assets.resources import MarketSourceResource, WarehouseResource, WarehouseWrite
from backtest_assets.schemas.checks import FrameContract
from backtest_assets.sources.base import MarketDataSource, SourceBatch
from backtest_assets.warehouse import SideWrite

QUARANTINE_TABLE = "ingest_quarantine"
FILES_TABLE = "ingest_files"

Call = Callable[[MarketDataSource, str, dt.date], SourceBatch]


def _ingest_asset(name: str, description: str, *, market: str, dataset: str, call: Call,
                  schema: dict[str, pl.DataType], contract: FrameContract,
                  partition_expr: dict[str, str]) -> dg.AssetsDefinition:
    """An ingest asset calling ``call`` for each key whose symbol has ``dataset`` on
    ``market`` (``UniverseSpec.offers``); the other keys hold no rows and no file."""
    @dg.asset(
        name=name,
        description=description,
        check_specs=check_specs(name, contract),
        **warehouse_asset("ingest", partition_expr, lineage_source=True),
    )
    def _asset(context: dg.AssetExecutionContext, market_source: MarketSourceResource,
               warehouse: WarehouseResource):
        source = market_source.source(warehouse.root)

        def fetch(symbol: str, day: dt.date) -> SourceBatch:
            if not UNIVERSE.offers(symbol, market, dataset):
                return SourceBatch(frame=empty(schema))
            return call(source, symbol, day)

        keys = date_symbol_keys(context)
        got = collect(name, keys, fetch, schema)
        if got.errors:
            _refuse_rejected(context, warehouse, got.rejected, got.errors)
        write = WarehouseWrite(got.frame, side=[
            SideWrite(QUARANTINE_TABLE, got.quarantine, got.keys),
            SideWrite(FILES_TABLE, got.files, got.keys),
        ])
        # A range run copies this onto every key's materialization: counts for the run here,
        # per-partition detail (files, sha256, missing days) in the side tables.
        metadata = {
            "source": market_source.kind,
            "partitions": got.keys.height,
            "missing_days": len(got.missing),
            "quarantined_rows": got.quarantine.height,
            "raw_files": got.files.height,
            "side_tables": f"{QUARANTINE_TABLE}, {FILES_TABLE}",
        }
        # Where rows are expected: a symbol without this market or dataset has none.
        traded = [(d, s) for d, s in keys if UNIVERSE.offers(s, market, dataset)]
        yield from checked_output(context, write, got.frame, contract, metadata=metadata,
                                  keys=traded, source=market_source.identity,
                                  incomplete=got.missing_keys)

    return _asset


def _refuse_rejected(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                     rejected: pl.DataFrame, errors: list[str]) -> None:
    """Record the rejected files in ``ingest_files`` on their own, then fail the step."""
    keys = rejected.select("asset", "symbol", "date", "url", "status")
    warehouse.warehouse().replace_side(SideWrite(FILES_TABLE, rejected, keys))
    shown = "; ".join(f"{r['symbol']} {r['date']}: {e}"
                      for r, e in zip(rejected.iter_rows(named=True), errors[:5], strict=False))
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise dg.Failure(
        description=f"{context.asset_key.to_user_string()}: {len(errors)} file(s) rejected, "
                    f"nothing written (previous data kept; recorded in {FILES_TABLE} with status "
                    f"rejected): {shown}{more}",
        metadata={"rejected_files": len(errors)})


raw_perp_klines_1m = _ingest_asset(
    "raw_perp_klines_1m", "USD-M perpetual 1-minute klines as delivered by the source.",
    market="perp", dataset="klines",
    call=lambda src, symbol, day: src.klines_1m("perp", symbol, day),
    schema=KLINE_SCHEMA, contract=KLINES_CONTRACT, partition_expr=BARS_PARTITION_EXPR,
)
raw_spot_klines_1m = _ingest_asset(
    "raw_spot_klines_1m", "Spot 1-minute klines (for the perp-spot basis) as delivered.",
    market="spot", dataset="klines",
    call=lambda src, symbol, day: src.klines_1m("spot", symbol, day),
    schema=KLINE_SCHEMA, contract=KLINES_CONTRACT, partition_expr=BARS_PARTITION_EXPR,
)
raw_mark_price_klines_1m = _ingest_asset(
    "raw_mark_price_klines_1m",
    "USD-M 1-minute mark price klines (markPriceKlines; volumes 0) as delivered.",
    market="perp", dataset="mark_klines",
    call=lambda src, symbol, day: src.mark_klines_1m(symbol, day),
    schema=KLINE_SCHEMA, contract=KLINES_CONTRACT, partition_expr=BARS_PARTITION_EXPR,
)
raw_premium_index_klines_1m = _ingest_asset(
    "raw_premium_index_klines_1m",
    "USD-M 1-minute premium index klines (premiumIndexKlines: a signed rate; volumes 0).",
    market="perp", dataset="premium_klines",
    call=lambda src, symbol, day: src.premium_klines_1m(symbol, day),
    schema=KLINE_SCHEMA, contract=PREMIUM_KLINES_CONTRACT, partition_expr=BARS_PARTITION_EXPR,
)
raw_funding_rates = _ingest_asset(
    "raw_funding_rates", "Funding rates fixed during the day, stamped at calculation time.",
    market="perp", dataset="funding",
    call=lambda src, symbol, day: src.funding_rates(symbol, day),
    schema=FUNDING_SCHEMA, contract=FUNDING_CONTRACT, partition_expr=TS_PARTITION_EXPR,
)
raw_open_interest = _ingest_asset(
    "raw_open_interest", "5-minute open interest snapshots, stamped at publication time.",
    market="perp", dataset="open_interest",
    call=lambda src, symbol, day: src.open_interest(symbol, day),
    schema=OPEN_INTEREST_SCHEMA, contract=OPEN_INTEREST_CONTRACT,
    partition_expr=TS_PARTITION_EXPR,
)

defs = dg.Definitions(assets=[raw_perp_klines_1m, raw_spot_klines_1m, raw_mark_price_klines_1m,
                              raw_premium_index_klines_1m, raw_funding_rates, raw_open_interest])
