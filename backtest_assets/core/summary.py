"""A plain-text account of what the warehouse holds for a date window."""

from __future__ import annotations

import datetime as dt

import polars as pl

from backtest_assets.warehouse import Box, PartitionLayout, Warehouse

_TABLES = {  # table -> (time column, slot minutes or None for irregular rows)
    "raw_perp_klines_1m": ("ts_open", 1), "raw_spot_klines_1m": ("ts_open", 1),
    "raw_mark_price_klines_1m": ("ts_open", 1), "raw_premium_index_klines_1m": ("ts_open", 1),
    "raw_funding_rates": ("ts", None), "raw_open_interest": ("ts", 5),
    "bars_1m": ("ts_open", 1), "bars_5m": ("ts_open", 5), "bars_15m": ("ts_open", 15),
    "pit_features": ("ts_open", None), "forward_labels": ("ts_open", None),
    "event_table": ("ts", None),
}
# the table column: as wide as the longest table name (the mark and premium klines)
_W = max(len(t) for t in _TABLES)


_KLINE_MARKETS = {"raw_perp_klines_1m": "perp", "raw_spot_klines_1m": "spot"}
_NO_DATA = ("missing", "empty", "rejected")  # manifest statuses of a file without rows
_LISTED = 10


def warehouse_summary(warehouse: Warehouse, start: dt.date, end: dt.date,
                      study: str = "default") -> str:
    """Rows, symbols, missing slots and partial bars per table, and quarantined rows; Gate
    E-1 and Phase 2 of ``study``.

    ``missing`` counts the slots of every (symbol[, market]) the ingest manifest
    (``ingest_files``) has partitions of in the window, so a symbol whose days all came back
    missing, empty or rejected counts them instead of vanishing from the count.
    """
    lo = dt.datetime.combine(start, dt.time())
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    have = warehouse.tables()
    manifest = (warehouse.read("ingest_files", PartitionLayout()).filter(
        pl.col("date").is_between(start, end)) if "ingest_files" in have else None)
    lines = [f"warehouse: {warehouse.location}", f"window: {start}..{end} (UTC, inclusive)",
             f"{'table':<{_W}} {'rows':>10} {'symbols':>8} {'missing':>9} {'partial':>8}"]
    for table, (tcol, slot) in _TABLES.items():
        if table not in have:
            lines.append(f"{table:<{_W}} {'(not materialized)':>10}")
            continue
        frame = warehouse.read(table, PartitionLayout(time_col=tcol, time_dim="date"),
                               [Box(start=lo, end=hi)])
        groups = ["symbol", "market"] if "market" in frame.columns else ["symbol"]
        missing = partial = "-"
        if slot:
            days = (end - start).days + 1
            n_groups = _expected_groups(table, frame.select(groups), manifest).height
            missing = str(n_groups * days * 24 * 60 // slot - frame.height)
        if "n_source_bars" in frame.columns and slot and slot > 1:
            partial = str(int((frame["n_source_bars"] < slot).sum()))
        lines.append(f"{table:<{_W}} {frame.height:>10,} {frame['symbol'].n_unique():>8} "
                     f"{missing:>9} {partial:>8}")
    if manifest is not None and (no_data := _no_data_files(manifest)):
        lines.append(no_data)
    if "event_table" in have:
        events = warehouse.read("event_table", PartitionLayout(time_col="ts", time_dim="date"),
                                [Box(start=lo, end=hi)])
        counts = events.group_by("event_type").len().sort("event_type").iter_rows()
        lines.append("events: " + ", ".join(f"{t} {n}" for t, n in counts))
    if "event_quality_report" in have:
        lines.append(_e1_table(warehouse, study))
    if "phase2_fdr" in have:
        lines.append(_phase2_table(warehouse, study))
    if "ingest_quarantine" in have:
        q = warehouse.read("ingest_quarantine", PartitionLayout()).filter(
            pl.col("date").is_between(start, end))
        lines.append(f"quarantined rows: {q.height}"
                     + "".join(f"\n  {r['asset']} {r['symbol']} {r['date']} line "
                               f"{r['line_no']}: {r['reason']}" for r in q.head(10).to_dicts()))
    return "\n".join(lines)


def _expected_groups(table: str, present: pl.DataFrame, manifest: pl.DataFrame | None
                     ) -> pl.DataFrame:
    """The groups ``table`` should hold: those with rows plus those the manifest names."""
    if manifest is None:
        return present.unique()
    if table.startswith("raw_"):
        named = manifest.filter(pl.col("asset") == table).select("symbol")
    elif "market" in present.columns:  # bars: one group per kline market ingested
        named = (manifest.filter(pl.col("asset").is_in(list(_KLINE_MARKETS)))
                 .select("symbol", pl.col("asset").replace_strict(_KLINE_MARKETS)
                         .alias("market")))
    else:
        return present.unique()
    return pl.concat([present, named.select(present.columns)]).unique()


def _no_data_files(manifest: pl.DataFrame) -> str:
    """Manifest rows of files without data (missing, empty, rejected), the first listed;
    empty when there are none."""
    bad = manifest.filter(pl.col("status").is_in(_NO_DATA)).sort("asset", "symbol", "date")
    if bad.is_empty():
        return ""
    counts = ", ".join(f"{s} {n}" for s, n in
                       bad.group_by("status").len().sort("status").iter_rows())
    lines = [f"files without data: {bad.height} ({counts})"]
    for r in bad.head(_LISTED).iter_rows(named=True):
        why = f": {r['reason'][:160]}" if r.get("reason") else ""
        lines.append(f"  {r['asset']} {r['symbol']} {r['date']} {r['status']}{why}")
    if bad.height > _LISTED:
        lines.append(f"  and {bad.height - _LISTED} more")
    return "\n".join(lines)


def _e1_table(warehouse: Warehouse, study: str) -> str:
    report = warehouse.read("event_quality_report", PartitionLayout()).filter(
        (pl.col("symbol") == "ALL") & (pl.col("study") == study)).sort("event_type")
    lines = [f"Gate E-1 of study {study} (pooled over its symbols):",
             f"  {'event type':<26} {'events':>7} {'per 10k':>8} {'join':>7}  verdict"]
    for r in report.iter_rows(named=True):
        per10k = "-" if r["prevalence_per_10k"] is None else f"{r['prevalence_per_10k']:.1f}"
        join = "-" if r["join_rate"] is None else f"{r['join_rate']:.4f}"
        verdict = "pass" if r["passed"] else f"FAIL: {r['reasons']}"
        lines.append(f"  {r['event_type']:<26} {r['events']:>7} {per10k:>8} {join:>7}  {verdict}")
    return "\n".join(lines)


def _phase2_table(warehouse: Warehouse, study: str) -> str:
    fdr = warehouse.read("phase2_fdr", PartitionLayout()).filter(pl.col("study") == study)
    lines = [f"Phase 2 of study {study} (hypotheses, tested, untestable, discovered at the "
             "family's FDR, "
             "survivors of costs and stability):"]
    for (event_type,), t in sorted(fdr.group_by("event_type"), key=lambda g: g[0]):
        lines.append(f"  {event_type:<26} {t.height:>3} hypotheses, "
                     f"{int((t['status'] == 'tested').sum()):>3} tested, "
                     f"{int((t['status'] == 'untestable').sum()):>3} untestable, "
                     f"{int(t['discovered'].sum()):>3} discovered, "
                     f"{int(t['survivor'].sum()):>3} survivors")
        for r in t.filter(pl.col("survivor")).sort("horizon", "symbol").iter_rows(named=True):
            lines.append(f"      survivor: {r['rule_template']} {r['horizon']} {r['symbol']}: "
                         f"n {r['n']} in {r['clusters']} clusters, mean "
                         f"{1e4 * r['mean']:.1f} bps, t {r['t']:.1f}, q {r['q']:.2g}")
    return "\n".join(lines)
